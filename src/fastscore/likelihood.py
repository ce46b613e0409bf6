"""``fastscore.log_prob`` and ``fastscore.LogProb``: log-likelihoods by the probability-flow ODE."""

from __future__ import annotations

import copy
import math

import torch

from . import integrators
from .backends import module, resolve
from .chunks import first_chunk, least_chunk, run_chunks
from .plan import check_cond, check_finite_result, check_points, make_log_prob_plan
from .prepared import cached
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
    progress: bool | None = None,
    callback=None,
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
        progress, callback: as ``fs.sample``'s; many points run in chunks of points.

    Raises FloatingPointError if the solve of a point blew up (its log p is not finite),
    naming the count and the first such point, on every backend.
    """
    prepared = cached(model, ("log_prob", sde, method, steps, rtol, atol, eps, backend, trace, seed),
                      lambda: LogProb(model, sde, method, steps, rtol, atol, eps, backend, trace=trace, seed=seed))
    return prepared(x, cond=cond, return_info=return_info, progress=progress, callback=callback)


RK45_GUESSED_NFE = 100  # to size a first chunk before an rk45 run has measured its rate


class LogProb:
    """A log-density request prepared once: ``lp = fs.LogProb(model, sde, method, ...)`` checks
    the request and picks the backend; ``lp(x, cond=...)`` then equals ``fs.log_prob`` with the
    same arguments. The arguments are ``fs.log_prob``'s; on the kernel backends it holds the
    network as it was when made (a copy), the reference runs the module itself. ``lp.backend``:
    the backend it runs on."""

    def __init__(self, model: torch.nn.Module, sde: SDE, method: str = "rk45", steps: int = 100, rtol: float = 1e-5,
                 atol: float = 1e-5, eps: float = 1e-5, backend: str = "auto", *, trace: str = "exact", seed: int = 0):
        self.plan = make_log_prob_plan(model, sde, method, steps, eps, rtol, atol, trace, seed)
        self.backend = resolve(backend, "log_prob", self.plan.method, model, trace=self.plan.trace)
        # as fs.Sampler: the kernels' copy of the network, or the module itself for the reference
        self._model = model if self.backend == "torch" else copy.deepcopy(model)
        self._sde = sde
        self._what = f"log_prob (method {self.plan.method!r}, backend {self.backend!r})"
        # per point: 1 + dim passes (the exact trace's tangents) per evaluation; the fixed methods'
        # evaluations from their tableaux, rk45's a guess (its rate is measured on the first chunk)
        passes = 2 if self.plan.trace == "hutchinson" else 1 + self.plan.dim
        evals = (RK45_GUESSED_NFE if self.plan.method == "rk45"
                 else self.plan.steps * len(integrators.FIXED[self.plan.method].c))
        self._least = least_chunk(self.backend)
        self._first = first_chunk(self.backend, model, passes * evals, self._least)

    def __call__(self, x, *, cond=None, return_info: bool = False, progress: bool | None = None, callback=None):
        """log p [n] of points x [n, dim] (``fs.log_prob``'s arguments); many points run in
        chunks as ``fs.Sampler`` calls do (progress, callback(done, n), Ctrl-C within ~1 s)."""
        x = check_points(x, self.plan.dim)
        n = x.shape[0]
        cond = check_cond(self._model, cond, n)
        if not progress and (self._first is None or n <= self._first):
            logp, nfe = self._chunk(x, cond, 0)
            if callback is not None:
                callback(n, n)
        else:
            logp = torch.empty(n, dtype=torch.float64, device=x.device)
            nfe = torch.empty(n, dtype=torch.int64, device=x.device)

            def write(a: int, b: int, result) -> None:
                logp[a:b], nfe[a:b] = result

            run_chunks(n, lambda a, b: self._chunk(x[a:b], None if cond is None else cond[a:b], a), write,
                       first=self._first, progress=progress, callback=callback, desc=f"log_prob {self.plan.method}",
                       least=self._least)
        return (logp, {"nfe": nfe}) if return_info else logp

    def _chunk(self, x, cond, offset: int):
        # offset: the chunk's first point, so its Hutchinson probes are those of the whole call
        logp, nfe = module(self.backend).log_prob(self._model, self._sde, x, self.plan, cond, start=offset)
        check_finite_result(logp, self._what, offset)
        return logp.to(x.device), nfe.to(x.device)  # outputs live where the points do


def bits_per_dim(model: torch.nn.Module, sde: SDE, x, **kwargs) -> torch.Tensor:
    """-log p(x) / (dim ln 2), shape [n]: the negative log-likelihood in bits per dimension.

    For continuous data: x is used as given, with no dequantisation or rescaling offset
    (image papers add those for 8-bit data; do so yourself before comparing with them).
    Keyword arguments are those of ``log_prob``."""
    logp = log_prob(model, sde, x, **kwargs)
    return -logp / (logp.new_tensor(x.shape[1]) * math.log(2.0))
