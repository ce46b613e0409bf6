// One sampler trajectory over a lane type V: the step loop of every method, shared by the
// CPU tile kernels (V = a SIMD tile, csrc/cpu/sample_cpu.cpp) and the CUDA kernels (V = one
// float per thread, csrc/cuda/). What differs between them comes in as two policies:
//   net(k, stage, t, in, out)   out [dim] = s_theta(in, t), where (k, stage) names the time
//                               (eval_time) so a kernel may look up a precomputed time bias;
//   draws(step, stream, z)      z [dim] = the sample's normals at (step, stream) (philox.h).
#pragma once
#include <cstdint>

#include "common.h"
#include "philox.h"
#include "samplers.h"
#include "sde.h"

namespace fastscore {

// The time of network evaluation (k, stage): stage 0 at t_k, stage 1 (Heun's second) at
// t_k - h; k == steps is the denoising step at eps.
FS_HD double eval_time(const SdeParams& sde, const SampleSpec& p, int k, int stage) {
  if (k == p.steps) return p.eps;
  const double t = grid_time(sde.T, p.eps, p.steps, k);
  return stage == 0 ? t : t - (sde.T - p.eps) / p.steps;
}

// A trajectory's lane arrays, each [dim]: state, Heun's predictor, noise, two scores.
template <class V>
struct PathBuffers {
  V *x, *y, *z, *s, *s2;
};

// x <- a draw from the prior N(0, prior_std^2 I) (step 0 of kStreamPrior)
template <class V, class Draws>
FS_HD void sample_prior(const SdeParams& sde, int D, Draws& draws, V* x) {
  draws(0u, (uint32_t)kStreamPrior, x);
  const float prior = (float)prior_std(sde);
  for (int d = 0; d < D; ++d) x[d] = x[d] * prior;
}

// Steps k0 .. k1 - 1 of the method in p, moving b.x from t_k0 to t_k1.
template <class V, class Net, class Draws>
FS_HD void sample_steps(const SdeParams& sde, const SampleSpec& p, int D, int k0, int k1, Net& net, Draws& draws,
                        PathBuffers<V> b) {
  V *x = b.x, *y = b.y, *z = b.z, *s = b.s, *s2 = b.s2;
  const double h = (sde.T - p.eps) / p.steps;
  for (int k = k0; k < k1; ++k) {
    const double t = eval_time(sde, p, k, 0);
    switch (p.method) {
      case kEM: {
        net(k, 0, t, x, s);
        draws((uint32_t)k, (uint32_t)kStreamPredictor, z);
        const EmCoeffs e = em_coeffs(sde, t, h);
        for (int d = 0; d < D; ++d) x[d] = em_update(e, x[d], s[d], z[d]);
        break;
      }
      case kPC: {
        const PcCoeffs c = pc_coeffs(sde, t, h, p.snr);
        for (int j = 0; j < p.corrector_steps; ++j) {
          net(k, 0, t, x, s);
          draws((uint32_t)k, (uint32_t)(kStreamCorrector + j), z);
          for (int d = 0; d < D; ++d) x[d] = x[d] + c.corr_step * s[d] + c.corr_noise * z[d];
        }
        net(k, 0, t, x, s);
        draws((uint32_t)k, (uint32_t)kStreamPredictor, z);
        for (int d = 0; d < D; ++d) x[d] = c.pred_x * x[d] + c.pred_s * s[d] + c.pred_z * z[d];
        break;
      }
      case kOdeEuler: {
        net(k, 0, t, x, s);
        const EmCoeffs e = ode_euler_coeffs(sde, t, h);
        for (int d = 0; d < D; ++d) x[d] = em_update(e, x[d], s[d], V{});
        break;
      }
      case kOdeHeun: {
        // x_euler = x - h v(x, t); x <- x - h/2 (v(x, t) + v(x_euler, t - h))
        const double t2 = eval_time(sde, p, k, 1);
        net(k, 0, t, x, s);
        const VelocityCoeffs v1 = pf_velocity_coeffs(sde, t), v2 = pf_velocity_coeffs(sde, t2);
        const float hf = (float)h, half = (float)(0.5 * h);
        for (int d = 0; d < D; ++d) {
          s[d] = pf_velocity(v1, x[d], s[d]);  // s now holds the first velocity
          y[d] = x[d] - hf * s[d];
        }
        net(k, 1, t2, y, s2);
        for (int d = 0; d < D; ++d) x[d] = x[d] - half * (s[d] + pf_velocity(v2, y[d], s2[d]));
        break;
      }
    }
  }
}

// x <- E[x_0 | x_eps] (Tweedie), the optional noise-free last step
template <class V, class Net>
FS_HD void denoise_step(const SdeParams& sde, const SampleSpec& p, int D, Net& net, PathBuffers<V> b) {
  net(p.steps, 0, p.eps, b.x, b.s);
  const TweedieCoeffs c = tweedie_coeffs(sde, p.eps);
  for (int d = 0; d < D; ++d) b.x[d] = c.u * b.x[d] + c.w * b.s[d];
}

// The whole trajectory: prior, every step, the optional denoising step.
template <class V, class Net, class Draws>
FS_HD void sample_path(const SdeParams& sde, const SampleSpec& p, int D, Net& net, Draws& draws, PathBuffers<V> b) {
  sample_prior(sde, D, draws, b.x);
  sample_steps(sde, p, D, 0, p.steps, net, draws, b);
  if (p.denoise) denoise_step(sde, p, D, net, b);
}

}  // namespace fastscore
