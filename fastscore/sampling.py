"""``fastscore.sample``: the public front-end of every sampler."""

from __future__ import annotations

import torch

from .backends import module, resolve
from .nn import pack
from .plan import check_cond, check_finite_result, make_sample_plan
from .sde import SDE


def sample(
    model: torch.nn.Module,
    sde: SDE,
    n: int,
    method: str = "em",
    steps: int = 1000,
    backend: str = "auto",
    seed: int = 0,
    eps: float = 1e-3,
    *,
    snr: float = 0.16,
    corrector_steps: int = 1,
    denoise: bool = False,
    start: int = 0,
    cond=None,
) -> torch.Tensor:
    """Draw n samples [n, dim] from the reverse of `sde` with the score network `model`.

    Args:
        method: a rule of ``fastscore.samplers.RULES``: "em" (reverse-SDE Euler–Maruyama),
            "pc" (reverse-diffusion predictor + Langevin corrector, Song et al. 2021), "ald"
            (annealed Langevin dynamics, Song & Ermon 2019), "ode_euler" or "ode_heun"
            (probability-flow ODE; Heun as Karras et al. 2022, Algorithm 1).
        steps: steps from T down to eps (grid t_k = T - k (T - eps) / steps).
        backend: "auto" (fastest available), "cpu", "cuda", "numba" or "torch" (reference).
        seed: seed of the shared Philox stream: sample i depends only on (seed, i, plan).
        eps: end time; sampling stops at t = eps > 0.
        snr, corrector_steps: Langevin steps of "pc" and "ald" (score_sde's defaults; "ald"
            needs corrector_steps >= 1).
        denoise: finish with the noise-free Tweedie step E[x_0 | x_eps].
        start: index of the first sample in the stream, to split one run across calls or
            machines (sample(n=a, start=0) then sample(n=b, start=a) equals one run of a + b).
        cond: for a conditional model, the condition of each sample [n, cond_dim] (amortised
            posterior sampling for n observations) or one [cond_dim] for all; sample i with
            cond[i] is the sample a run of one condition gives at the same index.

    Raises FloatingPointError if a trajectory blew up (a sample is not finite), naming the
    count and the first such sample, on every backend.
    """
    plan = make_sample_plan(model, sde, n, method, steps, eps, seed, start, snr, corrector_steps, denoise)
    cond = check_cond(model, cond, plan.n)
    name = resolve(backend, "sample", plan.method, model, program=plan.program)
    if name != "torch":
        plan = plan.for_kernels(pack(model))
    x = module(name).sample(model, plan, cond)
    return check_finite_result(x, f"sample (method {plan.method!r}, backend {name!r})")
