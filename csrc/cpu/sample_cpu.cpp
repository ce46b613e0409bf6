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

// Per-thread buffers, as lanes: state, a second state (Heun's predictor), noise, two
// scores, two hidden layers; and the first layer's time bias at the current time.
struct Workspace {
  explicit Workspace(const MlpLayout& L)
      : x(L.dim), y(L.dim), z(L.dim), s(L.dim), s2(L.dim), h0(L.width), h1(L.width), c(L.width),
        phi(embed_dim(L)) {}
  std::vector<Lanes> x, y, z, s, s2, h0, h1;
  std::vector<float> c;
  std::vector<double> phi;
};

// Runs the tile's samples through the network at time t: out = s_theta(in, t).
struct Network {
  const MlpLayout& L;
  const MlpWeights& m;
  Workspace& w;
  void operator()(double t, const Lanes* in, Lanes* out) {
    time_bias<kKMajor>(L, m, t, w.phi.data(), w.c.data());
    mlp_forward<kRows, kKMajor>(L, m, w.c.data(), (float)output_scale(L, t), in, out, w.h0.data(), w.h1.data());
  }
};

void sample_tile(const MlpLayout& L, const MlpWeights& m, const SdeParams& sde, const SampleSpec& p,
                 int64_t index0, Workspace& w) {
  const int D = L.dim;
  Network net{L, m, w};
  Lanes *x = w.x.data(), *y = w.y.data(), *z = w.z.data(), *s = w.s.data(), *s2 = w.s2.data();
  fill_normals(p.seed, index0, 0, kStreamPrior, D, x);
  const float prior = (float)prior_std(sde);
  for (int d = 0; d < D; ++d) x[d] *= prior;
  const double h = (sde.T - p.eps) / p.steps;
  for (int k = 0; k < p.steps; ++k) {
    const double t = grid_time(sde.T, p.eps, p.steps, k);
    switch (p.method) {
      case kEM: {
        net(t, x, s);
        fill_normals(p.seed, index0, (uint32_t)k, kStreamPredictor, D, z);
        const EmCoeffs e = em_coeffs(sde, t, h);
        for (int d = 0; d < D; ++d) x[d] = em_update(e, x[d], s[d], z[d]);
        break;
      }
      case kPC: {
        const PcCoeffs c = pc_coeffs(sde, t, h, p.snr);
        for (int j = 0; j < p.corrector_steps; ++j) {
          net(t, x, s);
          fill_normals(p.seed, index0, (uint32_t)k, kStreamCorrector + j, D, z);
          for (int d = 0; d < D; ++d) x[d] = x[d] + c.corr_step * s[d] + c.corr_noise * z[d];
        }
        net(t, x, s);
        fill_normals(p.seed, index0, (uint32_t)k, kStreamPredictor, D, z);
        for (int d = 0; d < D; ++d) x[d] = c.pred_x * x[d] + c.pred_s * s[d] + c.pred_z * z[d];
        break;
      }
      case kOdeEuler: {
        net(t, x, s);
        const EmCoeffs e = ode_euler_coeffs(sde, t, h);
        for (int d = 0; d < D; ++d) x[d] = em_update(e, x[d], s[d], Lanes{});
        break;
      }
      case kOdeHeun: {
        // x_euler = x - h v(x, t); x <- x - h/2 (v(x, t) + v(x_euler, t - h))
        net(t, x, s);
        const VelocityCoeffs v1 = pf_velocity_coeffs(sde, t), v2 = pf_velocity_coeffs(sde, t - h);
        const float hf = (float)h, half = (float)(0.5 * h);
        for (int d = 0; d < D; ++d) {
          s[d] = pf_velocity(v1, x[d], s[d]);  // s now holds the first velocity
          y[d] = x[d] - hf * s[d];
        }
        net(t - h, y, s2);
        for (int d = 0; d < D; ++d) x[d] = x[d] - half * (s[d] + pf_velocity(v2, y[d], s2[d]));
        break;
      }
    }
  }
  if (p.denoise) {
    net(p.eps, x, s);
    const TweedieCoeffs c = tweedie_coeffs(sde, p.eps);
    for (int d = 0; d < D; ++d) x[d] = c.u * x[d] + c.w * s[d];
  }
}

}  // namespace

int max_threads() { return omp_get_max_threads(); }

void mlp_eval(const MlpLayout& L, const float* weights, const float* x, int64_t n, double t, float* out) {
  const CpuWeights staged(L, weights);
  const MlpWeights& m = staged.view;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    Workspace w(L);
    Network net{L, m, w};
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * L.dim, L.dim, count, w.x.data());
      net(t, w.x.data(), w.s.data());
      store_tile(w.s.data(), L.dim, count, out + first * L.dim);
    }
  }
}

void sample(const MlpLayout& L, const float* weights, const SdeParams& sde, const SampleSpec& spec, int64_t n,
            float* out) {
  const CpuWeights staged(L, weights);
  const MlpWeights& m = staged.view;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    Workspace w(L);
    // dynamic: the last tile is short and threads on a shared machine run at uneven speeds
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      sample_tile(L, m, sde, spec, spec.start + first, w);
      store_tile(w.x.data(), L.dim, tile_count(first, n), out + first * L.dim);
    }
  }
}

}  // namespace cpu
}  // namespace fastscore
