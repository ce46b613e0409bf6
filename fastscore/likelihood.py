"""``fastscore.log_prob``: log-likelihoods by the probability-flow ODE."""

from __future__ import annotations

import math

import torch

from .backends import module, resolve
from .plan import check_cond, check_finite_result, check_points, make_log_prob_plan
from .sde import SDE


def log_prob(
    model: torch.nn.Module,
    sde: SDE,
    x,
    method: str = "rk45",
    steps: int = 100,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    backend: str = "auto",
    *,
    trace: str = "exact",
    seed: int = 0,
    return_info: bool = False,
    cond=None,
):
    """log p_eps(x) in nats, shape [n], for data points x [n, dim], on x's device.

    x: a torch tensor, numpy array, or any CUDA array exposing ``__cuda_array_interface__`` or
    DLPack (taken without a copy).

    Integrates the augmented probability-flow ODE [x, log p] from eps to T (Song et al.
    2021, Sec. 4.3 and App. D.2; FFJORD, Grathwohl et al. 2019)
    with the divergence of the drift computed exactly ("exact") or by Hutchinson's
    estimator with one Rademacher probe per sample from the shared stream ("hutchinson").

    Args:
        method: "euler", "heun", "rk4" (fixed `steps`) or "rk45" (adaptive, rtol/atol).
        backend: "auto", "cpu", "cuda", "numba" or "torch" (reference).
        seed: seed of the Hutchinson probes (one Rademacher vector per sample).
        return_info: also return {"nfe": network evaluations per sample [n]}.
        cond: for a conditional model, the condition of each point [n, cond_dim] or one
            [cond_dim] for all: log p(x_i | cond_i).

    Raises FloatingPointError if the solve of a point blew up (its log p is not finite),
    naming the count and the first such point, on every backend.
    """
    plan = make_log_prob_plan(model, sde, method, steps, eps, rtol, atol, trace, seed)
    x = check_points(x, plan.dim)
    cond = check_cond(model, cond, x.shape[0])
    name = resolve(backend, "log_prob", plan.method, model, trace=plan.trace)
    logp, nfe = module(name).log_prob(model, sde, x, plan, cond)
    check_finite_result(logp, f"log_prob (method {plan.method!r}, backend {name!r})")
    logp, nfe = logp.to(x.device), nfe.to(x.device)  # outputs live where the points do
    return (logp, {"nfe": nfe}) if return_info else logp


def bits_per_dim(model: torch.nn.Module, sde: SDE, x, **kwargs) -> torch.Tensor:
    """-log p(x) / (dim ln 2), shape [n]: the negative log-likelihood in bits per dimension.

    For continuous data: x is used as given, with no dequantisation or rescaling offset
    (image papers add those for 8-bit data; do so yourself before comparing with them).
    Keyword arguments are those of ``log_prob``."""
    logp = log_prob(model, sde, x, **kwargs)
    return -logp / (logp.new_tensor(x.shape[1]) * math.log(2.0))
