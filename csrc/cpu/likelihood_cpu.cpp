// Exact-trace log-likelihoods on the CPU: a tile of samples integrates the augmented
// probability-flow ODE (fastscore/likelihood.h) in SIMD lanes while OpenMP spreads tiles
// over cores.
#include <omp.h>

#include <vector>

#include "fastscore/likelihood.h"
#include "fastscore/philox.h"
#include "kernels.h"
#include "tile.h"
#include "workspace.h"

namespace fastscore {
namespace cpu {

namespace {

// the input tangent directions of a tile: unit vectors (exact trace) or probes (Hutchinson)
void set_directions(int D, bool hutchinson, uint64_t seed, int64_t index0, Lanes* dirs) {
  if (hutchinson)
    fill_rademacher(seed, index0, D, dirs);
  else
    unit_directions(D, dirs);
}

}  // namespace

void score_trace(const Net& packed, size_t n_params, const float* x, const double* cond, int64_t n, double t,
                 bool hutchinson, uint64_t seed, float* s, float* tr) {
  const CpuNet staged(packed, n_params);
  const Net& net = staged.net;
  const int D = net.L.dim, nt = hutchinson ? 1 : D;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    LpWorkspace w(net.L, nt);
    const OdeBuffers<Lanes> b = w.buffers();
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * D, D, count, b.y);
      import_cond_tile(net, cond + first * net.L.cond_dim, count, w.arenas);
      set_directions(D, hutchinson, seed, first, b.dirs);
      double ts[kTile];
      for (int l = 0; l < kTile; ++l) ts[l] = t;
      Lanes trl;
      score_and_trace<kRows, kKMajor>(net, nt, ts, b.y, b.y5, &trl, b);
      store_tile(b.y5, D, count, s + first * D);
      store_tile(&trl, 1, count, tr + first);
    }
  }
}

int64_t log_prob(const Net& packed, size_t n_params, const SdeParams& sde, const LogProbPlan& p, const float* x,
                 const double* cond, int64_t n, double* logp, int64_t* nfe) {
  const CpuNet staged(packed, n_params);
  const Net& net = staged.net;
  const int D = net.L.dim, nt = p.hutchinson ? 1 : D;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  int64_t failed = 0;
#pragma omp parallel reduction(+ : failed)
  {
    LpWorkspace w(net.L, nt);
    const OdeBuffers<Lanes> b = w.buffers();
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * D, D, count, b.y);
      import_cond_tile(net, cond + first * net.L.cond_dim, count, w.arenas);
      set_directions(D, p.hutchinson, p.seed, first, b.dirs);
      int64_t tile_nfe[kTile];
      failed += integrate<kRows, kKMajor>(net, sde, p, nt, count, b, tile_nfe);
      for (int l = 0; l < count; ++l) {
        logp[first + l] = lane_log_prob(sde, D, b, l);
        nfe[first + l] = tile_nfe[l];
      }
    }
  }
  return failed;
}

}  // namespace cpu
}  // namespace fastscore
