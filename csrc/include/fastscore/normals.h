// Standard normals in float from the shared stream's words, over any lane type V (lanes.h): a
// CPU tile's samples at once in SIMD, a lone sample or a CUDA thread in float, the same bits.
//
// The math is philox.h's Box–Muller on the same 24-bit uniforms,
//   z0 = r cos(theta), z1 = r sin(theta),  r = sqrt(-2 log u1),  theta = 2 pi m / 2^24,
// evaluated in float with polynomials instead of libm's double functions (which, lane by lane,
// were a fifth of an Euler–Maruyama step): each normal is within 4.6 u of its exact value,
// relative to itself (u = 2^-24; measured over every radius word, every angle word and 5e7
// random pairs; the samplers' rounding bounds allow 8 u, tests/rounding.py; tests/test_rng.py
// holds the header against numpy's float64 draws).
//   log u1: u1 = k 2^-24 with k in [1, 2^24], so log u1 = (e - 24) ln 2 + log f for k = 2^e f,
//     f in [sqrt(1/2), sqrt(2)); Cephes logf's polynomial for log f (1.3 u);
//   the angle: the quadrant and the octant come from the integer m exactly, so the polynomials
//     (Cephes sinf / cosf on [0, pi/4], ~1 u) only ever see psi = (2 pi / 2^24) j with
//     0 <= j <= 2^21, rounded once.
#pragma once
#include <cstdint>

#include "common.h"
#include "lanes.h"
#include "philox.h"

namespace fastscore {

// log x for x = k 2^-24, k a positive integer <= 2^24 held exactly in ki
template <class V>
FS_HD V log_uniform(typename LaneMath<V>::Int ki) {
  using M = LaneMath<V>;
  using I = typename M::Int;
  const I bits = M::bits(M::to_float(ki));
  V e = M::to_float(((bits >> 23) & 0xff) - (127 + 24));
  V f = M::from_bits((bits & 0x7fffff) | 0x3f800000);  // in [1, 2)
  const auto big = f > 1.41421356237309505f;
  f = where(big, f * 0.5f, f);
  e = where(big, e + 1.0f, e);
  const V x = f - 1.0f;  // exact
  const V z = x * x;
  V p = splat<V>(7.0376836292e-2f);
  p = M::fma(p, x, splat<V>(-1.1514610310e-1f));
  p = M::fma(p, x, splat<V>(1.1676998740e-1f));
  p = M::fma(p, x, splat<V>(-1.2420140846e-1f));
  p = M::fma(p, x, splat<V>(1.4249322787e-1f));
  p = M::fma(p, x, splat<V>(-1.6668057665e-1f));
  p = M::fma(p, x, splat<V>(2.0000714765e-1f));
  p = M::fma(p, x, splat<V>(-2.4999993993e-1f));
  p = M::fma(p, x, splat<V>(3.3333331174e-1f));
  V y = (p * x) * z;
  y = M::fma(e, splat<V>(kLn2Lo), y);
  y = M::fma(z, splat<V>(-0.5f), y);
  return M::fma(e, splat<V>(kLn2Hi), x + y);
}

// sin and cos of (2 pi / 2^24) j, 0 <= j <= 2^21 (an angle in [0, pi / 4])
template <class V>
FS_HD void sincos_octant(typename LaneMath<V>::Int j, V& s, V& c) {
  using M = LaneMath<V>;
  const V x = M::to_float(j) * 3.74507028e-7f;  // 2 pi / 2^24
  const V z = x * x;
  V ps = M::fma(splat<V>(-1.9515295891e-4f), z, splat<V>(8.3321608736e-3f));
  ps = M::fma(ps, z, splat<V>(-1.6666654611e-1f));
  s = M::fma(ps * z, x, x);
  V pc = M::fma(splat<V>(2.443315711809948e-5f), z, splat<V>(-1.388731625493765e-3f));
  pc = M::fma(pc, z, splat<V>(4.166664568298827e-2f));
  c = M::fma(pc * z, z, M::fma(z, splat<V>(-0.5f), splat<V>(1.0f)));
}

// Box–Muller on the Philox words w0 (radius) and w1 (angle): (z0, z1)
template <class V>
FS_HD void box_muller_lanes(typename LaneMath<V>::Int w0, typename LaneMath<V>::Int w1, V& z0, V& z1) {
  using M = LaneMath<V>;
  using I = typename M::Int;
  const V r = M::sqrt(log_uniform<V>(((w0 >> 8) & 0xffffff) + 1) * -2.0f);
  const I m = (w1 >> 8) & 0xffffff;            // theta = 2 pi m / 2^24
  const I q = (m >> 22) & 3, j = m & 0x3fffff;  // quadrant q, and phi = 2 pi j / 2^24 in it
  const auto upper = M::to_float(j) > 2097152.0f;  // phi > pi / 4: use pi / 2 - phi
  V s, c;
  sincos_octant<V>(where(upper, 4194304 - j, j), s, c);
  const V cp = where(upper, s, c), sp = where(upper, c, s);  // cos phi, sin phi
  const V qf = M::to_float(q);
  const V cq = where(qf == 0.0f, cp, where(qf == 1.0f, -sp, where(qf == 2.0f, -cp, sp)));
  const V sq = where(qf == 0.0f, sp, where(qf == 1.0f, cp, where(qf == 2.0f, -sp, -cp)));
  z0 = r * cq;
  z1 = r * sq;
}

// Normal draws d = 0..dim-1 (philox.h's addressing: draw d is word d % 4 of block d / 4), from
// words(block, x) that fills x[4] with the lane values of the block's words
template <class V, class Words>
FS_HD void normals_lanes(int dim, const Words& words, V* z) {
  for (int d0 = 0; d0 < dim; d0 += 4) {
    typename LaneMath<V>::Int x[4];
    V zb[4];
    words((uint32_t)(d0 / 4), x);
    box_muller_lanes<V>(x[0], x[1], zb[0], zb[1]);
    if (dim - d0 > 2) box_muller_lanes<V>(x[2], x[3], zb[2], zb[3]);
    const int n = dim - d0 < 4 ? dim - d0 : 4;
    for (int l = 0; l < n; ++l) z[d0 + l] = zb[l];
  }
}

// The float normals of one sample at (seed, sample, step, stream)
FS_HD void draw_normals_float(uint64_t seed, uint32_t sample, uint32_t step, uint32_t stream, int dim, float* z) {
  normals_lanes<float>(dim, [&](uint32_t block, int32_t* x) {
    uint32_t w[4];
    philox_block(seed, sample, step, block, stream, w);
    for (int i = 0; i < 4; ++i) x[i] = (int32_t)w[i];
  }, z);
}

}  // namespace fastscore
