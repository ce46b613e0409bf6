// The CPU lane type: a tile of samples held in SIMD registers as one GCC vector.
// kTile samples per tile; a hidden layer of width w keeps w such vectors (w * kTile
// floats, 8 KiB at w = 64) plus the weights in L1/L2, so a tile runs its whole trajectory
// in cache. kRows is the register blocking of net.h's dense(): kRows accumulators of
// kTile lanes each must fit in the register file (AVX-512: 32 zmm, AVX2: 16 ymm).
#pragma once
#include <immintrin.h>

#include <cmath>

#include "fastscore/lanes.h"

namespace fastscore {
namespace cpu {

// One native register per lane value: GCC lowers wider vector types poorly (element-wise
// splats through memory), so a tile is exactly one register of samples.
#if defined(__AVX512F__)
constexpr int kTile = 16;
constexpr int kRows = 16;  // 16 zmm accumulators of the 32
constexpr const char* kIsa = "AVX-512";
#elif defined(__AVX__)
constexpr int kTile = 8;
constexpr int kRows = 12;  // 12 ymm accumulators of the 16
constexpr const char* kIsa = "AVX2";
#else
constexpr int kTile = 4;
constexpr int kRows = 12;
constexpr const char* kIsa = "SSE2";
#endif

typedef float Lanes __attribute__((vector_size(kTile * sizeof(float))));

}  // namespace cpu

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
  static V fma(V w, V x, V acc) {
#if defined(__AVX512F__)
    return (V)_mm512_fmadd_ps((__m512)w, (__m512)x, (__m512)acc);
#elif defined(__FMA__)
    return (V)_mm256_fmadd_ps((__m256)w, (__m256)x, (__m256)acc);
#else
    for (int i = 0; i < cpu::kTile; ++i) acc[i] = ::fmaf(w[i], x[i], acc[i]);
    return acc;
#endif
  }
  static V fma(float w, V x, V acc) {  // a broadcast, not splat's 0 + w (which must keep -0's sign)
#if defined(__AVX512F__)
    return fma((V)_mm512_set1_ps(w), x, acc);
#elif defined(__AVX__)
    return fma((V)_mm256_set1_ps(w), x, acc);
#else
    return fma((V)_mm_set1_ps(w), x, acc);
#endif
  }
  typedef int32_t Int __attribute__((vector_size(sizeof(V))));  // integer lanes, as LaneMath<float>'s
  static Int bits(V x) { return (Int)x; }
  static V from_bits(Int b) { return (V)b; }
  static V to_float(Int i) { return __builtin_convertvector(i, V); }
  static Int to_int(V x) { return __builtin_convertvector(x, Int); }
  static V sqrt(V x) {  // correctly rounded, as sqrtf
#if defined(__AVX512F__)  // maskz: _mm512_sqrt_ps's undefined pass-through trips GCC 12's -Wmaybe-uninitialized
    return (V)_mm512_maskz_sqrt_ps((__mmask16)0xffff, (__m512)x);
#elif defined(__AVX__)
    return (V)_mm256_sqrt_ps((__m256)x);
#else
    return (V)_mm_sqrt_ps((__m128)x);
#endif
  }
  static V exp(V x) { return exp_lanes(x); }
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
