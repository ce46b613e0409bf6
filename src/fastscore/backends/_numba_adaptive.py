"""Numba kernels of the per-sample adaptive samplers (reference.sample_adaptive), T -> eps:

* ode_rk45: the likelihood's Dormand–Prince tile (_numba_kernels.rk45_tile) on x alone;
* em_adaptive: Gotta Go Fast (reference._ggf_sample) on the reverse SDE, its increments from
  each sample's Brownian tree (_numba_brownian);

both under the likelihood's per-lane controller (_numba_kernels.control), then the Tweedie
step if asked. As in the likelihood, the solve state is float64 and only the network runs in
float32; every lane does its own sample's arithmetic, so a sample's result and counts do not
depend on the tile, the batch split or the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import integrators
from ..plan import ADAPTIVE_METHODS
from . import _numba_net as netp
from ._numba_brownian import brownian_lane
from ._numba_kernels import (_MAX_KIND, NFE, RK45_H0_FRACTION, RK45_MAX_ATTEMPTS, STREAM_PRIOR, _workspace, control,
                             fill_normals, give_up, new_lanes, rk45_tile, running, score_trace_lanes)
from ._numba_lanes import LANES
from ._numba_sde import marginal_std, mean_coeff

ODE_RK45 = ADAPTIVE_METHODS.index("ode_rk45")
EM_ADAPTIVE = ADAPTIVE_METHODS.index("em_adaptive")
GGF_EXPONENT = -integrators.GGF_R
GGF_H0_FRACTION = integrators.GGF_H0_FRACTION
_JIT = dict(cache=True, fastmath=False, nogil=True)


@njit(**_JIT)
def _brownian_lanes(k0, k1, index0, ts, eps, T, done, w, scratch):
    """w [dim, LANES] <- W(ts[lane]) of sample index0 + lane, for the lanes not done."""
    for lane in range(LANES):
        if not done[lane]:
            brownian_lane(k0, k1, index0 + lane, ts[lane], eps, T, w, scratch[0], scratch[1], lane)


@njit(**_JIT)
def _em(xa, xs, hv, w_a, w_b, ws, out):
    """out = xa - dt (f xs - g^2 s) + g (W_a - W_b) per lane, dt = -hv: an Euler–Maruyama step
    of length dt toward eps from xa with the drift at xs, whose s, f and q = g^2 / 2 (at the
    step's time) ws holds (reference._ggf_sample's em)."""
    s, fco, qco = ws[3], ws[5], ws[6]
    dim = xa.shape[0]
    for lane in range(LANES):
        dt = -hv[lane]
        f = fco[lane]
        g2 = 2.0 * qco[lane]
        g = math.sqrt(g2)
        for d in range(dim):
            out[d, lane] = xa[d, lane] - dt * (f * xs[d, lane] - g2 * s[d, lane]) + g * (w_a[d, lane] - w_b[d, lane])


@njit(**_JIT)
def ggf_tile(net, sde, k0, k1, index0, rtol, atol, x, lanes, dirs, ws):
    """Gotta Go Fast per lane on x [dim, LANES] (float64, in place) from lanes' t toward t1 =
    eps (integrators: Algorithm 1 of Jolicoeur-Martineau et al. 2021). Per attempt t -> t + h:
    dW = W(t) - W(t + h) from the lane's Brownian tree, the proposal x' = EM(x; drift at x, t)
    and x'' = (x' + EM(x; drift at x', t + h)) / 2; error norm
    RMS_j((x'_j - x''_j) / max(atol, rtol max(|x'_j|, |x'_prev,j|))), x'_prev the last accepted
    proposal; ``control`` with exponent -GGF_R; accepted: x = x'', and W(t) moves to t + h.
    nfe: 2 per attempt. Returns how many lanes ran out of attempts (flagged failed in lanes)."""
    t, hs, done, counts, eps = lanes[0], lanes[1], lanes[2], lanes[4], lanes[5]
    T = sde[3]
    dim = x.shape[0]
    x1 = np.empty((dim, LANES))
    x2 = np.empty((dim, LANES))
    x_prev = x.copy()
    w_t = np.zeros((dim, LANES))
    w_next = np.zeros((dim, LANES))
    scratch = np.empty((2, dim, LANES))
    hv = np.zeros(LANES)
    ts = np.empty(LANES)
    _brownian_lanes(k0, k1, index0, t, eps, T, done, w_t, scratch)
    for _ in range(RK45_MAX_ATTEMPTS):
        if not running(lanes):
            return 0
        for lane in range(LANES):
            hv[lane] = 0.0 if done[lane] else hs[lane]
            ts[lane] = t[lane] + hv[lane]
        _brownian_lanes(k0, k1, index0, ts, eps, T, done, w_next, scratch)
        score_trace_lanes(net, sde, t, x, dirs, ws)
        _em(x, x, hv, w_t, w_next, ws, x1)
        score_trace_lanes(net, sde, ts, x1, dirs, ws)
        _em(x, x1, hv, w_t, w_next, ws, x2)
        for lane in range(LANES):
            if done[lane]:
                continue
            counts[NFE, lane] += 2
            sq = 0.0
            for d in range(dim):
                x2[d, lane] = 0.5 * (x1[d, lane] + x2[d, lane])
                r = (x1[d, lane] - x2[d, lane]) / max(atol, rtol * max(abs(x1[d, lane]), abs(x_prev[d, lane])))
                sq += r * r
            if control(lanes, lane, math.sqrt(sq / dim), GGF_EXPONENT):
                for d in range(dim):
                    x[d, lane] = x2[d, lane]
                    x_prev[d, lane] = x1[d, lane]
                    w_t[d, lane] = w_next[d, lane]
    return give_up(lanes)


@njit(**_JIT)
def _tweedie(net, sde, eps, x, dirs, ws):
    """x <- (x + sigma(eps)^2 s(x, eps)) / m(eps): the denoising step E[x_0 | x_eps]."""
    kind, p0, p1, T = sde
    score_trace_lanes(net, sde, np.full(LANES, eps), x, dirs, ws)
    s = ws[3]
    sd = marginal_std(kind, p0, p1, T, eps)
    var = sd * sd
    m = mean_coeff(kind, p0, p1, T, eps)
    for d in range(x.shape[0]):
        for lane in range(LANES):
            x[d, lane] = (x[d, lane] + var * s[d, lane]) / m


@njit(parallel=True, **_JIT)
def sample_adaptive_kernel(net, sde, method, eps, rtol, atol, denoise, prior_std, k0, k1, start, cond, out, counts):
    """out [n, dim] (float32): samples start + 0..n-1, each from prior_std times its normals of
    (step 0, STREAM_PRIOR) at T through its own adaptive solve to eps (method: the index in
    plan.ADAPTIVE_METHODS), then the Tweedie step if denoise (one more evaluation); a sample
    whose solve failed comes out NaN. counts [3, n] (int64): nfe, accepted, rejected steps.
    cond [n, cond_dim] (cond_dim 0: none)."""
    if not (0 <= sde[0] <= _MAX_KIND):
        raise ValueError("unknown SDE kind (fastscore.sde.SDE_CLASSES)")
    if not (method == ODE_RK45 or method == EM_ADAPTIVE):
        raise ValueError("unknown adaptive method code (fastscore.plan.ADAPTIVE_METHODS)")
    netp.check_opcodes(net)
    T = sde[3]
    n, dim = out.shape
    for tile in prange((n + LANES - 1) // LANES):
        first = tile * LANES
        count = min(LANES, n - first)
        index0 = start + first
        ws = _workspace(net, 0)
        netp.import_conds(net, cond, first, count, ws[0])
        dirs = np.empty((0, dim, LANES), dtype=np.float32)  # no tangents: the score alone
        x = np.empty((dim, LANES))
        fill_normals(k0, k1, index0, 0, STREAM_PRIOR, x)
        for d in range(dim):
            for lane in range(LANES):
                x[d, lane] = prior_std * x[d, lane]
        if method == ODE_RK45:
            lanes = new_lanes(T, eps, RK45_H0_FRACTION, count)
            rk45_tile(net, sde, rtol, atol, x, np.empty((dim, LANES)), np.empty((7, dim, LANES)), np.empty(LANES),
                      lanes, dirs, ws)
        else:
            lanes = new_lanes(T, eps, GGF_H0_FRACTION, count)
            ggf_tile(net, sde, k0, k1, index0, rtol, atol, x, lanes, dirs, ws)
        failed, tile_counts = lanes[3], lanes[4]
        if denoise:
            _tweedie(net, sde, eps, x, dirs, ws)
            for lane in range(LANES):
                tile_counts[NFE, lane] += 1
        for lane in range(count):
            for d in range(dim):
                out[first + lane, d] = np.nan if failed[lane] else x[d, lane]
            for c in range(3):
                counts[c, first + lane] = tile_counts[c, lane]
