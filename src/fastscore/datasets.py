"""Toy target distributions for training and checking score models.

Every generator takes ``n`` (an int >= 0) and ``seed`` (an int >= 0) and returns a
float32 torch tensor ``[n, dim]``. Draws come from a local
``np.random.default_rng(seed)``, never from global random state, so a given seed
always gives the same points and nothing else in the process is disturbed.

Datasets
--------
``ring(n, seed, scale)``  (dim 2, seed 002)
    Points on a ring of radius about 1 with a *non-uniform* angular density
    (more mass towards the diagonals), thickness set by ``scale``. The standard
    2-D training target; no closed-form density.
``gmm(n, seed)`` / ``GMM_SEED003``  (dim 2, seed 003)
    Two-component Gaussian mixture. Its density and score, at t = 0 and after
    diffusion by any linear SDE, are known exactly, so it is the reference for
    checking samplers, likelihoods and learned scores.
``mixture1d(n, seed)`` / ``MIXTURE1D``  (dim 1)
    Three-component 1-D Gaussian mixture: seed 000's kind of target (it computes
    likelihoods by the probability-flow ODE on (-4, 4)); the seed does not give
    its parameters, so the ones here are our choice: well separated but
    overlapping modes. Exact density for likelihood tests.
``mixture(dim, components, seed)``  (any dim; the solver bench uses 1-D to 16-D)
    A ``GaussianMixture`` (the law, not draws) fixed by its seed: distinct modes whose
    tails overlap, equally so in every dimension. Exact density and score, for
    benchmarking samplers against the true law.
``moons(n, seed, noise)``  (dim 2)
    Two interleaved half circles as scikit-learn's ``make_moons`` (uniform
    angles instead of a grid) plus Gaussian noise. A non-convex, two-cluster
    target without a closed-form density.

``GaussianMixture`` evaluates a mixture's log-density and score, vectorised in
numpy float64, and the exact diffused versions at a scalar or per-sample time
for every SDE in :mod:`fastscore.sde` (anything with ``mean_coeff(t)`` and
``std(t)``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from scipy.special import logsumexp

__all__ = [
    "ring",
    "GaussianMixture",
    "GMM_SEED003",
    "gmm",
    "MIXTURE1D",
    "mixture1d",
    "mixture",
    "moons",
    "DATASETS",
]

_LOG_2PI = math.log(2.0 * math.pi)


# -- argument checks ------------------------------------------------------------
def _check_int(name: str, value, minimum: int = 0) -> int:
    # bool is an Integral too, but n=True is surely a mistake
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_n(n) -> int:
    return _check_int("n", n)


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(_check_int("seed", seed))


def _check_scalar(name: str, value, *, positive: bool) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}") from None
    if not math.isfinite(value) or (value <= 0.0 if positive else value < 0.0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {kind} number, got {value!r}")
    return value


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


# -- ring (seed 002) ----------------------------------------------------------------
def ring(n: int, seed: int = 0, scale: float = 200.0) -> torch.Tensor:
    """Seed 002's ``gen_x0``: a ring of radius ~1 with non-uniform angular density.

    A point uniform on the square [-1, 1]^2 is projected onto the unit circle,
    which makes the angle density proportional to 1 / cos^2 of the angle to the
    nearest axis (twice as dense on the diagonals as on the axes). The radius is
    Gamma(concentration=scale, rate=scale): mean 1, std 1 / sqrt(scale).
    """
    n = _check_n(n)
    scale = _check_scalar("scale", scale, positive=True)
    rng = _rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, 2))
    norm = np.sqrt((x**2).sum(axis=1, keepdims=True))
    # both coordinates exactly 0 has probability ~2^-100; keep it finite anyway
    x /= np.maximum(norm, np.finfo(np.float64).tiny)
    x *= rng.gamma(shape=scale, scale=1.0 / scale, size=(n, 1))
    return _to_tensor(x)


# -- Gaussian mixtures ---------------------------------------------------------------
class GaussianMixture:
    """Mixture of K full-covariance Gaussians in D dimensions.

    ``means`` [K, D], ``covs`` [K, D, D] (symmetric positive definite) and
    ``weights`` [K] (positive, normalised here to sum to 1; the attribute holds
    the normalised ones). Evaluation methods take ``x`` as [n, D] (numpy or
    torch) and answer in numpy float64.

    Each covariance is stored by its eigendecomposition Sigma = U diag(lam) U^T.
    After diffusion the covariance is m^2 Sigma + s^2 I = U diag(m^2 lam + s^2) U^T,
    so densities and scores at any (per-sample) time cost no matrix inversions.
    """

    def __init__(self, means, covs, weights):
        means = _as_float64(means)
        covs = _as_float64(covs)
        weights = _as_float64(weights)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape [K, D] with K, D >= 1, got {means.shape}")
        K, D = means.shape
        if covs.shape != (K, D, D):
            raise ValueError(f"covs must have shape [K, D, D] = {(K, D, D)} to match means, got {covs.shape}")
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape [K] = {(K,)} to match means, got {weights.shape}")
        if not (np.isfinite(means).all() and np.isfinite(covs).all() and np.isfinite(weights).all()):
            raise ValueError("means, covs and weights must be finite")
        if (weights <= 0).any():
            raise ValueError(f"weights must be positive, got {weights.tolist()}")
        for k in range(K):
            if not np.allclose(covs[k], covs[k].T, rtol=1e-10, atol=1e-12):
                raise ValueError(f"covs[{k}] is not symmetric: {covs[k].tolist()}")
        covs = 0.5 * (covs + covs.transpose(0, 2, 1))
        evals, evecs = np.linalg.eigh(covs)
        for k in range(K):
            if not evals[k].min() > 0.0:
                raise ValueError(
                    f"covs[{k}] is not positive definite (smallest eigenvalue {evals[k].min():.3g})"
                )
        self.means = means
        self.covs = covs
        self.weights = weights / weights.sum()
        self.dim = D
        self.n_components = K
        self._log_w = np.log(self.weights)
        self._evals = evals  # [K, D]
        self._evecs = evecs  # [K, D, D], columns are eigenvectors
        self._chol = np.linalg.cholesky(covs)

    def __repr__(self):
        return f"GaussianMixture(K={self.n_components}, dim={self.dim})"

    # -- moments and sampling ----------------------------------------------------
    def mean(self) -> np.ndarray:
        """Mixture mean [D]."""
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        """Mixture covariance [D, D] (within-component plus between-component)."""
        mu = self.mean()
        d = self.means - mu
        return np.einsum("k,kij->ij", self.weights, self.covs) + np.einsum("k,ki,kj->ij", self.weights, d, d)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n draws as a float32 tensor [n, D]."""
        n = _check_n(n)
        rng = _rng(seed)
        comp = rng.choice(self.n_components, size=n, p=self.weights)
        z = rng.standard_normal((n, self.dim))
        x = self.means[comp] + np.einsum("nij,nj->ni", self._chol[comp], z)
        return _to_tensor(x)

    # -- densities ------------------------------------------------------------------
    def _check_x(self, x) -> np.ndarray:
        x = _as_float64(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            hint = " (use x[:, None] for 1-D points)" if self.dim == 1 and x.ndim == 1 else ""
            raise ValueError(f"x must have shape [n, {self.dim}], got {x.shape}{hint}")
        return x

    def _coeffs(self, sde, t, n: int):
        """(m, s^2) for the diffused law as arrays of shape [n] or [1]."""
        t = _as_float64(t)
        if t.ndim == 0:
            t = t.reshape(1)
        elif t.size == n and (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
            t = t.reshape(n)
        else:
            raise ValueError(f"t must be a scalar or have shape [n] = [{n}], got {t.shape}")
        if not (np.isfinite(t).all() and (t >= 0).all()):
            raise ValueError("t must be finite and >= 0")
        m = np.broadcast_to(np.asarray(sde.mean_coeff(t), dtype=np.float64), t.shape)
        s = np.broadcast_to(np.asarray(sde.std(t), dtype=np.float64), t.shape)
        return m, s * s

    def _components(self, x, m, s2):
        """Per-component log(w_k N_k(x)) [n, K] and grad_x log N_k(x) [n, K, D].

        ``m`` and ``s2`` are [n] or [1]: component k is N(m mu_k, m^2 Sigma_k + s2 I).
        """
        lam = (m * m)[:, None, None] * self._evals[None] + s2[:, None, None]  # [n|1, K, D]
        diff = x[:, None, :] - m[:, None, None] * self.means[None]  # [n, K, D]
        y = np.einsum("nkd,kde->nke", diff, self._evecs)  # coordinates in the eigenbasis
        w = y / lam
        logc = self._log_w - 0.5 * ((y * w).sum(-1) + np.log(lam).sum(-1) + self.dim * _LOG_2PI)
        grad = -np.einsum("nke,kde->nkd", w, self._evecs)
        return logc, grad

    def _log_prob(self, x, m, s2):
        return logsumexp(self._components(x, m, s2)[0], axis=1)

    def _score(self, x, m, s2):
        logc, grad = self._components(x, m, s2)
        # responsibilities via a stable softmax over components
        resp = np.exp(logc - logsumexp(logc, axis=1, keepdims=True))
        return np.einsum("nk,nkd->nd", resp, grad)

    _T0 = (np.ones(1), np.zeros(1))

    def log_prob(self, x) -> np.ndarray:
        """log p(x) [n] for x [n, D]."""
        return self._log_prob(self._check_x(x), *self._T0)

    def score(self, x) -> np.ndarray:
        """grad_x log p(x) [n, D]: sum_k r_k(x) * -(x - mu_k) Sigma_k^-1."""
        return self._score(self._check_x(x), *self._T0)

    # -- diffused law --------------------------------------------------------------
    def diffused(self, sde, t) -> "GaussianMixture":
        """Law of x_t = m(t) x_0 + sigma(t) z for scalar t: the mixture with
        means m mu_k and covariances m^2 Sigma_k + sigma^2 I (seed 003's
        ``diffuse_gmm`` for any linear SDE)."""
        t = _as_float64(t)
        if t.ndim != 0:
            raise ValueError(f"diffused needs a scalar t, got shape {t.shape}; use log_prob_t/score_t for per-sample t")
        m, s2 = self._coeffs(sde, t, 1)
        m, s2 = float(m[0]), float(s2[0])
        covs = m * m * self.covs + s2 * np.eye(self.dim)
        return GaussianMixture(m * self.means, covs, self.weights)

    def log_prob_t(self, x, sde, t) -> np.ndarray:
        """Exact log p_t(x) [n] of the diffused mixture; t scalar or [n] per sample."""
        x = self._check_x(x)
        return self._log_prob(x, *self._coeffs(sde, t, x.shape[0]))

    def score_t(self, x, sde, t) -> np.ndarray:
        """Exact grad_x log p_t(x) [n, D] of the diffused mixture; t scalar or [n] per sample."""
        x = self._check_x(x)
        return self._score(x, *self._coeffs(sde, t, x.shape[0]))


#: seed 003's mixture: N([0, 1], I) and N([2, -1], [[2, .5], [.5, 1]]), equal weights
GMM_SEED003 = GaussianMixture(
    means=[[0.0, 1.0], [2.0, -1.0]],
    covs=[[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.5], [0.5, 1.0]]],
    weights=[1.0, 1.0],
)

#: seed 000's kind of target (a 1-D mixture of 3 Gaussians); the seed does not give
#: its parameters. These modes are well separated but overlap, and sit inside the
#: (-4, 4) window seed 000 evaluates likelihoods on.
MIXTURE1D = GaussianMixture(
    means=[[-2.0], [0.5], [2.5]],
    covs=[[[0.35**2]], [[0.5**2]], [[0.3**2]]],
    weights=[0.3, 0.4, 0.3],
)


def gmm(n: int, seed: int = 0) -> torch.Tensor:
    """n draws from ``GMM_SEED003`` [n, 2]."""
    return GMM_SEED003.sample(n, seed)


def mixture1d(n: int, seed: int = 0) -> torch.Tensor:
    """n draws from ``MIXTURE1D`` [n, 1]."""
    return MIXTURE1D.sample(n, seed)


#: mixture(): component axis stds are drawn from this range; means are at least
#: MIXTURE_SEPARATION apart, about four stds, so modes are distinct but tails overlap
MIXTURE_STD = (0.3, 0.6)
MIXTURE_SEPARATION = 2.0


def mixture(dim: int, components: int = 4, seed: int = 0) -> GaussianMixture:
    """A Gaussian mixture in ``dim`` dimensions with ``components`` components, fixed by ``seed``.

    Each covariance is a random rotation (Haar) of axis standard deviations drawn from
    ``MIXTURE_STD``; weights are drawn from [0.5, 1.5] and normalised (unequal, so a sampler
    must get the mode masses right, not only their places). Means are placed one at a time,
    uniformly in a ball about 0, and a candidate closer than ``MIXTURE_SEPARATION`` to a
    placed mean is redrawn. The ball starts at the radius whose volume holds ``components``
    balls of radius ``MIXTURE_SEPARATION / 2`` and grows by 10 % after every 100 rejected
    candidates: the construction always ends, and nearest means sit about the separation
    apart in 1-D and in 16-D alike (random means in a fixed box would drift apart with the
    dimension).

    Returns the law; draw points with ``.sample(n, seed)``.
    """
    dim = _check_int("dim", dim, minimum=1)
    components = _check_int("components", components, minimum=1)
    rng = _rng(seed)
    radius = 0.5 * MIXTURE_SEPARATION * components ** (1.0 / dim)
    means: list[np.ndarray] = []
    rejected = 0
    while len(means) < components:
        direction = rng.standard_normal(dim)
        candidate = direction / np.linalg.norm(direction) * radius * rng.uniform() ** (1.0 / dim)
        if all(np.linalg.norm(candidate - m) >= MIXTURE_SEPARATION for m in means):
            means.append(candidate)
            continue
        rejected += 1
        if rejected % 100 == 0:
            radius *= 1.1
    covs = np.empty((components, dim, dim))
    for k in range(components):
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q *= np.sign(np.diag(r))  # the sign fix that makes QR's q Haar-distributed
        covs[k] = (q * rng.uniform(*MIXTURE_STD, size=dim) ** 2) @ q.T
    return GaussianMixture(np.array(means), covs, rng.uniform(0.5, 1.5, size=components))


# -- moons ------------------------------------------------------------------------------
def moons(n: int, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """Two interleaved half circles (as sklearn's make_moons) plus N(0, noise^2) noise.

    Outer moon (cos a, sin a) with n // 2 points, inner moon (1 - cos a, 0.5 - sin a)
    with the rest, a ~ U[0, pi]; rows are shuffled so any prefix mixes both moons.
    """
    n = _check_n(n)
    noise = _check_scalar("noise", noise, positive=False)
    rng = _rng(seed)
    n_out = n // 2
    a = rng.uniform(0.0, math.pi, size=n)
    a_out, a_in = a[:n_out], a[n_out:]
    outer = np.stack([np.cos(a_out), np.sin(a_out)], axis=1)
    inner = np.stack([1.0 - np.cos(a_in), 1.0 - np.sin(a_in) - 0.5], axis=1)
    x = np.concatenate([outer, inner], axis=0)
    x = x[rng.permutation(n)]
    x += noise * rng.standard_normal((n, 2))
    return _to_tensor(x)


#: name -> generator(n, seed), for command lines and benchmarks
DATASETS = {
    "ring": ring,
    "gmm": gmm,
    "mixture1d": mixture1d,
    "moons": moons,
}
