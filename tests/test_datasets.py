"""Properties of the toy datasets and of the exact Gaussian-mixture densities/scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from fastscore import datasets as ds
from fastscore.sde import VESDE, VPSDE, SubVPSDE

GENERATORS = [(ds.ring, 2), (ds.gmm, 2), (ds.mixture1d, 1), (ds.moons, 2)]
SDES = [VPSDE(), SubVPSDE(), VESDE(sigma=25.0)]


def random_mixture(rng, K, D):
    """A mixture with random means, random SPD covariances and random weights."""
    means = rng.normal(scale=2.0, size=(K, D))
    A = rng.normal(size=(K, D, D))
    covs = A @ A.transpose(0, 2, 1) / D + 0.2 * np.eye(D)
    weights = rng.uniform(0.2, 2.0, size=K)
    return ds.GaussianMixture(means, covs, weights)


# -- generic generator contract ------------------------------------------------------
@pytest.mark.parametrize("gen,dim", GENERATORS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_shape_dtype_reproducible(gen, dim):
    x = gen(1001, seed=7)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert x.shape == (1001, dim)
    assert torch.isfinite(x).all()
    assert torch.equal(x, gen(1001, seed=7))
    assert not torch.allclose(x, gen(1001, seed=8))
    assert gen(0, seed=1).shape == (0, dim)
    # does not touch global random state
    torch.manual_seed(0)
    np.random.seed(0)
    a, b = torch.rand(3), np.random.rand(3)
    torch.manual_seed(0)
    np.random.seed(0)
    gen(10, seed=3)
    assert torch.equal(a, torch.rand(3)) and np.array_equal(b, np.random.rand(3))


@pytest.mark.parametrize("gen", [g for g, _ in GENERATORS], ids=lambda g: g.__name__)
def test_bad_n_and_seed(gen):
    with pytest.raises(ValueError, match="n must be >= 0"):
        gen(-1)
    with pytest.raises(TypeError, match="n must be an int"):
        gen(2.5)
    with pytest.raises(TypeError, match="n must be an int"):
        gen(True)
    with pytest.raises(TypeError, match="seed must be an int"):
        gen(4, seed=1.5)
    assert gen(np.int64(3)).shape[0] == 3


# -- ring -------------------------------------------------------------------------------
def test_ring_radius_is_gamma():
    x = ds.ring(100_000, seed=11).double()
    r = x.norm(dim=1).numpy()
    assert abs(r.mean() - 1.0) < 2e-3
    assert abs(r.std() - 1.0 / math.sqrt(200.0)) < 2e-3
    r2 = ds.ring(100_000, seed=11, scale=20.0).double().norm(dim=1).numpy()
    assert abs(r2.std() - 1.0 / math.sqrt(20.0)) < 5e-3
    assert stats.kstest(r[:20_000], stats.gamma(a=200.0, scale=1 / 200.0).cdf).pvalue > 1e-3


def test_ring_angle_density_favours_diagonals():
    x = ds.ring(100_000, seed=12).double().numpy()
    theta = np.arctan2(x[:, 1], x[:, 0])
    a = np.mod(theta, np.pi / 2)
    phi = np.minimum(a, np.pi / 2 - a)  # angle to the nearest axis, in [0, pi/4]
    near_diag = (phi > np.pi / 8).mean()
    # square -> circle: density ~ 1/cos^2(phi); P(phi > pi/8) = 1 - tan(pi/8) = 0.586
    assert near_diag > 0.55 and abs(near_diag - (1 - math.tan(math.pi / 8))) < 0.01
    # sharper: tan(phi) is uniform on [0, 1]
    assert stats.kstest(np.tan(phi[:20_000]), "uniform").pvalue > 1e-3
    # four-fold symmetric: each quadrant has a quarter of the mass
    quad = np.histogram(theta, bins=4, range=(-np.pi, np.pi))[0] / len(theta)
    assert np.allclose(quad, 0.25, atol=0.01)


# -- Gaussian mixture: densities and scores -------------------------------------------
@pytest.mark.parametrize("K,D", [(1, 1), (3, 1), (2, 2), (4, 3)])
def test_log_prob_matches_scipy(K, D):
    rng = np.random.default_rng(100 + 10 * K + D)
    g = random_mixture(rng, K, D)
    x = rng.normal(scale=3.0, size=(500, D))
    ref = sum(w * stats.multivariate_normal(m, c).pdf(x) for w, m, c in zip(g.weights, g.means, g.covs))
    lp = g.log_prob(x)
    assert lp.shape == (500,) and lp.dtype == np.float64
    np.testing.assert_allclose(lp, np.log(ref), rtol=1e-10, atol=1e-10)
    # torch input, same answer in numpy
    np.testing.assert_allclose(g.log_prob(torch.from_numpy(x)), lp, rtol=0, atol=0)
    assert np.isclose(g.weights.sum(), 1.0)


def test_log_prob_stable_far_away():
    g = ds.GMM_SEED003
    x = np.array([[300.0, -400.0], [1e3, 1e3]])
    lp = g.log_prob(x)
    assert np.isfinite(lp).all() and (lp < -1e4).all()
    s = g.score(x)
    assert np.isfinite(s).all()


def fd_grad(f, x, h=1e-5):
    g = np.zeros_like(x)
    for d in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[d] = h
        g[:, d] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("K,D", [(3, 1), (2, 2), (4, 3)])
def test_score_is_gradient_of_log_prob(K, D):
    rng = np.random.default_rng(200 + 10 * K + D)
    g = random_mixture(rng, K, D)
    x = rng.normal(scale=2.5, size=(300, D))
    s = g.score(x)
    assert s.shape == (300, D)
    np.testing.assert_allclose(s, fd_grad(g.log_prob, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_score_t_is_gradient_of_log_prob_t(sde):
    rng = np.random.default_rng(3)
    g = random_mixture(rng, 3, 2)
    x = rng.normal(scale=3.0, size=(200, 2))
    t = rng.uniform(0.0, sde.T, size=200)
    s = g.score_t(x, sde, t)
    np.testing.assert_allclose(s, fd_grad(lambda y: g.log_prob_t(y, sde, t), x), rtol=1e-6, atol=1e-6)


def test_densities_integrate_to_one():
    g = ds.GMM_SEED003
    h = 0.04
    u = np.arange(-9.0, 11.0, h)
    v = np.arange(-9.0, 9.0, h)
    U, V = np.meshgrid(u, v, indexing="ij")
    grid = np.stack([U.ravel(), V.ravel()], 1)
    assert abs(np.exp(g.log_prob(grid)).sum() * h * h - 1.0) < 1e-4

    h1 = 1e-3
    x1 = np.arange(-6.0, 6.0, h1)[:, None]
    assert abs(np.exp(ds.MIXTURE1D.log_prob(x1)).sum() * h1 - 1.0) < 1e-6
    # the diffused density is a density too
    x2 = np.arange(-20.0, 20.0, h1)[:, None]
    p = np.exp(ds.MIXTURE1D.log_prob_t(x2, VESDE(25.0), 0.6)).sum() * h1
    assert abs(p - 1.0) < 1e-6


def test_mixture1d_has_three_modes_in_seed_window():
    x = np.linspace(-4, 4, 8001)[:, None]
    p = np.exp(ds.MIXTURE1D.log_prob(x))
    peaks = np.flatnonzero((p[1:-1] > p[:-2]) & (p[1:-1] > p[2:])) + 1
    assert len(peaks) == 3
    # the seed integrates over (-4, 4): nearly all mass is there
    assert np.exp(ds.MIXTURE1D.log_prob(x)).sum() * 1e-3 > 0.999


@pytest.mark.parametrize("g", [ds.GMM_SEED003, ds.MIXTURE1D], ids=["gmm", "mixture1d"])
def test_samples_match_moments(g):
    x = g.sample(200_000, seed=5).double().numpy()
    np.testing.assert_allclose(x.mean(0), g.mean(), atol=0.015)
    np.testing.assert_allclose(np.cov(x.T).reshape(g.dim, g.dim), g.covariance(), atol=0.03)


def test_mixture1d_samples_follow_its_cdf():
    g = ds.MIXTURE1D
    x = ds.mixture1d(20_000, seed=9).double().numpy()[:, 0]

    def cdf(y):
        sd = np.sqrt(g.covs[:, 0, 0])
        return (g.weights * stats.norm.cdf((y[:, None] - g.means[:, 0]) / sd)).sum(1)

    assert stats.kstest(x, cdf).pvalue > 1e-3


def test_gmm_seed003_parameters():
    g = ds.GMM_SEED003
    np.testing.assert_array_equal(g.means, [[0, 1], [2, -1]])
    np.testing.assert_array_equal(g.covs, [[[1, 0], [0, 1]], [[2, 0.5], [0.5, 1]]])
    np.testing.assert_array_equal(g.weights, [0.5, 0.5])
    assert g.dim == 2


# -- the mixture family ------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 2, 5, 16])
@pytest.mark.parametrize("components", [2, 4, 8])
def test_mixture_modes_are_separated_but_overlap(dim, components):
    lo, hi = ds.MIXTURE_STD
    for seed in range(3):
        g = ds.mixture(dim, components, seed=seed)
        assert (g.dim, g.n_components) == (dim, components)
        d = np.linalg.norm(g.means[:, None] - g.means[None], axis=-1) + np.diag(np.full(components, np.inf))
        nearest = d.min(axis=1)
        # every mode has a neighbour between 1 and 2 separations away (about 4 to 8 stds):
        # distinct modes with overlapping tails, in every dimension alike
        assert (nearest >= ds.MIXTURE_SEPARATION).all() and (nearest <= 2 * ds.MIXTURE_SEPARATION).all()
        assert (g._evals >= lo**2 - 1e-12).all() and (g._evals <= hi**2 + 1e-12).all()
        assert np.isclose(g.weights.sum(), 1.0) and g.weights.max() / g.weights.min() <= 3.0 + 1e-12


def test_mixture_is_fixed_by_its_seed():
    a, b, c = ds.mixture(3, seed=4), ds.mixture(3, seed=4), ds.mixture(3, seed=5)
    for name in ("means", "covs", "weights"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.allclose(a.means, c.means)
    assert ds.mixture(1, components=1).n_components == 1


def test_mixture_family_validation():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        ds.mixture(0)
    with pytest.raises(ValueError, match="components must be >= 1"):
        ds.mixture(2, components=0)
    with pytest.raises(TypeError, match="dim must be an int"):
        ds.mixture(2.0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        ds.mixture(2, seed=-1)


# -- diffusion --------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_diffused_near_zero_is_original(sde):
    g = ds.GMM_SEED003
    rng = np.random.default_rng(4)
    x = rng.normal(scale=2.0, size=(400, 2))
    gt = g.diffused(sde, 1e-7)
    np.testing.assert_allclose(gt.log_prob(x), g.log_prob(x), atol=1e-4)
    np.testing.assert_allclose(gt.score(x), g.score(x), atol=1e-4)
    g0 = g.diffused(sde, 0.0)
    np.testing.assert_allclose(g0.covs, g.covs, atol=1e-12)
    np.testing.assert_allclose(g.log_prob_t(x, sde, 0.0), g.log_prob(x), atol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_diffused_matches_forward_samples(sde):
    """The diffused law is the law of m x0 + sigma z, checked by sampling."""
    g = ds.GMM_SEED003
    t = 0.3
    x0 = g.sample(200_000, seed=1).double().numpy()
    z = np.random.default_rng(2).standard_normal(x0.shape)
    xt = sde.mean_coeff(t) * x0 + sde.std(t) * z
    gt = g.diffused(sde, t)
    scale = np.sqrt(np.diag(gt.covariance()))
    np.testing.assert_allclose(xt.mean(0), gt.mean(), atol=0.01 * scale.max())
    np.testing.assert_allclose(np.cov(xt.T), gt.covariance(), rtol=0.02, atol=0.02 * scale.max() ** 2)


def test_vpsde_at_T_is_standard_normal():
    sde = VPSDE()
    for g in (ds.GMM_SEED003, ds.MIXTURE1D):
        gT = g.diffused(sde, sde.T)
        np.testing.assert_allclose(gT.mean(), 0.0, atol=0.02)
        np.testing.assert_allclose(gT.covariance(), np.eye(g.dim), atol=0.02)
        x = np.random.default_rng(6).normal(size=(100, g.dim))
        # the score of N(0, I) is -x
        assert (np.abs(gT.score(x) + x) <= 0.05 * (1 + np.abs(x))).all()


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_per_sample_t_matches_loop(sde):
    rng = np.random.default_rng(7)
    for g in (ds.GMM_SEED003, ds.MIXTURE1D, random_mixture(rng, 4, 3)):
        n = 64
        x = rng.normal(scale=2.0, size=(n, g.dim))
        t = rng.uniform(0.0, sde.T, size=n)
        s = g.score_t(x, sde, t)
        lp = g.log_prob_t(x, sde, t)
        s_ref = np.concatenate([g.diffused(sde, ti).score(x[i : i + 1]) for i, ti in enumerate(t)])
        lp_ref = np.concatenate([g.diffused(sde, ti).log_prob(x[i : i + 1]) for i, ti in enumerate(t)])
        np.testing.assert_allclose(s, s_ref, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(lp, lp_ref, rtol=1e-9, atol=1e-9)
        # torch t and t of shape [n, 1] answer the same; a scalar t matches diffused
        np.testing.assert_allclose(g.score_t(torch.from_numpy(x), sde, torch.from_numpy(t)[:, None]), s, rtol=1e-12)
        np.testing.assert_allclose(g.score_t(x, sde, 0.4), g.diffused(sde, 0.4).score(x), rtol=1e-9, atol=1e-12)


# -- moons ------------------------------------------------------------------------------
def test_moons_box_and_balance():
    x = ds.moons(20_001, seed=3, noise=0.0).double().numpy()
    assert x[:, 0].min() >= -1 - 1e-6 and x[:, 0].max() <= 2 + 1e-6
    assert x[:, 1].min() >= -0.5 - 1e-6 and x[:, 1].max() <= 1 + 1e-6
    # each point lies exactly on one of the two unit half circles
    d_out = np.hypot(x[:, 0], x[:, 1])
    d_in = np.hypot(x[:, 0] - 1.0, x[:, 1] - 0.5)
    on_out = np.isclose(d_out, 1, atol=1e-5) & (x[:, 1] >= -1e-6)
    on_in = np.isclose(d_in, 1, atol=1e-5) & (x[:, 1] <= 0.5 + 1e-6)
    assert (on_out | on_in).all()
    assert on_out.sum() == 10_000  # n // 2 outer
    # shuffled: the first half is not all one moon
    assert 0.4 < on_out[:1000].mean() < 0.6
    xn = ds.moons(20_000, seed=3, noise=0.1).double().numpy()
    assert xn[:, 0].min() > -1.6 and xn[:, 0].max() < 2.6
    assert xn[:, 1].min() > -1.1 and xn[:, 1].max() < 1.6
    with pytest.raises(ValueError, match="noise"):
        ds.moons(10, noise=-0.1)


# -- validation ---------------------------------------------------------------------------
def test_mixture_validation():
    GM = ds.GaussianMixture
    I2 = np.eye(2)
    with pytest.raises(ValueError, match="positive definite"):
        GM([[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], [1.0])
    with pytest.raises(ValueError, match="positive definite"):
        GM([[0.0, 0.0]], [np.zeros((2, 2))], [1.0])
    with pytest.raises(ValueError, match="not symmetric"):
        GM([[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]], [1.0])
    with pytest.raises(ValueError, match="weights must be positive"):
        GM([[0.0, 0.0], [1.0, 1.0]], [I2, I2], [1.0, -1.0])
    with pytest.raises(ValueError, match="weights must be positive"):
        GM([[0.0, 0.0], [1.0, 1.0]], [I2, I2], [1.0, 0.0])
    with pytest.raises(ValueError, match=r"covs must have shape \[K, D, D\]"):
        GM([[0.0, 0.0], [1.0, 1.0]], [I2], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"covs must have shape"):
        GM([[0.0, 0.0]], [np.eye(3)], [1.0])
    with pytest.raises(ValueError, match=r"weights must have shape \[K\]"):
        GM([[0.0, 0.0], [1.0, 1.0]], [I2, I2], [1.0])
    with pytest.raises(ValueError, match=r"means must have shape \[K, D\]"):
        GM([0.0, 0.0], [I2], [1.0])
    with pytest.raises(ValueError, match="finite"):
        GM([[np.nan, 0.0]], [I2], [1.0])

    g = ds.GMM_SEED003
    with pytest.raises(ValueError, match=r"x must have shape \[n, 2\]"):
        g.log_prob(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"x\[:, None\]"):
        ds.MIXTURE1D.score(np.zeros(5))
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        g.score_t(np.zeros((5, 2)), VPSDE(), np.zeros(4))
    with pytest.raises(ValueError, match="t must be finite and >= 0"):
        g.log_prob_t(np.zeros((5, 2)), VPSDE(), -0.1)
    with pytest.raises(ValueError, match="scalar t"):
        g.diffused(VPSDE(), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="scale"):
        ds.ring(10, scale=0.0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        g.sample(-1)


def test_registry():
    assert set(ds.DATASETS) == {"ring", "gmm", "mixture1d", "moons"}
    for name, gen in ds.DATASETS.items():
        assert gen(5, seed=0).shape[0] == 5, name
