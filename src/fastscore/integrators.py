"""The likelihood integrators, each declared once: the Butcher tableaux of the fixed-step
methods and the Dormand–Prince 5(4) pair with its step-size controller.

``fastscore.log_prob`` integrates the augmented probability-flow ODE y = [x, delta] from eps
to T. The torch reference (``backends/reference.py``) and the Numba kernels
(``backends/_numba_kernels.py``) read their tableaux and controller constants from here.
(The C++ kernels keep their own copy in ``csrc/include/fastscore/ode.h``.)

A fixed-step method of s stages takes y_{k+1} = y_k + h sum_i b_i k_i with
k_i = v(y_k + h sum_{j<i} a_ij k_j, t_k + c_i h): ``a[i]`` is row i of the strictly lower
matrix (i entries; row 0 is empty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge–Kutta method: nodes c [s], matrix a (row i: a_i0 .. a_i,i-1),
    weights b [s] and its order of convergence."""

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int

    @property
    def stages(self) -> int:
        return len(self.c)

    def __post_init__(self):
        s = len(self.c)
        if len(self.b) != s or len(self.a) != s or any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError(f"tableau {self.name!r}: c, b need {s} entries and a row i needs i entries")


#: the fixed-step methods of ``log_prob`` (method name -> tableau)
FIXED = {
    t.name: t
    for t in (
        Tableau("euler", c=(0.0,), a=((),), b=(1.0,), order=1),
        Tableau("heun", c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2),
        Tableau("rk4", c=(0.0, 0.5, 0.5, 1.0), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), order=4),
    )
}


@dataclass(frozen=True)
class EmbeddedPair:
    """An explicit embedded Runge–Kutta pair with the first-same-as-last property, as scipy's
    RK45 holds it: nodes c and matrix a of the s stages of a step (row i: i entries), the
    weights b [s] of the propagated solution, and error weights e [s + 1] = b - b_hat over
    the s stages and the derivative at the new point (the next step's first stage)."""

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...]
    order: int  # of the propagated solution
    error_order: int  # of the embedded one the error estimate compares with


#: Dormand & Prince (1980), 5(4): the coefficients of scipy.integrate.RK45
DOPRI5 = EmbeddedPair(
    "rk45",
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    e=(-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40),
    order=5,
    error_order=4,
)

# The per-sample step-size controller of `rk45` (the kernels' definition; scipy's RK45 uses the
# same constants for one step size over a whole batch). After an attempt with error norm
# err = RMS_j(err_j / (atol + rtol max(|y_j|, |y5_j|))):
#   factor = RK45_MAX_FACTOR if err == 0 else clamp(RK45_SAFETY err^RK45_EXPONENT, MIN, MAX);
#   accept if err <= 1, else factor = min(factor, 1); h <- min(h factor, T - t).
RK45_MAX_ATTEMPTS = 100_000  # attempted steps per sample before the solve gives up
RK45_H0_FRACTION = 0.01  # first step: h0 = RK45_H0_FRACTION (T - eps)
RK45_SAFETY = 0.9
RK45_MIN_FACTOR = 0.2
RK45_MAX_FACTOR = 10.0
RK45_EXPONENT = -1 / (DOPRI5.error_order + 1)  # -1/5
# A trial step whose error norm is NaN (it overflowed) is rejected with RK45_MIN_FACTOR; a
# sample whose step falls below RK45_MIN_STEP_FRACTION (T - eps) stops with a NaN log p (its
# velocity is not finite at any step size), which log_prob reports as FloatingPointError.
RK45_MIN_STEP_FRACTION = 1e-12


def step_factor(err: np.ndarray, exponent: float) -> np.ndarray:
    """The controller's step factor after attempts with error norms err (accepted: err <= 1),
    elementwise; ode.h step_factor is its kernel twin. Rejections (and NaN errors: a trial
    step that overflowed) never grow the step."""
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(err == 0.0, RK45_MAX_FACTOR, RK45_SAFETY * np.power(err, exponent))
    f = np.clip(f, RK45_MIN_FACTOR, RK45_MAX_FACTOR)
    f = np.where(err <= 1.0, f, np.minimum(f, 1.0))
    return np.where(np.isnan(err), RK45_MIN_FACTOR, f)


# The adaptive reverse-SDE sampler `em_adaptive` (Jolicoeur-Martineau et al. 2021, "Gotta Go
# Fast", Algorithm 1): an Euler–Maruyama proposal x' and its improved-Euler extrapolation x''
# from t to t - h on the same Brownian increment; error norm
#   E = RMS_j((x'_j - x''_j) / max(atol, rtol max(|x'_j|, |x'_prev,j|)))
# (x'_prev: the last accepted proposal); accept if E <= 1 and move to x''; then the step
# controller above with exponent -GGF_R (their r = 0.9, theta = RK45_SAFETY = 0.9).
GGF_R = 0.9
GGF_H0_FRACTION = 0.01  # first step, as rk45's
