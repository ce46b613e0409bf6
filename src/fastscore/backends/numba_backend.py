"""The Numba backend: CPU fallbacks of the fused kernels, used when the compiled extension
is missing. numba is imported only when a kernel runs (it is slow to import); the kernels
live in ``_numba_kernels`` and, for the adaptive samplers, ``_numba_adaptive`` (compiled on
first call, cached on disk by numba). The sampler interprets any step program
(fastscore/program.py), as the C++ kernels do; this module checks every code and index of a
request before a kernel sees it."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import torch

from ..netprog import (BINARY, BINARY_FUNCTIONS, COPY, DENSE, INIT_ARENA, INIT_NONE, INIT_PARAM,
                       MODE_PARAM_SCALAR, MODE_SCALAR, NET_OP_WIDTH, NORM, SDE_FUNCTIONS, SDE_OP, UNARY,
                       UNARY_FUNCTIONS, UNARY_PARAMETERS, NetProgram)
from ..nn import pack
from ..plan import ADAPTIVE_METHODS, LOG_PROB_CODES, TRACES, AdaptivePlan, LogProbPlan, SamplePlan
from ..program import DRAW, EVAL, LIN, MAX_REGISTERS, MAX_TERMS, OP_WIDTH
from ..sde import SDE, SDE_CLASSES
from .declares import Declares

# the kernels interpret any step program (registers allocated per tile up to MAX_REGISTERS)
# and run every likelihood method and trace and both adaptive samplers; no size limits
DECLARES = Declares(ops=frozenset({EVAL, DRAW, LIN}), max_registers=MAX_REGISTERS,
                    log_prob=frozenset(LOG_PROB_CODES), traces=frozenset(TRACES),
                    adaptive=frozenset(ADAPTIVE_METHODS))
SDE_KINDS = frozenset(SDE_CLASSES)

_kernels: dict = {}  # kernel modules by name, once imported
_import_error: str | None = None  # why importing numba / the kernels failed, if it did
# numba's "workqueue" threading layer (used when neither TBB nor OpenMP is there) aborts the
# process on concurrent parallel launches; each kernel call already uses every core.
_launch = threading.Lock()


def info() -> dict:
    """Availability without importing numba (``backends()`` runs on every call)."""
    if _import_error is not None:
        return {"available": False, "compiled": False, "detail": f"numba failed to import: {_import_error}"}
    if importlib.util.find_spec("numba") is None:
        return {"available": False, "compiled": False, "detail": "numba not installed (pip install 'fastscore[numba]')"}
    return {"available": True, "compiled": False, "detail": f"numba {_numba_version()} (JIT, cached)"}


def _numba_version() -> str:
    try:
        from importlib.metadata import version

        return ".".join(version("numba").split(".")[:2])
    except Exception:  # metadata missing: a vendored or unusual install
        return "?"


def _k(name: str = "_numba_kernels"):
    """A kernel module of this package (imports numba on first use)."""
    global _import_error
    if name not in _kernels:
        try:
            _kernels[name] = importlib.import_module(f".{name}", __package__)
        except Exception as exc:  # numba present but broken (e.g. numpy too new for it)
            _import_error = f"{type(exc).__name__}: {exc}"
            raise RuntimeError(f"backend 'numba' is not available here: {_import_error}") from exc
    return _kernels[name]


_UNARY_PARAMETERS = {UNARY_FUNCTIONS[name]: k for name, k in UNARY_PARAMETERS.items()}


def check_net(p: NetProgram) -> None:
    """Every row of a network program stays inside its phase's arena and the parameter buffer
    (the checks csrc/bindings.cpp to_net makes), so the interpreter can index without checks."""
    ops, n_params = p.ops, p.params.size

    def bad(why: str):
        return ValueError(f"backend 'numba': invalid network program: {why}")

    if ops.ndim != 2 or ops.shape[1] != NET_OP_WIDTH or ops.dtype != np.int32 or len(ops) == 0:
        raise bad(f"ops must be int32 [n_ops >= 1, {NET_OP_WIDTH}], got {ops.dtype} {ops.shape}")
    if p.params.dtype != np.float32 or not np.all(np.isfinite(p.params)):
        raise bad("params must be finite float32")
    if p.dim < 1 or p.cond_dim < 0 or p.n_time_ops < 0 or p.n_cond_ops < 0 or p.n_time_ops + p.n_cond_ops > len(ops):
        raise bad("dim, cond_dim or phase sizes out of range")
    if not (0 <= p.n_texp <= p.time_arena and 0 <= p.n_cexp and p.cond_dim + p.n_cexp <= p.cond_arena
            and p.dim + p.n_texp + p.n_cexp <= p.lane_arena and 0 <= p.out and p.out + p.dim <= p.lane_arena):
        raise bad("arena layout out of range")
    if p.sde_kind != -1:
        _check_sde_kind(p.sde_kind)
    inside = lambda off, n, size: off >= 0 and n >= 0 and off + n <= size
    for i, op in enumerate(ops.tolist()):
        code, dst, a, b, n, p0, p1, p2, tangent = op
        time, lane = i < p.n_time_ops, i >= p.n_time_ops + p.n_cond_ops
        arena = p.time_arena if time else p.lane_arena if lane else p.cond_arena
        at = f"row {i}: "
        if n < 1 or not inside(dst, n, arena):
            raise bad(at + "destination out of its arena")
        if not 0 <= tangent <= 7 or (tangent and not lane):
            raise bad(at + "tangent flags out of range")
        if code == DENSE:
            ok = (p0 >= 1 and inside(a, p0, arena) and (a + p0 <= dst or dst + n <= a) and inside(p1, n * p0, n_params)
                  and (p2 == INIT_NONE or (p2 == INIT_PARAM and inside(b, n, n_params))
                       or (p2 == INIT_ARENA and inside(b, n, arena)))
                  and (not tangent & 2 or p2 == INIT_ARENA))
        elif code == UNARY:
            ok = 0 <= p0 < len(UNARY_FUNCTIONS) and inside(a, n, arena) and inside(p1, _UNARY_PARAMETERS.get(p0, 0), n_params)
        elif code == BINARY:
            ok = p0 in BINARY_FUNCTIONS.values()
            for s, (mode, off) in enumerate(((p1, a), (p2, b))):
                length = 1 if mode in (MODE_SCALAR, MODE_PARAM_SCALAR) else n
                in_arena = mode <= MODE_SCALAR
                ok = ok and 0 <= mode <= MODE_PARAM_SCALAR and inside(off, length, arena if in_arena else n_params)
                ok = ok and (not tangent & (1 << s) or in_arena)
        elif code == NORM:
            ok = (inside(a, n, arena) and inside(b, 1, n_params) and (p0 == -1 or inside(p0, n, n_params))
                  and (p1 == -1 or inside(p1, n, n_params)))
        elif code == SDE_OP:
            ok = time and n == 1 and p0 in SDE_FUNCTIONS.values() and (p0 == SDE_FUNCTIONS["t"] or p.sde_kind >= 0)
        elif code == COPY:
            ok = inside(a, n, arena)
        else:
            raise bad(at + f"unknown opcode {code}")
        if not ok:
            raise bad(at + f"operands, parameters or codes out of range: {op}")


def net_args(p: NetProgram) -> tuple:
    """A checked network program as the kernels take it: (ops, params, params_k, L, sp)
    (_numba_net), params_k with every dense block k-major (as the C++ kernels' copy)."""
    check_net(p)
    L = np.array(p.header()[:11], dtype=np.int64)
    params_k = p.params.copy()
    for op in p.ops[p.ops[:, 0] == DENSE]:
        n_out, n_in, w = int(op[4]), int(op[5]), int(op[6])
        params_k[w:w + n_out * n_in] = p.params[w:w + n_out * n_in].reshape(n_out, n_in).T.ravel()
    return (np.ascontiguousarray(p.ops), np.ascontiguousarray(p.params), params_k, L,
            np.array(p.sde_params, dtype=np.float64))


def cond_args(p: NetProgram, cond, n: int) -> np.ndarray:
    """A condition [n, cond_dim] (checked by fastscore/plan.py check_cond) as float64, or an
    empty [n, 0] for an unconditional network."""
    if cond is None:
        if p.cond_dim:
            raise ValueError("this network needs a condition: cond [n, cond_dim]")
        return np.zeros((n, 0))
    c = np.ascontiguousarray(cond.detach().to("cpu", torch.float64).numpy())
    if c.shape != (n, p.cond_dim) or not np.all(np.isfinite(c)):
        raise ValueError(f"cond must be finite [n, cond_dim] = [{n}, {p.cond_dim}], got {c.shape}")
    return c


def _check_sde_kind(kind: int) -> None:
    if kind not in SDE_KINDS:
        raise ValueError(f"backend 'numba': unknown SDE kind {kind!r} (known: {sorted(SDE_KINDS)})")




def _check_program(plan: SamplePlan) -> None:
    """Every field of the plan's step program and tables is in range for the kernel (the
    checks csrc's bindings make): opcodes, register, slot, stream and coefficient indices,
    term counts, no draws in the final part, table shapes."""
    k = plan.kernel
    ops, coef = k.ops, k.coef

    def bad(why: str):
        return ValueError(f"backend 'numba': invalid step program for sampler {plan.method!r}: {why}")

    if ops.ndim != 2 or ops.shape[1] != OP_WIDTH or ops.dtype != np.int32:
        raise bad(f"ops must be int32 [n_ops, {OP_WIDTH}], got {ops.dtype} {ops.shape}")
    if not 0 <= k.n_body <= len(ops):
        raise bad(f"n_body {k.n_body} outside [0, {len(ops)}]")
    if not 1 <= k.n_registers <= MAX_REGISTERS:
        raise bad(f"{k.n_registers} registers; the kernel holds 1 to {MAX_REGISTERS}")
    if k.n_slots < 1:
        raise bad(f"n_slots {k.n_slots} < 1")
    if coef.ndim != 2 or coef.shape[0] != plan.steps + 1 or coef.dtype != np.float32:
        raise bad(f"coef must be float32 [steps + 1 = {plan.steps + 1}, n_coefficients], got {coef.dtype} {coef.shape}")
    if plan.times.shape != (plan.steps * k.n_slots + 1,):
        raise bad(f"times must be [steps * n_slots + 1 = {plan.steps * k.n_slots + 1}], got {plan.times.shape}")
    n_coef = coef.shape[1]
    for i, op in enumerate(ops.tolist()):
        code, dst = op[0], op[1]
        regs = [dst]
        if code == EVAL:
            regs.append(op[2])
            if not 0 <= op[3] < (k.n_slots if i < k.n_body else 1):  # the final part has one row, at eps
                raise bad(f"row {i}: Eval slot {op[3]} outside [0, {k.n_slots if i < k.n_body else 1})")
        elif code == DRAW:
            if i >= k.n_body:
                raise bad(f"row {i}: the final part may not draw noise")
            if op[2] < 0:
                raise bad(f"row {i}: Draw stream {op[2]} < 0")
        elif code == LIN:
            n_terms = op[2]
            if not 1 <= n_terms <= MAX_TERMS:
                raise bad(f"row {i}: Lin with {n_terms} terms; 1 to {MAX_TERMS} allowed")
            regs += op[4:4 + 2 * n_terms:2]
            for c in op[5:5 + 2 * n_terms:2]:
                if not 0 <= c < n_coef:
                    raise bad(f"row {i}: coefficient {c} outside [0, {n_coef})")
        else:
            raise bad(f"row {i}: unknown opcode {code} (EVAL={EVAL}, DRAW={DRAW}, LIN={LIN})")
        for r in regs:
            if not 0 <= r < k.n_registers:
                raise bad(f"row {i}: register {r} outside [0, {k.n_registers})")


def _sde_args(sde: SDE) -> tuple:
    _check_sde_kind(sde.kind)
    p0, p1, T = (float(v) for v in sde.params)
    return int(sde.kind), p0, p1, T


def _seed_words(seed: int) -> tuple:
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


def sample(model, plan: SamplePlan, cond=None) -> torch.Tensor:
    """Samples [n, dim] (float32): the plan's step program run by the Numba interpreter on the
    packed network and the plan's float32 tables (plan.kernel, set by plan.for_kernels)."""
    kt = plan.kernel
    if kt is None:
        raise ValueError("backend 'numba' samples from a plan with kernel tables (plan.for_kernels(pack(model)))")
    _check_program(plan)
    net = net_args(kt.packed)
    c = cond_args(kt.packed, cond, plan.n)
    out = np.empty((plan.n, kt.packed.dim), dtype=np.float32)
    if plan.n == 0:
        return torch.from_numpy(out)
    k = _k()
    k0, k1 = _seed_words(plan.seed)
    with _launch:
        k.sample_kernel(net, np.ascontiguousarray(kt.ops), int(kt.n_body), int(kt.n_slots), int(kt.n_registers),
                        np.ascontiguousarray(kt.coef), np.ascontiguousarray(plan.times, dtype=np.float64),
                        float(plan.prior_std), k0, k1, int(plan.start), c, out)
    return torch.from_numpy(out)


def log_prob(model, sde: SDE, x: torch.Tensor, plan: LogProbPlan, cond=None,
             start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    if plan.method not in LOG_PROB_CODES or plan.trace not in TRACES:
        raise ValueError(f"backend 'numba': unknown log_prob method {plan.method!r} or trace {plan.trace!r}")
    p = pack(model)
    # the points of a float32 model are float32 (as reference.log_prob and the C++ kernel take
    # them); the solve itself runs in float64
    xs = np.ascontiguousarray(x.detach().to("cpu", torch.float32).to(torch.float64).numpy())
    n = xs.shape[0]
    net, c = net_args(p), cond_args(p, cond, n)
    x_T = np.empty((n, p.dim))
    delta = np.empty(n)
    nfe = np.zeros(n, dtype=np.int64)
    if n:
        k = _k()
        k0, k1 = _seed_words(plan.seed)
        with _launch:
            failed = k.log_prob_kernel(net, _sde_args(sde), xs, c, LOG_PROB_CODES[plan.method],
                                       int(plan.steps), float(plan.eps), float(plan.rtol), float(plan.atol),
                                       plan.trace == "hutchinson", k0, k1, start, x_T, delta, nfe)
        if failed:
            raise RuntimeError(f"rk45 gave up on {failed} of {n} samples (more than {k.RK45_MAX_ATTEMPTS} attempted "
                               "steps); loosen rtol/atol or use a fixed-step method")
    logp = sde.prior_log_prob(torch.from_numpy(x_T)) + torch.from_numpy(delta)
    return logp, torch.from_numpy(nfe)


def sample_adaptive(model, plan: AdaptivePlan, cond=None) -> tuple[torch.Tensor, dict]:
    """Samples [n, dim] (float32; NaN where a solve failed) and {"nfe", "accepted", "rejected"}
    [n] (int64) of the per-sample adaptive solves (reference.sample_adaptive): the packed
    network in float32, the solves in float64."""
    if plan.method not in ADAPTIVE_METHODS:
        raise ValueError(f"backend 'numba': unknown adaptive sampler {plan.method!r}")
    p = pack(model)
    net, c = net_args(p), cond_args(p, cond, plan.n)
    out = np.empty((plan.n, p.dim), dtype=np.float32)
    counts = np.zeros((3, plan.n), dtype=np.int64)
    if plan.n:
        k = _k("_numba_adaptive")
        k0, k1 = _seed_words(plan.seed)
        with _launch:
            k.sample_adaptive_kernel(net, _sde_args(plan.sde), ADAPTIVE_METHODS.index(plan.method), float(plan.eps),
                                     float(plan.rtol), float(plan.atol), bool(plan.denoise), float(plan.prior_std),
                                     k0, k1, int(plan.start), c, out, counts)
    return torch.from_numpy(out), {name: torch.from_numpy(counts[i]) for i, name in
                                   enumerate(("nfe", "accepted", "rejected"))}


def net_eval(model, x, t: float, cond=None) -> np.ndarray:
    """s(x, t) [n, dim] (float32) by the samplers' network pass: the time phase at t rounded
    once, the lane phase in float32. For the parity check and tests."""
    p = pack(model)
    xs = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    net, c = net_args(p), cond_args(p, cond, xs.shape[0])
    out = np.empty(xs.shape, dtype=np.float32)
    if xs.shape[0]:
        k = _k()
        with _launch:
            k.net_eval_kernel(net, xs, c, float(t), out)
    return out


def score_trace(model, x, t: float, trace: str = "exact", seed: int = 0, cond=None) -> tuple[np.ndarray, np.ndarray]:
    """(s [n, dim], tr [n]) at points x [n, dim] and time t from the network pass of the
    likelihood kernels: float32 values and forward-mode tangents. trace "exact":
    tr = tr(ds/dx); "hutchinson": v . (ds/dx) v with sample i's probe (stream STREAM_PROBE,
    step 0). For tests and diagnostics."""
    if trace not in TRACES:
        raise ValueError(f"unknown trace {trace!r}; choose one of {', '.join(map(repr, TRACES))}")
    p = pack(model)
    xs = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    net, c = net_args(p), cond_args(p, cond, xs.shape[0])
    s = np.empty(xs.shape)
    tr = np.empty(xs.shape[0])
    if xs.shape[0]:
        k0, k1 = _seed_words(seed)
        k = _k()
        with _launch:
            k.score_trace_kernel(net, xs, c, float(t), trace == "hutchinson", k0, k1, s, tr)
    return s, tr


def brownian(seed: int, samples, t, eps: float, T: float, dim: int) -> np.ndarray:
    """W_i(t) [n, dim] (float64) by the kernels' Brownian trees: rng.brownian's twin (same
    arguments), for tests and diagnostics."""
    samples = np.ascontiguousarray(samples, dtype=np.int64)
    ts = np.ascontiguousarray(t, dtype=np.float64)
    if samples.ndim != 1 or ts.shape != samples.shape:
        raise ValueError(f"samples and t must be 1-D of one length, got {samples.shape} and {ts.shape}")
    out = np.empty((samples.size, dim))
    k0, k1 = _seed_words(seed)
    _k("_numba_brownian").brownian_kernel(k0, k1, samples, ts, float(eps), float(T), out)
    return out
