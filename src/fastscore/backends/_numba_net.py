"""Network programs (fastscore/netprog.py) interpreted by Numba: the fallback's copy of
csrc/include/fastscore/net.h. The time and cond phases run in float64 on one value per slot
(``run_scalar``); the lane phase in float32 on [arena, LANES] tiles with optional forward-mode
tangents dT [nt, arena, LANES] (``run_lanes``; elementwise functions are evaluated in float64
and rounded once). A network reaches the kernels as the tuple ``net = (ops, params, params_k,
L, sp)``: params_k the parameters with every dense block k-major (the lane phase's copy, so a
dense row is one ``accumulate`` of _numba_lanes), L the int64 layout (the indices below,
NetProgram.header's order) and sp the float64 parameters of the network's own SDE. Rows are validated before any kernel runs
(numba_backend.check_net), so these loops index without checks."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _numba_sde as sde_fn
from ._numba_lanes import accumulate, row_copy, row_fill, row_relu
from ..netprog import (BINARY, BINARY_FUNCTIONS, COPY, DENSE, INIT_ARENA, INIT_NONE, INIT_PARAM, MODE_PARAM_SCALAR,
                       MODE_PARAM_VECTOR, MODE_SCALAR, MODE_VECTOR, NORM, SDE_FUNCTIONS, SDE_OP, UNARY,
                       UNARY_FUNCTIONS)

_JIT = dict(cache=True, fastmath=False, nogil=True)
U = UNARY_FUNCTIONS
RELU, LEAKY, SILU, GELU, GELU_TANH, TANH, SIGMOID, ELU, SOFTPLUS, MISH = (
    U["relu"], U["leaky_relu"], U["silu"], U["gelu"], U["gelu_tanh"], U["tanh"], U["sigmoid"], U["elu"],
    U["softplus"], U["mish"])
SIN, COS, EXP, LOG, SQRT, NEG, RECIPROCAL, SQUARE = (
    U["sin"], U["cos"], U["exp"], U["log"], U["sqrt"], U["neg"], U["reciprocal"], U["square"])
ADD, SUB, MUL, DIV = (BINARY_FUNCTIONS[k] for k in ("add", "sub", "mul", "div"))
SDE_T, SDE_SIGMA = SDE_FUNCTIONS["t"], SDE_FUNCTIONS["sigma"]
# layout indices of L (NetProgram.header)
DIM, COND_DIM, N_TIME_OPS, N_COND_OPS, TIME_ARENA, COND_ARENA, LANE_ARENA, N_TEXP, N_CEXP, OUT, SDE_KIND = range(11)
TANGENT_A, TANGENT_B, TANGENT_DST = 1, 2, 4
_K = math.sqrt(2.0 / math.pi)


@njit(**_JIT)
def unary(fn, p, x):
    """(f(x), f'(x)) for one float64 value; p: f's parameters."""
    one = 1.0
    if fn == RELU:
        return (x, one) if x > 0 else (x * 0, x * 0)
    if fn == LEAKY:
        return (x, one) if x > 0 else (p[0] * x, one * p[0])
    if fn == SILU:
        s = one / (one + math.exp(-x))
        return x * s, s * (one + x * (one - s))
    if fn == GELU:
        cdf = 0.5 * (one + math.erf(x * 0.7071067811865476))
        return x * cdf, cdf + x * 0.3989422804014327 * math.exp(-0.5 * x * x)
    if fn == GELU_TANH:
        th = math.tanh(_K * (x + 0.044715 * x * x * x))
        return 0.5 * x * (one + th), 0.5 * (one + th) + 0.5 * x * (one - th * th) * _K * (one + 0.134145 * x * x)
    if fn == TANH:
        r = math.tanh(x)
        return r, one - r * r
    if fn == SIGMOID:
        s = one / (one + math.exp(-x))
        return s, s * (one - s)
    if fn == ELU:
        return (x, one) if x > 0 else (p[0] * math.expm1(x), p[0] * math.exp(x))
    if fn == SOFTPLUS:
        bx = p[0] * x
        if bx > p[1]:
            return x, one
        return (max(bx, 0.0) + math.log1p(math.exp(-abs(bx)))) / p[0], one / (one + math.exp(-bx))
    if fn == MISH:
        th = math.tanh(max(x, 0.0) + math.log1p(math.exp(-abs(x))))
        return x * th, th + x * (one - th * th) / (one + math.exp(-x))
    if fn == SIN:
        return math.sin(x), math.cos(x)
    if fn == COS:
        return math.cos(x), -math.sin(x)
    if fn == EXP:
        e = math.exp(x)
        return e, e
    if fn == LOG:
        return math.log(x), one / x
    if fn == SQRT:
        r = math.sqrt(x)
        return r, 0.5 / r
    if fn == NEG:
        return -x, -one
    if fn == RECIPROCAL:
        r = one / x
        return r, -r * r
    if fn == SQUARE:
        return x * x, 2 * x
    return np.nan, np.nan


@njit(**_JIT)
def binary(fn, a, b):
    if fn == ADD:
        return a + b
    if fn == SUB:
        return a - b
    if fn == MUL:
        return a * b
    return a / b


@njit(**_JIT)
def operand(arena, params, mode, off, j):
    """Element j of a binary row's operand as a float64 (time and cond phases)."""
    if mode == MODE_VECTOR:
        return arena[off + j]
    if mode == MODE_SCALAR:
        return arena[off]
    if mode == MODE_PARAM_VECTOR:
        return np.float64(params[off + j])
    return np.float64(params[off])


@njit(**_JIT)
def run_scalar(ops, params, first, last, t, a, kind, sp):
    """Rows [first, last) on a float64 arena a (the time phase at t, or the cond phase); SDE
    rows read t, sigma(t) or alpha(t) of the network's SDE (kind, sp = (p0, p1, T))."""
    for i in range(first, last):
        op = ops[i]
        code, dst, n = op[0], op[1], op[4]
        if code == DENSE:
            n_in, w = op[5], op[6]
            for j in range(n):
                acc = 0.0
                if op[7] == INIT_PARAM:
                    acc = np.float64(params[op[3] + j])
                elif op[7] == INIT_ARENA:
                    acc = a[op[3] + j]
                for k in range(n_in):
                    acc += np.float64(params[w + j * n_in + k]) * a[op[2] + k]
                a[dst + j] = acc
        elif code == UNARY:
            p = params[op[6]:op[6] + 2].astype(np.float64)
            for j in range(n):
                a[dst + j] = unary(op[5], p, a[op[2] + j])[0]
        elif code == BINARY:
            for j in range(n):
                a[dst + j] = binary(op[5], operand(a, params, op[6], op[2], j), operand(a, params, op[7], op[3], j))
        elif code == NORM:
            _norm_scalar(a, params, op, n)
        elif code == SDE_OP:
            a[dst] = _sde_value(op[5], t, kind, sp)
        elif code == COPY:
            for j in range(n):
                a[dst + j] = a[op[2] + j]
        else:
            raise ValueError("network program: unknown opcode")


@njit(**_JIT)
def _sde_value(fn, t, kind, sp):
    if fn == SDE_T:
        return t
    if fn == SDE_SIGMA:
        return sde_fn.marginal_std(kind, sp[0], sp[1], sp[2], t)
    return sde_fn.mean_coeff(kind, sp[0], sp[1], sp[2], t)


@njit(**_JIT)
def _norm_scalar(a, params, op, n):
    src, dst = op[2], op[1]
    mean = 0.0
    for j in range(n):
        mean += a[src + j]
    mean /= n
    var = 0.0
    for j in range(n):
        var += (a[src + j] - mean) ** 2
    inv = 1.0 / math.sqrt(var / n + params[op[3]])
    for j in range(n):
        y = (a[src + j] - mean) * inv
        g = params[op[5] + j] if op[5] >= 0 else 1.0
        b = params[op[6] + j] if op[6] >= 0 else 0.0
        a[dst + j] = y * g + b


@njit(**_JIT)
def run_lanes(ops, params, params_k, first, last, a, dT, nt):
    """The lane phase on a float32 tile a [arena, LANES] (dense weights from the k-major
    params_k). With nt > 0, rows whose result carries tangents propagate dT [nt, arena,
    LANES] (net.h run_net)."""
    lanes = a.shape[1]
    for i in range(first, last):
        op = (ops[i, 0], ops[i, 1], ops[i, 2], ops[i, 3], ops[i, 4], ops[i, 5], ops[i, 6], ops[i, 7], ops[i, 8])
        code, dst, n, tan = op[0], op[1], op[4], op[8]
        do_t = nt > 0 and (tan & TANGENT_DST) != 0
        ta = (tan & TANGENT_A) != 0
        tb = (tan & TANGENT_B) != 0
        if code == DENSE:
            n_in, w, init = op[5], op[6], op[7]
            _dense(params_k, w, params, init, op[3], a, op[2], dst, n_in, n)
            if do_t:
                for d in range(nt):
                    dd = dT[d]
                    if ta:
                        _dense(params_k, w, params, INIT_ARENA if (init == INIT_ARENA and tb) else INIT_NONE, op[3],
                               dd, op[2], dst, n_in, n)
                    else:
                        for j in range(n):
                            if init == INIT_ARENA and tb:
                                row_copy(dd, dst + j, dd, op[3] + j)
                            else:
                                row_fill(dd, dst + j, np.float32(0))
        elif code == UNARY and op[5] == RELU and not do_t:
            for j in range(n):
                row_relu(a, dst + j, a, op[2] + j)
        elif code == UNARY:
            p = params[op[6]:op[6] + 2].astype(np.float64)
            for j in range(n):
                for lane in range(lanes):
                    f, s = unary(op[5], p, np.float64(a[op[2] + j, lane]))
                    a[dst + j, lane] = np.float32(f)
                    if do_t:
                        for d in range(nt):
                            dT[d, dst + j, lane] = np.float32(s) * dT[d, op[2] + j, lane] if ta else 0
        elif code == BINARY:
            fn, ma, mb = op[5], op[6], op[7]
            for j in range(n):
                for lane in range(lanes):
                    x = _lane_operand(a, params, ma, op[2], j, lane)
                    y = _lane_operand(a, params, mb, op[3], j, lane)
                    r = binary(fn, x, y)
                    a[dst + j, lane] = r
                    if do_t:
                        for d in range(nt):
                            dx = _lane_operand(dT[d], params, ma, op[2], j, lane) if ta else np.float32(0)
                            dy = _lane_operand(dT[d], params, mb, op[3], j, lane) if tb else np.float32(0)
                            if fn == ADD:
                                dr = dx + dy
                            elif fn == SUB:
                                dr = dx - dy
                            elif fn == MUL:
                                dr = dx * y + x * dy
                            else:
                                dr = (dx - r * dy) / y
                            dT[d, dst + j, lane] = dr
        elif code == NORM:
            _norm_lanes(a, dT, params, op, n, nt if do_t else 0)
        elif code == COPY:
            for j in range(n):
                for lane in range(lanes):
                    a[dst + j, lane] = a[op[2] + j, lane]
                    if do_t:
                        for d in range(nt):
                            dT[d, dst + j, lane] = dT[d, op[2] + j, lane] if ta else 0
        else:
            raise ValueError("network program: unknown opcode")


@njit(**_JIT)
def _dense(params_k, w, params, init, b, a, s0, d0, n_in, n):
    """a[d0 + j, :] = init(j) + sum_k W[j, k] a[s0 + k, :], j < n, in float32, k in order
    (init: INIT_PARAM params[b + j], INIT_ARENA a[b + j, :], else 0); W^T k-major at params_k[w:]."""
    for j in range(n):
        if init == INIT_PARAM:
            row_fill(a, d0 + j, params[b + j])
        elif init == INIT_ARENA:
            row_copy(a, d0 + j, a, b + j)
        else:
            row_fill(a, d0 + j, np.float32(0))
    accumulate(params_k, w, a, s0, n_in, a, d0, n)


@njit(**_JIT)
def _lane_operand(a, params, mode, off, j, lane):
    if mode == MODE_VECTOR:
        return a[off + j, lane]
    if mode == MODE_SCALAR:
        return a[off, lane]
    if mode == MODE_PARAM_VECTOR:
        return params[off + j]
    return params[off]


@njit(**_JIT)
def _norm_lanes(a, dT, params, op, n, nt):
    src, dst = op[2], op[1]
    for lane in range(a.shape[1]):
        mean = np.float32(0)
        for j in range(n):
            mean += a[src + j, lane]
        mean = mean * np.float32(1.0 / n)
        var = np.float32(0)
        for j in range(n):
            var += (a[src + j, lane] - mean) * (a[src + j, lane] - mean)
        inv = np.float32(1) / np.float32(math.sqrt(var * np.float32(1.0 / n) + params[op[3]]))
        for j in range(n):
            a[dst + j, lane] = (a[src + j, lane] - mean) * inv
        for d in range(nt):
            m1 = np.float32(0)
            m2 = np.float32(0)
            for j in range(n):
                m1 += dT[d, src + j, lane]
                m2 += a[dst + j, lane] * dT[d, src + j, lane]
            m1 = m1 * np.float32(1.0 / n)
            m2 = m2 * np.float32(1.0 / n)
            for j in range(n):
                g = params[op[5] + j] if op[5] >= 0 else np.float32(1)
                dT[d, dst + j, lane] = (dT[d, src + j, lane] - m1 - a[dst + j, lane] * m2) * inv * g
        for j in range(n):
            g = params[op[5] + j] if op[5] >= 0 else np.float32(1)
            b = params[op[6] + j] if op[6] >= 0 else np.float32(0)
            a[dst + j, lane] = a[dst + j, lane] * g + b


# -- phases (net.h run_time, run_cond, run_lanes) ---------------------------------------


@njit(**_JIT)
def check_opcodes(net):
    """Raises for an opcode the interpreter does not know (kernels call this before their
    parallel region: an exception raised inside one cannot reach Python intact)."""
    ops, L = net[0], net[3]
    for i in range(ops.shape[0]):
        code = ops[i, 0]
        if not (code == DENSE or code == UNARY or code == BINARY or code == NORM or code == COPY
                or (code == SDE_OP and i < L[N_TIME_OPS])):
            raise ValueError("network program: unknown opcode")


@njit(**_JIT)
def run_time(net, t, ta):
    """The time phase at t on the float64 arena ta [time_arena]; exports at time_export(L)."""
    ops, params, params_k, L, sp = net
    run_scalar(ops, params, 0, L[N_TIME_OPS], t, ta, L[SDE_KIND], sp)


@njit(**_JIT)
def time_export(L):
    return L[TIME_ARENA] - L[N_TEXP]


@njit(**_JIT)
def time_table(net, times):
    """[rows, n_texp] float32: the time phase's exports at each of times, rounded once."""
    L = net[3]
    out = np.empty((times.shape[0], L[N_TEXP]), dtype=np.float32)
    ta = np.zeros(max(L[TIME_ARENA], 1))
    e = time_export(L)
    for r in range(times.shape[0]):
        run_time(net, times[r], ta)
        for j in range(L[N_TEXP]):
            out[r, j] = np.float32(ta[e + j])
    return out


@njit(**_JIT)
def import_cond(net, c, ca, a, lane):
    """The cond phase on one sample's condition c [cond_dim] (float64 scratch ca [cond_arena]);
    its exports, rounded once, into the lane arena's cond imports of `lane`."""
    ops, params, params_k, L, sp = net
    for j in range(L[COND_DIM]):
        ca[j] = c[j]
    run_scalar(ops, params, L[N_TIME_OPS], L[N_TIME_OPS] + L[N_COND_OPS], 0.0, ca, L[SDE_KIND], sp)
    e = L[COND_ARENA] - L[N_CEXP]
    for j in range(L[N_CEXP]):
        a[L[DIM] + L[N_TEXP] + j, lane] = np.float32(ca[e + j])


@njit(**_JIT)
def import_conds(net, cond, first, count, a):
    """Cond imports of samples first .. first + count - 1 (cond [n, cond_dim]) into tile a."""
    L = net[3]
    if L[COND_DIM] == 0 and L[N_CEXP] == 0:
        return
    ca = np.zeros(max(L[COND_ARENA], 1))
    for lane in range(count):
        import_cond(net, cond[first + lane], ca, a, lane)


@njit(**_JIT)
def run_lane_phase(net, a, dT, nt):
    """The lane phase on tile a [lane_arena, LANES] (x and the imports in place); the score is
    then at rows L[OUT] .. L[OUT] + dim."""
    ops, params, params_k, L, sp = net
    run_lanes(ops, params, params_k, L[N_TIME_OPS] + L[N_COND_OPS], ops.shape[0], a, dT, nt)
