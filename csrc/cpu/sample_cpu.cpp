// Fused samplers on the CPU: one tile of kTile samples runs its whole trajectory in SIMD
// lanes (MLP forward + update, step after step) while OpenMP spreads tiles over cores.
#include <omp.h>

#include <vector>

#include "fastscore/samplers.h"
#include "kernels.h"
#include "tile.h"

namespace fastscore {
namespace cpu {

namespace {

// Per-thread buffers: the state, the noise, the score and two hidden layers, as lanes.
struct Workspace {
  explicit Workspace(const MlpLayout& L)
      : x(L.dim), z(L.dim), s(L.dim), h0(L.width), h1(L.width), c(L.width) {}
  std::vector<Lanes> x, z, s, h0, h1;
  std::vector<float> c;  // time bias of the first layer at the current time
};

void em_tile(const MlpLayout& L, const MlpWeights& m, const SdeParams& sde, int steps, double eps,
             uint64_t seed, int64_t index0, Workspace& w) {
  const int D = L.dim;
  const float prior = (float)prior_std(sde);
  fill_normals(seed, index0, 0, kStreamPrior, D, w.x.data());
  for (int d = 0; d < D; ++d) w.x[d] *= prior;
  const double h = (sde.T - eps) / steps;
  for (int k = 0; k < steps; ++k) {
    const double t = grid_time(sde.T, eps, steps, k);
    time_bias(L, m, t, w.c.data());
    mlp_forward<kRows>(L, m, w.c.data(), (float)output_scale(L, t), w.x.data(), w.s.data(), w.h0.data(),
                       w.h1.data());
    fill_normals(seed, index0, (uint32_t)k, kStreamPredictor, D, w.z.data());
    const EmCoeffs e = em_coeffs(sde, t, h);
    for (int d = 0; d < D; ++d) w.x[d] = em_update(e, w.x[d], w.s[d], w.z[d]);
  }
}

}  // namespace

int max_threads() { return omp_get_max_threads(); }

void mlp_eval(const MlpLayout& L, const float* weights, const float* x, int64_t n, double t, float* out) {
  const MlpWeights m = mlp_weights(L, weights);
  std::vector<float> c(L.width);
  time_bias(L, m, t, c.data());
  const float scale = (float)output_scale(L, t);
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    Workspace w(L);
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * L.dim, L.dim, count, w.x.data());
      mlp_forward<kRows>(L, m, c.data(), scale, w.x.data(), w.s.data(), w.h0.data(), w.h1.data());
      store_tile(w.s.data(), L.dim, count, out + first * L.dim);
    }
  }
}

void sample_em(const MlpLayout& L, const float* weights, const SdeParams& sde, int64_t n, int steps,
               double eps, uint64_t seed, int64_t start, float* out) {
  const MlpWeights m = mlp_weights(L, weights);
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    Workspace w(L);
    // dynamic: the last tile is short and threads on a shared machine run at uneven speeds
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      em_tile(L, m, sde, steps, eps, seed, start + first, w);
      store_tile(w.x.data(), L.dim, tile_count(first, n), out + first * L.dim);
    }
  }
}

}  // namespace cpu
}  // namespace fastscore
