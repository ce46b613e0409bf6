// Per-sample adaptive samplers on the CPU (fastscore/adaptive_sample.h): a tile of samples
// runs its own step-size controllers in SIMD lanes while OpenMP spreads tiles over cores.
#include <omp.h>

#include <vector>

#include "fastscore/adaptive_sample.h"
#include "kernels.h"
#include "lone_rows.h"
#include "tile.h"
#include "workspace.h"

namespace fastscore {
namespace cpu {

namespace {

// Samples one at a time on the calling thread (n < kLoneBelow: a tile would compute its empty
// lanes too), lane type float with the rows vectorised over outputs: a tile lane's bits.
int64_t sample_adaptive_lone(const Net& net, const AdaptivePlan& plan, const double* cond, int64_t n, float* out,
                             int64_t* nfe, int64_t* accepted, int64_t* rejected) {
  const NetLayout& L = net.L;
  OdeWorkspace<float> w(L, 0);
  const OdeBuffers<float> b = w.buffers();
  std::vector<double> wt(ggf_scratch(1, L.dim));
  int64_t failed = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (L.cond_dim > 0) import_cond_lane<kKMajor>(net, cond + i * L.cond_dim, w.ca.data(), w.a.data(), 0);
    failed += adaptive_sample_one<OutputVectors>(net, plan, (uint32_t)(plan.start + i), b, wt.data(), nfe + i,
                                                 accepted + i, rejected + i);
    for (int d = 0; d < L.dim; ++d) out[i * L.dim + d] = w.y[d];
  }
  return failed;
}

}  // namespace

int64_t sample_adaptive(const Net& packed, size_t n_params, const AdaptivePlan& plan, const double* cond, int64_t n,
                        float* out, int64_t* nfe, int64_t* accepted, int64_t* rejected) {
  const SdeParams& sde = plan.sde;
  const LogProbPlan& p = plan.spec;
  const int64_t start = plan.start;
  const CpuNet staged(packed, n_params);
  const Net& net = staged.net;
  if (n < kLoneBelow) return sample_adaptive_lone(net, plan, cond, n, out, nfe, accepted, rejected);
  const int D = net.L.dim;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  int64_t failed = 0;
#pragma omp parallel reduction(+ : failed)
  {
    OdeWorkspace<Lanes> w(net.L, 0);
    const OdeBuffers<Lanes> b = w.buffers();
    std::vector<double> wt(ggf_scratch(kTile, D));
    // dynamic: tiles take as many steps as their hardest sample
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      fill_normals(p.seed, start + first, 0u, kStreamPrior, D, b.y);
      for (int d = 0; d < D; ++d) b.y[d] = b.y[d] * plan.prior_std;
      import_cond_tile(net, cond + first * net.L.cond_dim, count, w.ca.data(), w.a.data());
      int64_t tn[kTile], ta[kTile], tr[kTile];
      failed += plan.brownian ? ggf_steps<TileRows>(net, sde, p, p.seed, start + first, count, b, wt.data(), tn, ta, tr)
                              : adaptive_steps<TileRows>(net, sde, p, 0, sde.T, p.eps, D, count, b, tn, ta, tr);
      if (plan.denoise) {
        denoise_lanes<TileRows>(net, sde, p.eps, b);
        for (int l = 0; l < kTile; ++l) tn[l] += 1;
      }
      store_tile(b.y, D, count, out + first * D);
      for (int l = 0; l < count; ++l) {
        nfe[first + l] = tn[l];
        accepted[first + l] = ta[l];
        rejected[first + l] = tr[l];
      }
    }
  }
  return failed;
}

}  // namespace cpu
}  // namespace fastscore
