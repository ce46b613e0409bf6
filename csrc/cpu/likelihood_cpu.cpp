// Exact-trace log-likelihoods on the CPU: a tile of samples integrates the augmented
// probability-flow ODE y = [x, delta] from eps to T in SIMD lanes, each lane with its own
// time and (for rk45) its own step size; the divergence comes from forward-mode tangents.
#include <omp.h>

#include <cmath>
#include <vector>

#include "fastscore/ode.h"
#include "fastscore/philox.h"
#include "kernels.h"
#include "tile.h"

namespace fastscore {
namespace cpu {

namespace {

using DP = DormandPrince;

struct LpWorkspace {
  LpWorkspace(const MlpLayout& L, int nt)
      : D(L.dim), xin(L.dim + embed_dim(L)), dirs(nt * L.dim), s(L.dim), h(L.width), z(L.width),
        dh(nt * L.width), dz(nt * L.width), y(L.dim + 1), y1(L.dim + 1), y5(L.dim + 1), comp(1),
        K(7 * (L.dim + 1)), phi(embed_dim(L)) {}
  Lanes* stage(int i) { return K.data() + i * (D + 1); }
  int D;
  std::vector<Lanes> xin, dirs, s, h, z, dh, dz, y, y1, y5, comp, K;
  std::vector<double> phi;
};

// the input tangent directions of a tile: unit vectors (exact trace) or probes (Hutchinson)
void set_directions(int D, bool hutchinson, uint64_t seed, int64_t index0, LpWorkspace& w) {
  if (hutchinson) {
    fill_rademacher(seed, index0, D, w.dirs.data());
    return;
  }
  for (int i = 0; i < D; ++i)
    for (int d = 0; d < D; ++d) w.dirs[i * D + d] = splat<Lanes>(i == d ? 1.0f : 0.0f);
}

// s [dim] and tr for every lane, lane l at time t[l]: the time features are first-layer
// inputs like x (lanes may have different times), and the output scale is per lane
void score_and_trace(const MlpLayout& L, const MlpWeights& m, int nt, const double* t, const Lanes* x, Lanes* s,
                     Lanes* tr, LpWorkspace& w) {
  const int D = L.dim, E = embed_dim(L);
  Lanes sc;
  double last = NAN, cs = 0;  // lanes usually share a time (always, for fixed steps): compute once
  for (int l = 0; l < kTile; ++l) {
    if (t[l] != last) {
      last = t[l];
      time_features(L, m, last, w.phi.data());
      cs = output_scale(L, last);
    }
    for (int e = 0; e < E; ++e) w.xin[D + e][l] = (float)w.phi[e];
    sc[l] = (float)cs;
  }
  for (int d = 0; d < D; ++d) w.xin[d] = x[d];
  mlp_forward_tangents<kRows, kKMajor>(L, m, w.xin.data(), sc, nt, w.dirs.data(), s, tr,
                                       TangentBuffers<Lanes>{w.h.data(), w.z.data(), w.dh.data(), w.dz.data()});
}

// k [dim + 1] = augmented velocity at y [dim + 1], lane l at time t[l]:
// dx/dt = f x - 1/2 g^2 s,  d delta/dt = dim f - 1/2 g^2 tr(ds/dx).
void velocity(const MlpLayout& L, const MlpWeights& m, const SdeParams& sde, int nt, const double* t, const Lanes* y,
              Lanes* k, LpWorkspace& w) {
  const int D = L.dim;
  Lanes tr;
  score_and_trace(L, m, nt, t, y, w.s.data(), &tr, w);
  Lanes fc, g2h;
  double last = NAN, cf = 0, cg = 0;
  for (int l = 0; l < kTile; ++l) {
    if (t[l] != last) {
      last = t[l];
      cf = drift_coeff(sde, last);
      cg = -0.5 * diffusion_sq(sde, last);
    }
    fc[l] = (float)cf;
    g2h[l] = (float)cg;
  }
  for (int d = 0; d < D; ++d) k[d] = fc * y[d] + g2h * w.s[d];
  k[D] = (float)D * fc + g2h * tr;
}

// delta += incr with Kahan compensation (delta sums hundreds of increments in float32)
inline void add_compensated(Lanes& sum, Lanes& comp, Lanes incr) {
  const Lanes v = incr - comp;
  const Lanes t = sum + v;
  comp = (t - sum) - v;
  sum = t;
}

void fixed_steps(const MlpLayout& L, const MlpWeights& m, const SdeParams& sde, const LogProbSpec& p, int nt,
                 LpWorkspace& w, int64_t* nfe) {
  const int D = L.dim;
  const Tableau tab = fixed_tableau(p.method);
  const double h = (sde.T - p.eps) / p.steps;
  const float hf = (float)h;
  double t[kTile];
  for (int k = 0; k < p.steps; ++k) {
    const double t0 = p.eps + k * h;
    for (int i = 0; i < tab.stages; ++i) {
      for (int c = 0; c <= D; ++c) {
        Lanes acc = w.y[c];
        for (int j = 0; j < i; ++j) acc += (float)(tab.a[i][j] * h) * w.stage(j)[c];
        w.y1[c] = acc;
      }
      for (int l = 0; l < kTile; ++l) t[l] = t0 + tab.c[i] * h;
      velocity(L, m, sde, nt, t, w.y1.data(), w.stage(i), w);
    }
    for (int c = 0; c <= D; ++c) {
      Lanes incr{};
      for (int i = 0; i < tab.stages; ++i) incr += (float)tab.b[i] * w.stage(i)[c];
      if (c < D)
        w.y[c] += hf * incr;
      else
        add_compensated(w.y[D], w.comp[0], hf * incr);
    }
  }
  for (int l = 0; l < kTile; ++l) nfe[l] = (int64_t)p.steps * tab.stages;
}

// Per-lane Dormand–Prince (ode.h). Lanes that reached T keep h = 0 and idle until the
// whole tile is done. Returns the number of lanes that gave up (too many attempts).
int adaptive_steps(const MlpLayout& L, const MlpWeights& m, const SdeParams& sde, const LogProbSpec& p, int nt,
                   int count, LpWorkspace& w, int64_t* nfe) {
  const int D = L.dim, C = D + 1;
  double t[kTile], h[kTile], ts[kTile];
  bool done[kTile];
  int failed = 0;
  for (int l = 0; l < kTile; ++l) {
    t[l] = p.eps;
    h[l] = 0.01 * (sde.T - p.eps);
    done[l] = l >= count;  // padding lanes of a short tile do not hold the tile back
    nfe[l] = 1;
  }
  velocity(L, m, sde, nt, t, w.y.data(), w.stage(0), w);
  for (int attempt = 0;; ++attempt) {
    bool all_done = true;
    for (int l = 0; l < kTile; ++l) all_done = all_done && done[l];
    if (all_done) break;
    if (attempt == kRk45MaxAttempts) {
      for (int l = 0; l < kTile; ++l) failed += !done[l];
      break;
    }
    Lanes hv;
    for (int l = 0; l < kTile; ++l) hv[l] = done[l] ? 0.0f : (float)h[l];
    for (int i = 1; i < 6; ++i) {
      for (int c = 0; c < C; ++c) {
        Lanes acc{};
        for (int j = 0; j < i; ++j) acc += (float)DP::a[i][j] * w.stage(j)[c];
        w.y1[c] = w.y[c] + hv * acc;
      }
      for (int l = 0; l < kTile; ++l) ts[l] = done[l] ? t[l] : t[l] + DP::c[i] * h[l];
      velocity(L, m, sde, nt, ts, w.y1.data(), w.stage(i), w);
    }
    Lanes incr_delta{};
    for (int c = 0; c < C; ++c) {
      Lanes acc{};
      for (int i = 0; i < 6; ++i) acc += (float)DP::b[i] * w.stage(i)[c];
      if (c == D) incr_delta = hv * acc;
      w.y5[c] = w.y[c] + hv * acc;
    }
    for (int l = 0; l < kTile; ++l) ts[l] = done[l] ? t[l] : t[l] + h[l];
    velocity(L, m, sde, nt, ts, w.y5.data(), w.stage(6), w);
    // error norm and control, lane by lane
    Lanes err_sq{};
    for (int c = 0; c < C; ++c) {
      Lanes e{};
      for (int i = 0; i < 7; ++i) e += (float)DP::e[i] * w.stage(i)[c];
      e = hv * e;
      for (int l = 0; l < kTile; ++l) {
        const double scale = p.atol + p.rtol * std::fmax(std::fabs(w.y[c][l]), std::fabs(w.y5[c][l]));
        const double r = e[l] / scale;
        err_sq[l] += (float)(r * r);
      }
    }
    Lanes accept_mask{};
    for (int l = 0; l < kTile; ++l) {
      if (done[l]) continue;
      nfe[l] += 6;
      const double err = std::sqrt((double)err_sq[l] / C);
      const bool accept = err <= 1.0;
      if (accept) {
        const bool last = h[l] >= sde.T - t[l];
        t[l] = last ? sde.T : t[l] + h[l];
        done[l] = last;
        accept_mask[l] = 1.0f;
      }
      h[l] = std::fmin(h[l] * rk45_factor(err), sde.T - t[l]);
    }
    // accepted lanes move to y5 and reuse the last stage as the next first (FSAL)
    for (int c = 0; c < C; ++c) {
      if (c < D)
        w.y[c] = accept_mask > 0.0f ? w.y5[c] : w.y[c];
      else
        add_compensated(w.y[D], w.comp[0], accept_mask * incr_delta);
      w.stage(0)[c] = accept_mask > 0.0f ? w.stage(6)[c] : w.stage(0)[c];
    }
  }
  return failed;
}

}  // namespace

void score_trace(const MlpLayout& L, const float* weights, const float* x, int64_t n, double t, bool hutchinson,
                 uint64_t seed, float* s, float* tr) {
  const CpuWeights staged(L, weights);
  const MlpWeights& m = staged.view;
  const int D = L.dim, nt = hutchinson ? 1 : D;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
#pragma omp parallel
  {
    LpWorkspace w(L, nt);
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * D, D, count, w.y.data());
      set_directions(D, hutchinson, seed, first, w);
      double ts[kTile];
      for (int l = 0; l < kTile; ++l) ts[l] = t;
      Lanes trl;
      score_and_trace(L, m, nt, ts, w.y.data(), w.y5.data(), &trl, w);
      store_tile(w.y5.data(), D, count, s + first * D);
      store_tile(&trl, 1, count, tr + first);
    }
  }
}

int64_t log_prob(const MlpLayout& L, const float* weights, const SdeParams& sde, const LogProbSpec& p, const float* x,
                 int64_t n, double* logp, int64_t* nfe) {
  const CpuWeights staged(L, weights);
  const MlpWeights& m = staged.view;
  const int D = L.dim, nt = p.hutchinson ? 1 : D;
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  const double ps = prior_std(sde);
  int64_t failed = 0;
#pragma omp parallel reduction(+ : failed)
  {
    LpWorkspace w(L, nt);
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t first = tile * kTile;
      const int count = tile_count(first, n);
      load_tile(x + first * D, D, count, w.y.data());
      w.y[D] = Lanes{};
      w.comp[0] = Lanes{};
      set_directions(D, p.hutchinson, p.seed, first, w);
      int64_t tile_nfe[kTile];
      if (p.method == kLpRk45)
        failed += adaptive_steps(L, m, sde, p, nt, count, w, tile_nfe);
      else
        fixed_steps(L, m, sde, p, nt, w, tile_nfe);
      for (int l = 0; l < count; ++l) {
        double sq = 0.0;
        for (int d = 0; d < D; ++d) sq += (double)w.y[d][l] * w.y[d][l];
        const double prior = -0.5 * sq / (ps * ps) - 0.5 * D * std::log(2.0 * M_PI * ps * ps);
        logp[first + l] = prior + ((double)w.y[D][l] - (double)w.comp[0][l]);  // Kahan: sum - lost bits
        nfe[first + l] = tile_nfe[l];
      }
    }
  }
  return failed;
}

}  // namespace cpu
}  // namespace fastscore
