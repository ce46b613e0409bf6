// Per-sample adaptive samplers over a lane type V (CPU tiles; one float per CUDA thread):
// "ode_rk45", the likelihood's Dormand–Prince controller (likelihood.h adaptive_steps) run on
// x alone from T to eps, and "em_adaptive", Gotta Go Fast (Jolicoeur-Martineau et al. 2021,
// Algorithm 1) driven by each sample's Brownian tree. The definitions are the reference
// backend's (fastscore/backends/reference.py sample_adaptive) and fastscore/integrators.py.
#pragma once
#include <cmath>
#include <cstdint>

#include "common.h"
#include "lanes.h"
#include "likelihood.h"
#include "normals.h"
#include "philox.h"

namespace fastscore {

constexpr int kBrownianDepth = 24;  // fastscore/rng.py BROWNIAN_DEPTH

// One adaptive sampling run (fastscore/plan.py AdaptivePlan): the controller, tolerances, eps
// and seed in `spec` (with the Dormand–Prince pair for the probability flow).
struct AdaptivePlan {
  SdeParams sde;
  LogProbPlan spec;
  bool brownian;  // Gotta Go Fast on the reverse SDE, else Dormand–Prince on the probability flow
  bool denoise;   // Tweedie's denoising step at eps (one more evaluation)
  float prior_std;
  int64_t start;  // index of the run's first sample in the seed's stream
};

// W(t) [D] (double) of sample `sample`'s Brownian path on [eps, T], W(eps) = 0: the twin of
// fastscore/rng.py brownian (a Brownian tree on stream kStreamBrownian, node j at step j).
// scratch: 3 D doubles.
FS_HD void brownian_at(uint64_t seed, uint32_t sample, double t, double eps, double T, int D, double* W,
                       double* scratch) {
  double *wa = scratch, *wb = scratch + D, *z = scratch + 2 * D;
  double a = eps, b = T;
  draw_normals(seed, sample, 0u, (uint32_t)kStreamBrownian, D, wb);
  for (int d = 0; d < D; ++d) {
    wa[d] = 0.0;
    wb[d] *= ::sqrt(T - eps);
  }
  uint32_t node = 1;
  for (int level = 0; level < kBrownianDepth; ++level) {
    const double mid = 0.5 * (a + b), sd = ::sqrt(0.25 * (b - a));
    draw_normals(seed, sample, node, (uint32_t)kStreamBrownian, D, z);
    const bool left = t < mid;
    for (int d = 0; d < D; ++d) {
      const double wm = 0.5 * (wa[d] + wb[d]) + sd * z[d];
      (left ? wb : wa)[d] = wm;
    }
    (left ? b : a) = mid;
    node = 2 * node + (left ? 0u : 1u);
  }
  const double f = (t - a) / (b - a);
  for (int d = 0; d < D; ++d) W[d] = wa[d] + (wb[d] - wa[d]) * f;
}

// ggf_steps' double scratch for `lanes` lanes of dimension D: each lane's Brownian values now and
// next, and brownian_at's scratch
FS_HD constexpr int ggf_scratch(int lanes, int D) { return 2 * lanes * D + 3 * D; }

// s = s_theta(x) for every lane at its time t[l] (the likelihood's network pass without tangents)
template <class Rows, class V>
FS_HD void lane_scores(const Net& net, const double* t, const V* x, V* s, const OdeBuffers<V>& w) {
  V unused;
  score_and_trace<Rows>(net, 0, t, x, s, &unused, w);
}

// the same double for every lane, as a lane vector
template <class V>
FS_HD V lanes_of(const double* v) {
  V out{};
  for (int l = 0; l < LaneAccess<V>::count; ++l) LaneAccess<V>::set(out, l, (float)v[l]);
  return out;
}

// Gotta Go Fast on the reverse SDE dx = (f x - g^2 s) dt + g dW from T to eps, per lane, on
// x = w.y [D] (the prior draw on entry). A step of length h from t (stored signed, -h, as
// ode.h control_lane takes it) uses the increment W(t) - W(t - h) of the lane's Brownian tree:
//   x'  = x - h (f(t) x - g(t)^2 s(x, t)) + g(t) dW
//   x'' = (x' + x - h (f(t-h) x' - g(t-h)^2 s(x', t-h)) + g(t-h) dW) / 2
//   E = RMS_j((x'_j - x''_j) / max(atol, rtol max(|x'_j|, |x'_prev,j|))); accept: x = x''.
// Scratch: w.y1 (x'), w.y5 (x''), stages 0 and 1 (x'_prev, dW); wt [ggf_scratch(NL, D)] doubles.
// Counts as adaptive_steps; a lane whose step underflows stops with x[D - 1] = NaN. Returns
// the number of lanes that gave up.
template <class Rows, class V>
FS_HD int ggf_steps(const Net& net, const SdeParams& sde, const LogProbPlan& p, uint64_t seed, int64_t index0,
                    int count, const OdeBuffers<V>& w, double* wt, int64_t* nfe, int64_t* accepted,
                    int64_t* rejected) {
  constexpr int NL = LaneAccess<V>::count;
  const int D = net.L.dim;
  const double T = sde.T, eps = p.eps, span = T - eps;
  double *w_now = wt, *w_next = wt + NL * D, *scratch = wt + 2 * NL * D;
  V *x = w.y, *x1 = w.y1, *x2 = w.y5, *prev = w.stage(0, D), *dw = w.stage(1, D);
  double t[NL], h[NL], tn[NL], c0[NL], c1[NL], c2[NL];
  bool done[NL];
  int failed = 0;
  for (int l = 0; l < NL; ++l) {
    t[l] = T;
    h[l] = -p.ctl.h0_fraction * span;  // signed: toward eps
    done[l] = l >= count;
    nfe[l] = accepted[l] = rejected[l] = 0;
    brownian_at(seed, (uint32_t)(index0 + l), T, eps, T, D, w_now + l * D, scratch);
  }
  for (int d = 0; d < D; ++d) prev[d] = x[d];
  for (int64_t attempt = 0; lanes_running<NL>(done, attempt, p.ctl.max_attempts, failed); ++attempt) {
    for (int l = 0; l < NL; ++l) {
      tn[l] = done[l] ? t[l] : t[l] + h[l];
      if (!done[l]) brownian_at(seed, (uint32_t)(index0 + l), tn[l], eps, T, D, w_next + l * D, scratch);
      for (int d = 0; d < D; ++d)
        LaneAccess<V>::set(dw[d], l, done[l] ? 0.0f : (float)(w_now[l * D + d] - w_next[l * D + d]));
    }
    // the Euler–Maruyama proposal at t, then the drift at x' and t - h
    for (int pass = 0; pass < 2; ++pass) {
      const double* ts = pass == 0 ? t : tn;
      const V* at = pass == 0 ? x : x1;
      for (int l = 0; l < NL; ++l) {
        const double dt = done[l] ? 0.0 : -h[l];
        c0[l] = -dt * drift_coeff(sde, ts[l]);
        c1[l] = dt * diffusion_sq(sde, ts[l]);
        c2[l] = ::sqrt(diffusion_sq(sde, ts[l]));
      }
      lane_scores<Rows>(net, ts, at, w.s, w);
      const V a = lanes_of<V>(c0), b = lanes_of<V>(c1), g = lanes_of<V>(c2);
      for (int d = 0; d < D; ++d) {
        const V step = x[d] + a * at[d] + b * w.s[d] + g * dw[d];
        if (pass == 0)
          x1[d] = step;
        else
          x2[d] = 0.5f * (x1[d] + step);
      }
    }
    V accept_mask{};
    for (int l = 0; l < NL; ++l) {
      if (done[l]) continue;
      nfe[l] += 2;
      double sq = 0.0;
      for (int d = 0; d < D; ++d) {
        const double p1 = LaneAccess<V>::get(x1[d], l), p2 = LaneAccess<V>::get(x2[d], l);
        const double scale = ::fmax(p.atol, p.rtol * ::fmax(::fabs(p1), ::fabs((double)LaneAccess<V>::get(prev[d], l))));
        sq += (p1 - p2) * (p1 - p2) / (scale * scale);
      }
      bool underflow;
      const bool ok = control_lane(p.ctl, ::sqrt(sq / D), eps, span, t[l], h[l], done[l], underflow);
      if (ok) {
        for (int d = 0; d < D; ++d) w_now[l * D + d] = w_next[l * D + d];
        LaneAccess<V>::set(accept_mask, l, 1.0f);
      }
      (ok ? accepted : rejected)[l] += 1;
      // step-size underflow: the drift is not finite at any step; poison the lane
      if (underflow) LaneAccess<V>::set(x[D - 1], l, NAN);
    }
    for (int d = 0; d < D; ++d) {
      x[d] = where(accept_mask > 0.0f, x2[d], x[d]);
      prev[d] = where(accept_mask > 0.0f, x1[d], prev[d]);
    }
  }
  return failed;
}

// Tweedie's E[x_0 | x_eps] = (x + sigma(eps)^2 s) / m(eps) on every lane (denoise=True)
template <class Rows, class V>
FS_HD void denoise_lanes(const Net& net, const SdeParams& sde, double eps, const OdeBuffers<V>& w) {
  constexpr int NL = LaneAccess<V>::count;
  double t[NL];
  for (int l = 0; l < NL; ++l) t[l] = eps;
  lane_scores<Rows>(net, t, w.y, w.s, w);
  const double m = mean_coeff(sde, eps), sg = marginal_std(sde, eps);
  const float u = (float)(1.0 / m), v = (float)(sg * sg / m);
  for (int d = 0; d < net.L.dim; ++d) w.y[d] = u * w.y[d] + v * w.s[d];
}

// One sample of an adaptive run in lane type float (a CUDA thread, or a lone sample on the
// CPU): sample `index`'s prior draw (a tile lane's) into w.y, the solve from T to eps, and
// Tweedie's step if asked (one more evaluation); the cond imports must already be in w.a.
// wt: ggf_scratch(1, dim) doubles. Returns 1 if the solve gave up.
template <class Rows>
FS_HD int adaptive_sample_one(const Net& net, const AdaptivePlan& p, uint32_t index, const OdeBuffers<float>& w,
                              double* wt, int64_t* nfe, int64_t* accepted, int64_t* rejected) {
  const int D = net.L.dim;
  draw_normals_float(p.spec.seed, index, 0u, (uint32_t)kStreamPrior, D, w.y);
  for (int d = 0; d < D; ++d) w.y[d] = w.y[d] * p.prior_std;
  const int failed =
      p.brownian ? ggf_steps<Rows>(net, p.sde, p.spec, p.spec.seed, index, 1, w, wt, nfe, accepted, rejected)
                 : adaptive_steps<Rows>(net, p.sde, p.spec, 0, p.sde.T, p.spec.eps, D, 1, w, nfe, accepted, rejected);
  if (p.denoise) {
    denoise_lanes<Rows>(net, p.sde, p.spec.eps, w);
    *nfe += 1;
  }
  return failed;
}

}  // namespace fastscore
