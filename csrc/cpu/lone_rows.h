// A lone sample's dense rows on the CPU (net.h's Rows policy for lane type float): with one
// sample there are no lanes of samples to fill, so a row is a matrix-vector product vectorised
// over its outputs instead. The k-major weights of adjacent outputs are contiguous, so
// kLoneVectors vectors of kTile outputs each take one weight load per multiply-add, the input
// x[k] broadcast. Every output still sums its products in k order, one rounding per fma
// (LaneMath<Lanes>::fma), as a tile's lane sums them: a lone sample and its lane agree to the bit.
#pragma once

#include "fastscore/net.h"
#include "simd.h"

namespace fastscore {
namespace cpu {

// Calls of fewer samples than this run them one by one (sample_cpu.cpp): a tile of kTile lanes
// would compute its empty lanes too (measured at width 64 on AVX-512: 7 lone samples cost
// about what one tile does)
constexpr int kLoneBelow = kTile / 2;
// The likelihood's points run one by one below this (likelihood_cpu.cpp): with 1 + dim passes
// an evaluation a lone point costs more of a tile than a lone sample does (measured at width
// 64, dim 2, AVX-512: 4 lone rk45 points in 1.2 ms against a tile's 1.5, 5 in 1.5 against 1.5)
constexpr int kLonePointsBelow = kTile * 5 / 16;

// accumulators of one pass over the inputs: 64 outputs, in 4 of AVX-512's 32 registers or 8
// of AVX2's 16 (the weight and the broadcast input take two more)
constexpr int kLoneVectors = kTile >= 8 ? 64 / kTile : 8;

struct OutputVectors {
  static constexpr bool kKMajor = true;
  static void dense(const float* W, const float* ib, const float* ia, int n_in, int n_out, const float* x, float* z) {
    int j = 0;
    for (; j + kLoneVectors * kTile <= n_out; j += kLoneVectors * kTile) block<kLoneVectors>(W, ib, ia, n_in, n_out, x, z, j);
    for (; j + kTile <= n_out; j += kTile) block<1>(W, ib, ia, n_in, n_out, x, z, j);
    // the last n_out % kTile outputs (a score's few): one float chain each
    if (j < n_out) fastscore::dense<4, true>(W, ib, ia, n_in, n_out, x, z, j);
  }

 private:
  // outputs j0 .. j0 + B kTile - 1
  template <int B>
  static void block(const float* W, const float* ib, const float* ia, int n_in, int n_out, const float* x, float* z,
                    int j0) {
    Lanes acc[B];
    for (int b = 0; b < B; ++b) acc[b] = ia ? load_lanes(ia + j0 + b * kTile) : ib ? load_lanes(ib + j0 + b * kTile) : Lanes{};
    for (int k = 0; k < n_in; ++k) {
      const float* w = W + (size_t)k * n_out + j0;
      for (int b = 0; b < B; ++b) acc[b] = LaneMath<Lanes>::fma(x[k], load_lanes(w + b * kTile), acc[b]);
    }
    for (int b = 0; b < B; ++b) store_lanes(acc[b], z + j0 + b * kTile);
  }
};

}  // namespace cpu
}  // namespace fastscore
