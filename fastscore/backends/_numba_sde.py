"""SDE coefficients for the Numba kernels, float64, formula by formula as sde.h and sde.py
(tests/test_numba.py holds them together). (kind, p0, p1, T) as SDE.kind and SDE.params;
an unknown kind raises (numba_backend validates kinds before any kernel runs)."""

from __future__ import annotations

import math

from numba import njit

from ..sde import VESDE, VPSDE, SubVPSDE

KIND_VP, KIND_VE, KIND_SUBVP = VPSDE.kind, VESDE.kind, SubVPSDE.kind
_JIT = dict(cache=True, fastmath=False, nogil=True)
_UNKNOWN = "unknown SDE kind (fastscore.sde: VPSDE, VESDE, SubVPSDE)"


@njit(**_JIT)
def _beta(p0, p1, T, t):
    return p0 + (p1 - p0) * t / T


@njit(**_JIT)
def _beta_integral(p0, p1, T, t):
    return p0 * t + 0.5 * (p1 - p0) * t * t / T


@njit(**_JIT)
def drift_coeff(kind, p0, p1, T, t):
    if kind == KIND_VE:
        return 0.0
    if kind == KIND_VP or kind == KIND_SUBVP:
        return -0.5 * _beta(p0, p1, T, t)
    raise ValueError(_UNKNOWN)


@njit(**_JIT)
def diffusion_sq(kind, p0, p1, T, t):
    if kind == KIND_VE:
        return math.exp(2.0 * math.log(p0) * t)
    if kind == KIND_SUBVP:
        return _beta(p0, p1, T, t) * -math.expm1(-2.0 * _beta_integral(p0, p1, T, t))
    if kind == KIND_VP:
        return _beta(p0, p1, T, t)
    raise ValueError(_UNKNOWN)


@njit(**_JIT)
def mean_coeff(kind, p0, p1, T, t):
    if kind == KIND_VE:
        return 1.0
    if kind == KIND_VP or kind == KIND_SUBVP:
        return math.exp(-0.5 * _beta_integral(p0, p1, T, t))
    raise ValueError(_UNKNOWN)


@njit(**_JIT)
def marginal_std(kind, p0, p1, T, t):
    if kind == KIND_VE:
        ls = math.log(p0)
        return math.sqrt(math.expm1(2.0 * ls * t) / (2.0 * ls))
    if kind == KIND_SUBVP:
        return -math.expm1(-_beta_integral(p0, p1, T, t))
    if kind == KIND_VP:
        return math.sqrt(-math.expm1(-_beta_integral(p0, p1, T, t)))
    raise ValueError(_UNKNOWN)
