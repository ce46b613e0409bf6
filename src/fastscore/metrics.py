"""Distances between a sample and a target law, for the solver bench.

Each function takes point sets [n, dim] (torch tensors or numpy arrays) and answers a float
computed in float64. All three are estimates from finite samples: even two independent
draws of the same law score above (or, for ``kl_divergence``, around) zero. The solver
bench therefore reports each metric for an independent draw of the true law too (its
"target" row): the noise floor below which a solver's differences are not resolved.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import gammaln, digamma

__all__ = ["sliced_wasserstein", "energy_distance", "knn_entropy", "kl_divergence"]

PROJECTION_CHUNK = 64  # projections per POT call: memory 2 n x 64 doubles, not 2 n x all
PAIR_BLOCK = 2**22  # distances per block of the energy sums (32 MiB of float64)


def _points(name: str, x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape [n, dim] with n >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")
    return x


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _points("x", x), _points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    return x, y


def sliced_wasserstein(x, y, projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance SW_2(x, y) = (E_theta W_2^2(theta.x, theta.y))^(1/2),
    theta uniform on the unit sphere, by POT (``ot.sliced_wasserstein_distance``).

    The same ``seed`` gives the same directions, so values for several samples against one
    reference differ by the samples only (common random numbers). Estimates: the mean over
    ``projections`` directions has a relative Monte Carlo error of order
    (2 / projections)^(1/2) in SW_2^2; the empirical laws add a positive bias that shrinks
    like n^(-1/2) (the target row of the bench). A shift y = x + d gives |d| / sqrt(dim).
    """
    import ot

    x, y = _pair(x, y)
    directions = ot.sliced.get_random_projections(x.shape[1], projections, seed=seed)
    total = 0.0
    for first in range(0, projections, PROJECTION_CHUNK):
        chunk = directions[:, first:first + PROJECTION_CHUNK]
        # POT answers (mean over its directions of W_2^2)^(1/2): undo the root to average
        total += chunk.shape[1] * float(ot.sliced_wasserstein_distance(x, y, projections=chunk, p=2)) ** 2
    return math.sqrt(total / projections)


def _mean_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean of |a_i - b_j| over all pairs, a block of rows at a time."""
    rows = max(1, PAIR_BLOCK // b.shape[0])
    total = 0.0
    for first in range(0, a.shape[0], rows):
        # exact differences, not |a|^2 + |b|^2 - 2 a.b, which loses the small distances
        total += torch.cdist(a[first:first + rows], b, compute_mode="donot_use_mm_for_euclid_dist").sum().item()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x, y) -> float:
    """Square root of the energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely and
    Rizzo 2013) between the empirical laws of x and y: a metric on laws, zero only for equal
    ones, with no bandwidth to choose.

    Computed over all pairs (the V-statistic: time O(n m dim), memory one block), so it is
    >= 0. Its square is biased upwards by about E|X - X'| / n + E|Y - Y'| / m, the noise
    floor of the target row; a small shift d in 1-D gives about |d| (2 / pi)^(1/4)
    for unit-variance Gaussians (in general it grows linearly in |d|).
    """
    x, y = _pair(x, y)
    # centre on y's mean: distances unchanged, rounding of the coordinates smaller
    c = y.mean(axis=0)
    a, b = torch.from_numpy(x - c), torch.from_numpy(y - c)
    squared = 2.0 * _mean_distance(a, b) - _mean_distance(a, a) - _mean_distance(b, b)
    return math.sqrt(max(squared, 0.0))  # >= 0 up to rounding


def knn_entropy(x, k: int = 5) -> float:
    """Kozachenko–Leonenko estimate of the differential entropy H = -E log q (nats) of the
    law q of the points x [n, dim], from each point's distance r_i to its k-th nearest
    neighbour (Kraskov et al. 2004, eq. 20):

        H ~ psi(n) - psi(k) + log V_dim + dim * mean(log r_i),   V_dim the unit ball's volume.

    Consistent as n grows; at finite n biased by an amount that grows with the dimension
    and the curvature of q, with standard deviation about std(log q) / sqrt(n). Measured on
    ``datasets.mixture`` targets at n = 10^4, k = 5: bias within +-0.05 nats up to 8-D, but
    +0.7 nats in 16-D (k = 1 halves that and triples the noise). Points that coincide
    (r_i = 0: an atom, whose entropy is -inf) give -inf.
    """
    x = _points("x", x)
    n, dim = x.shape
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k must be an int in [1, n - 1] = [1, {n - 1}], got {k!r}")
    r = cKDTree(x).query(x, k=k + 1)[0][:, k]  # column 0 is the point itself
    if (r == 0).any():
        return -math.inf
    log_ball = 0.5 * dim * math.log(math.pi) - gammaln(0.5 * dim + 1.0)
    return float(digamma(n) - digamma(k) + log_ball + dim * np.log(r).mean())


def kl_divergence(x, log_p, k: int = 5) -> float:
    """KL(q || p) = E_q[log q] - E_q[log p] for points x [n, dim] drawn from q, with
    ``log_p`` [n] the exact log-density of p at those points: the cross-entropy -mean(log_p)
    (exact up to its Monte Carlo error) minus ``knn_entropy(x, k)``.

    An estimate, not a bound: it inherits the k-NN entropy's bias with the opposite sign
    (about -0.7 nats in 16-D at n = 10^4) and can come out negative when q is close to p.
    The bench's target row (x drawn from p itself) shows that bias and noise at this n and
    dimension: compare a sampler's value with it, not with 0.
    """
    x = _points("x", x)
    log_p = np.asarray(log_p.detach().cpu().numpy() if isinstance(log_p, torch.Tensor) else log_p, dtype=np.float64)
    if log_p.shape != (x.shape[0],):
        raise ValueError(f"log_p must have shape [n] = [{x.shape[0]}], got {log_p.shape}")
    if not np.isfinite(log_p).all():
        return math.inf  # a point where p has no mass: q is not absolutely continuous wrt p
    return float(-log_p.mean() - knn_entropy(x, k))
