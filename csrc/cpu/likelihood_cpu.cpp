// Exact-trace log-likelihoods on the CPU: a tile of samples integrates the augmented
// probability-flow ODE (fastscore/likelihood.h) in SIMD lanes while OpenMP spreads tiles
// over cores (rk45: each thread's tile of lanes, refilled point by point).
#include <omp.h>

#include <atomic>
#include <vector>

#include "fastscore/likelihood.h"
#include "fastscore/philox.h"
#include "kernels.h"
#include "lone_rows.h"
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
    OdeWorkspace<Lanes> w(net.L, nt);
    const OdeBuffers<Lanes> b = w.buffers();
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * D, D, count, b.y);
      import_cond_tile(net, cond + first * net.L.cond_dim, count, w.ca.data(), w.a.data());
      set_directions(D, hutchinson, seed, first, b.dirs);
      double ts[kTile];
      for (int l = 0; l < kTile; ++l) ts[l] = t;
      Lanes trl;
      score_and_trace<TileRows>(net, nt, ts, b.y, b.y5, &trl, b);
      store_tile(b.y5, D, count, s + first * D);
      store_tile(&trl, 1, count, tr + first);
    }
  }
}

namespace {

// rk45: every thread keeps a tile of lanes busy, a lane that is done taking the next point (the
// points' shared counter), so no lane idles while a tile's slowest point finishes
int64_t log_prob_refilled(const Net& net, const SdeParams& sde, const LogProbPlan& p, const float* x,
                          const double* cond, int64_t n, double* logp, int64_t* nfe) {
  const int D = net.L.dim, nt = p.hutchinson ? 1 : D;
  std::atomic<int64_t> next{0};
  int64_t failed = 0;
#pragma omp parallel reduction(+ : failed)
  {
    OdeWorkspace<Lanes> w(net.L, nt);
    const OdeBuffers<Lanes> b = w.buffers();
    if (!p.hutchinson) unit_directions(D, b.dirs);
    int64_t point[kTile], lane_nfe[kTile];
    // lane l <- the next point: x, delta = 0, its condition and probe; false when none is left
    const auto load = [&](int l) {
      const int64_t i = next.fetch_add(1);
      if (i >= n) return false;
      point[l] = i;
      for (int d = 0; d < D; ++d) b.y[d][l] = x[i * D + d];
      b.y[D][l] = 0.0f;
      b.comp[0][l] = 0.0f;
      if (net.L.cond_dim > 0)
        import_cond_lane<kKMajor>(net, cond + i * net.L.cond_dim, w.ca.data(), w.a.data(), l);
      if (p.hutchinson) rademacher_lane(p.seed, p.start + i, D, b.dirs, l);
      return true;
    };
    for (int c = 0; c <= D; ++c) b.y[c] = Lanes{};
    int count = 0;
    while (count < kTile && load(count)) ++count;
    if (count > 0)
      failed += adaptive_steps<TileRows>(net, sde, p, nt, p.eps, sde.T, D + 1, count, b, lane_nfe, nullptr, nullptr,
                                         [&](int l) {
                                           logp[point[l]] = lane_log_prob(sde, D, b, l);
                                           nfe[point[l]] = lane_nfe[l];
                                           return load(l);
                                         });
  }
  return failed;
}

// Points one at a time on the calling thread (n < kLonePointsBelow: a tile would compute its
// empty lanes too), lane type float with the rows vectorised over outputs: a tile lane's bits.
int64_t log_prob_lone(const Net& net, const SdeParams& sde, const LogProbPlan& p, const float* x, const double* cond,
                      int64_t n, double* logp, int64_t* nfe) {
  const NetLayout& L = net.L;
  OdeWorkspace<float> w(L, p.hutchinson ? 1 : L.dim);
  const OdeBuffers<float> b = w.buffers();
  int64_t failed = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (L.cond_dim > 0) import_cond_lane<kKMajor>(net, cond + i * L.cond_dim, w.ca.data(), w.a.data(), 0);
    failed += log_prob_one<OutputVectors>(net, sde, p, x + i * L.dim, i, b, logp + i, nfe + i);
  }
  return failed;
}

}  // namespace

int64_t log_prob(const Net& packed, size_t n_params, const SdeParams& sde, const LogProbPlan& p, const float* x,
                 const double* cond, int64_t n, double* logp, int64_t* nfe) {
  const CpuNet staged(packed, n_params);
  const Net& net = staged.net;
  if (n < kLonePointsBelow) return log_prob_lone(net, sde, p, x, cond, n, logp, nfe);
  if (p.adaptive) return log_prob_refilled(net, sde, p, x, cond, n, logp, nfe);
  const int D = net.L.dim, nt = p.hutchinson ? 1 : D;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  int64_t failed = 0;
#pragma omp parallel reduction(+ : failed)
  {
    OdeWorkspace<Lanes> w(net.L, nt);
    const OdeBuffers<Lanes> b = w.buffers();
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * D, D, count, b.y);
      import_cond_tile(net, cond + first * net.L.cond_dim, count, w.ca.data(), w.a.data());
      set_directions(D, p.hutchinson, p.seed, p.start + first, b.dirs);
      int64_t tile_nfe[kTile];
      failed += integrate<TileRows>(net, sde, p, nt, count, b, tile_nfe);
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
