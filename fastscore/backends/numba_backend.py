"""The Numba backend: CPU fallbacks of the fused kernels, used when the compiled extension
is missing. numba is imported only when a kernel runs (it is slow to import); the kernels
live in ``_numba_kernels`` (compiled on first call, cached on disk by numba)."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import torch

from ..nn import PackedModel, pack
from ..plan import LOG_PROB_CODES, METHOD_CODES, LogProbPlan, SamplePlan
from ..sde import SDE

# (task, method) pairs with a Numba kernel
SUPPORTS: set = {("sample", m) for m in METHOD_CODES} | {("log_prob", m) for m in LOG_PROB_CODES}

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
    if not SUPPORTS:
        return {"available": False, "compiled": False, "detail": "numba found; no kernels yet"}
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


def _model_args(p: PackedModel) -> tuple:
    """Kernel arguments of a packed model: the packed first layer (for the time bias) and
    every weight matrix transposed to [in, out] (exact float32 copies)."""
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
    p0, p1, T = (float(v) for v in sde.params)
    return int(sde.kind), p0, p1, T


def _seed_words(seed: int) -> tuple:
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


def sample(model, sde: SDE, plan: SamplePlan) -> torch.Tensor:
    p = pack(model)
    out = np.empty((plan.n, p.dim), dtype=np.float32)
    if plan.n == 0:
        return torch.from_numpy(out)
    k = _k()
    k0, k1 = _seed_words(plan.seed)
    with _launch:
        k.sample_kernel(_model_args(p), _sde_args(sde), float(sde.prior_std),
                        METHOD_CODES[plan.method], int(plan.steps), float(plan.eps), k0, k1, int(plan.start),
                        float(plan.snr), int(plan.corrector_steps), bool(plan.denoise), out)
    return torch.from_numpy(out)


def log_prob(model, sde: SDE, x: torch.Tensor, plan: LogProbPlan) -> tuple[torch.Tensor, torch.Tensor]:
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
    (stream 2, step 0). For tests and diagnostics."""
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
