// Closed-form coefficients of the linear forward SDEs dx = f(t) x dt + g(t) dW.
// Mirrors fastscore/sde.py formula by formula (tests/test_sde.py holds them together).
// Evaluated in double once per step or stage, then rounded to the kernel's precision.
#pragma once
#include <cmath>

#include "common.h"

namespace fastscore {

enum SdeKind : int { kVP = 0, kVE = 1, kSubVP = 2, kCosineVP = 3, kGeometricVE = 4, kEDM = 5 };

// VP / sub-VP: p0 = beta_min, p1 = beta_max. VE: p0 = sigma, p1 unused. Cosine VP: p0 = s.
// Geometric VE: p0 = sigma_min, p1 = sigma_max. EDM: T = sigma_max, p0 and p1 unused.
struct SdeParams {
  int kind;
  double p0, p1, T;
};

FS_HD double beta_of(const SdeParams& s, double t) { return s.p0 + (s.p1 - s.p0) * t / s.T; }

// int_0^t beta(s) ds for the linear schedule
FS_HD double beta_integral(const SdeParams& s, double t) {
  return s.p0 * t + 0.5 * (s.p1 - s.p0) * t * t / s.T;
}

// cosine VP: theta(t) = pi/2 (t + s) / (1 + s), m(t) = cos theta(t) / cos theta(0), and
// sigma^2 = 1 - m^2 = sin(theta - theta0) sin(theta + theta0) / cos^2 theta0 (no cancellation)
FS_HD double cosine_theta(const SdeParams& s, double t) { return 0.5 * M_PI * (t + s.p0) / (1.0 + s.p0); }
FS_HD double cosine_std(const SdeParams& s, double t) {
  const double th0 = cosine_theta(s, 0.0 * t);
  return sqrt(sin(0.5 * M_PI * t / (1.0 + s.p0)) * sin(cosine_theta(s, t) + th0)) / cos(th0);
}
FS_HD double cosine_beta(const SdeParams& s, double t) { return M_PI / (1.0 + s.p0) * tan(cosine_theta(s, t)); }

// geometric VE: sigma(t) = sigma_min (sigma_max / sigma_min)^(t / T)
FS_HD double geometric_sigma(const SdeParams& s, double t) { return s.p0 * exp(log(s.p1 / s.p0) / s.T * t); }

// Unknown kinds (rejected by the bindings) give NaN, never another SDE's coefficients.

// f(t): the drift is f(t) x
FS_HD double drift_coeff(const SdeParams& s, double t) {
  switch (s.kind) {
    case kVE:
    case kGeometricVE:
    case kEDM: return 0.0;
    case kVP:
    case kSubVP: return -0.5 * beta_of(s, t);
    case kCosineVP: return -0.5 * cosine_beta(s, t);
    default: return NAN;
  }
}

// g(t)^2
FS_HD double diffusion_sq(const SdeParams& s, double t) {
  switch (s.kind) {
    case kVE: return exp(2.0 * log(s.p0) * t);
    case kSubVP: return beta_of(s, t) * -expm1(-2.0 * beta_integral(s, t));
    case kVP: return beta_of(s, t);
    case kCosineVP: return cosine_beta(s, t);
    case kGeometricVE: {
      const double sigma = geometric_sigma(s, t);
      return 2.0 * log(s.p1 / s.p0) / s.T * sigma * sigma;
    }
    case kEDM: return 2.0 * t;
    default: return NAN;
  }
}

// m(t): E[x_t | x_0] = m(t) x_0
FS_HD double mean_coeff(const SdeParams& s, double t) {
  switch (s.kind) {
    case kVE:
    case kGeometricVE:
    case kEDM: return 1.0;
    case kVP:
    case kSubVP: return exp(-0.5 * beta_integral(s, t));
    case kCosineVP: return cos(cosine_theta(s, t)) / cos(cosine_theta(s, 0.0 * t));
    default: return NAN;
  }
}

// sigma(t): std of x_t given x_0 (expm1 keeps digits near t = 0)
FS_HD double marginal_std(const SdeParams& s, double t) {
  switch (s.kind) {
    case kVE: {
      const double ls = log(s.p0);
      return sqrt(expm1(2.0 * ls * t) / (2.0 * ls));
    }
    case kSubVP: return -expm1(-beta_integral(s, t));
    case kVP: return sqrt(-expm1(-beta_integral(s, t)));
    case kCosineVP: return cosine_std(s, t);
    case kGeometricVE: return geometric_sigma(s, t);
    case kEDM: return t;
    default: return NAN;
  }
}

// std of the prior N(0, prior_std^2 I) at t = T
FS_HD double prior_std(const SdeParams& s) {
  switch (s.kind) {
    case kVE: return marginal_std(s, s.T);
    case kGeometricVE: return s.p1;
    case kEDM: return s.T;
    default: return 1.0;
  }
}

// Exact forward transition x_t = a x_s + G z over s < t, valid for any linear SDE:
// a = m(t)/m(s), G^2 = sigma(t)^2 - a^2 sigma(s)^2.
FS_HD void transition(const SdeParams& s, double t, double s_prev, double* a, double* G2) {
  const double ratio = mean_coeff(s, t) / mean_coeff(s, s_prev);
  const double st = marginal_std(s, t), sp = marginal_std(s, s_prev);
  *a = ratio;
  *G2 = st * st - ratio * ratio * sp * sp;
}

}  // namespace fastscore
