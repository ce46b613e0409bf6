// The likelihood integrators as the kernels receive them: a Runge–Kutta tableau and the
// per-sample step-size controller, both declared once in Python (fastscore/integrators.py)
// and passed with the plan, so no integrator is written twice and no method code exists here.
// A fixed-step method runs `steps` steps of its tableau; an adaptive one (rk45: Dormand–Prince
// 5(4), first stage same as last) controls each sample's step:
//   h0 = h0_fraction (T - eps); per attempt err_j = h sum_i e_i k_i[j],
//   scale_j = atol + rtol max(|y_j|, |y5_j|), err = sqrt(mean_j (err_j / scale_j)^2) over the
//   dim + 1 components; accept if err <= 1; factor = max_factor if err == 0 else
//   clamp(safety err^exponent, min_factor, max_factor), at most 1 after a rejection;
//   h *= factor, then h = min(h, T - t), the last step landing exactly on T. A NaN err (a
//   trial step that overflowed) is a rejection with min_factor; a lane whose step falls below
//   min_step_fraction (T - eps) stops with a NaN log p (the caller's FloatingPointError).
//   nfe = 1 + (stages - 1) per attempt.
#pragma once
#include <cmath>
#include <cstdint>

#include "common.h"

namespace fastscore {

constexpr int kMaxStages = 7;

// Explicit Runge–Kutta: nodes c, strictly lower matrix a, weights b, and for an embedded pair
// the error weights e over all stages (the last stage is the derivative at the new point).
struct Tableau {
  int stages;
  double c[kMaxStages], a[kMaxStages][kMaxStages], b[kMaxStages], e[kMaxStages];
};

struct Controller {
  double h0_fraction, safety, min_factor, max_factor, exponent;
  int64_t max_attempts;
  double min_step_fraction;  // a step below min_step_fraction (T - eps): the velocity is not finite
};

// A likelihood request (fastscore/plan.py LogProbPlan)
struct LogProbPlan {
  bool adaptive;  // the controller runs the tableau as an embedded pair (rk45)
  int steps;      // fixed-step methods
  double eps, rtol, atol;
  bool hutchinson;  // one Rademacher probe per sample (stream kStreamProbe, step 0)
  unsigned long long seed;
  int64_t start;  // the stream index of the call's first point (a chunk's offset in its run)
  Tableau tab;
  Controller ctl;
};

// the controller's step factor after an attempt with error norm err (accepted: err <= 1)
FS_HD double step_factor(const Controller& c, double err) {
  if (err != err) return c.min_factor;  // a non-finite trial step: reject it and shrink
  double f = err == 0.0 ? c.max_factor : c.safety * pow(err, c.exponent);
  f = f < c.min_factor ? c.min_factor : (f > c.max_factor ? c.max_factor : f);
  return (err <= 1.0 || f < 1.0) ? f : 1.0;
}

// One lane's control after an attempt with error norm err, stepping with signed h from t
// toward t1 (span = |T - eps|): an accepted step moves t by h, the last one landing exactly
// on t1 (done); then the next step, at most what is left. Returns whether it was accepted;
// `underflow`: the next step fell below min_step_fraction span (the lane stops, done, and the
// caller poisons its result). Shared by every per-lane adaptive solver.
FS_HD bool control_lane(const Controller& c, double err, double t1, double span, double& t, double& h, bool& done,
                        bool& underflow) {
  const bool ok = err <= 1.0;
  if (ok) {
    done = ::fabs(h) >= ::fabs(t1 - t);
    t = done ? t1 : t + h;
  }
  const double next = h * step_factor(c, err);
  h = (h < 0 ? -1.0 : 1.0) * ::fmin(::fabs(next), ::fabs(t1 - t));
  underflow = !done && ::fabs(next) < c.min_step_fraction * span;
  done = done || underflow;
  return ok;
}

// Whether any lane still runs; lanes still running after max_attempts are added to `failed`
// and the solve stops.
template <int NL>
FS_HD bool lanes_running(const bool* done, int64_t attempt, int64_t max_attempts, int& failed) {
  bool all_done = true;
  for (int l = 0; l < NL; ++l) all_done = all_done && done[l];
  if (all_done) return false;
  if (attempt < max_attempts) return true;
  for (int l = 0; l < NL; ++l) failed += !done[l];
  return false;
}

}  // namespace fastscore
