// Update rules of the samplers, per sample, over a lane type V; reference.py's *_step
// functions are the readable twins. The time grid is
// t_k = T - k h, h = (T - eps) / steps, k = 0..steps-1 (seed 002's loop with an end time
// eps); step k moves x from t_k to t_k - h. Coefficients are formed in double.
#pragma once
#include <cmath>

#include "common.h"
#include "sde.h"

namespace fastscore {

// sampling methods, codes shared with fastscore/backends/cpu.py
enum SampleMethod : int { kEM = 0, kPC = 1, kOdeEuler = 2, kOdeHeun = 3 };

// A sampling request: everything but the network and the SDE (fastscore/plan.py SamplePlan).
struct SampleSpec {
  int method;
  int steps;
  double eps;
  unsigned long long seed;
  long long start;  // stream index of the first sample
  double snr;
  int corrector_steps;
  bool denoise;
};

FS_HD double grid_time(double T, double eps, int steps, int k) {
  return T - k * ((T - eps) / steps);
}

// Reverse-SDE Euler–Maruyama (seed 002's reverse_step for any SDE):
// x <- x - (f(t) x - g(t)^2 s) h + g(t) sqrt(h) z, written x + a x + b s + c z.
struct EmCoeffs {
  float a, b, c;
};

FS_HD EmCoeffs em_coeffs(const SdeParams& sde, double t, double h) {
  const double g2 = diffusion_sq(sde, t);
  EmCoeffs k;
  k.a = (float)(-drift_coeff(sde, t) * h);
  k.b = (float)(g2 * h);
  k.c = (float)sqrt(g2 * h);
  return k;
}

template <class V>
FS_HD V em_update(const EmCoeffs& k, V x, V s, V z) {
  return x + k.a * x + k.b * s + k.c * z;
}

// Probability-flow ODE, explicit Euler from t to t - h: x <- x - h (f(t) x - 1/2 g(t)^2 s),
// the same update form with no noise.
FS_HD EmCoeffs ode_euler_coeffs(const SdeParams& sde, double t, double h) {
  EmCoeffs k;
  k.a = (float)(-drift_coeff(sde, t) * h);
  k.b = (float)(0.5 * diffusion_sq(sde, t) * h);
  k.c = 0.0f;
  return k;
}

// Probability-flow velocity v = f(t) x - 1/2 g(t)^2 s as v = p x + q s (Heun's stages)
struct VelocityCoeffs {
  float p, q;
};

FS_HD VelocityCoeffs pf_velocity_coeffs(const SdeParams& sde, double t) {
  VelocityCoeffs v;
  v.p = (float)drift_coeff(sde, t);
  v.q = (float)(-0.5 * diffusion_sq(sde, t));
  return v;
}

template <class V>
FS_HD V pf_velocity(const VelocityCoeffs& v, V x, V s) {
  return v.p * x + v.q * s;
}

// Predictor–corrector (reference.pc_step): Langevin corrector x <- x + e s + sqrt(2 e) z with
// e = 2 a^2 (snr sigma(t))^2, then the reverse-diffusion predictor
// x <- (2 - a) x + G^2 s + G z over the exact transition (a, G^2) from t - h to t.
struct PcCoeffs {
  float corr_step, corr_noise;  // e, sqrt(2 e)
  float pred_x, pred_s, pred_z;  // 2 - a, G^2, G
};

FS_HD PcCoeffs pc_coeffs(const SdeParams& sde, double t, double h, double snr) {
  double a, G2;
  transition(sde, t, t - h, &a, &G2);
  const double sig = marginal_std(sde, t);
  const double e = 2.0 * a * a * (snr * sig) * (snr * sig);
  PcCoeffs k;
  k.corr_step = (float)e;
  k.corr_noise = (float)sqrt(2.0 * e);
  k.pred_x = (float)(2.0 - a);
  k.pred_s = (float)G2;
  k.pred_z = (float)sqrt(G2);
  return k;
}

// Tweedie's denoising step E[x_0 | x_t] = (x + sigma(t)^2 s) / m(t), as x <- u x + w s
struct TweedieCoeffs {
  float u, w;
};

FS_HD TweedieCoeffs tweedie_coeffs(const SdeParams& sde, double t) {
  const double m = mean_coeff(sde, t), sig = marginal_std(sde, t);
  TweedieCoeffs k;
  k.u = (float)(1.0 / m);
  k.w = (float)(sig * sig / m);
  return k;
}

}  // namespace fastscore
