"""The reference backend (``backend="torch"``) run on *exact* scores.

With ``ExactGMMScore`` (fastscore/targets.py) the score is the true one of a diffused
Gaussian mixture, so what remains is each method's own error, which the tests quantify:

* samplers: sampling noise (standard errors of n draws from the exact law), the
  discretisation bias (measured by step halving, or for the SDE samplers a constant
  measured once, see ``SDE_BIAS_PER_H``) and the prior mismatch p_T != N(0, prior_std^2)
  (removed exactly by importance weights p_T / prior on the prior draws, which the
  shared Philox stream lets us recompute);
* likelihoods: solver error only. The probability-flow ODE gives
  log p_eps(x) = log p_T(x_T) + int div, and the backend uses log prior(x_T) in place of
  log p_T(x_T); the test adds that known difference (x_T from a tight DOP853 solve of
  the same flow), so the target is what a perfect solver would return.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.integrate
import torch

import fastscore as fs
from fastscore import rng
from fastscore.backends import reference
from fastscore.datasets import GMM_SEED003, MIXTURE1D

from fastscore.targets import ExactGMMScore

U64 = 2.0**-53
METHODS = ("em", "pc", "ode_euler", "ode_heun")


def _pf_flow_to_T(gmm, sde, x: np.ndarray, eps: float) -> np.ndarray:
    """x_T of the exact probability-flow ODE dx/dt = f x - 1/2 g^2 score_t(x) from eps to T
    (DOP853, rtol = atol = 1e-13: x_T to ~1e-11)."""
    n, d = x.shape

    def rhs(t, y):
        y = y.reshape(n, d)
        return (sde.drift_coeff(t) * y - 0.5 * sde.diffusion_sq(t) * gmm.score_t(y, sde, t)).ravel()

    sol = scipy.integrate.solve_ivp(rhs, (eps, sde.T), x.ravel(), method="DOP853", rtol=1e-13, atol=1e-13)
    assert sol.success
    return sol.y[:, -1].reshape(n, d)


def _solver_target(gmm, sde, x: np.ndarray, eps: float) -> np.ndarray:
    """What an exact ODE solve gives: log p_eps(x) - log p_T(x_T) + log prior(x_T)."""
    xT = _pf_flow_to_T(gmm, sde, x, eps)
    return gmm.log_prob_t(x, sde, eps) - gmm.log_prob_t(xT, sde, sde.T) + sde.prior_log_prob(xT)


# -- the exact-score helper ------------------------------------------------------------------


@pytest.mark.parametrize("gmm", [GMM_SEED003, MIXTURE1D], ids=["gmm2d", "mix1d"])
@pytest.mark.parametrize("sde", [fs.VPSDE(0.1, 20.0), fs.VESDE(25.0), fs.SubVPSDE(0.1, 20.0)], ids=repr)
def test_exact_score_helper_matches_datasets(gmm, sde):
    g = np.random.default_rng(1)
    x = torch.from_numpy(g.standard_normal((40, gmm.dim)) * 2.0)
    model = ExactGMMScore(gmm, sde)
    assert model.dim == gmm.dim
    tn = g.uniform(1e-4, sde.T, 40)
    for t in (0.37 * sde.T, torch.from_numpy(tn), torch.from_numpy(tn)[:, None]):
        want = gmm.score_t(x.numpy(), sde, t.numpy() if isinstance(t, torch.Tensor) else t)
        got = model(x, t)
        assert got.dtype == torch.float64 and got.shape == x.shape
        # the same formula in torch and numpy: a few dozen float64 operations per entry,
        # terms of size <= max |score| -> 1e-12 relative to the largest entry (~10^3 U)
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12 * np.abs(want).max())
    lp = model.log_prob(x, 0.37 * sde.T).numpy()
    np.testing.assert_allclose(lp, gmm.log_prob_t(x.numpy(), sde, 0.37 * sde.T), rtol=1e-12)
    assert ExactGMMScore(gmm, sde, dtype=torch.float32)(x.float(), 0.5).dtype == torch.float32


# -- sampling reproduces the mixture ----------------------------------------------------------

N_SAMPLES = 4000
EPS = 1e-3
STEPS = {"em": 500, "pc": 500, "ode_euler": 500, "ode_heun": 100}
ORDER = {"ode_euler": 1, "ode_heun": 2}  # deterministic methods: bias by step halving
#: weak error of the SDE samplers, |bias| <= C h on means and covariance entries. Measured
#: with n = 10^5 samples at steps 50, 100, 200, 400 (both targets below): C <= 2 (e.g. em,
#: VP, 50 steps: covariance bias 0.04 at h = 0.02). We allow twice that; at 500 steps it
#: is 0.008, a tenth of the standard error of the covariance at n = 4000.
SDE_BIAS_PER_H = 4.0
TARGETS = {
    "gmm2d-vp": (GMM_SEED003, fs.VPSDE(0.1, 20.0)),
    "mix1d-ve": (MIXTURE1D, fs.VESDE(25.0)),
}


@functools.lru_cache(maxsize=None)
def _samples(target: str, method: str, steps: int, denoise: bool = False, corrector_steps: int = 1) -> np.ndarray:
    gmm, sde = TARGETS[target]
    x = fs.sample(ExactGMMScore(gmm, sde), sde, N_SAMPLES, method=method, steps=steps, backend="torch", seed=11,
                  eps=EPS, denoise=denoise, corrector_steps=corrector_steps)
    assert x.dtype == torch.float64 and x.shape == (N_SAMPLES, gmm.dim)
    return x.numpy()


def _prior_weights(target: str) -> np.ndarray:
    """Self-normalised importance weights p_T(z) / prior(z) of the prior draws z of seed 11
    (the Philox prior stream, which every backend shares): reweighting a sampler's output
    by them gives the law it would have from an exact start x_T ~ p_T."""
    gmm, sde = TARGETS[target]
    z = rng.normals(11, np.arange(N_SAMPLES), 0, rng.STREAM_PRIOR, gmm.dim) * sde.prior_std
    logw = gmm.log_prob_t(z, sde, sde.T) - sde.prior_log_prob(z)
    w = np.exp(logw - logw.max())
    return w / w.sum()


def _moments(x: np.ndarray, w: np.ndarray):
    """Weighted mean [D] and covariance [D, D] of samples x [n, D]."""
    mu = w @ x
    d = x - mu
    return mu, np.einsum("n,ni,nj->ij", w, d, d)


def _law_moments(law):
    """Mean, covariance and the variance of the covariance terms (x_i - mu_i)(x_j - mu_j)
    of a Gaussian mixture, exactly: for y ~ N(nu, S) (nu = mu_k - mu),
    E[y_i^2 y_j^2] = (nu_i^2 + S_ii)(nu_j^2 + S_jj) + 2 S_ij^2 + 4 nu_i nu_j S_ij."""
    mu, cov = law.mean(), law.covariance()
    fourth = 0.0
    for w, m, S in zip(law.weights, law.means, law.covs):
        nu = m - mu
        a = nu**2 + np.diag(S)
        fourth = fourth + w * (a[:, None] * a[None, :] + 2 * S**2 + 4 * np.outer(nu, nu) * S)
    return mu, cov, fourth - cov**2


def _check_moments(x, w, law, bias_mu, bias_cov, what):
    """Mean and covariance of the weighted samples against `law`, within 5 standard errors
    of n_eff = 1 / sum w^2 draws *from the law* (so that a heavy-tailed wrong output cannot
    widen its own tolerance), plus the discretisation bias allowance. A false alarm has
    probability < 1e-6 per statistic; the O(1/n) bias of the sample covariance (C / n <
    1e-3) is negligible against 5 SE (> 0.1)."""
    n_eff = 1.0 / np.sum(w * w)
    mean, cov, var_cov = _law_moments(law)
    mu_s, cov_s = _moments(x, w)
    err_mu, tol_mu = np.abs(mu_s - mean), 5 * np.sqrt(np.diag(cov) / n_eff) + bias_mu
    err_cov, tol_cov = np.abs(cov_s - cov), 5 * np.sqrt(var_cov / n_eff) + bias_cov
    report = (f"{what}: mean {mu_s} vs {mean} (|err| {err_mu}, tol {tol_mu}); "
              f"cov {cov_s.tolist()} vs {cov.tolist()} (|err| {err_cov.tolist()}, tol {tol_cov.tolist()})")
    assert np.all(err_mu <= tol_mu) and np.all(err_cov <= tol_cov), report


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", list(TARGETS))
def test_sampler_reproduces_the_mixture(target, method):
    gmm, sde = TARGETS[target]
    steps = STEPS[method]
    x = _samples(target, method, steps)
    w = _prior_weights(target)
    assert 1.0 / np.sum(w * w) > 0.9 * N_SAMPLES  # the reweighting costs < 10% of the samples
    exact = gmm.diffused(sde, EPS)  # the samplers stop at eps, where the law is p_eps
    if method in ORDER:
        # same seed -> same prior draws -> S_N - S_{N/2} is discretisation only, and the
        # bias of S_N is (S_N - S_{N/2}) / (2^p - 1) to leading order; allow twice that
        mu_c, cov_c = _moments(_samples(target, method, steps // 2), w)
        mu_f, cov_f = _moments(x, w)
        bias_mu = 2 * np.abs(mu_f - mu_c) / (2 ** ORDER[method] - 1)
        bias_cov = 2 * np.abs(cov_f - cov_c) / (2 ** ORDER[method] - 1)
    else:
        h = (sde.T - EPS) / steps
        bias_mu = bias_cov = SDE_BIAS_PER_H * h
    _check_moments(x, w, exact, bias_mu, bias_cov, f"{target} {method}")


@pytest.mark.parametrize("target", list(TARGETS))
def test_pc_predictor_alone_reproduces_the_mixture(target):
    """pc with corrector_steps=0 is the reverse-diffusion predictor alone (a weak order 1
    SDE sampler, same bias allowance as em); separates predictor from corrector faults."""
    gmm, sde = TARGETS[target]
    x = _samples(target, "pc", STEPS["pc"], corrector_steps=0)
    exact = gmm.diffused(sde, EPS)
    bias = SDE_BIAS_PER_H * (sde.T - EPS) / STEPS["pc"]
    _check_moments(x, _prior_weights(target), exact, bias, bias, f"{target} predictor")


@pytest.mark.parametrize("target", list(TARGETS))
def test_denoise_is_the_tweedie_step_and_gives_the_data_law(target):
    gmm, sde = TARGETS[target]
    model = ExactGMMScore(gmm, sde)
    steps = STEPS["em"]
    x = _samples(target, "em", steps)
    xd = _samples(target, "em", steps, denoise=True)
    # the same noise path, then E[x_0 | x_eps] = (x + sigma^2 s(x, eps)) / m(eps): the same
    # float64 operations as the backend -> equal to a few ulp of |x| + sigma^2 |s|
    xt = torch.from_numpy(x)
    tweedie = ((xt + sde.std(EPS) ** 2 * model(xt, EPS)) / sde.mean_coeff(EPS)).numpy()
    np.testing.assert_allclose(xd, tweedie, rtol=4 * U64, atol=4 * U64 * np.abs(x).max())
    assert not np.allclose(xd, x)
    # Tweedie's estimate has exactly the data mean (tower rule), and its covariance is that
    # of the data minus E Cov(x_0 | x_eps) <= sigma(eps)^2 / m(eps)^2 I (= 1e-4 VP, 1e-3 VE)
    shrink = sde.std(EPS) ** 2 / sde.mean_coeff(EPS) ** 2
    bias = SDE_BIAS_PER_H * (sde.T - EPS) / steps
    _check_moments(xd, _prior_weights(target), gmm, bias, bias + shrink, f"{target} denoised")


# -- determinism, seeds and splits ------------------------------------------------------------


def _random_mlp(dim=3, seed=0, **kw):
    torch.manual_seed(seed)
    return fs.ScoreMLP(dim, width=kw.pop("width", 24), depth=kw.pop("depth", 2), **kw).double()


@pytest.mark.parametrize("method", METHODS)
def test_seeds_and_splits(method):
    model = _random_mlp(activation="tanh", time_embedding="fourier")
    sde = fs.VPSDE(0.1, 20.0)
    kw = dict(method=method, steps=15, backend="torch", corrector_steps=2, denoise=True)
    a = fs.sample(model, sde, 29, seed=5, **kw)
    assert a.shape == (29, 3) and torch.isfinite(a).all()
    assert torch.equal(a, fs.sample(model, sde, 29, seed=5, **kw))  # same seed, same numbers
    other = fs.sample(model, sde, 29, seed=6, **kw)
    assert not torch.isclose(a, other).all(dim=1).any()  # every sample changes with the seed
    # start splits: a run of 29 equals runs of 10 and 19 with start = 10, and any window.
    # Each sample's numbers depend only on (seed, index); on this machine the results are
    # bitwise equal, but a BLAS may sum in another order for another batch size: allow
    # float64 rounding grown over 15 steps of a contracting-to-mild flow (1e-12)
    parts = torch.cat([fs.sample(model, sde, 10, seed=5, start=0, **kw), fs.sample(model, sde, 19, seed=5, start=10, **kw)])
    torch.testing.assert_close(parts, a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fs.sample(model, sde, 7, seed=5, start=13, **kw), a[13:20], rtol=1e-12, atol=1e-12)


# -- exact traces ------------------------------------------------------------------------------------

_ACT_SLOPE = 1.1  # max |act'| over every activation (SiLU's is 1.0998)


@pytest.mark.parametrize("dim", [1, 2, 3, 4, 5])
def test_exact_trace_equals_autograd_jacobian(dim):
    g = np.random.default_rng(dim)
    act = list(fs.nn.ACTIVATIONS)[dim - 1]
    emb = "fourier" if dim % 2 else "concat"
    model = _random_mlp(dim, seed=dim, activation=act, time_embedding=emb, width=int(g.integers(5, 40)),
                        depth=int(g.integers(1, 4)))
    x = torch.from_numpy(g.standard_normal((6, dim)))
    t = torch.from_numpy(g.uniform(0.05, 1.0, 6))
    s, tr = reference.divergence(model, x, t)
    torch.testing.assert_close(s, model(x, t), rtol=0, atol=0)
    jac = torch.autograd.functional.jacobian(lambda y: model(y, t), x)  # [n, D, n, D]
    J = torch.stack([jac[i, :, i, :] for i in range(6)])  # per-sample blocks
    # both are float64 sums over the paths of the network; |J| is bounded entrywise by the
    # path sum |Wout| a' |W| ... a' |W0x| with |a'| <= 1.1, and the two evaluations differ
    # by <= (operations per path ~ sum of fan-ins) * U * that path sum
    with torch.no_grad():
        P = model.layers[0].weight[:, :dim].abs()
        for layer in model.layers[1:]:
            P = layer.weight.abs() @ (_ACT_SLOPE * P)
    ops = sum(layer.in_features for layer in model.layers)
    tol = 4 * ops * U64 * torch.diagonal(P).sum()
    err = (tr - torch.diagonal(J, dim1=1, dim2=2).sum(-1)).abs().max()
    assert err <= tol, f"{err} > {tol}"
    # the batch does not couple samples: sample i's Jacobian w.r.t. sample j != i is zero
    off = jac.clone()
    for i in range(6):
        off[i, :, i, :] = 0
    assert torch.count_nonzero(off) == 0


def _rademacher(shape, seed):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 2, shape) * 2.0 - 1.0)


@pytest.mark.parametrize("which", ["mlp4d", "gmm2d"])
def test_hutchinson_probe_is_unbiased_per_evaluation(which):
    """E_p[p^T J p] = tr J for Rademacher p, with Var = sum_{i != j} J_ij (J_ij + J_ji)."""
    if which == "mlp4d":
        model, dim = _random_mlp(4, seed=3, activation="softplus"), 4
    else:
        model, dim = ExactGMMScore(GMM_SEED003, fs.VESDE(25.0)), 2
    g = np.random.default_rng(7)
    pts, reps = torch.from_numpy(g.standard_normal((4, dim))), 5000
    x = pts.repeat_interleave(reps, dim=0)
    t = 0.3
    _, est = reference.divergence(model, x, t, probe=_rademacher((x.shape[0], dim), 8))
    _, tr = reference.divergence(model, pts, t)
    jac = torch.autograd.functional.jacobian(lambda y: model(y, t), pts)
    for i in range(4):
        J = jac[i, :, i, :]
        off = J - torch.diag(torch.diagonal(J))
        var = (off * (off + off.T)).sum()
        assert var > 0  # the estimator is genuinely random here
        mean = est[i * reps : (i + 1) * reps].mean()
        # 5 standard errors of a mean of `reps` independent probes
        assert abs(mean - tr[i]) <= 5 * math.sqrt(var / reps), f"point {i}: {mean} vs {tr[i]}"


def test_hutchinson_log_prob_is_unbiased():
    """log_prob(trace='hutchinson') differs from the exact-trace run by int (p^T J p - tr J):
    the x path does not see the probe and every fixed-step stage is linear in the trace,
    so its mean over probes is the exact-trace value of the same solver. Copies of a point
    at different batch indices get independent probes of the shared stream."""
    sde = fs.VPSDE(0.1, 20.0)
    model = ExactGMMScore(GMM_SEED003, sde)
    pts, reps = GMM_SEED003.sample(3, seed=4).double(), 600
    x = pts.repeat_interleave(reps, dim=0)
    kw = dict(method="heun", steps=8, eps=1e-3, backend="torch")
    hut = fs.log_prob(model, sde, x, trace="hutchinson", seed=3, **kw).view(3, reps)
    exact = fs.log_prob(model, sde, pts, trace="exact", **kw)
    assert (hut.std(dim=1) > 0).all()
    se = hut.std(dim=1) / math.sqrt(reps)
    assert ((hut.mean(dim=1) - exact).abs() <= 5 * se).all(), (hut.mean(dim=1), exact, se)
    # the probe is a function of (seed, index), not of the batch: a prefix of the batch
    # gives the same values up to the batch-size dependence of float64 sums (~1 ulp of
    # |log p| ~ 5 per stage: 1e-12)
    again = fs.log_prob(model, sde, x[:5], trace="hutchinson", seed=3, **kw)
    torch.testing.assert_close(again, hut.view(-1)[:5], rtol=0, atol=1e-12)
    assert not torch.equal(fs.log_prob(model, sde, x[:50], trace="hutchinson", seed=4, **kw), hut.view(-1)[:50])


def test_hutchinson_is_exact_in_one_dimension():
    """p^2 = 1: in 1-D the Rademacher estimate is the trace; sign flips are exact in IEEE
    arithmetic, so the two log-likelihoods agree to the last bit."""
    sde = fs.VESDE(25.0)
    model = ExactGMMScore(MIXTURE1D, sde)
    x = MIXTURE1D.sample(20, seed=5).double()
    kw = dict(method="rk4", steps=6, eps=1e-3, backend="torch")
    torch.testing.assert_close(fs.log_prob(model, sde, x, trace="hutchinson", seed=9, **kw),
                               fs.log_prob(model, sde, x, **kw), rtol=0, atol=0)


# -- log-likelihoods with the exact score ----------------------------------------------------------

LP_CASES = {
    "gmm2d-vp": (GMM_SEED003, fs.VPSDE(0.1, 20.0)),
    "gmm2d-ve": (GMM_SEED003, fs.VESDE(25.0)),
    "mix1d-vp": (MIXTURE1D, fs.VPSDE(0.1, 20.0)),
    "mix1d-ve": (MIXTURE1D, fs.VESDE(25.0)),
    "gmm2d-subvp": (GMM_SEED003, fs.SubVPSDE(0.1, 20.0)),
}
LP_EPS = 1e-5


@functools.lru_cache(maxsize=None)
def _lp_case(name: str):
    gmm, sde = LP_CASES[name]
    x = gmm.sample(16, seed=12).double()
    return gmm, sde, x, _solver_target(gmm, sde, x.numpy(), LP_EPS)


@pytest.mark.parametrize("case", list(LP_CASES))
def test_log_prob_rk4_equals_exact_density(case):
    gmm, sde, x, target = _lp_case(case)
    model = ExactGMMScore(gmm, sde)
    lp = fs.log_prob(model, sde, x, method="rk4", steps=100, eps=LP_EPS, backend="torch")
    assert lp.dtype == torch.float64 and lp.shape == (16,)
    coarse = fs.log_prob(model, sde, x, method="rk4", steps=50, eps=LP_EPS, backend="torch").numpy()
    # order 4: the error of the 100-step solve is (lp_100 - lp_50) / 15 to leading order
    # (Richardson; taken in the max norm over the points, as a single point's error constant
    # may pass through zero); allow twice that, plus the target's own error (x_T to ~1e-11
    # through a log-density of gradient O(1)) and float64 rounding of ~10^3 stage sums: 1e-9
    tol = 2 * np.abs(lp.numpy() - coarse).max() / 15 + 1e-9
    err = np.abs(lp.numpy() - target).max()
    assert err <= tol, (err, tol)
    # the prior correction matters (so the comparison is not vacuous for VE / VP at T = 1)
    direct = gmm.log_prob_t(x.numpy(), sde, LP_EPS)
    assert np.abs(direct - target).max() > 100 * tol


@pytest.mark.parametrize("case", list(LP_CASES))
@pytest.mark.parametrize("tol", [1e-6, 1e-9])
def test_log_prob_rk45_meets_its_tolerance(case, tol):
    gmm, sde, x, target = _lp_case(case)
    model = ExactGMMScore(gmm, sde)
    lp = fs.log_prob(model, sde, x, method="rk45", rtol=tol, atol=tol, eps=LP_EPS, backend="torch").numpy()
    # RK45 keeps each step's local error below atol + rtol |y| (|y| <= ~10 here) in the RMS
    # norm over the batch; the global error is the sum of ~10-40 such steps carried by a
    # flow that is not expanding much on [eps, T]: 10^3 x tol covers steps x |y| x growth.
    # (Measured: 1 to 5 x tol.) A bug in the trace or prior term would be >= 1e-2.
    err = np.abs(lp - target)
    assert np.all(err <= 1e3 * tol), err


@pytest.mark.parametrize("sde", [fs.VPSDE(0.1, 20.0), fs.VESDE(25.0)], ids=repr)
@pytest.mark.parametrize("method,order,steps", [("euler", 1, (128, 256, 512)), ("heun", 2, (64, 128, 256)),
                                                ("rk4", 4, (32, 64, 128))])
def test_fixed_step_convergence_order(sde, method, order, steps):
    """Error against the exact ODE solution scales as h^order. Error = C h^p (1 + O(h)), so
    the observed slope log2(e_N / e_2N) approaches p with a deviation that halves at each
    halving (0.13 -> 0.07 -> 0.035 -> 0.018 for VE Euler from 32 steps); at the finest
    pair used we allow 0.1. A wrong order would be off by >= 1."""
    gmm = GMM_SEED003
    model = ExactGMMScore(gmm, sde)
    x = gmm.sample(8, seed=13).double()
    eps = 1e-3
    target = _solver_target(gmm, sde, x.numpy(), eps)
    errs = np.array([
        np.abs(fs.log_prob(model, sde, x, method=method, steps=n, eps=eps, backend="torch").numpy() - target).max()
        for n in steps
    ])
    slopes = np.log2(errs[:-1] / errs[1:])
    assert np.all(slopes > order - 0.5), (errs, slopes)  # monotone, near order p throughout
    assert abs(slopes[-1] - order) <= 0.1, (errs, slopes)
    assert errs[-1] > 1e3 * U64 * np.abs(target).max()  # still far above float64 rounding
