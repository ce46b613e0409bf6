"""Analytic targets: Gaussian mixtures whose diffused score and density are exact.

``ExactGMMScore(gmm, sde)(x, t)`` is ``gmm.score_t(x, sde, t)`` written in torch, so that
the reference backend (``backend="torch"``) can sample with, and take autograd Jacobian
traces of, the *exact* score of the law it should reproduce. The only errors left in a
sampler or likelihood run are then the method's own (discretisation, sampling noise,
the prior mismatch at T): what the tests quantify and the solver bench measures. It is a
plain torch module, not a network the fused kernels run, so it runs on ``backend="torch"``.

Mixture component k diffused to time t is N(m mu_k, m^2 Sigma_k + s^2 I) with
m = m(t), s = sigma(t). With Sigma_k = U_k diag(lam_k) U_k^T the diffused covariance is
U_k diag(m^2 lam_k + s^2) U_k^T, so the score needs no matrix inversion per time:

    score(x) = sum_k r_k(x) * -U_k diag(1 / (m^2 lam_k + s^2)) U_k^T (x - m mu_k)

with responsibilities r_k = softmax_k(log w_k + log N_k(x)), exactly the formula of
``fastscore.datasets.GaussianMixture._score`` (tests/test_reference.py holds the two
equal). Being plain torch, it is differentiable in x to any order.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .datasets import GMM_SEED003, MIXTURE1D, GaussianMixture, mixture
from .sde import SDE

__all__ = ["ExactGMMScore", "TARGET_NAMES", "target"]

#: what ``target(name)`` accepts (command lines, the solver bench)
TARGET_NAMES = "gmm2d, mixture1d, mixtureKd for K = 2..16"
MAX_NAMED_DIM = 16  # the k-NN entropy behind the bench's KL estimate degrades beyond it


def target(name: str) -> GaussianMixture:
    """The analytic target called ``name``: "gmm2d" (``datasets.GMM_SEED003``), "mixture1d"
    (``datasets.MIXTURE1D``) or "mixtureKd" for K = 2..16 (``datasets.mixture(K)``, seed 0)."""
    fixed = {"gmm2d": GMM_SEED003, "mixture1d": MIXTURE1D}
    if name in fixed:
        return fixed[name]
    digits = name[len("mixture"):-1] if name.startswith("mixture") and name.endswith("d") else ""
    if digits.isdecimal() and 2 <= int(digits) <= MAX_NAMED_DIM:
        return mixture(int(digits))
    raise ValueError(f"unknown target {name!r}; choose one of {TARGET_NAMES}")


class ExactGMMScore(nn.Module):
    """s(x, t) = grad_x log p_t(x) of ``gmm`` diffused by ``sde``, in x's dtype.

    ``t`` may be a float, an [n] or an [n, 1] tensor. The module holds one empty
    parameter of ``dtype`` so that the reference backend, which reads the dtype and device
    from the first parameter, runs in that precision (float64 by default).
    """

    def __init__(self, gmm: GaussianMixture, sde: SDE, dtype=torch.float64):
        super().__init__()
        if not isinstance(gmm, GaussianMixture):
            raise TypeError(f"gmm must be a GaussianMixture, got {type(gmm).__name__}")
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a fastscore SDE, got {type(sde).__name__}")
        self.gmm, self.sde, self.dim = gmm, sde, gmm.dim
        evals, evecs = np.linalg.eigh(gmm.covs)  # public API only: means, covs, weights
        self.register_buffer("means", torch.as_tensor(gmm.means, dtype=dtype))  # [K, D]
        self.register_buffer("evals", torch.as_tensor(evals, dtype=dtype))  # [K, D]
        self.register_buffer("evecs", torch.as_tensor(evecs, dtype=dtype))  # [K, D, D]
        self.register_buffer("log_w", torch.as_tensor(np.log(gmm.weights), dtype=dtype))  # [K]
        self.anchor = nn.Parameter(torch.zeros(0, dtype=dtype), requires_grad=False)

    def _time_column(self, t, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not isinstance(t, torch.Tensor):
            return torch.full((n, 1), float(t), dtype=x.dtype, device=x.device)
        t = t.to(dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            return t.expand(n, 1)
        if t.shape == (n,):
            return t[:, None]
        if t.shape == (n, 1):
            return t
        raise ValueError(f"t must be a float, [n] or [n, 1] with n = {n}; got shape {tuple(t.shape)}")

    def components(self, x: torch.Tensor, t):
        """(log w_k N_k(x; t) [n, K], grad_x log N_k(x; t) [n, K, D])."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [n, {self.dim}], got {tuple(x.shape)}")
        tc = self._time_column(t, x)  # [n, 1]
        m = self.sde.mean_coeff(tc)
        m = m if isinstance(m, torch.Tensor) else torch.full_like(tc, float(m))
        s2 = self.sde.std(tc) ** 2
        means, evals, evecs = (b.to(x.dtype) for b in (self.means, self.evals, self.evecs))
        lam = (m * m)[:, :, None] * evals[None] + s2[:, :, None]  # [n, K, D]
        diff = x[:, None, :] - m[:, :, None] * means[None]  # [n, K, D]
        y = torch.einsum("nkd,kde->nke", diff, evecs)  # eigen-coordinates
        w = y / lam
        logc = self.log_w.to(x.dtype) - 0.5 * ((y * w).sum(-1) + torch.log(lam).sum(-1) + self.dim * math.log(2 * math.pi))
        grad = -torch.einsum("nke,kde->nkd", w, evecs)
        return logc, grad

    def log_prob(self, x: torch.Tensor, t) -> torch.Tensor:
        """log p_t(x) [n]."""
        return torch.logsumexp(self.components(x, t)[0], dim=1)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        logc, grad = self.components(x, t)
        resp = torch.softmax(logc, dim=1)
        return torch.einsum("nk,nkd->nd", resp, grad)
