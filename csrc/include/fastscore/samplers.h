// Update rules of the samplers, per sample, over a lane type V. The time grid is
// t_k = T - k h, h = (T - eps) / steps, k = 0..steps-1 (seed 002's loop with an end time
// eps); step k moves x from t_k to t_k - h. Coefficients are formed in double.
#pragma once
#include <cmath>

#include "common.h"
#include "sde.h"

namespace fastscore {

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

}  // namespace fastscore
