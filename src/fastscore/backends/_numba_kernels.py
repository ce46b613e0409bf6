"""Numba kernels of the fused samplers and likelihoods (imported on a kernel's first call).

They follow ``csrc/include/fastscore`` (net.h, program.h, likelihood.h, ode.h, sde.h) and the
readable reference ``fastscore/backends/reference.py`` step for step, and take every constant,
code and table from the Python modules that declare it: the Philox rounds and stream numbers
from ``fastscore.rng``, opcodes from ``fastscore.program`` and ``fastscore.netprog``, SDE
kinds from ``fastscore.sde``, likelihood method codes from ``fastscore.plan`` and the
Runge–Kutta tableaux and rk45 controller from ``fastscore.integrators``. An unknown code
raises ValueError (the Python wrapper ``numba_backend`` validates every code first, so these
raises are the last line):

* sampling interprets the plan's step program (``fastscore/program.py``): Eval, Draw and Lin
  over per-sample float32 registers, with the coefficients the plan precomputed in float64
  and rounded once (``plan.KernelTables``); no sampler is written here;
* the network is its program (``_numba_net``): the time phase runs in float64 once per
  evaluation time (a table for sampling, per distinct lane time for the likelihood) and is
  rounded once, the cond phase once per sample, the lane phase in float32;
* the likelihood integrates [x, delta] in float64 and only the network (values and
  forward-mode tangents) runs in float32;
* normals come from the shared Philox4x32-10 stream, Box-Muller in float64, then cast.

Samples are processed in tiles of ``LANES`` samples held as the last (contiguous) axis of
every work array (as the C++ tile kernels hold them in SIMD lanes): each weight loaded feeds
``LANES`` independent multiply-adds, and every lane does the arithmetic of its own sample in
a fixed order, so a sample's result depends only on (seed, index, plan), never on the tile
it shares, the batch split or the thread count. Tiles are spread over threads with
``numba.prange``; each runs its whole trajectory (sampling) or solve (likelihood) inside the
kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import integrators, rng
from ..plan import LOG_PROB_CODES
from ..program import DRAW, EVAL, LIN
from ..sde import SDE_CLASSES
from . import _numba_net as netp
from ._numba_lanes import LANES, row_copy, row_fill
from ._numba_sde import KIND_VP, diffusion_sq, drift_coeff

# -- constants and codes (frozen into the kernels with their numpy types) ------------------

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)

_SH31 = np.uint64(31)
_SH8 = np.uint64(8)
_ONE64 = np.uint64(1)
_TWO_M24 = rng._TWO_M24
_TWO_PI = 2.0 * math.pi

STREAM_PRIOR = rng.STREAM_PRIOR
STREAM_PROBE = rng.STREAM_PROBE

LP_RK45 = LOG_PROB_CODES["rk45"]
_MAX_KIND = max(SDE_CLASSES)
assert sorted(SDE_CLASSES) == list(range(_MAX_KIND + 1)), "SDE kinds are 0 .. n - 1"


def _lower(rows, n: int) -> np.ndarray:
    """A strictly lower matrix given by rows of i entries, as a zero-padded [n, n] array."""
    a = np.zeros((n, n))
    for i, row in enumerate(rows):
        a[i, :len(row)] = row
    return a


# fixed-step tableaux (integrators.FIXED) indexed by log-prob code: stages (0: not a fixed-step
# method), nodes c, matrix a (row i: a[i, :i]), weights b
_S = max(tab.stages for tab in integrators.FIXED.values())
FIXED_STAGES = np.zeros(len(LOG_PROB_CODES), dtype=np.int64)
FIXED_C = np.zeros((len(LOG_PROB_CODES), _S))
FIXED_A = np.zeros((len(LOG_PROB_CODES), _S, _S))
FIXED_B = np.zeros((len(LOG_PROB_CODES), _S))
for _name, _tab in integrators.FIXED.items():
    _code = LOG_PROB_CODES[_name]
    FIXED_STAGES[_code] = _tab.stages
    FIXED_C[_code, :_tab.stages] = _tab.c
    FIXED_A[_code, :_tab.stages, :_tab.stages] = _lower(_tab.a, _tab.stages)
    FIXED_B[_code, :_tab.stages] = _tab.b

# Dormand–Prince 5(4) (integrators.DOPRI5, scipy's RK45): nodes, matrix (row i: a[i, :i]),
# 5th-order weights, error weights over the 7 stages (the 7th is the derivative at the new point)
DP_C = np.array(integrators.DOPRI5.c)
DP_A = _lower(integrators.DOPRI5.a, len(DP_C))
DP_B = np.array(integrators.DOPRI5.b)
DP_E = np.array(integrators.DOPRI5.e)
RK45_MAX_ATTEMPTS = integrators.RK45_MAX_ATTEMPTS
RK45_H0_FRACTION = integrators.RK45_H0_FRACTION
RK45_SAFETY = integrators.RK45_SAFETY
RK45_MIN_FACTOR = integrators.RK45_MIN_FACTOR
RK45_MIN_STEP_FRACTION = integrators.RK45_MIN_STEP_FRACTION
RK45_MAX_FACTOR = integrators.RK45_MAX_FACTOR
RK45_EXPONENT = integrators.RK45_EXPONENT

_JIT = dict(cache=True, fastmath=False, nogil=True)


# -- Philox4x32-10 and the shared stream (rng.py / philox.h) ------------------------------

philox = njit(**_JIT)(rng.philox_rounds)  # the reference's rounds, compiled as they stand


@njit(**_JIT)
def lane_normals(k0, k1, index, step, stream, z, lane):
    """z[:, lane] <- the standard normals of sample `index` at (step, stream): draw d is lane
    d % 4 of Philox block d // 4, Box-Muller in float64, rounded on the store when z is
    float32 (z [dim, LANES], float32 or float64)."""
    dim = z.shape[0]
    c0 = np.uint64(index & 0xFFFFFFFF)
    s1 = np.uint64(step)
    s3 = np.uint64(stream)
    for b in range((dim + 3) // 4):
        x0, x1, x2, x3 = philox(c0, s1, np.uint64(b), s3, k0, k1)
        d = 4 * b
        r = math.sqrt(-2.0 * math.log(np.float64((x0 >> _SH8) + _ONE64) * _TWO_M24))
        th = _TWO_PI * (np.float64(x1 >> _SH8) * _TWO_M24)
        z[d, lane] = r * math.cos(th)
        if d + 1 < dim:
            z[d + 1, lane] = r * math.sin(th)
        if d + 2 < dim:
            r = math.sqrt(-2.0 * math.log(np.float64((x2 >> _SH8) + _ONE64) * _TWO_M24))
            th = _TWO_PI * (np.float64(x3 >> _SH8) * _TWO_M24)
            z[d + 2, lane] = r * math.cos(th)
            if d + 3 < dim:
                z[d + 3, lane] = r * math.sin(th)


@njit(**_JIT)
def fill_normals(k0, k1, index0, step, stream, z):
    """z [dim, LANES] <- the standard normals of samples index0 + lane at (step, stream)."""
    for lane in range(LANES):
        lane_normals(k0, k1, index0 + lane, step, stream, z, lane)


@njit(**_JIT)
def fill_rademacher(k0, k1, index0, dim, v):
    """v [dim, LANES] (float32) <- Rademacher probes (stream STREAM_PROBE, step 0): +1 where
    the top bit of word d % 4 of block d // 4 is 0, else -1."""
    for lane in range(LANES):
        c0 = np.uint64((index0 + lane) & 0xFFFFFFFF)
        for b in range((dim + 3) // 4):
            w = philox(c0, np.uint64(0), np.uint64(b), np.uint64(STREAM_PROBE), k0, k1)
            for q in range(4):
                d = 4 * b + q
                if d < dim:
                    v[d, lane] = _F1 if (w[q] >> _SH31) == np.uint64(0) else -_F1


# -- sampling: the step-program interpreter (program.h, program.execute; reference.sample) ---
#
# `net` is the tuple (ops, params, params_k, L, sp) of numba_backend.net_args (see _numba_net). A step
# program is the int32 [n_ops, OP_WIDTH] table of fastscore/program.py; coef [steps + 1,
# n_coef] comes from plan.KernelTables, ttab [steps * n_slots + 1, n_texp] is the network's
# time phase at each evaluation time (_numba_net.time_table).


@njit(**_JIT)
def lin(c, op, regs, acc, dst):
    """dst [dim, LANES] <- sum_j c[c_j] * regs[r_j] for the terms (r_j, c_j) of the Lin row `op`,
    in float32, left to right: acc = c_0 r_0, then acc = acc + c_j r_j. The terms are summed
    into the scratch acc first, so dst may be one of them."""
    n_terms = op[2]
    a = c[op[5]]
    src = regs[op[4]]
    dim = dst.shape[0]
    for d in range(dim):
        for lane in range(LANES):
            acc[d, lane] = a * src[d, lane]
    for j in range(1, n_terms):
        a = c[op[5 + 2 * j]]
        src = regs[op[4 + 2 * j]]
        for d in range(dim):
            for lane in range(LANES):
                acc[d, lane] = acc[d, lane] + a * src[d, lane]
    for d in range(dim):
        for lane in range(LANES):
            dst[d, lane] = acc[d, lane]


@njit(**_JIT)
def evaluate(net, ttab, row, x, out, a, no_tangents):
    """out [dim, LANES] = s(x) at evaluation row `row` for a tile whose arena a already holds
    the cond imports: the row's time imports, then the lane phase (no_tangents: an empty
    [0, 1, LANES] tangent buffer, allocated once per tile)."""
    L = net[3]
    dim, n_texp, o = L[netp.DIM], L[netp.N_TEXP], L[netp.OUT]
    for j in range(n_texp):
        row_fill(a, dim + j, ttab[row, j])
    for d in range(dim):
        row_copy(a, d, x, d)
    netp.run_lane_phase(net, a, no_tangents, 0)
    for d in range(dim):
        row_copy(out, d, a, o + d)


@njit(**_JIT)
def run_ops(net, ops, first, last, k, n_slots, coef, ttab, k0, k1, index0, regs, acc, a, no_tangents):
    """Rows [first, last) of the program for step k (k == steps: the final program) on a
    tile's registers regs [n_registers, dim, LANES] (program.h ``run_ops``):
    Eval [EVAL, dst, src, slot]: dst <- s(src) at evaluation row k * n_slots + slot;
    Draw [DRAW, dst, stream]: dst <- the normals of (step k, stream);
    Lin [LIN, dst, n, 0, r0, c0, ...]: dst <- sum_j coef[k, c_j] regs[r_j] (``lin``)."""
    c = coef[k]
    for i in range(first, last):
        op = ops[i]
        code = op[0]
        dst = regs[op[1]]
        if code == EVAL:
            evaluate(net, ttab, k * n_slots + op[3], regs[op[2]], dst, a, no_tangents)
        elif code == DRAW:
            fill_normals(k0, k1, index0, k, op[2], dst)
        elif code == LIN:
            lin(c, op, regs, acc, dst)
        else:
            raise ValueError("step program: unknown opcode (fastscore.program: EVAL, DRAW, LIN)")


@njit(parallel=True, **_JIT)
def sample_kernel(net, ops, n_body, n_slots, n_registers, coef, times, prior_std, k0, k1, start, cond, out):
    """out [n, dim] (float32): samples start + 0..n-1, each from its prior draw at T through the
    program's body for steps k = 0..steps-1 (coefficient row k, draws at step k) and its final
    rows once after the last step (row steps; they never draw). Registers start at zero,
    register 0 (the state x) at prior_std times the normals of (step 0, STREAM_PRIOR).
    times: the evaluation times of the plan; cond [n, cond_dim] (cond_dim 0: none)."""
    n, dim = out.shape
    steps = coef.shape[0] - 1
    n_ops = ops.shape[0]
    for i in range(n_ops):
        if not (ops[i, 0] == EVAL or ops[i, 0] == DRAW or ops[i, 0] == LIN):
            raise ValueError("step program: unknown opcode (fastscore.program: EVAL, DRAW, LIN)")
    netp.check_opcodes(net)
    ttab = netp.time_table(net, times)
    prior = np.float32(prior_std)
    n_tiles = (n + LANES - 1) // LANES
    for tile in prange(n_tiles):
        first = tile * LANES
        count = min(LANES, n - first)
        index0 = start + first
        regs = np.zeros((n_registers, dim, LANES), dtype=np.float32)
        acc = np.empty((dim, LANES), dtype=np.float32)
        a = np.zeros((net[3][netp.LANE_ARENA], LANES), dtype=np.float32)
        netp.import_conds(net, cond, first, count, a)
        no_tangents = np.empty((0, 1, LANES), dtype=np.float32)
        x = regs[0]
        fill_normals(k0, k1, index0, 0, STREAM_PRIOR, x)
        for d in range(dim):
            for lane in range(LANES):
                x[d, lane] = x[d, lane] * prior
        for k in range(steps):
            run_ops(net, ops, 0, n_body, k, n_slots, coef, ttab, k0, k1, index0, regs, acc, a, no_tangents)
        run_ops(net, ops, n_body, n_ops, steps, n_slots, coef, ttab, k0, k1, index0, regs, acc, a, no_tangents)
        for lane in range(count):
            for d in range(dim):
                out[first + lane, d] = x[d, lane]


@njit(parallel=True, **_JIT)
def net_eval_kernel(net, x, cond, t, out):
    """out [n, dim] = s(x, t) (float32) for points x [n, dim] (float32) at one time t: the
    network pass of the samplers (time phase rounded once, lane phase in float32)."""
    n, dim = x.shape
    netp.check_opcodes(net)
    ttab = netp.time_table(net, np.full(1, t))
    for tile in prange((n + LANES - 1) // LANES):
        first = tile * LANES
        count = min(LANES, n - first)
        a = np.zeros((net[3][netp.LANE_ARENA], LANES), dtype=np.float32)
        netp.import_conds(net, cond, first, count, a)
        xt = np.zeros((dim, LANES), dtype=np.float32)
        for lane in range(count):
            for d in range(dim):
                xt[d, lane] = x[first + lane, d]
        st = np.empty((dim, LANES), dtype=np.float32)
        evaluate(net, ttab, 0, xt, st, a, np.empty((0, 1, LANES), dtype=np.float32))
        for lane in range(count):
            for d in range(dim):
                out[first + lane, d] = st[d, lane]


# -- likelihood (likelihood.h, ode.h; reference.log_prob) ---------------------------------
#
# `net` as for sampling, `sde` the tuple (kind, p0, p1, T) of numba_backend.sde_args, and
# `ws` a tile's scratch from _workspace.


@njit(**_JIT)
def _workspace(net, nt):
    """Scratch of one tile: the lane arena a [lane_arena, LANES] and its tangents dT [nt,
    lane_arena, LANES] (float32), the time arena ta [time_arena], and per lane the float64
    score s [dim, LANES], trace tr, and coefficients f, q [LANES]."""
    L = net[3]
    la = L[netp.LANE_ARENA]
    return (np.zeros((la, LANES), dtype=np.float32), np.zeros((nt, la, LANES), dtype=np.float32),
            np.zeros(max(L[netp.TIME_ARENA], 1)), np.empty((L[netp.DIM], LANES)), np.empty(LANES),
            np.empty(LANES), np.empty(LANES))


@njit(**_JIT)
def score_trace_lanes(net, sde, ts, y, dirs, ws):
    """ws's s [dim, LANES] = s(x, t) and tr [LANES] = sum_i dir_i . (ds/dx) dir_i for x = the
    first dim rows of y (float64, rounded to float32 for the network), lane l at time ts[l];
    also ws's f, q = drift f(t) and 1/2 g(t)^2 per lane. The time phase and the coefficients
    run once per distinct time in the tile (always once for fixed steps); the cond imports
    must already be in ws's arena. Tangents go through the same rows as the values."""
    L = net[3]
    kind, p0, p1, T = sde
    a, dT, ta, s, tr, fco, qco = ws
    dim, n_texp, o = L[netp.DIM], L[netp.N_TEXP], L[netp.OUT]
    e = netp.time_export(L)
    nt = dirs.shape[0]
    last = np.nan
    f = 0.0
    q = 0.0
    for lane in range(LANES):
        t = ts[lane]
        if not t == last:
            last = t
            netp.run_time(net, t, ta)
            f = drift_coeff(kind, p0, p1, T, t)
            q = 0.5 * diffusion_sq(kind, p0, p1, T, t)
        for j in range(n_texp):
            a[dim + j, lane] = np.float32(ta[e + j])
        fco[lane] = f
        qco[lane] = q
    for d in range(dim):
        for lane in range(LANES):
            a[d, lane] = np.float32(y[d, lane])
    for i in range(nt):
        for d in range(dim):
            for lane in range(LANES):
                dT[i, d, lane] = dirs[i, d, lane]
    netp.run_lane_phase(net, a, dT, nt)
    for lane in range(LANES):
        acc = _F0
        for i in range(nt):
            for d in range(dim):
                acc += dirs[i, d, lane] * dT[i, o + d, lane]
        tr[lane] = np.float64(acc)
        for d in range(dim):
            s[d, lane] = np.float64(a[o + d, lane])


@njit(**_JIT)
def velocity(net, sde, ts, y, k, dirs, ws):
    """k [C, LANES] = probability-flow velocity at y [C, LANES] (float64), lane l at time ts[l]:
    dx/dt = f(t) x - 1/2 g(t)^2 s(x, t) over the first dim rows; with C = dim + 1 also the
    likelihood's d delta/dt = dim f(t) - 1/2 g(t)^2 tr(ds/dx) (reference._augmented)."""
    score_trace_lanes(net, sde, ts, y, dirs, ws)
    s, tr, fco, qco = ws[3], ws[4], ws[5], ws[6]
    dim = s.shape[0]
    for lane in range(LANES):
        f = fco[lane]
        q = qco[lane]
        for d in range(dim):
            k[d, lane] = f * y[d, lane] - q * s[d, lane]
        if k.shape[0] > dim:
            k[dim, lane] = dim * f - q * tr[lane]


@njit(**_JIT)
def set_directions(hutchinson, k0, k1, index0, dirs):
    """Tangent directions [nt, dim, LANES]: the unit vectors (exact trace) or one Rademacher
    probe per sample (Hutchinson; stream STREAM_PROBE, step 0, sample index0 + lane)."""
    dim = dirs.shape[1]
    if hutchinson:
        fill_rademacher(k0, k1, index0, dim, dirs[0])
        return
    for i in range(dim):
        for d in range(dim):
            for lane in range(LANES):
                dirs[i, d, lane] = _F1 if i == d else _F0


@njit(parallel=True, **_JIT)
def score_trace_kernel(net, x, cond, t, hutchinson, k0, k1, s_out, tr_out):
    """s_out [n, dim] = s(x, t) and tr_out [n] = exact trace (or the Hutchinson form with
    the probe of sample i) for points x [n, dim] (float64) at one time t: the network pass
    every likelihood kernel evaluates, exposed for tests."""
    n, dim = x.shape
    netp.check_opcodes(net)
    nt = 1 if hutchinson else dim
    sde = (KIND_VP, 0.1, 20.0, 1.0)  # any valid SDE: score_trace_lanes' drift and diffusion are unused here
    for tile in prange((n + LANES - 1) // LANES):
        first = tile * LANES
        count = min(LANES, n - first)
        ws = _workspace(net, nt)
        netp.import_conds(net, cond, first, count, ws[0])
        y = np.zeros((dim, LANES))
        for lane in range(count):
            for d in range(dim):
                y[d, lane] = x[first + lane, d]
        dirs = np.empty((nt, dim, LANES), dtype=np.float32)
        set_directions(hutchinson, k0, k1, first, dirs)
        ts = np.full(LANES, t)
        score_trace_lanes(net, sde, ts, y, dirs, ws)
        for lane in range(count):
            for d in range(dim):
                s_out[first + lane, d] = ws[3][d, lane]
            tr_out[first + lane] = ws[4][lane]


@njit(parallel=True, **_JIT)
def log_prob_kernel(net, sde, x_in, cond, method, steps, eps, rtol, atol, hutchinson, k0, k1, start, x_out,
                    delta_out, nfe_out):
    """Integrates y = [x, delta] from eps to T for every sample: x_out [n, dim] = x(T),
    delta_out [n] = delta(T) (float64), nfe_out [n]; sample i's probe is that of stream index
    start + i. Returns the number of samples for which rk45 gave up (more than
    RK45_MAX_ATTEMPTS attempted steps)."""
    if not (0 <= sde[0] <= _MAX_KIND):
        raise ValueError("unknown SDE kind (fastscore.sde.SDE_CLASSES)")
    if not (method == LP_RK45 or (0 <= method < FIXED_STAGES.shape[0] and FIXED_STAGES[method] > 0)):
        raise ValueError("unknown log_prob method code (fastscore.plan.LOG_PROB_CODES)")
    netp.check_opcodes(net)
    T = sde[3]
    n, dim = x_in.shape
    C = dim + 1
    nt = 1 if hutchinson else dim
    n_tiles = (n + LANES - 1) // LANES
    failed = np.zeros(n_tiles, dtype=np.int64)
    for tile in prange(n_tiles):
        first = tile * LANES
        count = min(LANES, n - first)
        ws = _workspace(net, nt)
        netp.import_conds(net, cond, first, count, ws[0])
        y = np.zeros((C, LANES))
        y1 = np.empty((C, LANES))
        K = np.empty((7, C, LANES))
        ts = np.empty(LANES)
        nfe = np.zeros(LANES, dtype=np.int64)
        for lane in range(count):
            for d in range(dim):
                y[d, lane] = x_in[first + lane, d]
        # one set of directions per sample for the whole solve; Hutchinson probes are
        # addressed by the index in this batch (as reference.log_prob: no start offset)
        dirs = np.empty((nt, dim, LANES), dtype=np.float32)
        set_directions(hutchinson, k0, k1, start + first, dirs)
        if method != LP_RK45:
            # fixed steps on t_k = eps + k h with the tableaux of integrators.FIXED
            hh = (T - eps) / steps
            S = FIXED_STAGES[method]
            for kk in range(steps):
                t0 = eps + kk * ((T - eps) / steps)  # LogProbPlan.time(k)
                for i in range(S):
                    for c in range(C):
                        for lane in range(LANES):
                            if i == 0:
                                y1[c, lane] = y[c, lane]
                            else:
                                acc = 0.0
                                for j in range(i):
                                    acc += FIXED_A[method, i, j] * K[j, c, lane]
                                y1[c, lane] = y[c, lane] + hh * acc
                    for lane in range(LANES):
                        ts[lane] = t0 + FIXED_C[method, i] * hh
                    velocity(net, sde, ts, y1, K[i], dirs, ws)
                for c in range(C):
                    for lane in range(LANES):
                        acc = 0.0
                        for i in range(S):
                            acc += FIXED_B[method, i] * K[i, c, lane]
                        y[c, lane] = y[c, lane] + hh * acc
            for lane in range(LANES):
                nfe[lane] = steps * S
        else:
            lanes = new_lanes(eps, T, RK45_H0_FRACTION, count)
            failed[tile] = rk45_tile(net, sde, rtol, atol, y, y1, K, ts, lanes, dirs, ws)
            for lane in range(LANES):
                nfe[lane] = lanes[4][NFE, lane]
                if lanes[3][lane]:  # failed: poison log p
                    y[dim, lane] = np.nan
        for lane in range(count):
            for d in range(dim):
                x_out[first + lane, d] = y[d, lane]
            delta_out[first + lane] = y[dim, lane]
            nfe_out[first + lane] = nfe[lane]
    return failed.sum()


# -- per-lane step-size control (integrators.step_factor, reference._Lanes) ----------------
#
# `lanes` is a tile's controller state from new_lanes: per lane the time t, the signed step h,
# done and failed flags and counts [3, LANES] (rows NFE, ACCEPTED, REJECTED); then the end
# time t1, the direction sgn (+1 or -1) and the smallest step a lane may take.

NFE, ACCEPTED, REJECTED = range(3)


@njit(**_JIT)
def new_lanes(t0, t1, h0_fraction, count):
    """The controller state of a tile solving from t0 toward t1, first step h0_fraction
    (t1 - t0); padding lanes (>= count) start done."""
    done = np.zeros(LANES, dtype=np.bool_)
    for lane in range(count, LANES):
        done[lane] = True
    return (np.full(LANES, t0), np.full(LANES, h0_fraction * (t1 - t0)), done, np.zeros(LANES, dtype=np.bool_),
            np.zeros((3, LANES), dtype=np.int64), t1, 1.0 if t1 > t0 else -1.0,
            RK45_MIN_STEP_FRACTION * abs(t1 - t0))


@njit(**_JIT)
def step_factor(err, exponent):
    """integrators.step_factor of one error norm: rejections (and NaN errors, a trial step
    that overflowed) never grow the step."""
    if err != err:
        return RK45_MIN_FACTOR
    f = RK45_MAX_FACTOR if err == 0.0 else min(RK45_MAX_FACTOR, max(RK45_MIN_FACTOR, RK45_SAFETY * err**exponent))
    return f if err <= 1.0 else min(f, 1.0)


@njit(**_JIT)
def control(lanes, lane, err, exponent):
    """Accepts (err <= 1) or rejects the attempt of `lane` with error norm err and sets its next
    step, h step_factor(err) cut to what is left (reference._Lanes.control): the accepted step
    that reaches t1 lands on it and ends the solve; a next step below the minimum ends it as
    failed. Returns whether the attempt was accepted."""
    t, hs, done, failed, counts, t1, sgn, min_step = lanes
    h = hs[lane]
    ok = err <= 1.0
    if ok:
        counts[ACCEPTED, lane] += 1
        if sgn * h >= sgn * (t1 - t[lane]):
            t[lane] = t1
            done[lane] = True
        else:
            t[lane] = t[lane] + h
    else:
        counts[REJECTED, lane] += 1
    nxt = h * step_factor(err, exponent)
    hs[lane] = sgn * min(sgn * nxt, sgn * (t1 - t[lane]))
    if not done[lane] and sgn * nxt < min_step:
        done[lane] = True
        failed[lane] = True
    return ok


@njit(**_JIT)
def running(lanes):
    """Whether some lane of the tile is still solving."""
    done = lanes[2]
    for lane in range(LANES):
        if not done[lane]:
            return True
    return False


@njit(**_JIT)
def give_up(lanes):
    """Ends every lane still solving (out of attempts) as failed; returns how many."""
    done, failed = lanes[2], lanes[3]
    n = 0
    for lane in range(LANES):
        if not done[lane]:
            done[lane] = True
            failed[lane] = True
            n += 1
    return n


@njit(**_JIT)
def rk45_tile(net, sde, rtol, atol, y, y5, K, ts, lanes, dirs, ws):
    """Adaptive Dormand–Prince 5(4) with step-size control per sample: the project's
    definition of `rk45` (csrc/include/fastscore/ode.h implements the identical controller),
    for the likelihood (y = [x, delta], eps -> T) and the sampler ode_rk45 (y = x, T -> eps).

    * tableau: the standard Dormand–Prince coefficients (as scipy's RK45: C, A, B and error
      weights E = B5 - B4 including the 7th stage); FSAL: the derivative at the accepted new
      point is the next step's first stage.
    * state per sample: y [C, LANES] (float64), C = y.shape[0] controlled components; t from
      lanes' t0 to t1; h0 = RK45_H0_FRACTION (t1 - t0) (new_lanes).
    * per attempt: err_j = h sum_i E_i k_i[j]; scale_j = atol + rtol max(|y_j|, |y5_j|);
      err_norm = sqrt(mean_j (err_j / scale_j)^2) over the C components; then ``control``
      with exponent RK45_EXPONENT (integrators.RK45_*: 10, 0.2, 0.9, -1/5); accepted: y = y5.
    * nfe: 1 (initial derivative) + 6 per attempted step; a sample still short of t1 after
      RK45_MAX_ATTEMPTS attempts has failed (the likelihood raises RuntimeError with the count).

    Each lane has its own t, h and acceptance; the stages use y5 as scratch. A lane that is
    done idles (state frozen, step 0) until the tile is done. Returns how many lanes ran out
    of attempts; every failed lane is flagged in lanes (its result is the caller's to poison).
    """
    t, hs, done, counts = lanes[0], lanes[1], lanes[2], lanes[4]
    C = y.shape[0]
    hv = np.zeros(LANES)
    for lane in range(LANES):
        counts[NFE, lane] += 1
    velocity(net, sde, t, y, K[0], dirs, ws)
    y1 = np.empty((C, LANES))
    for _ in range(RK45_MAX_ATTEMPTS):
        if not running(lanes):
            return 0
        for lane in range(LANES):
            hv[lane] = 0.0 if done[lane] else hs[lane]
        for i in range(1, 6):
            for c in range(C):
                for lane in range(LANES):
                    acc = 0.0
                    for j in range(i):
                        acc += DP_A[i, j] * K[j, c, lane]
                    y1[c, lane] = y[c, lane] + hv[lane] * acc
            for lane in range(LANES):
                ts[lane] = t[lane] + DP_C[i] * hv[lane]
            velocity(net, sde, ts, y1, K[i], dirs, ws)
        for c in range(C):
            for lane in range(LANES):
                acc = 0.0
                for i in range(6):
                    acc += DP_B[i] * K[i, c, lane]
                y5[c, lane] = y[c, lane] + hv[lane] * acc
        for lane in range(LANES):
            ts[lane] = t[lane] + hv[lane]
        velocity(net, sde, ts, y5, K[6], dirs, ws)
        for lane in range(LANES):
            if done[lane]:
                continue
            counts[NFE, lane] += 6
            h = hs[lane]
            sq = 0.0
            for c in range(C):
                acc = 0.0
                for i in range(7):
                    acc += DP_E[i] * K[i, c, lane]
                r = h * acc / (atol + rtol * max(abs(y[c, lane]), abs(y5[c, lane])))
                sq += r * r
            if control(lanes, lane, math.sqrt(sq / C), RK45_EXPONENT):
                for c in range(C):
                    y[c, lane] = y5[c, lane]
                    K[0, c, lane] = K[6, c, lane]  # FSAL
    return give_up(lanes)
