"""Sampling time grids: the times T = t_0 > t_1 > ... > t_steps = eps a sampler steps through.

    uniform  t_k = T - k (T - eps) / steps                           (score_sde's samplers)
    logsnr   uniform in lambda(t) = log(m(t) / sigma(t))              (DPM-Solver's "logSNR" grid, Lu et al. 2022)
    karras   uniform in sigma'^(1/rho), rho = 7, from sigma'(T) to sigma'(eps), where
             sigma'(t) = sigma(t) / m(t) = exp(-lambda(t)) is the noise level of x / m(t)
             (Karras et al. 2022, eq. 5; k-diffusion's get_sigmas_karras without the final 0:
             sampling here ends at eps, and ``denoise=True`` adds the step to sigma' = 0)

Every grid is a function of lambda, which every SDE has in closed form (m and sigma); logsnr
and karras points are mapped back to t by bisection on [eps, T] in float64, where lambda is
strictly decreasing, to the last bit (BISECTIONS halvings of the interval).
"""

from __future__ import annotations

import numpy as np

from .sde import SDE

GRIDS = ("uniform", "logsnr", "karras")
KARRAS_RHO = 7.0
BISECTIONS = 64  # (T - eps) 2^-64 is below one float64 ulp of any t in [eps, T]


def log_snr(sde: SDE, t):
    """lambda(t) = log(m(t) / sigma(t)), strictly decreasing in t for every SDE here."""
    return np.log(sde.mean_coeff(t)) - np.log(sde.std(t))


def _t_of_log_snr(sde: SDE, lam: np.ndarray, eps: float) -> np.ndarray:
    lo, hi = np.full_like(lam, eps), np.full_like(lam, sde.T)
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        above = log_snr(sde, mid) > lam  # mid is too early: the answer lies later
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return 0.5 * (lo + hi)


def time_grid(sde: SDE, grid: str, steps: int, eps: float) -> np.ndarray:
    """float64 [steps + 1]: t_0 = T, ..., t_steps = eps, strictly decreasing."""
    k = np.arange(steps + 1) / steps
    if grid == "uniform":
        t = sde.T - k * (sde.T - eps)
    else:
        lam_T, lam_eps = log_snr(sde, sde.T), log_snr(sde, eps)
        if grid == "logsnr":
            lam = lam_T + k * (lam_eps - lam_T)
        else:  # karras: sigma' = exp(-lambda)
            r_max, r_min = np.exp(-lam_T / KARRAS_RHO), np.exp(-lam_eps / KARRAS_RHO)
            lam = -KARRAS_RHO * np.log(r_max + k * (r_min - r_max))
        t = _t_of_log_snr(sde, lam, eps)
    t[0], t[-1] = sde.T, eps  # the ends exactly
    if not np.all(np.diff(t) < 0):
        raise ValueError(f"the {grid!r} grid of steps={steps} from T={sde.T} to eps={eps} is not strictly "
                         "decreasing in float64; use fewer steps or a larger eps")
    return t
