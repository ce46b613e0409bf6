// The lane type V that the per-sample math is written over.
// On the GPU V = float (one trajectory per thread); on the CPU V is a GCC vector of
// samples (a tile in SIMD lanes, csrc/cpu/simd.h). Both support +, -, *, / with float
// scalars, comparisons and `cond ? a : b`; what differs (transcendentals, and the fused
// multiply-add of the dense rows) goes through LaneMath<V>, a class template so the CPU
// specialisation can be declared after this header (plain overloads would not be found for
// built-in vector types). LaneMath<V>::fma(w, x, acc) = w x + acc rounded once, written out:
// left to -ffp-contract, the compiler fuses some products in one lane type and not in
// another, and a lone sample (float) would part from its lane of a tile by an ulp.
#pragma once
#include <cmath>

#include "common.h"

namespace fastscore {

template <class V>
struct LaneMath;

template <>
struct LaneMath<float> {
  static FS_HD float fma(float w, float x, float acc) { return ::fmaf(w, x, acc); }
  static FS_HD float exp(float x) { return ::expf(x); }
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

// a lane value with every lane equal to c
template <class V>
FS_HD V splat(float c) {
  return V{} + c;
}

}  // namespace fastscore
