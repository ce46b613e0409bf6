// Integrators of the augmented probability-flow ODE y = [x, delta] from eps to T:
// fixed-step Runge–Kutta tableaux (the reference's _TABLEAUX) and the per-sample
// Dormand–Prince 5(4) step-size controller. The controller is the project's one
// definition of `rk45` for the kernels (fastscore/backends/_numba_kernels.py mirrors it):
//   h0 = 0.01 (T - eps); per attempt err_j = h sum_i E_i k_i[j],
//   scale_j = atol + rtol max(|y_j|, |y5_j|), err = sqrt(mean_j (err_j / scale_j)^2) over the
//   dim + 1 components; accept if err <= 1; factor = 10 if err == 0 else
//   clamp(0.9 err^(-1/5), 0.2, 10), at most 1 after a rejection; h *= factor, then
//   h = min(h, T - t), the last step landing exactly on T. FSAL: nfe = 1 + 6 per attempt.
#pragma once
#include <cmath>

#include "common.h"

namespace fastscore {

enum LogProbMethod : int { kLpEuler = 0, kLpHeun = 1, kLpRk4 = 2, kLpRk45 = 3 };

// A likelihood request (fastscore/plan.py LogProbPlan)
struct LogProbPlan {
  int method;
  int steps;  // fixed-step methods
  double eps, rtol, atol;
  bool hutchinson;  // one Rademacher probe per sample (stream kStreamProbe, step 0)
  unsigned long long seed;
};

// explicit fixed-step tableaux: stages, nodes c, lower-triangular a (row i: a[i][0..i-1]), weights b
struct Tableau {
  int stages;
  double c[4], a[4][3], b[4];
};

// unknown codes (rejected by the bindings) give a NaN tableau, never another method
FS_HD Tableau fixed_tableau(int method) {
  switch (method) {
    case kLpEuler: return Tableau{1, {0.0}, {{0}}, {1.0}};
    case kLpHeun: return Tableau{2, {0.0, 1.0}, {{0}, {1.0}}, {0.5, 0.5}};
    case kLpRk4:
      return Tableau{4, {0.0, 0.5, 0.5, 1.0}, {{0}, {0.5}, {0.0, 0.5}, {0.0, 0.0, 1.0}},
                     {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6}};
    default: return Tableau{1, {NAN}, {{0}}, {NAN}};
  }
}

// Dormand–Prince 5(4), as scipy's RK45: nodes, matrix, 5th-order weights, error weights (7
// stages). A value returned by a function (like fixed_tableau), not static arrays, so device
// code can read it.
struct DormandPrince {
  double c[6], a[6][5], b[6], e[7];
};

FS_HD DormandPrince dormand_prince() {
  return DormandPrince{{0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0},
                       {{0, 0, 0, 0, 0},
                        {1.0 / 5, 0, 0, 0, 0},
                        {3.0 / 40, 9.0 / 40, 0, 0, 0},
                        {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0},
                        {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0},
                        {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656}},
                       {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
                       {-71.0 / 57600, 0.0, 71.0 / 16695, -71.0 / 1920, 17253.0 / 339200, -22.0 / 525, 1.0 / 40}};
}

constexpr int kRk45MaxAttempts = 100000;

// the controller's step factor after an attempt with error norm err (accepted: err <= 1)
FS_HD double rk45_factor(double err) {
  double f = err == 0.0 ? 10.0 : 0.9 * pow(err, -0.2);
  f = f < 0.2 ? 0.2 : (f > 10.0 ? 10.0 : f);
  return (err <= 1.0 || f < 1.0) ? f : 1.0;
}

}  // namespace fastscore
