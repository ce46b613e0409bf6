"""Forward SDEs dx = f(t) x dt + g(t) dW in closed form.

Every SDE here is linear in x, so the perturbation kernel is Gaussian:
x_t | x_0 ~ N(m(t) x_0, sigma(t)^2 I). The same formulas live in
``csrc/include/fastscore/sde.h`` for the kernels; ``tests/test_sde.py`` holds the
two against each other. Functions accept a Python float, a numpy array or a torch
tensor for ``t`` and answer in the same kind.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["SDE", "VPSDE", "VESDE", "SubVPSDE"]


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


class VESDE(SDE):
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

    def drift_coeff(self, t):
        return 0.0 * t

    def diffusion_sq(self, t):
        return _xp(t).exp(2.0 * self._log_sigma * t)

    def mean_coeff(self, t):
        return 1.0 + 0.0 * t

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
