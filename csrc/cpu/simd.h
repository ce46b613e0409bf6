// The CPU lane type: a tile of samples held in SIMD registers (one or two of them).
// kTile samples per tile; a hidden layer of width w keeps w such vectors (w * kTile
// floats, 8 KiB at w = 64) plus the weights in L1/L2, so a tile runs its whole trajectory
// in cache. kRows is the register blocking of net.h's dense(): kRows accumulators of
// kTile lanes each, and the input, must fit in the register file (AVX-512: 32 zmm, AVX2: 16 ymm).
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastscore/lanes.h"

namespace fastscore {
namespace cpu {

// AVX-512: a tile is one zmm register of 16 samples, a GCC vector. Below it a tile is two
// native registers (Pair): one register of samples per broadcast weight left dense() bound by
// loads on AVX2 (13 loads per 12 FMAs; with two registers, 8), and a 64-byte GCC vector is
// not the answer there, as GCC lowers it through memory.
#if defined(__AVX512F__)
constexpr int kTile = 16;
constexpr int kRows = 16;  // 16 zmm accumulators of the 32
constexpr const char* kIsa = "AVX-512";
#elif defined(__AVX__)
constexpr int kTile = 16;
constexpr int kRows = 6;  // 6 pairs: 12 ymm accumulators of the 16
constexpr const char* kIsa = "AVX2";
#else
constexpr int kTile = 8;
constexpr int kRows = 6;
constexpr const char* kIsa = "SSE2";
#endif

// Two registers of the native vector type H that act as one lane value of 2 x |H| lanes: every
// operator lane by lane, as the GCC vector it stands in for (so both give the same bits).
template <class H>
struct Pair {
  H lo, hi;
  static constexpr int kHalf = sizeof(H) / sizeof(H{}[0]);
  auto& operator[](int l) { return l < kHalf ? lo[l] : hi[l - kHalf]; }
  auto operator[](int l) const { return l < kHalf ? lo[l] : hi[l - kHalf]; }
};

// the operators of a GCC vector, for Pair with Pair and with scalars on either side
#define FS_PAIR_BINARY(op)                                                                  \
  template <class H>                                                                        \
  inline auto operator op(Pair<H> a, Pair<H> b) -> Pair<decltype(a.lo op b.lo)> {           \
    return {a.lo op b.lo, a.hi op b.hi};                                                    \
  }                                                                                         \
  template <class H, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>            \
  inline auto operator op(Pair<H> a, S b) -> Pair<decltype(a.lo op b)> {                    \
    return {a.lo op b, a.hi op b};                                                          \
  }                                                                                         \
  template <class H, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>            \
  inline auto operator op(S a, Pair<H> b) -> Pair<decltype(a op b.lo)> {                    \
    return {a op b.lo, a op b.hi};                                                          \
  }
FS_PAIR_BINARY(+) FS_PAIR_BINARY(-) FS_PAIR_BINARY(*) FS_PAIR_BINARY(/)
FS_PAIR_BINARY(&) FS_PAIR_BINARY(|) FS_PAIR_BINARY(^) FS_PAIR_BINARY(<<) FS_PAIR_BINARY(>>)
FS_PAIR_BINARY(<) FS_PAIR_BINARY(>) FS_PAIR_BINARY(<=) FS_PAIR_BINARY(>=) FS_PAIR_BINARY(==) FS_PAIR_BINARY(!=)
#undef FS_PAIR_BINARY
#define FS_PAIR_ASSIGN(op)                             \
  template <class H, class B>                          \
  inline Pair<H>& operator op##=(Pair<H>& a, B b) {    \
    return a = a op b;                                 \
  }
FS_PAIR_ASSIGN(+) FS_PAIR_ASSIGN(-) FS_PAIR_ASSIGN(*) FS_PAIR_ASSIGN(/)
#undef FS_PAIR_ASSIGN
template <class H>
inline Pair<H> operator-(Pair<H> a) {
  return {-a.lo, -a.hi};
}

// Native: one register of floats; a lane value is one (AVX-512) or a Pair of them
#if defined(__AVX512F__)
typedef float Native __attribute__((vector_size(64)));
typedef Native Lanes;
#elif defined(__AVX__)
typedef float Native __attribute__((vector_size(32)));
typedef Pair<Native> Lanes;
#else
typedef float Native __attribute__((vector_size(16)));
typedef Pair<Native> Lanes;
#endif
static_assert(sizeof(Lanes) == kTile * sizeof(float), "a tile is kTile floats");
typedef int32_t NativeInt __attribute__((vector_size(sizeof(Native))));
#if defined(__AVX512F__)
typedef NativeInt LanesInt;  // the integer lanes of a lane value, as LaneMath<float>'s Int
#else
typedef Pair<NativeInt> LanesInt;
#endif

// f applied to each native register of the lane values a...
template <class F, class... A>
inline auto per_register(F f, A... a) {
#if defined(__AVX512F__)
  return f(a...);
#else
  return Pair<decltype(f(a.lo...))>{f(a.lo...), f(a.hi...)};
#endif
}

// w x + acc rounded once, and the correctly rounded square root, of one register
inline Native native_fma(Native w, Native x, Native acc) {
#if defined(__AVX512F__)
  return (Native)_mm512_fmadd_ps((__m512)w, (__m512)x, (__m512)acc);
#elif defined(__FMA__)
  return (Native)_mm256_fmadd_ps((__m256)w, (__m256)x, (__m256)acc);
#else
  for (int i = 0; i < (int)(sizeof(Native) / sizeof(float)); ++i) acc[i] = ::fmaf(w[i], x[i], acc[i]);
  return acc;
#endif
}
inline Native native_sqrt(Native x) {
#if defined(__AVX512F__)  // maskz: _mm512_sqrt_ps's undefined pass-through trips GCC 12's -Wmaybe-uninitialized
  return (Native)_mm512_maskz_sqrt_ps((__mmask16)0xffff, (__m512)x);
#elif defined(__AVX__)
  return (Native)_mm256_sqrt_ps((__m256)x);
#else
  return (Native)_mm_sqrt_ps((__m128)x);
#endif
}
// a > x ? a : x and a < x ? a : x (the x86 max / min: x where either is NaN); maskz on AVX-512
// for the reason native_sqrt gives
inline Native native_max(Native a, Native x) {
#if defined(__AVX512F__)
  return (Native)_mm512_maskz_max_ps((__mmask16)0xffff, (__m512)a, (__m512)x);
#elif defined(__AVX__)
  return (Native)_mm256_max_ps((__m256)a, (__m256)x);
#else
  return (Native)_mm_max_ps((__m128)a, (__m128)x);
#endif
}
inline Native native_min(Native a, Native x) {
#if defined(__AVX512F__)
  return (Native)_mm512_maskz_min_ps((__mmask16)0xffff, (__m512)a, (__m512)x);
#elif defined(__AVX__)
  return (Native)_mm256_min_ps((__m256)a, (__m256)x);
#else
  return (Native)_mm_min_ps((__m128)a, (__m128)x);
#endif
}
inline Native native_broadcast(float w) {  // not 0 + w, which turns -0 into +0
#if defined(__AVX512F__)
  return (Native)_mm512_set1_ps(w);
#elif defined(__AVX__)
  return (Native)_mm256_set1_ps(w);
#else
  return (Native)_mm_set1_ps(w);
#endif
}

// A lane value from kTile floats at p and back, register by register: a 64-byte memcpy into a
// Pair goes through the stack in 16-byte pieces, and its 32-byte reload stalls on them
inline Lanes load_lanes(const float* p) {
  Lanes v;
#if defined(__AVX512F__)
  std::memcpy(&v, p, sizeof v);
#else
  std::memcpy(&v.lo, p, sizeof v.lo);
  std::memcpy(&v.hi, p + Lanes::kHalf, sizeof v.hi);
#endif
  return v;
}
inline void store_lanes(const Lanes& v, float* p) {
#if defined(__AVX512F__)
  std::memcpy(p, &v, sizeof v);
#else
  std::memcpy(p, &v.lo, sizeof v.lo);
  std::memcpy(p + Lanes::kHalf, &v.hi, sizeof v.hi);
#endif
}

// where(m, a, b) lane by lane, for Pair (lanes.h's where is m ? a : b)
template <class M, class H>
inline Pair<H> where(Pair<M> m, Pair<H> a, Pair<H> b) {
  return {m.lo ? a.lo : b.lo, m.hi ? a.hi : b.hi};
}

// The time phase's lanes (lanes.h TimePhase): kTile doubles, element by element in loops that
// GCC vectorises, libm's double functions lane by lane, so each lane has the scalar phase's bits.
template <class T>
struct Lanewise {
  alignas(64) T v[kTile];
  T& operator[](int l) { return v[l]; }
  T operator[](int l) const { return v[l]; }
};
typedef Lanewise<double> TimeLanes;

// acc = w x + acc rounded once, kTile doubles, a native register at a time: as a lane loop
// inlined into a dense row GCC unpacked the lanes into scalar FMAs (AVX-512) or, under omp
// simd, rebuilt each register from 16-byte stack stores that its reload stalled on (AVX2)
inline void fma_doubles(const double* w, const double* x, double* acc) {
  typedef double NativeDouble __attribute__((vector_size(sizeof(Native))));
  constexpr int k = sizeof(NativeDouble) / sizeof(double);
  for (int i = 0; i < kTile; i += k) {
    NativeDouble a, b, c;
    std::memcpy(&a, w + i, sizeof a);
    std::memcpy(&b, x + i, sizeof b);
    std::memcpy(&c, acc + i, sizeof c);
#if defined(__AVX512F__)
    c = (NativeDouble)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif defined(__FMA__)
    c = (NativeDouble)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
    for (int j = 0; j < k; ++j) c[j] = ::fma(a[j], b[j], c[j]);
#endif
    std::memcpy(acc + i, &c, sizeof c);
  }
}

#define FS_LANEWISE_BINARY(op)                                                           \
  template <class T>                                                                     \
  inline auto operator op(const Lanewise<T>& a, const Lanewise<T>& b) {                  \
    Lanewise<decltype(a[0] op b[0])> r;                                                  \
    for (int l = 0; l < kTile; ++l) r[l] = a[l] op b[l];                                 \
    return r;                                                                            \
  }                                                                                      \
  template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>         \
  inline auto operator op(const Lanewise<T>& a, S b) {                                   \
    Lanewise<decltype(a[0] op b)> r;                                                     \
    for (int l = 0; l < kTile; ++l) r[l] = a[l] op b;                                    \
    return r;                                                                            \
  }                                                                                      \
  template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>         \
  inline auto operator op(S a, const Lanewise<T>& b) {                                   \
    Lanewise<decltype(a op b[0])> r;                                                     \
    for (int l = 0; l < kTile; ++l) r[l] = a op b[l];                                    \
    return r;                                                                            \
  }                                                                                      \
  template <class T, class B>                                                            \
  inline Lanewise<T>& operator op##=(Lanewise<T>& a, const B& b) {                       \
    return a = a op b;                                                                   \
  }
FS_LANEWISE_BINARY(+) FS_LANEWISE_BINARY(-) FS_LANEWISE_BINARY(*) FS_LANEWISE_BINARY(/)
#undef FS_LANEWISE_BINARY
#define FS_LANEWISE_COMPARE(op)                                                          \
  template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>         \
  inline Lanewise<bool> operator op(const Lanewise<T>& a, S b) {                         \
    Lanewise<bool> r;                                                                    \
    for (int l = 0; l < kTile; ++l) r[l] = a[l] op b;                                    \
    return r;                                                                            \
  }
FS_LANEWISE_COMPARE(<) FS_LANEWISE_COMPARE(>)
#undef FS_LANEWISE_COMPARE
template <class T>
inline Lanewise<T> operator-(const Lanewise<T>& a) {
  Lanewise<T> r;
  for (int l = 0; l < kTile; ++l) r[l] = -a[l];
  return r;
}
template <class T>
inline Lanewise<T> where(const Lanewise<bool>& m, const Lanewise<T>& a, const Lanewise<T>& b) {
  Lanewise<T> r;
  for (int l = 0; l < kTile; ++l) r[l] = m[l] ? a[l] : b[l];
  return r;
}

}  // namespace cpu

template <>
struct LaneAccess<cpu::TimeLanes> {
  static constexpr int count = cpu::kTile;
  static double get(const cpu::TimeLanes& v, int l) { return v[l]; }
  static void set(cpu::TimeLanes& v, int l, double x) { v[l] = x; }
};

#define FS_LANEWISE(name)                                       \
  static V name(V x) {                                          \
    for (int l = 0; l < cpu::kTile; ++l) x[l] = D::name(x[l]);  \
    return x;                                                   \
  }
template <>
struct LaneMath<cpu::TimeLanes> {
  using V = cpu::TimeLanes;
  using D = LaneMath<double>;
  static V fma(const V& w, const V& x, V acc) {
    cpu::fma_doubles(w.v, x.v, acc.v);
    return acc;
  }
  static V fma(float w, const V& x, V acc) {
    V ws;
    for (int l = 0; l < cpu::kTile; ++l) ws[l] = w;
    cpu::fma_doubles(ws.v, x.v, acc.v);
    return acc;
  }
  FS_LANEWISE(exp) FS_LANEWISE(logistic) FS_LANEWISE(expm1) FS_LANEWISE(log1p) FS_LANEWISE(log) FS_LANEWISE(sqrt)
  FS_LANEWISE(tanh) FS_LANEWISE(erf) FS_LANEWISE(sin) FS_LANEWISE(cos)
};
#undef FS_LANEWISE

template <>
struct TimePhase<cpu::Lanes> {
  using Lanes = cpu::TimeLanes;
  static cpu::Lanes round(const cpu::TimeLanes& x) {
    float f[cpu::kTile];
    for (int l = 0; l < cpu::kTile; ++l) f[l] = (float)x[l];
    return cpu::load_lanes(f);
  }
};

template <>
struct LaneAccess<cpu::Lanes> {
  static constexpr int count = cpu::kTile;
  static float get(const cpu::Lanes& v, int l) { return v[l]; }
  static void set(cpu::Lanes& v, int l, float x) { v[l] = x; }
};

// e^x by lanes.h's exp_lanes over the whole vector; the other transcendentals lane by lane
// through libm: only activations and layer norms use them, once per hidden unit (not per
// multiply-add).
#define FS_LANEWISE(name, f)                                        \
  static V name(V x) {                                              \
    for (int i = 0; i < cpu::kTile; ++i) x[i] = ::f(x[i]);          \
    return x;                                                       \
  }
template <>
struct LaneMath<cpu::Lanes> {
  using V = cpu::Lanes;
  using N = cpu::Native;
  using Int = cpu::LanesInt;
  static V fma(V w, V x, V acc) { return cpu::per_register(cpu::native_fma, w, x, acc); }
  static V fma(float w, V x, V acc) {
    const N b = cpu::native_broadcast(w);
    return cpu::per_register([b](N x, N acc) { return cpu::native_fma(b, x, acc); }, x, acc);
  }
  static Int bits(V x) { return cpu::per_register([](N x) { return (cpu::NativeInt)x; }, x); }
  static V from_bits(Int b) { return cpu::per_register([](cpu::NativeInt b) { return (N)b; }, b); }
  static V to_float(Int i) { return cpu::per_register([](cpu::NativeInt i) { return __builtin_convertvector(i, N); }, i); }
  static Int to_int(V x) { return cpu::per_register([](N x) { return __builtin_convertvector(x, cpu::NativeInt); }, x); }
  static V sqrt(V x) { return cpu::per_register(cpu::native_sqrt, x); }
  // max / min with the bound first return x when x is NaN, as LaneMath<float>'s do; one
  // instruction where a compare and a blend were two
  static V at_least(V x, float lo) {
    return cpu::per_register([b = cpu::native_broadcast(lo)](N x) { return cpu::native_max(b, x); }, x);
  }
  static V at_most(V x, float hi) {
    return cpu::per_register([b = cpu::native_broadcast(hi)](N x) { return cpu::native_min(b, x); }, x);
  }
  static V exp(V x) { return exp_lanes(x); }
  static V logistic(V x) { return logistic_lanes(x); }
  FS_LANEWISE(expm1, expm1f)
  FS_LANEWISE(log1p, log1pf)
  FS_LANEWISE(log, logf)
  FS_LANEWISE(tanh, tanhf)
  FS_LANEWISE(erf, erff)
  FS_LANEWISE(sin, sinf)
  FS_LANEWISE(cos, cosf)
};
#undef FS_LANEWISE

}  // namespace fastscore
