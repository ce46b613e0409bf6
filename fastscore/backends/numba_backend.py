"""The Numba backend: CPU fallbacks of the fused kernels, used when the compiled extension
is missing. numba is imported only when a kernel runs (it is slow to import); the kernels
live in ``_numba_kernels`` (compiled on first call, cached on disk by numba). The sampler
interprets any step program (fastscore/program.py), as the C++ kernels do; this module checks
every code and index of a request before a kernel sees it."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import torch

from ..nn import ACTIVATIONS, TIME_EMBEDDINGS, pack
from ..netprog import NetProgram as PackedModel  # WIP: the numba interpreter of network programs is not written yet
from ..plan import LOG_PROB_CODES, TRACES, LogProbPlan, SamplePlan
from ..program import DRAW, EVAL, LIN, MAX_REGISTERS, MAX_TERMS, OP_WIDTH
from ..sde import SDE, VESDE, VPSDE, SubVPSDE
from .declares import Declares

# the kernels interpret any step program (registers allocated per tile up to MAX_REGISTERS)
# and run every likelihood method and trace; no size limits
DECLARES = Declares(ops=frozenset({EVAL, DRAW, LIN}), max_registers=MAX_REGISTERS,
                    log_prob=frozenset(LOG_PROB_CODES), traces=frozenset(TRACES))
SDE_KINDS = frozenset({VPSDE.kind, VESDE.kind, SubVPSDE.kind})

_kernels = None  # the kernel module, once imported
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


def _k():
    """The kernel module (imports numba on first use)."""
    global _kernels, _import_error
    if _kernels is None:
        try:
            from . import _numba_kernels
        except Exception as exc:  # numba present but broken (e.g. numpy too new for it)
            _import_error = f"{type(exc).__name__}: {exc}"
            raise RuntimeError(f"backend 'numba' is not available here: {_import_error}") from exc
        _kernels = _numba_kernels
    return _kernels


def _check_model(p: PackedModel) -> None:
    """The layout codes of a packed model are ones the kernels know (else ValueError)."""
    for what, code, known in (("activation", p.activation, ACTIVATIONS.values()),
                              ("time-embedding", p.time_embedding, TIME_EMBEDDINGS.values()),
                              ("std_sde kind", p.std_sde_kind, {-1, *SDE_KINDS})):
        if code not in known:
            raise ValueError(f"backend 'numba': unknown {what} code {code!r} in the packed model "
                             f"(known: {sorted(known)})")


def _check_sde(sde: SDE) -> None:
    if sde.kind not in SDE_KINDS:
        raise ValueError(f"backend 'numba': unknown SDE kind {sde.kind!r} (known: {sorted(SDE_KINDS)})")


def _check_program(plan: SamplePlan) -> None:
    """Every field of the plan's step program and tables is in range for the kernel (the
    checks csrc's bindings make): opcodes, register, slot, stream and coefficient indices,
    term counts, no draws in the final part, table shapes."""
    k = plan.kernel
    ops, coef, bias, scale = k.ops, k.coef, k.bias, k.scale
    n_rows = plan.steps * k.n_slots + 1

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
    if bias.shape != (n_rows, k.packed.width) or bias.dtype != np.float32:
        raise bad(f"bias must be float32 [{n_rows}, {k.packed.width}], got {bias.dtype} {bias.shape}")
    if scale.shape != (n_rows,) or scale.dtype != np.float32:
        raise bad(f"scale must be float32 [{n_rows}], got {scale.dtype} {scale.shape}")
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


def _model_args(p: PackedModel) -> tuple:
    """Kernel arguments of a packed model: the packed first layer (for the time bias) and
    every weight matrix transposed to [in, out] (exact float32 copies). Checks its codes."""
    _check_model(p)
    w, d, e, width, depth = p.weights, p.dim, p.embed_dim, p.width, p.depth
    o = 0

    def take(size):
        nonlocal o
        a = w[o:o + size]
        o += size
        return a

    W0 = take(width * (d + e)).reshape(width, d + e)
    b0 = take(width)
    WhT = np.empty((depth - 1, width, width), dtype=np.float32)
    bh = np.empty((depth - 1, width), dtype=np.float32)
    for layer in range(depth - 1):
        WhT[layer] = take(width * width).reshape(width, width).T
        bh[layer] = take(width)
    WoT = np.ascontiguousarray(take(d * width).reshape(d, width).T)
    bo = np.ascontiguousarray(take(d))
    freqs = np.ascontiguousarray(take(p.n_freqs), dtype=np.float32)
    assert o == w.size, "packed layout mismatch"
    W0xT = np.ascontiguousarray(W0[:, :d].T)
    std = tuple(float(v) for v in p.std_sde_params)
    return (np.ascontiguousarray(W0), np.ascontiguousarray(b0), freqs, W0xT, WhT, bh, WoT, bo,
            int(p.activation), int(p.time_embedding), int(p.std_sde_kind), np.array(std, dtype=np.float64))


def _sde_args(sde: SDE) -> tuple:
    _check_sde(sde)
    p0, p1, T = (float(v) for v in sde.params)
    return int(sde.kind), p0, p1, T


def _seed_words(seed: int) -> tuple:
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


def sample(model, plan: SamplePlan) -> torch.Tensor:
    """Samples [n, dim] (float32): the plan's step program run by the Numba interpreter on the
    packed model and the plan's float32 tables (plan.kernel, set by plan.for_kernels)."""
    kt = plan.kernel
    if kt is None:
        raise ValueError("backend 'numba' samples from a plan with kernel tables (plan.for_kernels(pack(model)))")
    _check_program(plan)
    model_args = _model_args(kt.packed)
    out = np.empty((plan.n, kt.packed.dim), dtype=np.float32)
    if plan.n == 0:
        return torch.from_numpy(out)
    k = _k()
    k0, k1 = _seed_words(plan.seed)
    with _launch:
        k.sample_kernel(model_args, np.ascontiguousarray(kt.ops), int(kt.n_body), int(kt.n_slots),
                        int(kt.n_registers), np.ascontiguousarray(kt.coef), np.ascontiguousarray(kt.bias),
                        np.ascontiguousarray(kt.scale), float(plan.prior_std), k0, k1, int(plan.start), out)
    return torch.from_numpy(out)


def log_prob(model, sde: SDE, x: torch.Tensor, plan: LogProbPlan) -> tuple[torch.Tensor, torch.Tensor]:
    if plan.method not in LOG_PROB_CODES or plan.trace not in TRACES:
        raise ValueError(f"backend 'numba': unknown log_prob method {plan.method!r} or trace {plan.trace!r}")
    p = pack(model)
    # the points of a float32 model are float32 (as reference.log_prob and the C++ kernel take
    # them); the solve itself runs in float64
    xs = np.ascontiguousarray(x.detach().to("cpu", torch.float32).to(torch.float64).numpy())
    n = xs.shape[0]
    x_T = np.empty((n, p.dim))
    delta = np.empty(n)
    nfe = np.zeros(n, dtype=np.int64)
    if n:
        k = _k()
        k0, k1 = _seed_words(plan.seed)
        with _launch:
            failed = k.log_prob_kernel(_model_args(p), _sde_args(sde), xs, LOG_PROB_CODES[plan.method],
                                       int(plan.steps), float(plan.eps), float(plan.rtol), float(plan.atol),
                                       plan.trace == "hutchinson", k0, k1, x_T, delta, nfe)
        if failed:
            raise RuntimeError(f"rk45 gave up on {failed} of {n} samples (more than {k.RK45_MAX_ATTEMPTS} attempted "
                               "steps); loosen rtol/atol or use a fixed-step method")
    logp = sde.prior_log_prob(torch.from_numpy(x_T)) + torch.from_numpy(delta)
    return logp, torch.from_numpy(nfe)


def score_trace(model, x, t: float, trace: str = "exact", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(s [n, dim], tr [n]) at points x [n, dim] and time t from the network pass of the
    likelihood kernels: float32 values and forward-mode tangents, output scale in float64.
    trace "exact": tr = tr(ds/dx); "hutchinson": v . (ds/dx) v with sample i's probe
    (stream STREAM_PROBE, step 0). For tests and diagnostics."""
    if trace not in TRACES:
        raise ValueError(f"unknown trace {trace!r}; choose one of {', '.join(map(repr, TRACES))}")
    p = pack(model)
    xs = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    s = np.empty(xs.shape)
    tr = np.empty(xs.shape[0])
    if xs.shape[0]:
        k0, k1 = _seed_words(seed)
        k = _k()
        with _launch:
            k.score_trace_kernel(_model_args(p), xs, float(t), trace == "hutchinson", k0, k1, s, tr)
    return s, tr
