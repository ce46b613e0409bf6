#pragma once
#include "common.h"

// Counter-based random numbers shared by every backend.
//
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11; the Random123 library) maps a 128-bit counter and a 64-bit key to 128
// random bits with no state. Every draw is addressed instead of sequenced:
//
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (sample i, step k, block b, stream)
//
// so a sample's numbers do not depend on the batch split, the thread count or
// the device, and the C++, CUDA and numpy (fastscore/rng.py) backends produce
// the same trajectory for the same (seed, sample). tests/test_rng.py holds this
// header against the numpy reference.

#include <math.h>

#include <cstdint>

namespace fastscore {

// Fourth counter word: which consumer of randomness a block belongs to, so the
// prior, the predictor noise, the Hutchinson probes and every corrector sweep
// never share numbers. Corrector sweep j uses kStreamCorrector + j.
enum Stream : uint32_t {
  kStreamPrior = 0,
  kStreamPredictor = 1,
  kStreamProbe = 2,
  kStreamBrownian = 3,  // the adaptive SDE sampler's Brownian trees (adaptive_sample.h)
  kStreamCorrector = 16,
};

namespace philox_detail {

constexpr uint32_t kM0 = 0xD2511F53u;  // round multipliers
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;  // Weyl key increments (golden ratio, sqrt(3)-1)
constexpr uint32_t kW1 = 0xBB67AE85u;

FS_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  hi = __umulhi(a, b);
  lo = a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
#endif
}

// 24-bit uniforms: every 24-bit integer times 2^-24 is exact in float32 (and in
// float64), so all backends, whatever their precision, start Box-Muller from
// bit-identical uniforms; only the transcendental functions round differently.
template <class Real>
FS_HD Real u_open(uint32_t x) {  // in (0, 1]: safe for log
  return static_cast<Real>((x >> 8) + 1u) * static_cast<Real>(5.9604644775390625e-08);
}
template <class Real>
FS_HD Real u_half(uint32_t x) {  // in [0, 1): an angle in [0, 2 pi)
  return static_cast<Real>(x >> 8) * static_cast<Real>(5.9604644775390625e-08);
}

}  // namespace philox_detail

// Philox4x32 with 10 rounds; matches the Random123 known-answer vectors.
FS_HD void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  using namespace philox_detail;
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {  // key bump between rounds (unsigned wrap-around is intended)
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, c0, hi0, lo0);
    mulhilo(kM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// The 128 random bits at address (seed; sample, step, block, stream).
FS_HD void philox_block(uint64_t seed, uint32_t sample, uint32_t step, uint32_t block,
                        uint32_t stream, uint32_t out[4]) {
  const uint32_t ctr[4] = {sample, step, block, stream};
  const uint32_t key[2] = {static_cast<uint32_t>(seed & 0xffffffffu),
                           static_cast<uint32_t>(seed >> 32)};
  philox4x32_10(ctr, key, out);
}

// Four standard normals from one block, in double: Box-Muller on (x0, x1) -> (z0, z1) and on
// (x2, x3) -> (z2, z3). (The samplers' float normals: normals.h.)
FS_HD void box_muller4(const uint32_t x[4], double z[4]) {
  using namespace philox_detail;
  const double two_pi = 6.283185307179586476925286766559;
  for (int p = 0; p < 2; ++p) {
    const double r = ::sqrt(-2.0 * ::log(u_open<double>(x[2 * p])));
    const double th = two_pi * u_half<double>(x[2 * p + 1]);
    z[2 * p] = r * ::cos(th);
    z[2 * p + 1] = r * ::sin(th);
  }
}

// Normal draws d = 0..dim-1 of (seed, sample, step, stream): draw d is lane
// d % 4 of block d / 4. Lanes past dim in the last block are dropped, so the
// draws for a smaller dim are a prefix of those for a larger one.
FS_HD void draw_normals(uint64_t seed, uint32_t sample, uint32_t step, uint32_t stream, int dim, double* z) {
  for (int d0 = 0; d0 < dim; d0 += 4) {
    uint32_t x[4];
    double zb[4];
    philox_block(seed, sample, step, static_cast<uint32_t>(d0 / 4), stream, x);
    box_muller4(x, zb);
    const int n = dim - d0 < 4 ? dim - d0 : 4;
    for (int l = 0; l < n; ++l) z[d0 + l] = zb[l];
  }
}

// Rademacher (+-1) draws for the Hutchinson trace probes: the top bit of the
// word at lane d % 4 of block d / 4 on stream kStreamProbe.
template <class Real>
FS_HD void draw_rademacher(uint64_t seed, uint32_t sample, uint32_t step, int dim, Real* z) {
  for (int d0 = 0; d0 < dim; d0 += 4) {
    uint32_t x[4];
    philox_block(seed, sample, step, static_cast<uint32_t>(d0 / 4), kStreamProbe, x);
    const int n = dim - d0 < 4 ? dim - d0 : 4;
    for (int l = 0; l < n; ++l)
      z[d0 + l] = (x[l] >> 31) == 0u ? static_cast<Real>(1) : static_cast<Real>(-1);
  }
}

}  // namespace fastscore
