"""The solver bench's metrics (fastscore.metrics) on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from fastscore import metrics
from fastscore.datasets import GMM_SEED003, MIXTURE1D, GaussianMixture


# -- metrics ----------------------------------------------------------------------------------


def test_sliced_wasserstein_of_a_shift():
    """y = x + d: every projection moves by theta.d exactly, so W_2^2 of a direction is
    (theta.d)^2 and SW_2^2 = E (theta.d)^2 = |d|^2 / dim (E theta theta^T = I / dim). The mean
    over P random directions has relative error sqrt(Var(theta_1^2) / P) / (1 / dim) =
    sqrt(2 (dim - 1) / ((dim + 2) P)) in SW_2^2, half that in SW_2: < 1.9 % at P = 1000, and
    zero in 1-D. We allow 4 of those."""
    rng = np.random.default_rng(0)
    for dim in (1, 3, 8):
        x = rng.standard_normal((400, dim))
        d = rng.standard_normal(dim)
        got = metrics.sliced_wasserstein(x, x + d, projections=1000, seed=1)
        rel = 0.5 * math.sqrt(2 * (dim - 1) / ((dim + 2) * 1000))
        assert abs(got / (np.linalg.norm(d) / math.sqrt(dim)) - 1) <= 4 * rel + 1e-12, dim
        assert metrics.sliced_wasserstein(x, x.copy(), projections=50) == 0.0


def _mean_abs_normal(mu: float, sd: float) -> float:
    """E|N(mu, sd^2)|."""
    return sd * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * sd * sd)) + mu * (1 - 2 * norm.cdf(-mu / sd))


def test_energy_distance_of_gaussians():
    """Unit-variance 1-D Gaussians shifted by d: energy^2 = 2 E|N(d, 2)| - 2 E|N(0, 2)|; the
    all-pairs estimate adds E|X - X'| / n + E|Y - Y'| / n = 2 c / n, c = 2 / sqrt(pi), in
    expectation. Means over 4 draws of n = 2000 are within 10 % of that; equal laws stay
    within sqrt(10) times the bias's root (the square is chi-square-like: skewed)."""
    n, c = 2000, 2 / math.sqrt(math.pi)
    rng = np.random.default_rng(2)
    draws = [(rng.standard_normal((n, 1)), rng.standard_normal((n, 1))) for _ in range(4)]
    for d in (0.5, 2.0):
        want = 2 * _mean_abs_normal(d, math.sqrt(2)) - 2 * _mean_abs_normal(0, math.sqrt(2)) + 2 * c / n
        got = np.mean([metrics.energy_distance(x, y + d) ** 2 for x, y in draws])
        assert abs(got / want - 1) < 0.1, d
    for x, y in draws:
        assert metrics.energy_distance(x, y) < math.sqrt(10 * 2 * c / n)
        assert metrics.energy_distance(x, x) == 0.0


def test_knn_entropy_of_a_gaussian():
    for dim in (1, 2, 4):
        x = np.random.default_rng(dim).standard_normal((4000, dim))
        assert abs(metrics.knn_entropy(x) - 0.5 * dim * math.log(2 * math.pi * math.e)) < 0.03 * dim


def test_kl_of_p_itself_is_near_zero():
    """Samples of p: KL(p || p) = 0 up to the estimator's bias and noise (measured at n = 4000
    over seeds: within 0.02 nats in 1-D and 2-D); we allow 0.05."""
    for g in (GMM_SEED003, MIXTURE1D):
        x = g.sample(4000, seed=3)
        assert abs(metrics.kl_divergence(x, g.log_prob(x))) < 0.05


def test_kl_of_two_gaussians_matches_the_closed_form():
    """KL(N(m1, S1) || N(m2, S2)) = (tr(S2^-1 S1) + (m2 - m1)^T S2^-1 (m2 - m1) - D
    + log det S2 / det S1) / 2; the estimate is within 0.05 nats (its noise and bias at
    n = 4000 in 2-D, as above)."""
    m1, s1 = np.array([0.0, 0.5]), np.array([[1.0, 0.3], [0.3, 0.5]])
    m2, s2 = np.array([0.4, -0.2]), np.array([[1.5, -0.2], [-0.2, 0.8]])
    q, p = GaussianMixture([m1], [s1], [1.0]), GaussianMixture([m2], [s2], [1.0])
    inv = np.linalg.inv(s2)
    exact = 0.5 * (np.trace(inv @ s1) + (m2 - m1) @ inv @ (m2 - m1) - 2 + math.log(np.linalg.det(s2) / np.linalg.det(s1)))
    x = q.sample(4000, seed=4)
    assert exact > 0.3 and abs(metrics.kl_divergence(x, p.log_prob(x)) - exact) < 0.05


def test_metrics_refuse_bad_points():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="same dimension"):
        metrics.energy_distance(x, np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"shape \[n, dim\]"):
        metrics.sliced_wasserstein(np.zeros(10), x)
    with pytest.raises(ValueError, match="non-finite"):
        metrics.energy_distance(x, np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="log_p must have shape"):
        metrics.kl_divergence(np.random.default_rng(0).random((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="k must be"):
        metrics.knn_entropy(np.random.default_rng(0).random((10, 2)), k=10)
    assert metrics.kl_divergence(x, np.zeros(10)) == math.inf  # every point an atom
