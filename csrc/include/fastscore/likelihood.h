// The augmented probability-flow ODE y = [x, delta] integrated from eps to T for log p, over
// a lane type V: shared by the CPU tile kernels (csrc/cpu/likelihood_cpu.cpp, V = a SIMD tile
// of samples) and the CUDA kernels (V = one float per thread). Each lane has its own time
// and, for rk45, its own step size; the divergence comes from forward-mode tangents (net.h).
// Per-lane bookkeeping (times, step sizes, done flags) goes through LaneAccess (lanes.h).
#pragma once
#include <cmath>
#include <cstdint>

#include "common.h"
#include "lanes.h"
#include "net.h"
#include "ode.h"
#include "philox.h"
#include "sde.h"

namespace fastscore {

// The lane arrays of one integration: a [lane_arena] (the network's arena), dT [nt *
// lane_arena] (its tangents), dirs [nt * dim], s [dim] (the score), y, y1, y5 [dim + 1], comp [1] (Kahan),
// K [kMaxStages * (dim + 1)] (stages); ta [time_arena] is the time phase's arena (lanes.h TimePhase).
template <class V>
struct OdeBuffers {
  V *a, *dT, *dirs, *s;
  V *y, *y1, *y5, *comp, *K;
  typename TimePhase<V>::Lanes* ta;
  FS_HD V* stage(int i, int D) const { return K + i * (D + 1); }
};

// the input tangent directions for the exact trace: the unit vectors e_0 .. e_{dim-1}
template <class V>
FS_HD void unit_directions(int D, V* dirs) {
  for (int i = 0; i < D; ++i)
    for (int d = 0; d < D; ++d) dirs[i * D + d] = splat<V>(i == d ? 1.0f : 0.0f);
}

// s [dim] and tr = sum_i dir_i . (ds/dx) dir_i for every lane, lane l at time t[l] (nt
// directions: the unit vectors, the exact trace; one Rademacher probe: Hutchinson's). The
// time phase runs on every lane at its own time; the cond imports must already be in w.a.
// Tangents go through the same rows as the values: about (1 + nt) forward passes, no
// autograd, no noise when exact.
template <class Rows, class V>
FS_HD void score_and_trace(const Net& net, int nt, const double* t, const V* x, V* s, V* tr, const OdeBuffers<V>& w) {
  const NetLayout& L = net.L;
  const int D = L.dim, as = L.lane_arena;
  run_time<Rows::kKMajor>(net, t, w.ta);
  for (int j = 0; j < L.n_texp; ++j) w.a[D + j] = TimePhase<V>::round(w.ta[time_export(L) + j]);
  for (int d = 0; d < D; ++d) w.a[d] = x[d];
  for (int i = 0; i < nt; ++i)
    for (int d = 0; d < D; ++d) w.dT[(size_t)i * as + d] = w.dirs[i * D + d];
  run_lanes<Rows>(net, w.a, Tangents<V>{w.dT, nt, as});
  V acc{};
  for (int i = 0; i < nt; ++i)
    for (int d = 0; d < D; ++d) acc += w.dirs[i * D + d] * w.dT[(size_t)i * as + L.out + d];
  *tr = acc;
  for (int d = 0; d < D; ++d) s[d] = w.a[L.out + d];
}

// k [dim + 1] = augmented velocity at y [dim + 1], lane l at time t[l]:
// dx/dt = f x - 1/2 g^2 s,  d delta/dt = dim f - 1/2 g^2 tr(ds/dx).
template <class Rows, class V>
FS_HD_OUTLINE void velocity(const Net& net, const SdeParams& sde, int nt, const double* t, const V* y, V* k,
                            const OdeBuffers<V>& w) {
  const int D = net.L.dim;
  V tr;
  score_and_trace<Rows>(net, nt, t, y, w.s, &tr, w);
  V fc{}, g2h{};
  double last = NAN, cf = 0, cg = 0;
  for (int l = 0; l < LaneAccess<V>::count; ++l) {
    if (t[l] != last) {
      last = t[l];
      cf = drift_coeff(sde, last);
      cg = -0.5 * diffusion_sq(sde, last);
    }
    LaneAccess<V>::set(fc, l, (float)cf);
    LaneAccess<V>::set(g2h, l, (float)cg);
  }
  for (int d = 0; d < D; ++d) k[d] = fc * y[d] + g2h * w.s[d];
  k[D] = (float)D * fc + g2h * tr;
}

// delta += incr with Kahan compensation (delta sums hundreds of increments in float32)
template <class V>
FS_HD void add_compensated(V& sum, V& comp, V incr) {
  const V v = incr - comp;
  const V t = sum + v;
  comp = (t - sum) - v;
  sum = t;
}

// Fixed-step Runge–Kutta (euler, heun, rk4) from w.y at eps to T; nfe [lanes].
template <class Rows, class V>
FS_HD void fixed_steps(const Net& net, const SdeParams& sde, const LogProbPlan& p, int nt,
                       const OdeBuffers<V>& w, int64_t* nfe) {
  constexpr int NL = LaneAccess<V>::count;
  const int D = net.L.dim;
  const Tableau& tab = p.tab;
  const double h = (sde.T - p.eps) / p.steps;
  const float hf = (float)h;
  double t[NL];
  for (int k = 0; k < p.steps; ++k) {
    const double t0 = p.eps + k * h;
    for (int i = 0; i < tab.stages; ++i) {
      for (int c = 0; c <= D; ++c) {
        V acc = w.y[c];
        for (int j = 0; j < i; ++j) acc += (float)(tab.a[i][j] * h) * w.stage(j, D)[c];
        w.y1[c] = acc;
      }
      for (int l = 0; l < NL; ++l) t[l] = t0 + tab.c[i] * h;
      velocity<Rows>(net, sde, nt, t, w.y1, w.stage(i, D), w);
    }
    for (int c = 0; c <= D; ++c) {
      V incr{};
      for (int i = 0; i < tab.stages; ++i) incr += (float)tab.b[i] * w.stage(i, D)[c];
      if (c < D)
        w.y[c] += hf * incr;
      else
        add_compensated(w.y[D], w.comp[0], hf * incr);
    }
  }
  for (int l = 0; l < NL; ++l) nfe[l] = (int64_t)p.steps * tab.stages;
}

// No refill: a lane that is done idles until the tile is (adaptive_steps' default).
struct NoRefill {
  FS_HD bool operator()(int) const { return false; }
};

// Per-lane embedded Runge–Kutta (ode.h: rk45 is Dormand–Prince) of the first C components of
// w.y from t0 to t1 (either direction: the step is signed): C = dim + 1 for the likelihood
// ([x, delta] from eps to T), C = dim for the probability-flow sampler (x from T to eps, no
// trace: nt = 0). Lanes >= count (padding) start done. nfe [lanes], and accepted / rejected
// attempts if not null. A lane whose step underflows stops with y[C - 1] = NaN; one still
// running after max_attempts gives up. Returns the number of lanes that gave up.
// Each lane keeps its own place in the tableau (stage[l]: 0 its first derivative, then 1 .. S - 1
// the stages of an attempt, the last the derivative at the attempt's end point, FSAL), and each
// evaluation of the tile takes every lane one stage on: lanes need not agree on where they are.
// A lane that is done calls refill(l) once its results are final in w and nfe: refill may read
// them and load the next problem into lane l (its y, delta = 0, its directions and condition;
// true), after which the lane starts over from t0 at the next evaluation, so no lane idles
// while the others finish an attempt. Without a refill (false: NoRefill) it idles until every
// lane is done.
template <class Rows, class V, class Refill = NoRefill>
FS_HD int adaptive_steps(const Net& net, const SdeParams& sde, const LogProbPlan& p, int nt, double t0, double t1,
                         int C, int count, const OdeBuffers<V>& w, int64_t* nfe, int64_t* accepted = nullptr,
                         int64_t* rejected = nullptr, const Refill& refill = Refill{}) {
  const Tableau& DP = p.tab;
  const int S = DP.stages, last = S - 1;
  constexpr int NL = LaneAccess<V>::count;
  const int D = net.L.dim;
  const double span = ::fabs(t1 - t0), dir = t1 > t0 ? 1.0 : -1.0;
  double t[NL], h[NL], ts[NL];
  bool done[NL];
  int stage[NL];
  int64_t attempts[NL];
  int failed = 0;
  const auto start = [&](int l) {
    t[l] = t0;
    h[l] = dir * p.ctl.h0_fraction * span;
    attempts[l] = 0;
    nfe[l] = 1;
    stage[l] = 0;
    done[l] = false;
    if (accepted) accepted[l] = rejected[l] = 0;
  };
  for (int l = 0; l < NL; ++l) {
    start(l);
    done[l] = l >= count;
  }
  for (;;) {
    bool running = false;
    for (int l = 0; l < NL; ++l) {
      if (!done[l] && stage[l] == 1 && attempts[l]++ >= p.ctl.max_attempts) {  // gives up
        done[l] = true;
        ++failed;
        if (refill(l)) start(l);
      }
      running = running || !done[l];
    }
    if (!running) break;
    // lane l evaluates at t + c_s h, y + h sum_{j < s} coef_j K_j (coef: row s of a, or b for
    // the last stage); a lane that is done stays where it is (s = 0)
    V sv{}, hv{}, coef[kMaxStages - 1]{};
    for (int l = 0; l < NL; ++l) {
      const int s = done[l] ? 0 : stage[l];
      LaneAccess<V>::set(sv, l, (float)s);
      LaneAccess<V>::set(hv, l, s == 0 ? 0.0f : (float)h[l]);
      ts[l] = s == 0 ? t[l] : s == last ? t[l] + h[l] : t[l] + DP.c[s] * h[l];
      for (int j = 0; j < s; ++j) LaneAccess<V>::set(coef[j], l, (float)(s == last ? DP.b[j] : DP.a[s][j]));
    }
    V incr_delta{};
    for (int c = 0; c < C; ++c) {
      V acc{};
      for (int j = 0; j < last; ++j) acc = where(sv > (float)j, acc + coef[j] * w.stage(j, D)[c], acc);
      if (c == D) incr_delta = hv * acc;
      w.y1[c] = w.y[c] + hv * acc;
      w.y5[c] = w.y1[c];  // the end point, for the lanes at their last stage
    }
    velocity<Rows>(net, sde, nt, ts, w.y1, w.y1, w);  // in place: y1 becomes its derivative
    for (int i = 0; i < S; ++i)
      for (int c = 0; c < C; ++c) w.stage(i, D)[c] = where(sv == (float)i, w.y1[c], w.stage(i, D)[c]);
    // the lanes at their last stage: error norm and control, lane by lane
    V err_sq{};
    for (int c = 0; c < C; ++c) {
      V e{};
      for (int i = 0; i < S; ++i) e += (float)DP.e[i] * w.stage(i, D)[c];
      e = hv * e;
      for (int l = 0; l < NL; ++l) {
        if (done[l] || stage[l] != last) continue;
        const double scale =
            p.atol + p.rtol * ::fmax(::fabs((double)LaneAccess<V>::get(w.y[c], l)), ::fabs((double)LaneAccess<V>::get(w.y5[c], l)));
        const double r = LaneAccess<V>::get(e, l) / scale;
        LaneAccess<V>::set(err_sq, l, LaneAccess<V>::get(err_sq, l) + (float)(r * r));
      }
    }
    V accept_mask{};
    bool finished[NL];
    for (int l = 0; l < NL; ++l) {
      finished[l] = false;
      if (done[l] || stage[l] != last) continue;
      nfe[l] += S - 1;
      const double err = ::sqrt((double)LaneAccess<V>::get(err_sq, l) / C);
      bool underflow;
      const bool ok = control_lane(p.ctl, err, t1, span, t[l], h[l], done[l], underflow);
      finished[l] = done[l];
      if (ok) LaneAccess<V>::set(accept_mask, l, 1.0f);
      if (accepted) (ok ? accepted : rejected)[l] += 1;
      // step-size underflow: the velocity is not finite at any step; poison the lane
      if (underflow) LaneAccess<V>::set(w.y[C - 1], l, NAN);
    }
    // accepted lanes move to y5 and reuse the last stage as the next first (FSAL)
    const auto take = accept_mask > 0.0f;
    for (int c = 0; c < C; ++c) {
      if (c < D) {
        w.y[c] = where(take, w.y5[c], w.y[c]);
      } else {
        V sum = w.y[D], comp = w.comp[0];
        add_compensated(sum, comp, incr_delta);
        w.y[D] = where(take, sum, w.y[D]);
        w.comp[0] = where(take, comp, w.comp[0]);
      }
      w.stage(0, D)[c] = where(take, w.stage(last, D)[c], w.stage(0, D)[c]);
    }
    for (int l = 0; l < NL; ++l) {
      if (!done[l])
        stage[l] = stage[l] == last ? 1 : stage[l] + 1;
      else if (finished[l] && refill(l))
        start(l);
    }
  }
  return failed;
}

// Integrates every lane from x at eps (w.y [0, dim), set by the caller, with the tangent
// directions in w.dirs) to T; log p of lane l is then lane_log_prob(sde, D, w, l). Returns the
// number of lanes that gave up (rk45).
template <class Rows, class V>
FS_HD int integrate(const Net& net, const SdeParams& sde, const LogProbPlan& p, int nt,
                    int count, const OdeBuffers<V>& w, int64_t* nfe) {
  w.y[net.L.dim] = V{};
  w.comp[0] = V{};
  if (p.adaptive) return adaptive_steps<Rows>(net, sde, p, nt, p.eps, sde.T, net.L.dim + 1, count, w, nfe);
  fixed_steps<Rows>(net, sde, p, nt, w, nfe);
  return 0;
}

// log p_eps(x) of lane l after integrate(): the prior's log-density at x(T) plus delta
template <class V>
FS_HD double lane_log_prob(const SdeParams& sde, int D, const OdeBuffers<V>& w, int l) {
  double sq = 0.0;
  for (int d = 0; d < D; ++d) sq += (double)LaneAccess<V>::get(w.y[d], l) * LaneAccess<V>::get(w.y[d], l);
  const double ps = prior_std(sde);
  const double prior = -0.5 * sq / (ps * ps) - 0.5 * D * ::log(2.0 * 3.14159265358979323846 * ps * ps);
  // Kahan: the sum minus its lost low-order bits
  return prior + ((double)LaneAccess<V>::get(w.y[D], l) - (double)LaneAccess<V>::get(w.comp[0], l));
}

// One point's log p in lane type float (a CUDA thread, or a lone point on the CPU): x [dim]
// into w with its directions (the unit vectors, or the Rademacher probe of the call's point
// `index`, as a tile lane's), then integrate(); the cond imports must already be in w.a. log p into *logp,
// its evaluations into *nfe; returns 1 if its rk45 solve gave up.
template <class Rows>
FS_HD int log_prob_one(const Net& net, const SdeParams& sde, const LogProbPlan& p, const float* x, int64_t index,
                       const OdeBuffers<float>& w, double* logp, int64_t* nfe) {
  const int D = net.L.dim;
  for (int d = 0; d < D; ++d) w.y[d] = x[d];
  if (p.hutchinson)
    draw_rademacher<float>(p.seed, (uint32_t)(p.start + index), 0, D, w.dirs);
  else
    unit_directions(D, w.dirs);
  const int failed = integrate<Rows>(net, sde, p, p.hutchinson ? 1 : D, 1, w, nfe);
  *logp = lane_log_prob(sde, D, w, 0);
  return failed;
}

}  // namespace fastscore
