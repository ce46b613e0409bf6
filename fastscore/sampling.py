"""``fastscore.sample``: the public front-end of every sampler."""

from __future__ import annotations

import torch

from .backends import module, resolve
from .nn import pack
from .plan import ADAPTIVE_METHODS, check_cond, check_finite_result, make_adaptive_plan, make_sample_plan
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
    grid: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    return_info: bool = False,
):
    """Draw n samples [n, dim] from the reverse of `sde` with the score network `model`.

    Args:
        method: a rule of ``fastscore.samplers.RULES``: "em" (reverse-SDE Euler–Maruyama),
            "pc" (reverse-diffusion predictor + Langevin corrector, Song et al. 2021), "ald"
            (annealed Langevin dynamics, Song & Ermon 2019), "ode_euler" or "ode_heun"
            (probability-flow ODE in t), "dpmpp_2m" (DPM-Solver++(2M), Lu et al. 2022),
            "dpmpp_2m_sde" (its SDE variant), "edm_heun" (Heun in sigma / m, Karras et al.
            2022, Algorithm 1).
        steps: steps from T down to eps.
        grid: the time grid T = t_0 > ... > t_steps = eps (fastscore/grids.py): "uniform" in t,
            "logsnr" (uniform in log(m / sigma)) or "karras" (rho = 7); None: the method's own
            (dpmpp_*: logsnr, edm_heun: karras, the others: uniform).

    Per-sample adaptive methods (no grid; `steps` is not used): "ode_rk45" (Dormand–Prince
    5(4) on the probability flow, the controller of log_prob's rk45) and "em_adaptive"
    (Jolicoeur-Martineau et al. 2021, "Gotta Go Fast": Euler–Maruyama with an improved-Euler
    error estimate). Each sample controls its own step, so one hard sample does not slow the
    batch, and its noise comes from its own Brownian tree on the Philox stream
    (``rng.brownian``: a function of seed, sample index and time), so a sample is the same
    in any batch. rtol, atol: their tolerances (None: DEFAULT_TOLERANCES in plan.py).
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
        return_info: also return {"nfe": network evaluations per sample [n] (int64)}; adaptive
            methods add "accepted" and "rejected" steps per sample.

    Raises FloatingPointError if a trajectory blew up (a sample is not finite), naming the
    count and the first such sample, on every backend.
    """
    if method in ADAPTIVE_METHODS:
        return _sample_adaptive(model, sde, n, method, backend, seed, eps, denoise, start, cond, grid, rtol, atol,
                                return_info)
    if rtol is not None or atol is not None:
        raise ValueError(f"rtol and atol set the adaptive methods ({', '.join(ADAPTIVE_METHODS)}); "
                         f"{method!r} takes steps")
    plan = make_sample_plan(model, sde, n, method, steps, eps, seed, start, snr, corrector_steps, denoise, grid)
    cond = check_cond(model, cond, plan.n)
    name = resolve(backend, "sample", plan.method, model, program=plan.program)
    if name != "torch":
        plan = plan.for_kernels(pack(model))
    x = module(name).sample(model, plan, cond)
    check_finite_result(x, f"sample (method {plan.method!r}, backend {name!r})")
    return (x, {"nfe": torch.full((plan.n,), plan.nfe, dtype=torch.int64)}) if return_info else x


def _sample_adaptive(model, sde, n, method, backend, seed, eps, denoise, start, cond, grid, rtol, atol, return_info):
    if grid is not None:
        raise ValueError(f"{method!r} chooses its own steps per sample; it takes no grid")
    plan = make_adaptive_plan(model, sde, n, method, eps, seed, start, rtol, atol, denoise)
    cond = check_cond(model, cond, plan.n)
    name = resolve(backend, "sample", plan.method, model)
    x, info = module(name).sample_adaptive(model, plan, cond)
    check_finite_result(x, f"sample (method {plan.method!r}, backend {name!r})")
    return (x, info) if return_info else x
