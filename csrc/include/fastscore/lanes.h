// The lane type V that the per-sample math is written over.
// On the GPU V = float (one trajectory per thread); on the CPU V is a tile of samples in
// one or two SIMD registers (csrc/cpu/simd.h). Both support +, -, *, / with float scalars,
// comparisons and where(cond, a, b) (not `?:`, which a struct cannot overload); what
// differs (transcendentals, and the fused multiply-add of the dense rows) goes through
// LaneMath<V>, a class template so the CPU specialisation can be declared after this header
// (plain overloads would not be found for built-in vector types). LaneMath<V>::fma(w, x, acc)
// = w x + acc rounded once, written out: left to -ffp-contract, the compiler fuses some
// products in one lane type and not in another, and a lone sample (float) would part from
// its lane of a tile by an ulp.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.h"

namespace fastscore {

template <class V>
struct LaneMath;

template <class V>
FS_HD V exp_lanes(V x);
template <class V>
FS_HD V logistic_lanes(V x);
template <class V>
FS_HD V pow2i(V n);

template <>
struct LaneMath<float> {
  using Int = int32_t;  // the integer lanes of the same width (bit patterns, small integers)
  static FS_HD float fma(float w, float x, float acc) { return ::fmaf(w, x, acc); }
  static FS_HD Int bits(float x) {
    Int b;
    memcpy(&b, &x, sizeof b);
    return b;
  }
  static FS_HD float from_bits(Int b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
  }
  static FS_HD float to_float(Int i) { return (float)i; }
  static FS_HD Int to_int(float x) { return (Int)x; }  // toward zero
  // lo where x < lo, hi where x > hi, else x (NaN stays NaN)
  static FS_HD float at_least(float x, float lo) { return x < lo ? lo : x; }
  static FS_HD float at_most(float x, float hi) { return x > hi ? hi : x; }
  static FS_HD float exp(float x) { return exp_lanes(x); }
  static FS_HD float logistic(float x) { return logistic_lanes(x); }
  static FS_HD float expm1(float x) { return ::expm1f(x); }
  static FS_HD float log1p(float x) { return ::log1pf(x); }
  static FS_HD float log(float x) { return ::logf(x); }
  static FS_HD float sqrt(float x) { return ::sqrtf(x); }
  static FS_HD float tanh(float x) { return ::tanhf(x); }
  static FS_HD float erf(float x) { return ::erff(x); }
  static FS_HD float sin(float x) { return ::sinf(x); }
  static FS_HD float cos(float x) { return ::cosf(x); }
};

// the time and cond phases of a network program run in double (fastscore/net.h)
template <>
struct LaneMath<double> {
  static FS_HD double fma(double w, double x, double acc) { return ::fma(w, x, acc); }
  static FS_HD double exp(double x) { return ::exp(x); }
  static FS_HD double logistic(double x) { return 1.0 / (1.0 + ::exp(-x)); }
  static FS_HD double expm1(double x) { return ::expm1(x); }
  static FS_HD double log1p(double x) { return ::log1p(x); }
  static FS_HD double log(double x) { return ::log(x); }
  static FS_HD double sqrt(double x) { return ::sqrt(x); }
  static FS_HD double tanh(double x) { return ::tanh(x); }
  static FS_HD double erf(double x) { return ::erf(x); }
  static FS_HD double sin(double x) { return ::sin(x); }
  static FS_HD double cos(double x) { return ::cos(x); }
};

// How many samples one lane value holds, and access to sample l of it, for the per-sample
// bookkeeping (times, step sizes, done flags) of the adaptive integrator. A class template
// for the same reason as LaneMath; the CPU specialisation is in csrc/cpu/simd.h.
template <class V>
struct LaneAccess;

template <>
struct LaneAccess<float> {
  static constexpr int count = 1;
  static FS_HD float get(float v, int) { return v; }
  static FS_HD void set(float& v, int, float x) { v = x; }
};
template <>
struct LaneAccess<double> {
  static constexpr int count = 1;
  static FS_HD double get(double v, int) { return v; }
  static FS_HD void set(double& v, int, double x) { v = x; }
};

// The time phase (net.h run_time) runs in double, one lane per sample at the sample's own time
// (the adaptive integrators' lanes each have theirs): TimePhase<V>::Lanes is its lane type for
// lane type V, round() an export rounded once to V. One lane (a GPU thread): double. The CPU
// tile's is in csrc/cpu/simd.h.
template <class V>
struct TimePhase;
template <>
struct TimePhase<float> {
  using Lanes = double;
  static FS_HD float round(double x) { return (float)x; }
};

// a lane value with every lane equal to c
template <class V>
FS_HD V splat(float c) {
  return V{} + c;
}

// m ? a : b lane by lane (a CPU lane type that is not a GCC vector brings its own overload)
template <class M, class V>
FS_HD V where(M m, V a, V b) {
  return m ? a : b;
}

// ln 2 = kLn2Hi + kLn2Lo (Cody–Waite): kLn2Hi has 9 significant bits, so n kLn2Hi is exact
// for the exponents n that exp_lanes and normals.h's log_uniform meet
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
// 1.5 x 2^23: (y + kRoundMagic) - kRoundMagic rounds y to an integer
constexpr float kRoundMagic = 12582912.0f;

// 2^n for integral n in [-126, 127]: its exponent field
template <class V>
FS_HD V pow2i(V n) {
  using M = LaneMath<V>;
  return M::from_bits((M::to_int(n) + 127) << 23);
}

// e^x = y 2^n for x clamped to [lo, hi]: Cody–Waite reduction x = n ln 2 + r, |r| <= ln2/2,
// then Cephes expf's polynomial for y = e^r (n returned as a float).
template <class V>
FS_HD V exp_reduced(V x, float lo, float hi, V& n) {
  using M = LaneMath<V>;
  x = M::at_most(M::at_least(x, lo), hi);
  n = M::fma(x, splat<V>(1.44269504088896341f), splat<V>(kRoundMagic)) - kRoundMagic;
  V r = M::fma(n, splat<V>(-kLn2Hi), x);
  r = M::fma(n, splat<V>(-kLn2Lo), r);
  V p = splat<V>(1.9875691500e-4f);
  p = M::fma(p, r, splat<V>(1.3981999507e-3f));
  p = M::fma(p, r, splat<V>(8.3334519073e-3f));
  p = M::fma(p, r, splat<V>(4.1665795894e-2f));
  p = M::fma(p, r, splat<V>(1.6666665459e-1f));
  p = M::fma(p, r, splat<V>(5.0000001201e-1f));
  return M::fma(p, r * r, r) + 1.0f;
}

// e^x in float, within 1.01 ulp of the exact value wherever it is a normal float (checked over
// every float in [-103, 88.7]; below, the subnormal results are within 2e-38), 0 for x <= -104,
// +inf above 88.73 and for +inf, NaN for NaN: exp_reduced on [-104, 89], scaled by 2^n in two
// exact halves (so n may leave the normal exponents). Written once over any lane type with
// explicit fmas: a tile (where libm's expf lane by lane was the price of a SiLU network), a
// lone sample and a CUDA thread get the same bits.
template <class V>
FS_HD V exp_lanes(V x) {
  using M = LaneMath<V>;
  V n;
  const V y = exp_reduced(x, -104.0f, 89.0f, n);
  const V h = M::fma(n, splat<V>(0.5f), splat<V>(kRoundMagic)) - kRoundMagic;
  return y * pow2i(h) * pow2i(n - h);
}

// The logistic function 1 / (1 + e^-x) in float (SiLU, sigmoid, and the slopes of softplus and
// mish): within 2.5 ulp of the exact value where that is a normal float, 1 for x >= 17, within
// 2^-126 below -87.3 where it is subnormal, NaN for NaN (checked over every float in [-110, 110],
// a tile against a lone float too). e^-x is exp_reduced on [-87.33, 88.37], where 2^n is one
// normal float, so it is scaled once, not in exp_lanes's two halves: the clamp changes only
// results that are 1 or subnormal. On AVX2 a SiLU row took 42 cycles per unit of a tile through
// exp_lanes with a compare and blend per clamp, 31 like this.
template <class V>
FS_HD V logistic_lanes(V x) {
  V n;
  const V y = exp_reduced(-x, -87.33f, 88.37f, n);
  const V one = splat<V>(1.0f);
  return one / (one + y * pow2i(n));
}

}  // namespace fastscore
