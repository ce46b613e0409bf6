"""The forward SDEs: Python formulas, the C++ header, and the laws they must obey.

``fastscore/sde.py`` and ``csrc/include/fastscore/sde.h`` hold the same closed forms;
``_core.sde_coefficients`` evaluates the header (columns f, g^2, m, sigma, prior std).
Besides agreeing with each other, the formulas must be *right*: the perturbation kernel
N(m x_0, sigma^2 I) of dx = f x dt + g dW satisfies the moment ODEs

    dm/dt = f m,   d(sigma^2)/dt = 2 f sigma^2 + g^2,   m(0) = 1, sigma(0) = 0,

which we check by complex-step differentiation (derivatives exact to float64 rounding,
no step-size trade-off) and, in integrated form, through the transition variance
G^2(s -> t) = int_s^t (m(t)/m(r))^2 g(r)^2 dr computed with scipy's quad.

Float64 unit roundoff is U = 2^-53 ~ 1.1e-16. Every quantity below is a handful (< 20) of
float64 operations whose condition numbers are at most |2 ln(sigma) t| <= 2 ln(100) * 2
~ 18 for the parameters drawn here, so formula-level agreement is ~20 * 18 * U ~ 4e-14;
the tolerances of 1e-12 leave a factor ~25 on top of that and are still 10^4 times
tighter than any formula slip (a wrong factor of 2, a t/T, a missing square).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

import fastscore as fs
from fastscore import _core

U64 = 2.0**-53
REL = 1e-12  # formula-level agreement in float64 (see the module docstring)


def _random_sdes(seed: int = 20240611):
    """Three SDEs of each kind with random parameters (log-uniform betas and sigmas)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        bmin = float(np.exp(rng.uniform(np.log(0.01), np.log(2.0))))
        bmax = bmin + float(np.exp(rng.uniform(np.log(0.5), np.log(30.0))))
        T = float(rng.uniform(0.5, 2.0))
        out.append(fs.VPSDE(bmin, bmax, T))
        out.append(fs.SubVPSDE(bmin, bmax, T))
        out.append(fs.VESDE(float(np.exp(rng.uniform(np.log(1.5), np.log(100.0)))), float(rng.uniform(0.5, 2.0))))
        out.append(fs.CosineVPSDE(float(rng.uniform(0.0, 0.05)), float(rng.uniform(0.5, 0.999))))
        smin = float(np.exp(rng.uniform(np.log(1e-3), np.log(0.1))))
        out.append(fs.GeometricVESDE(smin, smin * float(np.exp(rng.uniform(np.log(10.0), np.log(1e4)))),
                                     float(rng.uniform(0.5, 2.0))))
        out.append(fs.EDMSDE(float(np.exp(rng.uniform(np.log(1.0), np.log(100.0))))))
    # the parameters the seeds and the papers use
    out += [fs.VPSDE(0.1, 20.0, 1.0), fs.SubVPSDE(0.1, 20.0, 1.0), fs.VESDE(25.0, 1.0), fs.CosineVPSDE(),
            fs.GeometricVESDE(0.01, 50.0), fs.EDMSDE(80.0)]
    return out


SDES = _random_sdes()
IDS = [repr(s) for s in SDES]


def _times(sde, n=64, seed=0):
    """Random times in (0, T], plus T itself; never 0 (tested separately)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.sort(rng.uniform(0.0, sde.T, n)) + 1e-6 * sde.T, [sde.T]]).clip(max=sde.T)


def _python_columns(sde, t):
    """The five columns of _core.sde_coefficients, from the Python formulas."""
    ones = np.ones_like(t)
    return np.stack(
        [sde.drift_coeff(t) * ones, sde.diffusion_sq(t) * ones, sde.mean_coeff(t) * ones, sde.std(t) * ones,
         sde.prior_std * ones],
        axis=1,
    )


# -- Python formulas vs the C++ header ----------------------------------------------------


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_header_matches_python(sde):
    t = np.concatenate([[0.0], _times(sde)])
    got = _core.sde_coefficients((sde.kind, *sde.params), t)
    want = _python_columns(sde, t)
    assert got.shape == (t.size, 5)
    # same formula, same operation order, both in float64; only libm calls (exp, expm1,
    # log, sqrt: <= 1 ulp each) may differ -> relative REL (module docstring). Exact zeros
    # (VE's f, sigma(0), sub-VP's g^2(0)) must be exact zeros in both: atol = 0.
    np.testing.assert_allclose(got, want, rtol=REL, atol=0)
    np.testing.assert_array_equal(got[:, 4], sde.prior_std)  # a single expression, no t


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_kernel_starts_at_the_data(sde):
    """m(0) = 1 and sigma(0) = 0 *exactly* (expm1(0) = 0), in Python and in the header; score_sde's
    geometric VE starts at sigma(0) = sigma_min by its definition."""
    s0 = sde.sigma_min if isinstance(sde, fs.GeometricVESDE) else 0.0
    c = _core.sde_coefficients((sde.kind, *sde.params), np.zeros(1))
    assert c[0, 2] == 1.0 and c[0, 3] == s0
    for t0 in (0.0, np.zeros(3), torch.zeros(3, dtype=torch.float64)):
        m, s = sde.mean_coeff(t0), sde.std(t0)
        assert np.all(np.asarray(m) == 1.0) and np.all(np.asarray(s) == s0)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_std_is_sigma_at_T_or_one(sde):
    # VE's prior N(0, sigma(T)^2) is the kernel at T when x_0 is ignored; VP and sub-VP
    # prior N(0, 1) is where m(T) x_0 + sigma(T) z tends for large int beta
    want = float(sde.std(sde.T)) if isinstance(sde, (fs.VESDE, fs.GeometricVESDE, fs.EDMSDE)) else 1.0
    assert sde.prior_std == pytest.approx(want, rel=REL)


# -- the moment ODEs ------------------------------------------------------------------------


def _complex_step(fn, t, h=1e-30):
    """d fn / dt at real t via Im fn(t + i h) / h: no subtractive cancellation, truncation
    error O(h^2) ~ 1e-60, so the derivative is as accurate as fn itself."""
    return np.imag(fn(t + 1j * h)) / h


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_moment_odes(sde):
    t = _times(sde, seed=1)
    f, g2, m, s = sde.drift_coeff(t), sde.diffusion_sq(t), sde.mean_coeff(t), sde.std(t)
    dm = _complex_step(sde.mean_coeff, t)  # VE: m = 1 + 0 t, so dm = 0 = f m exactly
    dvar = _complex_step(lambda tt: sde.std(tt) ** 2, t)
    # each side is a few float64 operations on values of size |f m| resp. |2 f s^2| + g^2
    np.testing.assert_array_less(np.abs(dm - f * m), REL * (np.abs(f * m) + 1e-300) + 1e-300)
    np.testing.assert_array_less(np.abs(dvar - (2 * f * s * s + g2)), REL * (np.abs(2 * f * s * s) + g2))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_transition_variance_is_the_integrated_ode(sde):
    """G^2(s -> t) = int_s^t (m(t)/m(r))^2 g(r)^2 dr, the solution of the variance ODE over
    [s, t] started from 0, evaluated by adaptive quadrature."""
    rng = np.random.default_rng(2)
    for _ in range(8):
        s, t = np.sort(rng.uniform(0.0, sde.T, 2))
        a, G2 = sde.transition(t, s)
        mt = sde.mean_coeff(t)
        integral, est = scipy.integrate.quad(
            lambda r: (mt / sde.mean_coeff(r)) ** 2 * sde.diffusion_sq(r), s, t, epsabs=0.0, epsrel=1e-13, limit=200
        )
        # G^2 = sigma_t^2 - a^2 sigma_s^2 cancels: each of the two terms carries a few
        # (<= 8) ulp, so the absolute error is <= 16 U (sigma_t^2 + a^2 sigma_s^2); quad's
        # own error is below 10x its estimate and its relative target 1e-13 (x10)
        cancel = 16 * U64 * (sde.std(t) ** 2 + a * a * sde.std(s) ** 2)
        assert abs(G2 - integral) <= cancel + 10 * est + 1e-12 * integral


# -- transitions --------------------------------------------------------------------------


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_transition_consistent(sde):
    rng = np.random.default_rng(3)
    for gap_scale in (1.0, 1e-3, 1e-9):  # sampler steps range from T/10 down to tiny
        s = rng.uniform(0.0, sde.T * (1 - gap_scale), 16)
        t = s + gap_scale * sde.T * rng.uniform(0.01, 1.0, 16)
        a, G2 = sde.transition(t, s)
        # a = m(t)/m(s): the same division the formula does -> exact
        np.testing.assert_array_equal(a, sde.mean_coeff(t) / sde.mean_coeff(s) * np.ones_like(t))
        # a variance: an integral of a square, so > 0. The cancellation in
        # sigma_t^2 - a^2 sigma_s^2 costs ~16 U sigma_t^2, while G^2 / sigma_t^2 is at least
        # about (t - s) / t >= 1e-11 / 2 here, 10^3 times more: the sign is never in doubt
        assert np.all(G2 >= 0.0)
        assert np.all(G2 > 0.0)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_transitions_compose(sde):
    """x_u = a2 (a1 x_s + G1 z1) + G2 z2 must equal the one-step transition s -> u:
    a = a2 a1 and G^2 = a2^2 G1^2 + G2^2 (the Chapman-Kolmogorov property of the kernel)."""
    rng = np.random.default_rng(4)
    s, t, u = np.sort(rng.uniform(0.0, sde.T, (3, 32)), axis=0)
    a1, G1 = sde.transition(t, s)
    a2, G2 = sde.transition(u, t)
    a, G = sde.transition(u, s)
    # products/quotients of m values: a few ulp of relative error
    np.testing.assert_allclose(a2 * a1, a, rtol=REL, atol=0)
    # each G^2 carries the cancellation error 16 U (sigma_end^2 + a^2 sigma_start^2) of its
    # formula; all the sigma^2 involved are <= sigma_u^2 + sigma_t^2 + sigma_s^2 (m <= 1)
    sig2 = sde.std(u) ** 2 + sde.std(t) ** 2 + sde.std(s) ** 2
    np.testing.assert_array_less(np.abs(a2 * a2 * G1 + G2 - G), 3 * 16 * U64 * sig2 * (1 + a * a) + 1e-300)


# -- prior ------------------------------------------------------------------------------


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_prior_log_prob_is_the_normal_logpdf(sde, dim):
    rng = np.random.default_rng(5 + dim)
    x = rng.standard_normal((50, dim)) * sde.prior_std * rng.uniform(0.2, 3.0)
    want = scipy.stats.norm.logpdf(x, scale=sde.prior_std).sum(-1)
    got_np = sde.prior_log_prob(x)
    got_t = sde.prior_log_prob(torch.from_numpy(x))
    assert isinstance(got_t, torch.Tensor) and got_t.shape == (50,)
    # sum of dim terms of size <= |want|: relative REL of the sum of the magnitudes
    mag = (0.5 * x**2 / sde.prior_std**2 + abs(0.5 * math.log(2 * math.pi * sde.prior_std**2))).sum(-1)
    np.testing.assert_array_less(np.abs(got_np - want), REL * mag)
    np.testing.assert_array_less(np.abs(got_t.numpy() - want), REL * mag)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_prior_sample_scales_normals(sde):
    z = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(sde.prior_sample(z), sde.prior_std * z, rtol=0, atol=0)


# -- input kinds ----------------------------------------------------------------------------

_METHODS = ("drift_coeff", "diffusion_sq", "diffusion", "mean_coeff", "std")


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_float_numpy_and_torch_inputs_agree(sde):
    t = _times(sde, n=16, seed=7)
    tt = torch.from_numpy(t)
    for name in _METHODS:
        fn = getattr(sde, name)
        v_np = np.asarray(fn(t)) * np.ones_like(t)
        v_t = fn(tt)
        assert isinstance(v_t, torch.Tensor), name
        assert v_t.dtype == torch.float64, name
        v_f = [fn(float(ti)) for ti in t]
        assert all(isinstance(v, float) for v in v_f), name  # np.float64 is a float
        # float and numpy inputs take the very same numpy/libm path -> identical
        np.testing.assert_array_equal(np.array(v_f), v_np, err_msg=name)
        # torch's exp/expm1/sqrt may differ from numpy's by an ulp or two: REL (docstring)
        np.testing.assert_allclose((v_t * torch.ones_like(tt)).numpy(), v_np, rtol=REL, atol=0, err_msg=name)
    s = t * 0.5
    for a_kind in (lambda v: v, torch.from_numpy):
        a, G2 = sde.transition(a_kind(t), a_kind(s))
        a_ref, G2_ref = sde.transition(t, s)
        np.testing.assert_allclose(np.asarray(a) * np.ones_like(t), a_ref * np.ones_like(t), rtol=REL)
        # G^2's cancellation error is absolute, 16 U (sigma_t^2 + a^2 sigma_s^2)
        np.testing.assert_allclose(np.asarray(G2), G2_ref, rtol=REL, atol=16 * U64 * 2 * sde.std(sde.T) ** 2)


# -- invalid parameters -------------------------------------------------------------------------

_NAN, _INF = float("nan"), float("inf")


@pytest.mark.parametrize("cls", [fs.VPSDE, fs.SubVPSDE])
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(beta_min=0.0), "beta_min"),
        (dict(beta_min=-0.1), "beta_min"),
        (dict(beta_min=_NAN), "beta_min"),
        (dict(beta_max=_INF), "beta_max"),
        (dict(beta_max=0.0), "beta_max"),
        (dict(beta_min=5.0, beta_max=1.0), "beta_max"),
        (dict(beta_max=_NAN), "beta_max"),
        (dict(T=0.0), "T"),
        (dict(T=-1.0), "T"),
        (dict(T=_NAN), "T"),
        (dict(T=_INF), "T"),
    ],
)
def test_linear_beta_sdes_reject_bad_parameters(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sigma=1.0), "sigma"),
        (dict(sigma=0.5), "sigma"),
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=-3.0), "sigma"),
        (dict(sigma=_NAN), "sigma"),
        (dict(sigma=_INF), "sigma"),
        (dict(T=0.0), "T"),
        (dict(T=-0.5), "T"),
        (dict(T=_NAN), "T"),
    ],
)
def test_vesde_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fs.VESDE(**kwargs)


def test_equal_beta_bounds_are_a_constant_schedule():
    """beta_max == beta_min is allowed (constant beta): then int beta = beta t exactly."""
    sde = fs.VPSDE(2.5, 2.5, 1.5)
    t = _times(sde, n=8, seed=8)
    np.testing.assert_allclose(sde.mean_coeff(t), np.exp(-0.5 * 2.5 * t), rtol=REL)


def test_equality_and_hash_follow_parameters():
    assert fs.VPSDE(0.1, 20.0) == fs.VPSDE(0.1, 20.0)
    assert hash(fs.VPSDE(0.1, 20.0)) == hash(fs.VPSDE(0.1, 20.0))
    assert fs.VPSDE(0.1, 20.0) != fs.SubVPSDE(0.1, 20.0)  # same params, different SDE
    assert fs.VESDE(25.0) != fs.VESDE(26.0)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: fs.CosineVPSDE(s=-0.1), "s must be"),
        (lambda: fs.CosineVPSDE(s=1.0), "s must be"),
        (lambda: fs.CosineVPSDE(s=_NAN), "s must be"),
        (lambda: fs.CosineVPSDE(T=1.0), "T must be < 1"),
        (lambda: fs.CosineVPSDE(T=0.0), "T"),
        (lambda: fs.GeometricVESDE(sigma_min=0.0), "sigma_min"),
        (lambda: fs.GeometricVESDE(sigma_min=2.0, sigma_max=1.0), "sigma_max"),
        (lambda: fs.GeometricVESDE(sigma_max=_NAN), "sigma_max"),
        (lambda: fs.GeometricVESDE(T=0.0), "T"),
        (lambda: fs.EDMSDE(0.0), "T"),
        (lambda: fs.EDMSDE(_INF), "T"),
    ],
)
def test_schedules_reject_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_from_kind_rebuilds_the_sde(sde):
    """(kind, params) is what the kernels and network programs hold; it names one SDE."""
    from fastscore.sde import from_kind

    assert from_kind(sde.kind, sde.params) == sde


def test_cosine_schedule_is_nichol_and_dhariwal():
    """alpha_bar(t) = f(t) / f(0), f(t) = cos^2(pi/2 (t + s) / (1 + s)) (their eq. 17, time in
    [0, 1]); sigma^2 = 1 - alpha_bar; DPM-Solver's end time 0.9946."""
    sde = fs.CosineVPSDE()
    t = np.linspace(0.0, sde.T, 50)
    f = lambda u: np.cos(0.5 * np.pi * (u + 0.008) / 1.008) ** 2  # noqa: E731
    np.testing.assert_allclose(sde.mean_coeff(t) ** 2, f(t) / f(0.0), rtol=REL)
    # 1 - alpha_bar cancels near t = 0: absolute REL there
    np.testing.assert_allclose(sde.std(t) ** 2, 1 - f(t) / f(0.0), rtol=REL, atol=REL)
    assert sde.T == 0.9946 and sde.params == (0.008, 0.0, 0.9946)


def test_geometric_ve_is_score_sdes_and_edm_is_sigma_t():
    geo = fs.GeometricVESDE(0.01, 50.0)
    t = np.linspace(0.0, 1.0, 20)
    np.testing.assert_allclose(geo.std(t), 0.01 * (50.0 / 0.01) ** t, rtol=REL)
    np.testing.assert_allclose(geo.diffusion(t), geo.std(t) * np.sqrt(2 * (np.log(50.0) - np.log(0.01))), rtol=REL)
    edm = fs.EDMSDE(80.0)
    assert edm.T == edm.prior_std == 80.0
    np.testing.assert_array_equal(edm.std(t), t)
