"""The compiled C++ backend (``fastscore._core``): fused kernels over packed models."""

from __future__ import annotations

import torch

from ..nn import PackedModel, pack
from ..plan import LOG_PROB_CODES, METHOD_CODES, LogProbPlan, SamplePlan
from ..sde import SDE

_IMPORT_ERROR = "no compiled module"
try:
    from .. import _core
except ImportError as exc:  # a source checkout without a build, or a broken build
    _core = None
    _IMPORT_ERROR = str(exc)


# (task, method) pairs with a fused kernel
SUPPORTS = {("sample", m) for m in METHOD_CODES} | {("log_prob", m) for m in LOG_PROB_CODES}


def info() -> dict:
    if _core is None:
        return {"available": False, "compiled": False,
                "detail": f"extension not built ({_IMPORT_ERROR}); reinstall with `pip install .`"}
    b = _core.build_info()
    return {"available": True, "compiled": True,
            "detail": f"OpenMP, {b['openmp_threads']} threads, {b['isa']}, tile {b['tile']}"}


def layout(p: PackedModel) -> tuple:
    """The layout tuple the bindings take (csrc/bindings.cpp, LayoutTuple)."""
    return (p.dim, p.width, p.depth, p.activation, p.time_embedding, p.n_freqs, p.std_sde_kind, p.std_sde_params)


def sde_tuple(sde: SDE) -> tuple:
    return (sde.kind, *sde.params)


def check_dim(p: PackedModel) -> None:
    max_dim = _core.build_info()["max_dim"]
    if p.dim > max_dim:
        raise ValueError(f"the CPU kernels take dim <= {max_dim}, this model has dim {p.dim}; use backend='torch'")


def sample(model, sde: SDE, plan: SamplePlan) -> torch.Tensor:
    p = pack(model)
    check_dim(p)
    out = _core.sample(p.weights, layout(p), sde_tuple(sde), METHOD_CODES[plan.method], plan.n, plan.steps, plan.eps,
                       plan.seed, plan.start, plan.snr, plan.corrector_steps, plan.denoise)
    return torch.from_numpy(out)


def log_prob(model, sde: SDE, x: torch.Tensor, plan: LogProbPlan) -> tuple[torch.Tensor, torch.Tensor]:
    p = pack(model)
    check_dim(p)
    xs = x.detach().to("cpu", torch.float32).contiguous().numpy()
    logp, nfe, failed = _core.log_prob(p.weights, layout(p), sde_tuple(sde), xs, LOG_PROB_CODES[plan.method],
                                       plan.steps, plan.eps, plan.rtol, plan.atol, plan.trace == "hutchinson",
                                       plan.seed)
    rk45_failure(failed, len(xs))
    return torch.from_numpy(logp), torch.from_numpy(nfe)


def rk45_failure(failed: int, n: int) -> None:
    """Raises when a kernel's rk45 solve gave up on some samples (their results are garbage)."""
    if failed:
        raise RuntimeError(f"rk45 gave up on {failed} of {n} samples (too many steps); loosen rtol/atol "
                           "or use a fixed-step method")
