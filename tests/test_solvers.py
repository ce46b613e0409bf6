"""The few-step and adaptive samplers on a problem with an exact answer: seed 003's mixture
with its exact diffused score (ExactGMMScore, float64, reference backend), so each error
below is the solver's own. Orders are measured from the endpoint error of the same prior
draws against a fine solve (ode_heun, 800 Karras steps: error ~1e-5, below every
measured error here by >= 100x)."""

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore.grids import GRIDS, log_snr, time_grid

from fastscore.targets import ExactGMMScore

GMM = fs.datasets.GMM_SEED003
# (sde, eps, grid): each method's default grid, but Karras' on EDM's sigma in [0.01, 80], where
# uniform-in-t grids are far from their asymptotic regime at 80 steps (measured order 1.8 at 80)
SDES = {"vp": (fs.VPSDE(), 1e-3, None), "edm": (fs.EDMSDE(), 1e-2, "karras"), "cosine": (fs.CosineVPSDE(), 1e-3, None)}
N = 32


def _fine(sde, eps):
    return fs.sample(ExactGMMScore(GMM, sde), sde, N, "ode_heun", 800, backend="torch", seed=3, eps=eps,
                     grid="karras")


@pytest.fixture(scope="module")
def fine():
    return {name: _fine(sde, eps) for name, (sde, eps, _) in SDES.items()}


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("method,order", [("ode_euler", 1), ("ode_heun", 2), ("dpmpp_2m", 2), ("edm_heun", 2)])
def test_measured_order_matches_theory(fine, sde_name, method, order):
    """log2(e(N) / e(2N)) at N = 40 (measured 0.94-1.03 for Euler, 1.99-2.09 for the
    second-order methods): within 0.15 of the theoretical order, an interval that excludes
    the neighbouring orders."""
    sde, eps, grid = SDES[sde_name]
    model = ExactGMMScore(GMM, sde)
    errs = [float((fs.sample(model, sde, N, method, steps, backend="torch", seed=3, eps=eps, grid=grid)
                   - fine[sde_name])
                  .norm(dim=1).mean()) for steps in (40, 80)]
    assert abs(np.log2(errs[0] / errs[1]) - order) < 0.15, errs


@pytest.mark.parametrize("method", ["ode_rk45", "em_adaptive"])
def test_adaptive_error_falls_with_the_tolerance(fine, method):
    """ode_rk45 against the fine probability-flow solve: the mean endpoint error tracks rtol =
    atol (measured 5-10x tol at 1e-3 .. 1e-5 for VP: local error control, and the flow
    expands toward eps); held to 30x. em_adaptive (a
    different process) is held to the same prior draws' SDE solution by pathwise
    convergence below; here: work grows as the tolerance shrinks, per sample."""
    sde, eps, _ = SDES["vp"]
    model = ExactGMMScore(GMM, sde)
    tols = (1e-3, 1e-4, 1e-5) if method == "ode_rk45" else (1e-1, 3e-2)
    nfes = []
    for tol in tols:
        x, info = fs.sample(model, sde, N, method, backend="torch", seed=3, eps=eps, rtol=tol, atol=tol,
                            return_info=True)
        per_attempt = 6 if method == "ode_rk45" else 2
        assert torch.equal(info["nfe"], per_attempt * (info["accepted"] + info["rejected"]) + (method == "ode_rk45"))
        nfes.append(info["nfe"])
        if method == "ode_rk45":
            assert float((x - fine["vp"]).norm(dim=1).mean()) < 30 * tol
    assert torch.all(nfes[-1] >= nfes[0]) and nfes[-1].float().mean() > 1.5 * nfes[0].float().mean()


def test_adaptive_sde_converges_pathwise_to_its_brownian_path():
    """em_adaptive's noise is each sample's Brownian tree (rng.brownian), so as the tolerance
    falls it converges to the solution of the SDE on that path: here, improved Euler with
    4096 uniform steps on the same W (its own error measured 3e-3 against 8192 steps).
    Errors fall with the tolerance (measured 0.14, 0.06, 0.03 at 0.1, 0.03, 0.01)."""
    sde, eps, n = fs.VPSDE(), 1e-3, 16
    model = ExactGMMScore(GMM, sde)
    idx = np.arange(n)
    ts = np.linspace(sde.T, eps, 4097)
    W = fs.rng.brownian(3, np.tile(idx, len(ts)), np.repeat(ts, n), eps, sde.T, 2).reshape(len(ts), n, 2)
    x = torch.from_numpy(sde.prior_std * fs.rng.normals(3, idx, 0, fs.rng.STREAM_PRIOR, 2))
    with torch.no_grad():
        for k in range(len(ts) - 1):
            t, tn, dw = ts[k], ts[k + 1], torch.from_numpy(W[k] - W[k + 1])
            h = t - tn
            x1 = x - h * (sde.drift_coeff(t) * x - sde.diffusion_sq(t) * model(x, t)) + np.sqrt(sde.diffusion_sq(t)) * dw
            x2 = x - h * (sde.drift_coeff(tn) * x1 - sde.diffusion_sq(tn) * model(x1, tn)) + np.sqrt(
                sde.diffusion_sq(tn)) * dw
            x = 0.5 * (x1 + x2)
    errs = [float((fs.sample(model, sde, n, "em_adaptive", backend="torch", seed=3, eps=eps, rtol=tol, atol=tol)
                   - x).norm(dim=1).mean()) for tol in (0.1, 0.01)]
    assert errs[1] < 0.5 * errs[0] and errs[1] < 0.1, errs


def test_brownian_tree_is_a_brownian_motion_addressed_by_time():
    """Increments over disjoint intervals are independent N(0, dt) (checked by their
    variances and correlation over 20,000 samples, 5 standard errors), and W(t) of a sample
    does not depend on the other queries or samples."""
    n, eps, T = 20_000, 1e-3, 1.0
    idx = np.arange(n)
    w = [fs.rng.brownian(7, idx, np.full(n, t), eps, T, 1)[:, 0] for t in (0.2, 0.55, 1.0)]
    a, b = w[1] - w[0], w[2] - w[1]
    for inc, dt in ((w[0], 0.2 - eps), (a, 0.35), (b, 0.45)):
        assert abs(inc.var() / dt - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
    one = fs.rng.brownian(7, idx[[123]], np.array([0.55]), eps, T, 1)[0, 0]
    assert one == w[1][123]
    assert np.all(fs.rng.brownian(7, idx[:5], np.full(5, eps), eps, T, 3) == 0)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("sde", [fs.VPSDE(), fs.VESDE(), fs.SubVPSDE(), fs.CosineVPSDE(), fs.GeometricVESDE(),
                                 fs.EDMSDE()], ids=lambda s: type(s).__name__)
def test_grids_are_what_they_say(grid, sde):
    """Endpoints exact, strictly decreasing, and uniform in the grid's own variable: t,
    lambda = log(m / sigma), or sigma'^(1/7) with sigma' = exp(-lambda) (Karras rho = 7)."""
    t = time_grid(sde, grid, 17, 1e-3)
    assert t[0] == sde.T and t[-1] == 1e-3 and np.all(np.diff(t) < 0)
    u = {"uniform": t, "logsnr": log_snr(sde, t), "karras": np.exp(-log_snr(sde, t) / 7)}[grid]
    np.testing.assert_allclose(np.diff(u), np.diff(u).mean(), rtol=1e-9)
