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

// Transcendentals lane by lane through libm: only activations and layer norms use them,
// once per hidden unit (not per multiply-add).
#define FS_LANEWISE(name, f)                                        \
  static V name(V x) {                                              \
    for (int i = 0; i < cpu::kTile; ++i) x[i] = ::f(x[i]);          \
    return x;                                                       \
  }
template <>
struct LaneMath<cpu::Lanes> {
  using V = cpu::Lanes;
  static V fma(float w, V x, V acc) {
#if defined(__AVX512F__)
    return (V)_mm512_fmadd_ps(_mm512_set1_ps(w), (__m512)x, (__m512)acc);
#elif defined(__FMA__)
    return (V)_mm256_fmadd_ps(_mm256_set1_ps(w), (__m256)x, (__m256)acc);
#else
    for (int i = 0; i < cpu::kTile; ++i) acc[i] = ::fmaf(w, x[i], acc[i]);
    return acc;
#endif
  }
  FS_LANEWISE(exp, expf)
  FS_LANEWISE(expm1, expm1f)
  FS_LANEWISE(log1p, log1pf)
  FS_LANEWISE(log, logf)
  FS_LANEWISE(sqrt, sqrtf)
  FS_LANEWISE(tanh, tanhf)
  FS_LANEWISE(erf, erff)
  FS_LANEWISE(sin, sinf)
  FS_LANEWISE(cos, cosf)
};
#undef FS_LANEWISE

}  // namespace fastscore
