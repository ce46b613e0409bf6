"""The Numba backend against the float64 reference, sample by sample, under derived bounds.

Every tolerance here is a first-order rounding bound (tests/rounding.py) evaluated along the
reference's own float64 computation, or, for the adaptive solver, the error its controller
admits; none is tuned to the observed error.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

numba = pytest.importorskip("numba")

import fastscore as fs  # noqa: E402
from fastscore import integrators, rng  # noqa: E402
from fastscore.backends import cpu as cpu_backend  # noqa: E402
from fastscore.backends import numba_backend, reference, resolve  # noqa: E402
from fastscore.plan import LOG_PROB_METHODS, SAMPLE_METHODS, TRACES, make_sample_plan  # noqa: E402
from fastscore.program import DRAW, EVAL, LIN, MAX_REGISTERS  # noqa: E402
from fastscore.netprog import DENSE, SDE_FUNCTIONS, SDE_OP, UNARY  # noqa: E402

from cases import ACTIVATIONS, SDES, fresh_seed  # noqa: E402
from rounding import U, mlp_error_bound, trace_error_bound  # noqa: E402

pytestmark = pytest.mark.skipif(not numba_backend.info()["available"], reason=numba_backend.info()["detail"])

U64 = 2.0**-53
# -- fixed-step likelihoods --------------------------------------------------------------------


def _reference_with_sensitivities(model, sde, x, method, steps, eps, probe):
    """reference.log_prob's fixed-step solve on model.double(), operation for operation, with a
    zero perturbation added to what differs in the kernel at every network evaluation e:
    the network's input (the kernel rounds the float64 state to float32), its output s_e and
    trace tr_e (float32 network), and the stage velocity (float64 coefficients from libm
    instead of numpy). Returns log p [n] and, per evaluation, the inputs (x_e, t_e, s_e,
    tr_e, f, q) with the exact sensitivities of log p to each perturbation (autograd)."""
    md = model.double()
    tab = integrators.FIXED[method]
    c, b, a = tab.c, tab.b, tab.a
    n, dim = x.shape
    h = (sde.T - eps) / steps
    xk = x.double()
    delta = torch.zeros(n, dtype=torch.float64)
    evals, leaves = [], []
    with torch.enable_grad():
        for k in range(steps):
            t0 = eps + k * h
            kx, kd = [], []
            for i in range(len(c)):
                xi = xk + h * sum(aij * kj for aij, kj in zip(a[i], kx)) if i else xk
                t = t0 + c[i] * h
                dx, ds, dv = (torch.zeros(n, dim, dtype=torch.float64, requires_grad=True) for _ in range(3))
                dtr, dd = (torch.zeros(n, dtype=torch.float64, requires_grad=True) for _ in range(2))
                xin = xi + dx
                s = md(xin, t)
                if probe is None:
                    tr = sum(torch.autograd.grad(s[:, d].sum(), xin, create_graph=True)[0][:, d] for d in range(dim))
                else:
                    tr = (torch.autograd.grad((s * probe).sum(), xin, create_graph=True)[0] * probe).sum(1)
                f, q = sde.drift_coeff(t), 0.5 * sde.diffusion_sq(t)
                kx.append(f * xi - q * (s + ds) + dv)
                kd.append(dim * f - q * (tr + dtr) + dd)
                evals.append((xi.detach(), t, s.detach(), tr.detach(), f, q))
                leaves += [dx, ds, dtr, dv, dd]
            xk = xk + h * sum(bi * ki for bi, ki in zip(b, kx))
            delta = delta + h * sum(bi * ki for bi, ki in zip(b, kd))
        logp = sde.prior_log_prob(xk) + delta
        grads = torch.autograd.grad(logp.sum(), leaves)  # samples are independent: rows of the sum
    sens = [grads[5 * e:5 * e + 5] for e in range(len(evals))]
    return logp.detach(), evals, sens


def _log_prob_bound(model, x, evals, sens, probe):
    """First-order bound [n] on |log p_kernel - log p_reference| and the samples [n] whose
    ReLU trace may legitimately jump (a unit within its rounding error of the kink).

    Per evaluation e, with g = the sensitivities of log p (autograd, above):
      input rounding to float32      sum_d |g_dx,d| u |x_e,d|
      float32 network output         ||g_ds||_2 E_s   (rounding.mlp_error_bound)
      float32 forward-mode trace     |g_dtr| E_tr     (rounding.trace_error_bound)
      float64 coefficients f, g^2/2, 1/sigma from libm (<= 4 ulp each, <= 8 ulp together)
                                     8 u64 (sum_d |g_dv,d| (|f x_e,d| + q |s_e,d|) + |g_dd| (dim |f| + q |tr_e|))
    Everything else is the same float64 operations in the same order as the reference, so
    it differs only through these perturbations; their effects add to first order."""
    n, dim = x.shape
    bound = torch.zeros(n, dtype=torch.float64)
    kinked = torch.zeros(n, dtype=torch.bool)
    for (xi, t, s, tr, f, q), (g_dx, g_ds, g_dtr, g_dv, g_dd) in zip(evals, sens):
        dirs = torch.eye(dim, dtype=torch.float64).expand(n, dim, dim) if probe is None else probe[:, None, :]
        _, E_s = mlp_error_bound(model, xi, t)
        _, E_tr, kink = trace_error_bound(model, xi, t, dirs)
        kinked |= kink
        bound += (g_dx.abs() * U * xi.abs()).sum(1) + g_ds.norm(dim=1) * E_s + g_dtr.abs() * E_tr
        bound += 8 * U64 * ((g_dv.abs() * (abs(f) * xi.abs() + q * s.abs())).sum(1)
                            + g_dd.abs() * (dim * abs(f) + q * tr.abs()))
    return bound, kinked


@pytest.mark.parametrize("method,trace", [("euler", "exact"), ("heun", "exact"), ("rk4", "exact"),
                                          ("rk4", "hutchinson")])
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_fixed_step_log_prob_matches_reference_within_derived_bound(method, trace, sde):
    seed = fresh_seed()
    torch.manual_seed(seed)
    dim = 1 + seed % 4
    act = ACTIVATIONS[seed % 5]
    model = fs.ScoreMLP(dim, 24, 2, act, "fourier" if seed % 2 else "concat",
                        std_sde=sde if seed % 3 == 0 else None)
    n, steps, eps = 11, 4, 1e-3
    x = torch.randn(n, dim)
    got, info = fs.log_prob(model, sde, x, method, steps=steps, eps=eps, backend="numba", trace=trace, seed=seed,
                            return_info=True)
    ref, ref_info = fs.log_prob(model.double(), sde, x.double(), method, steps=steps, eps=eps, backend="torch",
                                trace=trace, seed=seed, return_info=True)
    assert got.dtype == torch.float64 and torch.equal(info["nfe"], ref_info["nfe"])
    probe = torch.from_numpy(rng.rademacher(seed, np.arange(n), 0, dim)) if trace == "hutchinson" else None
    logp, evals, sens = _reference_with_sensitivities(model, sde, x, method, steps, eps, probe)
    torch.testing.assert_close(logp, ref, rtol=1e-12, atol=1e-12)  # the bound walks the reference's own solve
    bound, kinked = _log_prob_bound(model, x.double(), evals, sens, probe)
    ok = ~kinked
    assert ok.sum() >= n - 3, f"seed {seed}: too many samples on a ReLU kink"
    err = (got - ref).abs()
    assert torch.all(err[ok] <= bound[ok]), f"seed {seed}: worst err/bound {(err[ok] / bound[ok]).max():.3g}"
    # Power: a wrong coefficient, time, tableau entry or probe moves log p by O(1); the bound
    # sits far below that (measured: ~4e-6 to 1e-4 of 1 + |log p|, 300-1000x the error).
    assert torch.median(bound / (1 + ref.abs())) < 1e-3


def test_exact_trace_batches_split_freely():
    torch.manual_seed(3)
    model = fs.ScoreMLP(3, 32, 3, "silu", "fourier")
    x = torch.randn(45, 3)
    whole = fs.log_prob(model, fs.VPSDE(), x, "rk4", steps=5, backend="numba")
    parts = [fs.log_prob(model, fs.VPSDE(), x[a:b], "rk4", steps=5, backend="numba") for a, b in ((0, 17), (17, 45))]
    assert torch.equal(torch.cat(parts), whole)


# -- rk45: per-sample Dormand–Prince ---------------------------------------------------------------


def _rk4_path(model, sde, x, steps, eps):
    """reference.log_prob's rk4 (same tableau and order) on model.double(), also returning
    x_T and the largest |y_j| along the path, Y = max_t max(|x(t)|_inf, |delta(t)|)."""
    md = model.double()
    tab = integrators.FIXED["rk4"]
    c, b, a = tab.c, tab.b, tab.a
    h = (sde.T - eps) / steps
    xk = x.double()
    delta = torch.zeros(x.shape[0], dtype=torch.float64)
    Y = xk.abs().amax(1)
    for k in range(steps):
        kx, kd = [], []
        for i in range(4):
            xi = xk + h * sum(aij * kj for aij, kj in zip(a[i], kx)) if i else xk
            vx, vd = reference._augmented(md, sde, xi, eps + k * h + c[i] * h, None)
            kx.append(vx)
            kd.append(vd)
        xk = xk + h * sum(bi * ki for bi, ki in zip(b, kx))
        delta = delta + h * sum(bi * ki for bi, ki in zip(b, kd))
        Y = torch.maximum(Y, torch.maximum(xk.abs().amax(1), delta.abs()))
    return sde.prior_log_prob(xk) + delta, xk, Y


def test_rk45_per_sample_control_meets_its_tolerance():
    seed = fresh_seed()
    torch.manual_seed(seed)
    sde = fs.VPSDE()
    model = fs.ScoreMLP(2, 32, 2, "tanh")
    x = torch.cat([0.1 * torch.randn(12, 2), 6 + torch.randn(12, 2)])  # near the origin and far in the tails
    tol, eps = 1e-6, 1e-5
    got, info = fs.log_prob(model, sde, x, "rk45", rtol=tol, atol=tol, eps=eps, backend="numba", return_info=True)
    nfe = info["nfe"]
    assert nfe.dtype == torch.int64 and torch.all(nfe >= 7) and torch.all((nfe - 1) % 6 == 0)
    assert len(set(nfe.tolist())) > 1, "per-sample control should give different step counts"
    assert nfe[12:].double().mean() != nfe[:12].double().mean()
    # The yardstick: rk4 with 800 steps on the float64 network, its own error estimated by
    # Richardson's rule from 400 steps (rk4: error ~ h^4, so err_800 ~ |r_800 - r_400| / 15).
    fine, x_T, Y = _rk4_path(model, sde, x, 800, eps)
    torch.testing.assert_close(fine, fs.log_prob(model.double(), sde, x.double(), "rk4", steps=800, eps=eps,
                                                 backend="torch"), rtol=1e-12, atol=1e-12)
    coarse = fs.log_prob(model.double(), sde, x.double(), "rk4", steps=400, eps=eps, backend="torch")
    fine_err = (fine - coarse).abs() / 15
    # What the controller admits (C = dim + 1 components): an accepted step has
    # RMS_j(err_j / scale_j) <= 1, so each component's local error estimate is at most
    # sqrt(C) (atol + rtol |y_j|) <= sqrt(C) tol (1 + Y); the propagated 5th-order solution
    # (local extrapolation) errs less than the 4th-order estimate. At most (nfe - 1) / 6 steps
    # are accepted; carried to T without amplification (the probability flow from eps to T
    # contracts x towards the prior), they bound x_T's and delta_T's global errors, and
    # log p = log p_T(x_T) + delta_T weighs x_T's by |grad log p_T| = |x_T| / sigma_T^2.
    # float32 rounding of the network is ~1e-9 of log p here (the fixed-step test bounds it per
    # evaluation), three decades below tol.
    C = x.shape[1] + 1
    admitted = (nfe - 1) / 6 * math.sqrt(C) * tol * (1 + Y)
    bound = admitted * (1 + x_T.norm(dim=1) / sde.prior_std**2) + fine_err
    err = (got - fine).abs()
    assert torch.all(err <= bound), f"seed {seed}: worst err/bound {(err / bound).max():.3g}"
    assert torch.all(bound < 1e-3 * (1 + fine.abs()))  # far below what a wrong tableau entry does


@pytest.mark.skipif(not fs.backends()["cpu"]["available"], reason="extension not built")
def test_rk45_controller_is_the_cpu_kernels():
    """ode.h implements the same controller on float32 states: the step counts agree except
    where an error norm lies within float32 noise of the accept threshold."""
    torch.manual_seed(fresh_seed())
    model = fs.ScoreMLP(2, 32, 2, "tanh")
    x = torch.cat([0.1 * torch.randn(40, 2), 6 + torch.randn(40, 2)])
    for tol in (1e-4, 1e-6):
        _, a = fs.log_prob(model, fs.VPSDE(), x, "rk45", rtol=tol, atol=tol, backend="numba", return_info=True)
        _, b = fs.log_prob(model, fs.VPSDE(), x, "rk45", rtol=tol, atol=tol, backend="cpu", return_info=True)
        assert (a["nfe"] == b["nfe"]).double().mean() >= 0.9


def test_rk45_samples_are_independent_of_their_batch():
    torch.manual_seed(5)
    model = fs.ScoreMLP(2, 24, 2, "silu")
    x = torch.cat([0.1 * torch.randn(9, 2), 5 + torch.randn(9, 2)])
    whole, info = fs.log_prob(model, fs.VESDE(), x, "rk45", backend="numba", return_info=True)
    for i in (0, 4, 9, 17):  # each sample alone: same steps, same bits
        alone, alone_info = fs.log_prob(model, fs.VESDE(), x[i:i + 1], "rk45", backend="numba", return_info=True)
        assert torch.equal(alone, whole[i:i + 1]) and torch.equal(alone_info["nfe"], info["nfe"][i:i + 1])


# -- determinism, fallback, bad input ---------------------------------------------------------------


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_bit_identical_across_thread_counts():
    torch.manual_seed(0)
    model = fs.ScoreMLP(2, 48, 3, "silu", "fourier")
    sde = fs.VESDE()
    x = torch.cat([torch.randn(60, 2), 4 + torch.randn(17, 2)])
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            samples = [fs.sample(model, sde, 333, m, 15, backend="numba", seed=9) for m in ("em", "pc", "ode_heun")]
            logp, info = fs.log_prob(model, sde, x, "rk45", backend="numba", return_info=True)
            samples.append(fs.log_prob(model, sde, x, "rk4", steps=3, trace="hutchinson", backend="numba"))
            runs.append((samples, logp, info["nfe"]))
    finally:
        numba.set_num_threads(before)
    (s1, l1, n1), (s2, l2, n2) = runs
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))
    assert torch.equal(l1, l2) and torch.equal(n1, n2)


def test_auto_falls_back_to_numba_then_torch(monkeypatch):
    torch.manual_seed(1)
    model = fs.ScoreMLP(2, 16, 2)
    want = fs.sample(model, fs.VPSDE(), 20, "pc", 5, backend="numba", seed=4)
    monkeypatch.setattr(cpu_backend, "_core", None)
    monkeypatch.setattr(cpu_backend, "_IMPORT_ERROR", "hidden by the test", raising=False)
    assert not fs.backends()["cpu"]["available"]
    for method in SAMPLE_METHODS:
        program = _plan(model, method).program
        assert resolve("auto", "sample", method, model, program=program) == "numba"
    for method in ("rk45", "rk4"):
        for trace in ("exact", "hutchinson"):
            assert resolve("auto", "log_prob", method, model, trace=trace) == "numba"
    assert torch.equal(fs.sample(model, fs.VPSDE(), 20, "pc", 5, backend="auto", seed=4), want)
    monkeypatch.setattr(numba_backend, "info", lambda: {"available": False, "compiled": False, "detail": "hidden"})
    assert resolve("auto", "sample", "em", model, program=_plan(model, "em").program) == "torch"
    with pytest.raises(RuntimeError, match="backend 'numba' is not available"):
        fs.sample(model, fs.VPSDE(), 2, steps=2, backend="numba")


def _plan(model, method, steps=5, **kw):
    options = dict(snr=0.16, corrector_steps=1, denoise=False)
    options.update(kw)
    return make_sample_plan(model, fs.VPSDE(), 20, method, steps, 1e-3, 4, 0, options["snr"],
                            options["corrector_steps"], options["denoise"])


def test_info_and_declaration():
    entry = fs.backends()["numba"]
    assert entry["available"] is True and entry["compiled"] is False
    major_minor = ".".join(numba.__version__.split(".")[:2])
    assert entry["detail"] == f"numba {major_minor} (JIT, cached)"
    declared = numba_backend.DECLARES
    assert declared.ops == {EVAL, DRAW, LIN} and declared.max_registers == MAX_REGISTERS
    assert declared.log_prob == set(LOG_PROB_METHODS) and declared.traces == set(TRACES)
    model = fs.ScoreMLP(2, 16, 2)
    for method in SAMPLE_METHODS:  # every rule's program, with and without the final step
        for denoise in (False, True):
            program = _plan(model, method, corrector_steps=3, denoise=denoise).program
            assert declared.refuses("numba", "sample", method, fs.pack(model), program) is None


# -- unknown codes and malformed programs raise --------------------------------------------------


def _with_ops(plan, ops, **kw):
    return replace(plan, kernel=replace(plan.kernel, ops=np.asarray(ops, dtype=np.int32), **kw))


def test_malformed_programs_are_refused_before_the_kernel():
    model = fs.ScoreMLP(2, 16, 2)
    plan = _plan(model, "ode_heun", denoise=True).for_kernels(fs.pack(model))
    ops = plan.kernel.ops
    good = numba_backend.sample(model, plan)
    assert good.shape == (20, 2) and torch.isfinite(good).all()
    cases = []
    for col, value, match in [(0, 7, "unknown opcode 7"), (1, 5, "register 5 outside"), (3, 2, "slot 2 outside")]:
        bad = ops.copy()
        bad[0, col] = value  # row 0 is Eval
        cases.append((bad, {}, match))
    lin_row = int(np.flatnonzero(ops[:, 0] == LIN)[0])
    for col, value, match in [(2, 0, "Lin with 0 terms"), (2, 5, "Lin with 5 terms"), (5, 99, "coefficient 99"),
                              (4, -1, "register -1")]:
        bad = ops.copy()
        bad[lin_row, col] = value
        cases.append((bad, {}, match))
    final_eval = int(np.flatnonzero(ops[:, 0] == EVAL)[-1])
    bad = ops.copy()
    bad[final_eval, 3] = 1  # the final program evaluates at eps only: one table row
    cases.append((bad, {}, "slot 1 outside \\[0, 1\\)"))
    draw = np.array([[DRAW, 0, 1, 0] + [-1] * 8], dtype=np.int32)
    cases.append((np.concatenate([ops, draw]), {}, "final part may not draw"))
    cases.append((ops[:, :4], {}, "ops must be int32"))
    cases.append((ops, {"n_registers": MAX_REGISTERS + 1}, "registers"))
    for bad, kw, match in cases:
        with pytest.raises(ValueError, match=match):
            numba_backend.sample(model, _with_ops(plan, bad, **kw))
    with pytest.raises(ValueError, match="times must be"):
        numba_backend.sample(model, replace(plan, times=plan.times[:-1]))


def _net_cases(p):
    """(field changes of a ScoreMLP's program, what the refusal says): each row kind out of its
    arena or parameters, unknown codes, flags where they cannot be."""
    lane0 = p.n_time_ops + p.n_cond_ops
    dense = lane0 + int(np.flatnonzero(p.ops[lane0:, 0] == DENSE)[0])
    unary = lane0 + int(np.flatnonzero(p.ops[lane0:, 0] == UNARY)[0])
    sde_row = int(np.flatnonzero(p.ops[:, 0] == SDE_OP)[0])

    def row(i, col, value):
        ops = p.ops.copy()
        ops[i, col] = value
        return {"ops": ops}

    return [(row(dense, 0, 17), "unknown opcode 17"), (row(dense, 2, p.lane_arena - 1), "out of range"),
            (row(dense, 6, p.params.size), "out of range"), (row(dense, 1, -1), "destination out of its arena"),
            (row(unary, 5, 99), "out of range"), (row(sde_row, 8, 1), "tangent flags"),
            (row(sde_row, 5, SDE_FUNCTIONS["sigma"]), "out of range"), ({"sde_kind": 7}, "unknown SDE kind 7"),
            ({"out": p.lane_arena}, "layout"), ({"ops": p.ops[:, :8]}, "ops must be int32"),
            ({"params": p.params.astype(np.float64)}, "params must be finite float32")]


def test_malformed_network_programs_are_refused_before_the_kernel():
    model = fs.ScoreMLP(2, 16, 2)
    plan = _plan(model, "em").for_kernels(fs.pack(model))
    assert torch.isfinite(numba_backend.sample(model, plan)).all()
    for change, match in _net_cases(plan.kernel.packed):
        bad = replace(plan, kernel=replace(plan.kernel, packed=replace(plan.kernel.packed, **change)))
        with pytest.raises(ValueError, match=match):
            numba_backend.sample(model, bad)


def test_kernels_raise_on_unknown_codes_themselves():
    """The kernels do not fall back to a default for a code they do not know (the wrapper's
    checks bypassed): an unknown opcode (step or network program), SDE kind or log-prob
    method raises."""
    k = numba_backend._k()
    model = fs.ScoreMLP(2, 16, 2)
    plan = _plan(model, "em").for_kernels(fs.pack(model))
    kt = plan.kernel
    net = numba_backend.net_args(kt.packed)
    k0, k1 = numba_backend._seed_words(0)
    out = np.empty((3, 2), dtype=np.float32)
    none = np.zeros((3, 0))

    def run(net, ops):
        k.sample_kernel(net, ops, kt.n_body, kt.n_slots, kt.n_registers, kt.coef, plan.times, 1.0, k0, k1, 0, none,
                        out)

    bad_ops = kt.ops.copy()
    bad_ops[-1, 0] = 3
    with pytest.raises(ValueError, match="unknown opcode"):
        run(net, bad_ops)
    bad_net = net[0].copy()
    bad_net[-1, 0] = 17
    with pytest.raises(ValueError, match="network program: unknown opcode"):
        run((bad_net,) + net[1:], kt.ops)
    x = np.zeros((3, 2))
    x_T, delta, nfe = np.empty((3, 2)), np.empty(3), np.empty(3, dtype=np.int64)
    for sde, method, match in (((9, 0.1, 20.0, 1.0), 0, "unknown SDE kind"),
                               ((0, 0.1, 20.0, 1.0), 9, "unknown log_prob")):
        with pytest.raises(ValueError, match=match):
            k.log_prob_kernel(net, sde, x, none, method, 2, 1e-3, 1e-5, 1e-5, False, k0, k1, 0, x_T, delta, nfe)


def _bad_cases():
    import test_api

    return test_api


def test_bad_input_raises_like_other_backends():
    api = _bad_cases()
    model = api._model()
    for kwargs, exc, match in api.SAMPLE_BAD:
        args = dict(n=4, method="pc", steps=3, backend="numba")
        args.update(kwargs)
        with pytest.raises(exc, match=match):
            fs.sample(model, api.SDE, **args)
    for kwargs, exc, match in api.LOG_PROB_BAD:
        args = dict(method="rk4", steps=2, backend="numba")
        args.update(kwargs)
        with pytest.raises(exc, match=match):
            fs.log_prob(model, api.SDE, api._x(), **args)
    for x, exc, match in api.X_BAD:
        with pytest.raises(exc, match=match):
            fs.log_prob(model, api.SDE, x, method="rk4", steps=2, backend="numba")
    bad = api._model()
    with torch.no_grad():
        bad.layers[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'layers.1.weight' has non-finite values"):
        fs.sample(bad, api.SDE, 3, steps=2, backend="numba")
    with pytest.raises(TypeError, match="sde must be a fastscore SDE"):
        fs.sample(model, "vp", 3, steps=2, backend="numba")

    class Custom(torch.nn.Module):
        dim = 2

        def forward(self, x, t):
            return -x

    with pytest.raises(TypeError, match="ScoreMLP.*backend='torch'"):
        fs.sample(Custom(), api.SDE, 4, steps=2, backend="numba")
    with pytest.raises(TypeError, match="ScoreMLP.*backend='torch'"):
        fs.log_prob(Custom(), api.SDE, api._x(), method="rk4", steps=2, backend="numba")
