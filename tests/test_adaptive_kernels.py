"""The adaptive samplers (ode_rk45, em_adaptive) of every kernel against the float64 reference:
numba (float64 solves over the float32 network), the C++ CPU kernels and the CUDA thread
bodies (float32 solves; the CUDA launch emulated on the CPU, and on a GPU where there is one).

The network: fs.ScoreMLP(2, 16, 2, "silu", std_sde=sde) whose weights carry x through both
hidden layers (silu(z) - silu(-z) = z) to s = -GAIN x / sigma(t), plus 0.1 times random
weights: a contracting score, as a trained network's, under which the tolerance-driven bounds
mean something (an untrained network's reverse flow pushes VP samples out to |x| ~ 500).
GAIN = 1.5 keeps the VP flow from being stationary (at GAIN = 1 its velocity nearly vanishes,
and every error norm is float32 noise).

Tolerances are derived below from u = 2^-24 (float32 network; float32 or float64 solve) and
from what the controller admits; every "measured" is over 10-48 fresh seeds of these tests, and
holds for each kernel unless it says which.
"""

import copy
import math

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore import rng
from fastscore.backends import cpu, module, numba_backend, reference, resolve
from fastscore.plan import ADAPTIVE_METHODS, make_adaptive_plan

from cases import fresh_seed
from rounding import U

AVAILABLE = {"numba": numba_backend.info(), "cpu": cpu.info(), "emulated": cpu.info(), "cuda": fs.backends()["cuda"]}
KERNELS = [pytest.param(k, marks=[pytest.mark.skipif(not AVAILABLE[k]["available"], reason=AVAILABLE[k]["detail"])]
                        + ([pytest.mark.gpu] if k == "cuda" else [])) for k in AVAILABLE]
needs_numba = pytest.mark.skipif(not AVAILABLE["numba"]["available"], reason=AVAILABLE["numba"]["detail"])

SDES = {"VP": fs.VPSDE(), "VE": fs.VESDE(), "EDM": fs.EDMSDE(sigma_max=5.0)}
COUNTS = ("nfe", "accepted", "rejected")
GAIN = 1.5


def _contracting_net(sde, seed: int, cond_dim: int = 0) -> fs.ScoreMLP:
    torch.manual_seed(seed)
    model = fs.ScoreMLP(2, 16, 2, "silu", std_sde=sde, cond_dim=cond_dim)
    with torch.no_grad():
        w0, w1, w2 = (layer.weight for layer in model.layers)
        for p in model.parameters():
            p.mul_(0.1)
        if cond_dim:
            w0[:, -cond_dim:] *= 5.0  # the condition moves the score visibly
        for d in range(2):  # unit 2d carries x_d, unit 2d + 1 carries -x_d
            w0[2 * d, d] += 1.0
            w0[2 * d + 1, d] -= 1.0
            for j, sign in ((2 * d, 1.0), (2 * d + 1, -1.0)):
                w1[j, 2 * d] += sign
                w1[j, 2 * d + 1] -= sign
            w2[d, 2 * d] -= GAIN
            w2[d, 2 * d + 1] += GAIN
    return model


def _kernel_sample(kernel, model, sde, n, seed, method, cond=None, start=0, rtol=None, atol=None, denoise=False):
    """(samples [n, 2] float32 on the CPU, counts) of a kernel; "emulated" runs the CUDA launch's
    thread bodies on the CPU, its weights staged through shared memory on odd seeds."""
    if kernel == "emulated":
        plan = make_adaptive_plan(model, sde, n, method, 1e-3, seed, start, rtol, atol, denoise)
        x, *counts, failed = fs._core.emulate_sample_adaptive(*cpu.net_args(fs.pack(model)),
                                                              *cpu.adaptive_args(plan, cond), bool(seed % 2))
        cpu.rk45_failure(failed, n)
        return torch.from_numpy(x), {k: torch.from_numpy(c) for k, c in zip(COUNTS, counts)}
    x, info = fs.sample(model, sde, n, method, backend=kernel, seed=seed, cond=cond, start=start, rtol=rtol,
                        atol=atol, denoise=denoise, return_info=True)
    return x.cpu(), {k: v.cpu() for k, v in info.items()}


def _both(kernel, model, sde, n, seed, cond=None, **kw):
    """(the kernel's samples, counts; the float64 reference's samples, counts; X [n]), X the
    larger of each sample's |prior draw|_inf and |reference result|_inf: the state's scale along
    a contracting path."""
    x, info = _kernel_sample(kernel, model, sde, n, seed, cond=cond, **kw)
    ref, ref_info = fs.sample(copy.deepcopy(model).double(), sde, n, backend="torch", seed=seed, cond=cond,
                              return_info=True, **kw)
    prior = torch.from_numpy(sde.prior_std * rng.normals(seed, np.arange(n), 0, rng.STREAM_PRIOR, 2))
    X = torch.maximum(prior.abs().amax(1), ref.abs().amax(1))
    assert x.dtype == torch.float32 and all(info[k].dtype == torch.int64 for k in COUNTS)
    return x.double(), info, ref, ref_info, X


def _same_counts(a, b):
    return (a["nfe"] == b["nfe"]) & (a["accepted"] == b["accepted"]) & (a["rejected"] == b["rejected"])


# -- ode_rk45 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("sde_name,denoise,cond_dim", [("VP", False, 0), ("VP", True, 0), ("VE", True, 0),
                                                        ("EDM", False, 1)])
def test_ode_rk45_follows_the_float64_reference(kernel, sde_name, denoise, cond_dim):
    seed = fresh_seed()
    sde = SDES[sde_name]
    model = _contracting_net(sde, seed, cond_dim)
    n, atol, rtol = 48, 1e-3, 1e-3
    cond = torch.randn(n, cond_dim, generator=torch.Generator().manual_seed(seed)) if cond_dim else None
    x, info, ref, ref_info, X = _both(kernel, model, sde, n, seed, cond, method="ode_rk45", denoise=denoise)
    err = (x - ref).abs().amax(1)
    # A sample follows the reference when it takes the same steps and ends within 8 u nfe (1 + X):
    # each network evaluation (and, in a float32 solve, each stage's update) may add a float32
    # rounding of the state's size, carried without growth (the reverse flow contracts), times a
    # factor for the step sizes, which the float32
    # noise of the error estimate moves: it is about u h |k| / (atol + rtol |x|), ~5e-6 on VP's
    # first steps, where the controller's growth clamp (10 up to err = 5.9e-6) starts to bind,
    # and shifts x by about u h |k|. Measured: err / (u nfe (1 + X)) <= 4.2 over 2112 VP samples,
    # <= 0.2 on VE and EDM; 100% follow. (A VP network with a strong condition input left up to
    # 8% of samples with err ~ 1e-5 to 1e-3: step sizes parted at a clamp.)
    follows = _same_counts(info, ref_info) & (err <= 8 * U * ref_info["nfe"] * (1 + X))
    assert follows.double().mean() >= 0.9, f"seed {seed}: {int(follows.sum())} of {n} follow the reference"
    # Tolerance bound: an accepted step has RMS_j(err_j / scale_j) <= 1, so its local error is
    # at most sqrt(dim) (atol + rtol X) per component (the propagated 5th-order solution errs
    # less than the 4th-order estimate); summed over both solves' accepted steps, carried
    # without growth (the Tweedie step at eps scales them by (1 - GAIN sigma(eps)) / m(eps) ~ 1 here).
    # Measured: err / bound <= 5e-4 (<= 0.29 with the strong condition input above).
    steps = info["accepted"] + ref_info["accepted"]
    bound = steps * math.sqrt(2) * (atol + rtol * X)
    assert torch.all(err <= bound), f"seed {seed}: worst err/bound {(err / bound).max():.3g}"
    assert torch.all(info["nfe"] == 1 + 6 * (info["accepted"] + info["rejected"]) + denoise)


# -- em_adaptive ------------------------------------------------------------------------------------
#
# Its step sequence is chaotic in rounding: a step t -> t + h draws W(t + h) from the Brownian
# tree, linear within leaves of width (T - eps) 2^-24, so a relative change d of h moves dW by
# ~4096 sqrt(|h|) d relative (~400 d at |h| = 0.01), and the next step size follows err^-0.9.
# Moving rtol by 4 ulp changes the float64 reference's own counts for 96-100% of samples
# (measured), so no float32 kernel can reproduce its decisions at a working tolerance. Held
# instead: (1) with tolerances so loose that no step size depends on an error norm, the same
# steps and a float32 bound; (2) at the default tolerance, the spread of two admissible solves
# on the same Brownian path, and the same distribution of counts.


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("sde_name,denoise,cond_dim", [("VP", False, 0), ("VE", True, 0), ("EDM", False, 1)])
def test_em_adaptive_takes_the_reference_steps_when_they_are_fixed(kernel, sde_name, denoise, cond_dim):
    """rtol = atol = 1e8: every error norm is below 1e-7, so every step grows by the maximum
    factor 10 (up to err = 5.9e-6) and is cut to what is left: h = 0.01, 0.1 and 0.89 of
    T - eps, all accepted. This runs the Euler–Maruyama and improved-Euler arithmetic, three
    Brownian increments (each from the W(t) carried from the last accepted step) and the
    Tweedie step without any chaos."""
    seed = fresh_seed()
    sde = SDES[sde_name]
    model = _contracting_net(sde, seed, cond_dim)
    n = 40
    cond = torch.randn(n, cond_dim, generator=torch.Generator().manual_seed(seed)) if cond_dim else None
    x, info, ref, ref_info, X = _both(kernel, model, sde, n, seed, cond, method="em_adaptive", rtol=1e8, atol=1e8,
                                      denoise=denoise)
    assert torch.all(info["accepted"] == 3) and torch.all(info["rejected"] == 0)
    assert torch.all(_same_counts(info, ref_info)) and torch.all(info["nfe"] == 6 + denoise)
    # Float32 bound u nfe (1 + X) as for ode_rk45, times a growth factor of 100: a long
    # Euler–Maruyama step scales the network's error by h g^2 GAIN / sigma (~25 for VP's last
    # step) and multiplies errors already made by |1 + h d(drift)/dx| alike. Measured:
    # err / (u nfe (1 + X)) <= 39 over 2000 samples (VP; <= 12 on VE and EDM) with numba, <= 20
    # (cpu and emulated, 240 samples each).
    err = (x - ref).abs().amax(1)
    bound = 100 * U * ref_info["nfe"] * (1 + X)
    assert torch.all(err <= bound), f"seed {seed}: worst err/bound {(err / bound).max():.3g}"


@pytest.mark.parametrize("kernel", KERNELS)
def test_em_adaptive_solves_the_reference_brownian_paths(kernel):
    """At the default tolerance (rtol = atol = 1e-2) a kernel and the reference take different
    steps along the same Brownian path of each sample, so they differ as two admissible solves
    do. An accepted step leaves a local error of at most tau = sqrt(dim) max(atol, rtol |x|)
    per component; the contracting flow forgets all but the last few, so two solves differ by
    a few tau at the final |x|. Measured: the reference against itself with rtol moved by 4 ulp
    (every decision redrawn) <= 2.4 tau (median 0.38 to 0.55 tau per batch of 32), numba
    against the reference <= 1.9 tau (median 0.30 to 0.59), cpu and emulated <= 1.6 (median
    <= 0.55). A wrong Brownian increment, noise
    scale or drift moves samples by O(1), 50 tau or more; a 10% one moves the median past 2."""
    seed = fresh_seed()
    sde = SDES["VP"]
    n, tol = 32, 1e-2
    x, info, ref, ref_info, _ = _both(kernel, _contracting_net(sde, seed), sde, n, seed, method="em_adaptive",
                                      denoise=bool(seed % 2))
    tau = math.sqrt(2) * torch.clamp(tol * ref.abs().amax(1), min=tol)
    ratio = (x - ref).abs().amax(1) / tau
    assert ratio.max() <= 8 and ratio.median() <= 2, f"seed {seed}: max {ratio.max():.3g}, median {ratio.median():.3g}"
    # The counts are redrawn per sample but not biased: the paired differences average to
    # zero within 5 standard errors (measured: |z| <= 2.9 over 48 batches and counts).
    for k in COUNTS:
        diff = (info[k] - ref_info[k]).double()
        assert abs(diff.mean()) <= 5 * diff.std() / math.sqrt(n), f"seed {seed}: {k} {diff.tolist()}"
    assert torch.all(info["nfe"] == 2 * (info["accepted"] + info["rejected"]) + (seed % 2))


# -- batches, the Brownian twin, failures, declarations -----------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_samples_are_independent_of_their_batch(kernel, method):
    sde = SDES["VP"]
    model = _contracting_net(sde, 7)
    n = 40  # numba tiles of 16, 16, 8; CPU tiles of 8 or 16

    def run(count, start):
        return _kernel_sample(kernel, model, sde, count, 11, method, start=start)

    whole, info = run(n, 0)
    for i in (0, 5, 16, 39):
        alone, alone_info = run(1, i)
        assert torch.equal(alone, whole[i:i + 1]) and all(torch.equal(alone_info[k], info[k][i:i + 1]) for k in COUNTS)
    parts = [run(13, 0), run(n - 13, 13)]
    assert torch.equal(torch.cat([p[0] for p in parts]), whole)
    assert all(torch.equal(torch.cat([p[1][k] for p in parts]), info[k]) for k in COUNTS)


@needs_numba
def test_numba_bit_identical_across_thread_counts():
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    sde = SDES["VE"]
    model = _contracting_net(sde, 3)
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            runs.append([fs.sample(model, sde, 40, m, backend="numba", seed=2, return_info=True)
                         for m in ADAPTIVE_METHODS])
    finally:
        numba.set_num_threads(before)
    for (x1, i1), (x2, i2) in zip(*runs):
        assert torch.equal(x1, x2) and all(torch.equal(i1[k], i2[k]) for k in COUNTS)


@needs_numba
def test_numba_brownian_tree_is_rng_brownian():
    seed = fresh_seed()
    g = np.random.default_rng(seed)
    for dim, (eps, T) in ((1, (1e-3, 1.0)), (3, (1e-5, 1.0)), (6, (2e-3, 80.0))):
        samples = g.integers(0, 2**32, size=50)
        t = np.concatenate([[eps, T], g.uniform(eps, T, size=48)])
        got = numba_backend.brownian(seed, samples, t, eps, T, dim)
        want = rng.brownian(seed, samples, t, eps, T, dim)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert np.all(got[0] == 0.0)  # W(eps) = 0


def _overflowing_net():
    import test_failures

    return test_failures._overflowing_net()


@pytest.mark.parametrize("kernel", KERNELS)
def test_non_finite_scores_give_nan_samples(kernel):
    """s = 1e38 relu(x_0) e_0: a sample whose x_0 is ever positive cannot be solved (float32
    overflow, or a velocity no step size controls), and comes back NaN, which fs.sample
    refuses; the others keep x_0 < 0 under a zero score. On ode_rk45 those are exactly the
    samples drawn with x_0 > 0, as in the reference."""
    n, seed = 24, 5
    for method in ADAPTIVE_METHODS:
        if kernel != "emulated":
            with pytest.raises(FloatingPointError, match=r"results are not finite \(the first: index \d+\)"):
                fs.sample(_overflowing_net(), fs.VPSDE(), n, method, backend=kernel, seed=seed)
    drawn_positive = rng.normals(seed, np.arange(n), 0, rng.STREAM_PRIOR, 2)[:, 0] > 0
    assert 0 < drawn_positive.sum() < n
    plan = make_adaptive_plan(_overflowing_net(), fs.VPSDE(), n, "ode_rk45", 1e-3, seed, 0, None, None, False)
    ref, _ = reference.sample_adaptive(_overflowing_net(), plan)
    if kernel == "emulated":
        x, _ = _kernel_sample(kernel, _overflowing_net(), fs.VPSDE(), n, seed, "ode_rk45")
    else:  # the backend itself, beneath fs.sample's check
        x = module(kernel).sample_adaptive(_overflowing_net(), plan)[0].cpu()
    for got in (ref, x):
        assert np.array_equal(torch.isnan(got).any(1).numpy(), drawn_positive)
        assert torch.isfinite(got[~torch.from_numpy(drawn_positive)]).all()


@needs_numba
def test_numba_declared_and_checked():
    model = _contracting_net(SDES["VP"], 0)
    assert numba_backend.DECLARES.adaptive == set(ADAPTIVE_METHODS)
    for method in ADAPTIVE_METHODS:
        assert resolve("numba", "sample", method, model) == "numba"
    k = numba_backend._k("_numba_adaptive")
    net = numba_backend.net_args(fs.pack(model))
    k0, k1 = numba_backend._seed_words(0)
    out, counts, none = np.empty((3, 2), dtype=np.float32), np.zeros((3, 3), dtype=np.int64), np.zeros((3, 0))
    for sde, method, match in (((9, 0.1, 20.0, 1.0), 0, "unknown SDE kind"),
                               ((0, 0.1, 20.0, 1.0), 2, "unknown adaptive")):
        with pytest.raises(ValueError, match=match):
            k.sample_adaptive_kernel(net, sde, method, 1e-3, 1e-3, 1e-3, False, 1.0, k0, k1, 0, none, out, counts)


def test_adaptive_requests_are_checked():
    model, sde = fs.ScoreMLP(2, 8, 1), fs.VPSDE()
    with pytest.raises(ValueError, match="takes no grid"):
        fs.sample(model, sde, 3, "ode_rk45", grid="karras")
    with pytest.raises(ValueError, match="rtol and atol set the adaptive"):
        fs.sample(model, sde, 3, "em", rtol=1e-3)
    with pytest.raises(ValueError, match="rtol"):
        fs.sample(model, sde, 3, "em_adaptive", rtol=0.0)
