// Per-sample adaptive samplers on the CPU (fastscore/adaptive_sample.h): a tile of samples
// runs its own step-size controllers in SIMD lanes while OpenMP spreads tiles over cores.
#include <omp.h>

#include <vector>

#include "fastscore/adaptive_sample.h"
#include "kernels.h"
#include "tile.h"
#include "workspace.h"

namespace fastscore {
namespace cpu {

int64_t sample_adaptive(const Net& packed, size_t n_params, const AdaptivePlan& plan, const double* cond, int64_t n,
                        float* out, int64_t* nfe, int64_t* accepted, int64_t* rejected) {
  const SdeParams& sde = plan.sde;
  const LogProbPlan& p = plan.spec;
  const int64_t start = plan.start;
  const CpuNet staged(packed, n_params);
  const Net& net = staged.net;
  const int D = net.L.dim;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  int64_t failed = 0;
#pragma omp parallel reduction(+ : failed)
  {
    LpWorkspace w(net.L, 0);
    const OdeBuffers<Lanes> b = w.buffers();
    std::vector<double> wt(2 * kTile * D + 3 * D);
    // dynamic: tiles take as many steps as their hardest sample
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      fill_normals(p.seed, start + first, 0u, kStreamPrior, D, b.y);
      for (int d = 0; d < D; ++d) b.y[d] = b.y[d] * plan.prior_std;
      import_cond_tile(net, cond + first * net.L.cond_dim, count, w.arenas);
      int64_t tn[kTile], ta[kTile], tr[kTile];
      failed += plan.brownian ? ggf_steps<kRows, kKMajor>(net, sde, p, p.seed, start + first, count, b, wt.data(), tn, ta, tr)
                         : adaptive_steps<kRows, kKMajor>(net, sde, p, 0, sde.T, p.eps, D, count, b, tn, ta, tr);
      if (plan.denoise) {
        denoise_lanes<kRows, kKMajor>(net, sde, p.eps, b);
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
