"""Forward SDEs dx = f(t) x dt + g(t) dW in closed form.

Every SDE here is linear in x, so the perturbation kernel is Gaussian:
x_t | x_0 ~ N(m(t) x_0, sigma(t)^2 I). The same formulas live in
``csrc/include/fastscore/sde.h`` for the kernels; ``tests/test_sde.py`` holds the
two against each other. Functions accept a Python float, a numpy array or a torch
tensor for ``t`` and answer in the same kind.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch

__all__ = ["SDE", "VPSDE", "VESDE", "SubVPSDE", "CosineVPSDE", "GeometricVESDE", "EDMSDE"]


def _xp(t):
    """The array module that matches ``t`` (torch for tensors, numpy otherwise)."""
    return torch if isinstance(t, torch.Tensor) else np


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return value


class SDE:
    """Base class: a linear forward SDE with drift f(t) x and diffusion g(t)."""

    #: integer code shared with the C++ header (``fastscore::SdeKind``)
    kind: int
    T: float

    # -- coefficients -------------------------------------------------------
    def drift_coeff(self, t):
        """f(t): the drift is f(t) * x."""
        raise NotImplementedError

    def diffusion_sq(self, t):
        """g(t)^2."""
        raise NotImplementedError

    def diffusion(self, t):
        """g(t)."""
        return _xp(t).sqrt(self.diffusion_sq(t))

    def mean_coeff(self, t):
        """m(t) with E[x_t | x_0] = m(t) x_0."""
        raise NotImplementedError

    def std(self, t):
        """sigma(t), the marginal std of x_t given x_0."""
        raise NotImplementedError

    def transition(self, t, s):
        """(a, G^2) of the exact forward transition x_t = a x_s + G z, for s < t.

        a = m(t)/m(s) and G^2 = sigma(t)^2 - a^2 sigma(s)^2, which holds for any linear SDE.
        The reverse-diffusion predictor and the Langevin corrector are built on it.
        """
        a = self.mean_coeff(t) / self.mean_coeff(s)
        return a, self.std(t) ** 2 - a**2 * self.std(s) ** 2

    # -- prior --------------------------------------------------------------
    @property
    def prior_std(self) -> float:
        """Std of the Gaussian prior N(0, prior_std^2 I) that sampling starts from at t = T."""
        raise NotImplementedError

    def prior_sample(self, z):
        """Map standard normals z [n, dim] to prior draws [n, dim]."""
        return self.prior_std * z

    def prior_log_prob(self, x):
        """log N(x; 0, prior_std^2 I) summed over the last axis: [n, dim] -> [n]."""
        d = x.shape[-1]
        s2 = self.prior_std**2
        return -0.5 * (x**2).sum(-1) / s2 - 0.5 * d * math.log(2 * math.pi * s2)

    # -- plumbing -------------------------------------------------------------
    @property
    def params(self) -> tuple[float, float, float]:
        """(p0, p1, T) as packed for the kernels; see ``fastscore::SdeParams``."""
        raise NotImplementedError

    def _check_T(self, T: float) -> float:
        return _check_positive("T", T)

    def config(self) -> dict:
        """The constructor's arguments: type(self)(**sde.config()) == sde."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __eq__(self, other):
        return type(self) is type(other) and self.params == other.params

    def __hash__(self):
        return hash((type(self).__name__, self.params))


class _LinearBeta(SDE):
    """Shared part of VP and sub-VP: beta(t) linear from beta_min at 0 to beta_max at T."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = _check_positive("beta_min", beta_min)
        self.beta_max = _check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max ({beta_max}) must be >= beta_min ({beta_min})")
        self.T = self._check_T(T)

    def beta(self, t):
        return self.beta_min + (self.beta_max - self.beta_min) * t / self.T

    def beta_integral(self, t):
        """int_0^t beta(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t / self.T

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def mean_coeff(self, t):
        return _xp(t).exp(-0.5 * self.beta_integral(t))

    @property
    def params(self):
        return (self.beta_min, self.beta_max, self.T)

    def __repr__(self):
        return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"


class VPSDE(_LinearBeta):
    """Variance preserving (Song et al. 2021, eq. 11; DDPM's continuous limit):
    dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW."""

    kind = 0

    def diffusion_sq(self, t):
        return self.beta(t)

    def std(self, t):
        # sigma^2 = 1 - exp(-int beta); expm1 keeps digits near t = 0
        return _xp(t).sqrt(-_xp(t).expm1(-self.beta_integral(t)))

    @property
    def prior_std(self):
        return 1.0


class SubVPSDE(_LinearBeta):
    """Sub-VP (Song et al. 2021): g(t)^2 = beta(t) (1 - exp(-2 int beta)), sigma = 1 - exp(-int beta)."""

    kind = 2

    def diffusion_sq(self, t):
        return self.beta(t) * -_xp(t).expm1(-2.0 * self.beta_integral(t))

    def std(self, t):
        return -_xp(t).expm1(-self.beta_integral(t))

    @property
    def prior_std(self):
        return 1.0


class _NoDrift(SDE):
    """The variance-exploding family: dx = g(t) dW, so f = 0 and m = 1."""

    def drift_coeff(self, t):
        return 0.0 * t

    def mean_coeff(self, t):
        return 1.0 + 0.0 * t


class VESDE(_NoDrift):
    """Variance exploding with g(t) = sigma^t (seeds 001/003):
    sigma_t^2 = (sigma^(2t) - 1) / (2 ln sigma)."""

    kind = 1

    def __init__(self, sigma: float = 25.0, T: float = 1.0):
        sigma = _check_positive("sigma", sigma)
        if sigma <= 1.0:
            raise ValueError(f"VESDE needs sigma > 1 (g(t) = sigma^t must grow), got {sigma}")
        self.sigma = sigma
        self.T = self._check_T(T)
        self._log_sigma = math.log(sigma)

    def diffusion_sq(self, t):
        return _xp(t).exp(2.0 * self._log_sigma * t)

    def std(self, t):
        xp = _xp(t)
        return xp.sqrt(xp.expm1(2.0 * self._log_sigma * t) / (2.0 * self._log_sigma))

    @property
    def prior_std(self):
        return math.sqrt(math.expm1(2.0 * self._log_sigma * self.T) / (2.0 * self._log_sigma))

    @property
    def params(self):
        return (self.sigma, 0.0, self.T)

    def __repr__(self):
        return f"VESDE(sigma={self.sigma}, T={self.T})"


class CosineVPSDE(SDE):
    """VP with the cosine schedule of Nichol & Dhariwal (2021) in continuous time, as
    DPM-Solver's ``NoiseScheduleVP('cosine')``: m(t) = cos(theta(t)) / cos(theta(0)) with
    theta(t) = pi/2 (t + s) / (1 + s), sigma(t)^2 = 1 - m(t)^2, beta(t) = -2 d log m / dt
    = pi / (1 + s) tan(theta(t)), f = -beta / 2, g^2 = beta. beta grows without bound as
    t -> 1, so time stops at T < 1 (DPM-Solver's 0.9946, where beta is about 370)."""

    kind = 3

    def __init__(self, s: float = 0.008, T: float = 0.9946):
        self.s = float(s)
        if not (math.isfinite(self.s) and 0.0 <= self.s < 1.0):
            raise ValueError(f"s must be in [0, 1), got {s!r}")
        self.T = self._check_T(T)
        if not self.T < 1.0:
            raise ValueError(f"T must be < 1 (beta(t) is infinite at t = 1), got {T!r}")

    def _theta(self, t):
        return 0.5 * math.pi * (t + self.s) / (1.0 + self.s)

    def beta(self, t):
        return math.pi / (1.0 + self.s) * _xp(t).tan(self._theta(t))

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def diffusion_sq(self, t):
        return self.beta(t)

    def mean_coeff(self, t):
        xp = _xp(t)
        return xp.cos(self._theta(t)) / xp.cos(self._theta(0.0 * t))

    def std(self, t):
        # 1 - m^2 = (cos^2 theta0 - cos^2 theta) / cos^2 theta0 = sin(theta - theta0) sin(theta + theta0)
        # / cos^2 theta0, with theta - theta0 = pi/2 t / (1 + s): no cancellation near t = 0
        xp = _xp(t)
        th0 = self._theta(0.0 * t)
        return xp.sqrt(xp.sin(0.5 * math.pi * t / (1.0 + self.s)) * xp.sin(self._theta(t) + th0)) / xp.cos(th0)

    @property
    def prior_std(self):
        return 1.0

    @property
    def params(self):
        return (self.s, 0.0, self.T)

    def __repr__(self):
        return f"CosineVPSDE(s={self.s}, T={self.T})"


class GeometricVESDE(_NoDrift):
    """score_sde's VE SDE (Song et al. 2021): sigma(t) = sigma_min (sigma_max / sigma_min)^(t/T),
    g(t)^2 = d sigma^2 / dt = 2 sigma(t)^2 log(sigma_max / sigma_min) / T, no drift. As in
    score_sde, sigma(t) itself is the marginal std (the perturbation at t = 0 is sigma_min)."""

    kind = 4

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        self.sigma_min = _check_positive("sigma_min", sigma_min)
        self.sigma_max = _check_positive("sigma_max", sigma_max)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max ({sigma_max}) must be > sigma_min ({sigma_min})")
        self.T = self._check_T(T)
        self._rate = math.log(self.sigma_max / self.sigma_min) / self.T  # d log sigma / dt

    def diffusion_sq(self, t):
        return 2.0 * self._rate * self.std(t) ** 2

    def std(self, t):
        return self.sigma_min * _xp(t).exp(self._rate * t)

    @property
    def prior_std(self):
        return self.sigma_max

    @property
    def params(self):
        return (self.sigma_min, self.sigma_max, self.T)

    def __repr__(self):
        return f"GeometricVESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T})"


class EDMSDE(_NoDrift):
    """The EDM / Karras et al. (2022) schedule sigma(t) = t: x_t = x_0 + t z, no drift,
    g(t)^2 = d sigma^2 / dt = 2 t; time runs to T = sigma_max, the prior is N(0, sigma_max^2)."""

    kind = 5

    def __init__(self, sigma_max: float = 80.0):
        self.T = self._check_T(sigma_max)

    @property
    def sigma_max(self) -> float:
        return self.T

    def diffusion_sq(self, t):
        return 2.0 * t

    def std(self, t):
        return 1.0 * t

    @property
    def prior_std(self):
        return self.T

    @property
    def params(self):
        return (0.0, 0.0, self.T)

    def __repr__(self):
        return f"EDMSDE(sigma_max={self.T})"


#: every SDE, by kind code (fastscore::SdeKind)
SDE_CLASSES = {cls.kind: cls for cls in (VPSDE, VESDE, SubVPSDE, CosineVPSDE, GeometricVESDE, EDMSDE)}


def from_kind(kind: int, params) -> SDE:
    """The SDE of a kind code and its packed params (p0, p1, T): the inverse of (sde.kind,
    sde.params), for code that holds a packed SDE (network programs)."""
    p0, p1, T = (float(v) for v in params)
    make = {VPSDE.kind: lambda: VPSDE(p0, p1, T), SubVPSDE.kind: lambda: SubVPSDE(p0, p1, T),
            VESDE.kind: lambda: VESDE(p0, T), CosineVPSDE.kind: lambda: CosineVPSDE(p0, T),
            GeometricVESDE.kind: lambda: GeometricVESDE(p0, p1, T), EDMSDE.kind: lambda: EDMSDE(T)}
    if kind not in make:
        raise ValueError(f"unknown SDE kind {kind!r}")
    return make[kind]()
