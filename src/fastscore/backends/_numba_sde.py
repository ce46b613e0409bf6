"""SDE coefficients for the Numba kernels, float64, formula by formula as sde.h and sde.py
(tests/test_numba.py holds them together). (kind, p0, p1, T) as SDE.kind and SDE.params;
an unknown kind raises (numba_backend validates kinds before any kernel runs)."""

from __future__ import annotations

import math

from numba import njit

from ..sde import EDMSDE, VESDE, VPSDE, CosineVPSDE, GeometricVESDE, SubVPSDE

KIND_VP, KIND_VE, KIND_SUBVP = VPSDE.kind, VESDE.kind, SubVPSDE.kind
KIND_COSINE, KIND_GEOMETRIC, KIND_EDM = CosineVPSDE.kind, GeometricVESDE.kind, EDMSDE.kind
_JIT = dict(cache=True, fastmath=False, nogil=True)
_UNKNOWN = "unknown SDE kind (fastscore.sde.from_kind)"


@njit(**_JIT)
def _beta(p0, p1, T, t):
    return p0 + (p1 - p0) * t / T


@njit(**_JIT)
def _beta_integral(p0, p1, T, t):
    return p0 * t + 0.5 * (p1 - p0) * t * t / T


@njit(**_JIT)
def _cosine_theta(s, t):
    return 0.5 * math.pi * (t + s) / (1.0 + s)


@njit(**_JIT)
def _cosine_std(s, t):
    th0 = _cosine_theta(s, 0.0)
    return math.sqrt(math.sin(0.5 * math.pi * t / (1.0 + s)) * math.sin(_cosine_theta(s, t) + th0)) / math.cos(th0)


@njit(**_JIT)
def _cosine_beta(s, t):
    return math.pi / (1.0 + s) * math.tan(_cosine_theta(s, t))


@njit(**_JIT)
def _geometric_sigma(p0, p1, T, t):
    return p0 * math.exp(math.log(p1 / p0) / T * t)


@njit(**_JIT)
def drift_coeff(kind, p0, p1, T, t):
    if kind == KIND_VE or kind == KIND_GEOMETRIC or kind == KIND_EDM:
        return 0.0
    if kind == KIND_VP or kind == KIND_SUBVP:
        return -0.5 * _beta(p0, p1, T, t)
    if kind == KIND_COSINE:
        return -0.5 * _cosine_beta(p0, t)
    raise ValueError(_UNKNOWN)


@njit(**_JIT)
def diffusion_sq(kind, p0, p1, T, t):
    if kind == KIND_VE:
        return math.exp(2.0 * math.log(p0) * t)
    if kind == KIND_SUBVP:
        return _beta(p0, p1, T, t) * -math.expm1(-2.0 * _beta_integral(p0, p1, T, t))
    if kind == KIND_VP:
        return _beta(p0, p1, T, t)
    if kind == KIND_COSINE:
        return _cosine_beta(p0, t)
    if kind == KIND_GEOMETRIC:
        sigma = _geometric_sigma(p0, p1, T, t)
        return 2.0 * math.log(p1 / p0) / T * sigma * sigma
    if kind == KIND_EDM:
        return 2.0 * t
    raise ValueError(_UNKNOWN)


@njit(**_JIT)
def mean_coeff(kind, p0, p1, T, t):
    if kind == KIND_VE or kind == KIND_GEOMETRIC or kind == KIND_EDM:
        return 1.0
    if kind == KIND_VP or kind == KIND_SUBVP:
        return math.exp(-0.5 * _beta_integral(p0, p1, T, t))
    if kind == KIND_COSINE:
        return math.cos(_cosine_theta(p0, t)) / math.cos(_cosine_theta(p0, 0.0))
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
    if kind == KIND_COSINE:
        return _cosine_std(p0, t)
    if kind == KIND_GEOMETRIC:
        return _geometric_sigma(p0, p1, T, t)
    if kind == KIND_EDM:
        return t
    raise ValueError(_UNKNOWN)
