"""The samplers, each declared once as a rule that every backend runs.

A rule says what one step of its method does, as a step program (``fastscore/program.py``)
over per-sample registers, and how its coefficients follow from the SDE and the time grid
(``fastscore/grids.py``: T = t_0 > t_1 > ... > t_steps = eps; step k moves the state from
t_k to t_{k+1}, h_k = t_k - t_{k+1}). A rule also declares its evaluation times within a step
(t_k - c h_k), the history it carries from step to step, its order, its default grid and the
SDEs it supports; the noise streams it draws are read off its program. Backends interpret programs, so a new method
is a new rule here (plus its tests), not a change to any kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .program import Draw, Eval, Lin, Op
from .rng import STREAM_CORRECTOR, STREAM_PREDICTOR
from .grids import log_snr
from .sde import SDE

#: coefficients(sde, t, t_next, plan) -> {name: value or array over the steps}: t and t_next are
#: float64 [steps], the start and end of every step, so a multistep rule sees its history too
Coefficients = Callable[[SDE, np.ndarray, float, object], dict]


@dataclass(frozen=True)
class SamplerRule:
    name: str
    source: str  # the algorithm and where it is published
    order: int | None  # convergence order in h (weak for SDE solvers); None: not a discretisation
    times: tuple[float, ...]  # evaluation times of a step, t_k - c h for c in times
    program: Callable[[object], tuple[Op, ...]]  # program(plan): the step, for the plan's options
    coefficients: Coefficients
    sdes: tuple[type, ...] = (SDE,)  # every linear SDE unless a rule says otherwise
    carries: tuple[str, ...] = ()  # registers kept from step to step (multistep history)
    needs_corrector: bool = False  # the program is made of corrector sweeps (corrector_steps >= 1)
    default_grid: str = "uniform"  # grids.GRIDS


def _em(sde, t, tn, plan):
    h = t - tn
    g2 = sde.diffusion_sq(t)
    return {"a": 1.0 - sde.drift_coeff(t) * h, "b": g2 * h, "c": np.sqrt(g2 * h)}


def _ode_euler(sde, t, tn, plan):
    h = t - tn
    return {"a": 1.0 - sde.drift_coeff(t) * h, "b": 0.5 * sde.diffusion_sq(t) * h}


def _ode_heun(sde, t, tn, plan):
    # v(x, t) = f(t) x - 1/2 g(t)^2 s;  y = x - h v(x, t);  x <- x - h/2 (v(x, t) + v(y, t - h))
    h = t - tn
    return {"f": sde.drift_coeff(t), "q": -0.5 * sde.diffusion_sq(t), "one": 1.0, "mh": -h, "mh2": -0.5 * h,
            "f2": -0.5 * h * sde.drift_coeff(tn), "q2": 0.25 * h * sde.diffusion_sq(tn)}


def _langevin(sde, t, tn, plan):
    # Langevin step e = 2 alpha (snr sigma(t))^2, alpha = a^2 over the exact transition
    # x_t = a x_{t-h} + G z. score_sde's ratio ||z|| / ||s|| averaged over the batch would make a
    # sample depend on its batch; per sample it would depend on the position (||s|| vanishes at
    # every mode in low dimensions), which biases unadjusted Langevin. sigma(t) is its batch-free
    # value: E||z||^2 = dim and E||s||^2 <= dim / sigma(t)^2.
    a, _ = sde.transition(t, tn)
    e = 2.0 * a * a * (plan.snr * sde.std(t)) ** 2
    return {"one": 1.0, "e": e, "en": np.sqrt(2.0 * e)}


def _pc(sde, t, tn, plan):
    # reverse-diffusion predictor over the same transition: x <- (2 - a) x + G^2 s + G z
    a, G2 = sde.transition(t, tn)
    return {**_langevin(sde, t, tn, plan), "px": 2.0 - a, "ps": G2, "pz": np.sqrt(G2)}


def _corrector_sweeps(plan) -> tuple[Op, ...]:
    """plan.corrector_steps Langevin steps at t_k: x <- x + e s + sqrt(2 e) z."""
    ops: tuple[Op, ...] = ()
    for j in range(plan.corrector_steps):
        ops += (Eval("s", "x"), Draw("z", STREAM_CORRECTOR + j), Lin("x", x="one", s="e", z="en"))
    return ops


def _data_prediction(sde, t):
    """D = u x + w s: the data prediction E[x_0 | x_t] = (x + sigma^2 s) / m (Tweedie)."""
    m, sig = sde.mean_coeff(t), sde.std(t)
    return {"one": 1.0, "u": 1.0 / m, "w": sig * sig / m}


def _log_snr_steps(sde, t, tn):
    """(h [steps], r [steps]): h_k = lambda(t_{k+1}) - lambda(t_k) > 0 and the ratio r_k = h_{k-1} / h_k
    of the multistep methods (r_0 = inf: the first step has no history)."""
    h = log_snr(sde, tn) - log_snr(sde, t)
    return h, np.concatenate([[np.inf], h[:-1] / h[1:]])


def _dpmpp_2m(sde, t, tn, plan):
    # x <- (sigma_{k+1} / sigma_k) x + m_{k+1} (1 - e^-h) [(1 + 1/(2r)) D_k - 1/(2r) D_{k-1}]
    h, r = _log_snr_steps(sde, t, tn)
    b = sde.mean_coeff(tn) * -np.expm1(-h)
    return {**_data_prediction(sde, t), "a": sde.std(tn) / sde.std(t), "b": b * (1 + 0.5 / r), "c": -b * 0.5 / r}


def _dpmpp_2m_sde(sde, t, tn, plan):
    # x <- (sigma_{k+1} / sigma_k) e^-h x + m_{k+1} (1 - e^-2h) [D_k + 1/(2r) (D_k - D_{k-1})]
    #      + sigma_{k+1} sqrt(1 - e^-2h) z
    h, r = _log_snr_steps(sde, t, tn)
    b, sn = sde.mean_coeff(tn) * -np.expm1(-2 * h), sde.std(tn)
    return {**_data_prediction(sde, t), "a": sn / sde.std(t) * np.exp(-h), "b": b * (1 + 0.5 / r),
            "c": -b * 0.5 / r, "e": sn * np.sqrt(-np.expm1(-2 * h))}


def _dpmpp_program(noise: bool):
    """Shared by both DPM-Solver++(2M) rules: D, the update, and D carried as the next step's history."""
    update = Lin("x", x="a", d="b", dold="c", z="e") if noise else Lin("x", x="a", d="b", dold="c")
    draw = (Draw("z", STREAM_PREDICTOR),) if noise else ()
    return lambda plan: (Eval("s", "x"), Lin("d", x="u", s="w"), *draw, update, Lin("dold", d="one"))


def _edm_heun(sde, t, tn, plan):
    # Heun on dy/dsigma' = (y - D) / sigma' = -sigma(t) s(x, t) for y = x / m, sigma' = sigma / m:
    # x_e = m_{k+1} (x / m_k + H d_k);  x <- m_{k+1} (x / m_k + H/2 (d_k + d(x_e, t_{k+1}))),  H = sigma'_{k+1} - sigma'_k
    m, mn = sde.mean_coeff(t), sde.mean_coeff(tn)
    H = sde.std(tn) / mn - sde.std(t) / m
    return {"one": 1.0, "a": mn / m, "b": -mn * H * sde.std(t), "c": -0.5 * mn * H * sde.std(t),
            "c2": -0.5 * mn * H * sde.std(tn)}


RULES = {
    rule.name: rule
    for rule in (
        SamplerRule(
            "em", "reverse-SDE Euler–Maruyama, x <- x - (f(t) x - g(t)^2 s) h + g(t) sqrt(h) z "
            "(Song et al. 2021, eq. 6)", order=1, times=(0.0,),
            program=lambda plan: (Eval("s", "x"), Draw("z", STREAM_PREDICTOR), Lin("x", x="a", s="b", z="c")),
            coefficients=_em),
        SamplerRule(
            "pc", "predictor-corrector: Langevin corrector sweeps at t, then the reverse-diffusion predictor "
            "t -> t - h (Song et al. 2021, Algorithms 2-3; score_sde pc_sampler)", order=1, times=(0.0,),
            program=lambda plan: _corrector_sweeps(plan) + (
                Eval("s", "x"), Draw("z", STREAM_PREDICTOR), Lin("x", x="px", s="ps", z="pz")),
            coefficients=_pc),
        SamplerRule(
            "ald", "annealed Langevin dynamics: corrector_steps Langevin steps at each noise level sigma(t_k), "
            "no predictor (Song & Ermon 2019, Algorithm 1; score_sde predictor 'none')", order=None, times=(0.0,),
            program=_corrector_sweeps, coefficients=_langevin, needs_corrector=True),
        SamplerRule(
            "ode_euler", "probability-flow ODE, explicit Euler t -> t - h (Song et al. 2021, eq. 13)",
            order=1, times=(0.0,), program=lambda plan: (Eval("s", "x"), Lin("x", x="a", s="b")),
            coefficients=_ode_euler),
        SamplerRule(
            "ode_heun", "probability-flow ODE, Heun's method (Karras et al. 2022, Algorithm 1 without churn)",
            order=2, times=(0.0, 1.0),
            program=lambda plan: (Eval("s", "x", at=0), Lin("v", x="f", s="q"), Lin("y", x="one", v="mh"),
                                  Eval("s", "y", at=1), Lin("x", x="one", v="mh2", y="f2", s="q2")),
            coefficients=_ode_heun),
        SamplerRule(
            "dpmpp_2m", "DPM-Solver++(2M), data prediction, multistep in lambda = log(m / sigma); first step "
            "first order, all later ones second order (Lu et al. 2022, Algorithm 2; k-diffusion sample_dpmpp_2m)",
            order=2, times=(0.0,), program=_dpmpp_program(noise=False), coefficients=_dpmpp_2m, carries=("dold",),
            default_grid="logsnr"),
        SamplerRule(
            "dpmpp_2m_sde", "DPM-Solver++(2M) SDE, eta = 1, midpoint correction; first step first order "
            "(Lu et al. 2022, Sec. 5 and App. B; k-diffusion sample_dpmpp_2m_sde)", order=1, times=(0.0,),
            program=_dpmpp_program(noise=True), coefficients=_dpmpp_2m_sde, carries=("dold",),
            default_grid="logsnr"),
        SamplerRule(
            "edm_heun", "Heun in sigma' = sigma / m on x / m, every step second order (Karras et al. 2022, "
            "Algorithm 1 with sigma(t) = t, s(t) = 1 and S_churn = 0; k-diffusion sample_heun)", order=2,
            times=(0.0, 1.0),
            program=lambda plan: (Eval("s", "x", at=0), Lin("y", x="a", s="b"), Lin("x", x="a", s="c"),
                                  Eval("s", "y", at=1), Lin("x", x="one", s="c2")),
            coefficients=_edm_heun, default_grid="karras"),
    )
}


#: the final step of denoise=True, at eps: Tweedie's E[x_0 | x_eps] = (x + sigma^2 s) / m
#: (Efron 2011; score_sde's denoise step). Its coefficients use the row after the last step.
TWEEDIE: tuple[Op, ...] = (Eval("s", "x"), Lin("x", x="u", s="w"))


def tweedie_coefficients(sde: SDE, eps: float) -> dict:
    return _data_prediction(sde, eps)
