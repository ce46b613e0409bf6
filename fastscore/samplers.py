"""The samplers, each declared once as a rule that every backend runs.

A rule says what one step of its method does, as a step program (``fastscore/program.py``)
over per-sample registers, and how its coefficients follow from the SDE and the grid. The
time grid is the same for every rule: t_k = T - k h, h = (T - eps) / steps, k = 0..steps-1;
step k moves the state from t_k to t_k - h. A rule also declares its evaluation times within
a step, the history it carries from step to step, its order and the SDEs it supports; the
noise streams it draws are read off its program. Backends interpret programs, so a new method
is a new rule here (plus its tests), not a change to any kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .program import Draw, Eval, Lin, Op
from .rng import STREAM_CORRECTOR, STREAM_PREDICTOR
from .sde import SDE

#: coefficients(sde, t [steps] float64, h, plan) -> {name: value or array over the steps}
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


def _em(sde, t, h, plan):
    g2 = sde.diffusion_sq(t)
    return {"a": 1.0 - sde.drift_coeff(t) * h, "b": g2 * h, "c": np.sqrt(g2 * h)}


def _ode_euler(sde, t, h, plan):
    return {"a": 1.0 - sde.drift_coeff(t) * h, "b": 0.5 * sde.diffusion_sq(t) * h}


def _ode_heun(sde, t, h, plan):
    # v(x, t) = f(t) x - 1/2 g(t)^2 s;  y = x - h v(x, t);  x <- x - h/2 (v(x, t) + v(y, t - h))
    t2 = t - h
    return {"f": sde.drift_coeff(t), "q": -0.5 * sde.diffusion_sq(t), "one": 1.0, "mh": -h, "mh2": -0.5 * h,
            "f2": -0.5 * h * sde.drift_coeff(t2), "q2": 0.25 * h * sde.diffusion_sq(t2)}


def _langevin(sde, t, h, plan):
    # Langevin step e = 2 alpha (snr sigma(t))^2, alpha = a^2 over the exact transition
    # x_t = a x_{t-h} + G z. score_sde's ratio ||z|| / ||s|| averaged over the batch would make a
    # sample depend on its batch; per sample it would depend on the position (||s|| vanishes at
    # every mode in low dimensions), which biases unadjusted Langevin. sigma(t) is its batch-free
    # value: E||z||^2 = dim and E||s||^2 <= dim / sigma(t)^2.
    a, _ = sde.transition(t, t - h)
    e = 2.0 * a * a * (plan.snr * sde.std(t)) ** 2
    return {"one": 1.0, "e": e, "en": np.sqrt(2.0 * e)}


def _pc(sde, t, h, plan):
    # reverse-diffusion predictor over the same transition: x <- (2 - a) x + G^2 s + G z
    a, G2 = sde.transition(t, t - h)
    return {**_langevin(sde, t, h, plan), "px": 2.0 - a, "ps": G2, "pz": np.sqrt(G2)}


def _corrector_sweeps(plan) -> tuple[Op, ...]:
    """plan.corrector_steps Langevin steps at t_k: x <- x + e s + sqrt(2 e) z."""
    ops: tuple[Op, ...] = ()
    for j in range(plan.corrector_steps):
        ops += (Eval("s", "x"), Draw("z", STREAM_CORRECTOR + j), Lin("x", x="one", s="e", z="en"))
    return ops


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
    )
}

#: the final step of denoise=True, at eps: Tweedie's E[x_0 | x_eps] = (x + sigma^2 s) / m
#: (Efron 2011; score_sde's denoise step). Its coefficients use the row after the last step.
TWEEDIE: tuple[Op, ...] = (Eval("s", "x"), Lin("x", x="u", s="w"))


def tweedie_coefficients(sde: SDE, eps: float) -> dict:
    m, sig = sde.mean_coeff(eps), sde.std(eps)
    return {"u": 1.0 / m, "w": sig * sig / m}
