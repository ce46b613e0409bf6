"""The native likelihood kernels (C++ and Numba): exact traces against autograd Jacobians,
per-sample rk45, convergence orders; the C++ fixed-step solve against the reference (the
Numba one, with its float64 state, has its own bound in test_numba.py)."""

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore import rng
from fastscore.backends import reference

from cases import ACTIVATIONS, NATIVE_BACKENDS, fresh_seed, score_trace
from rounding import mlp_error_bound, trace_error_bound

pytestmark = pytest.mark.skipif(not NATIVE_BACKENDS, reason="no native backend here")
backends = pytest.mark.parametrize("backend", NATIVE_BACKENDS)
needs_cpu = pytest.mark.skipif("cpu" not in NATIVE_BACKENDS, reason="extension not built")


@backends
@pytest.mark.parametrize("narrow", [False, True], ids=["wide", "narrow"])
@pytest.mark.parametrize("dim", [1, 2, 3, 5, 8, 16])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_exact_trace_matches_autograd_jacobian(backend, dim, act, narrow):
    if narrow and dim == 1:
        pytest.skip("no network is narrower than one dimension")
    seed = fresh_seed()
    torch.manual_seed(seed)
    emb = "fourier" if seed % 2 else "concat"
    # narrow: hidden width < dim, so the output tangents are longer than the hidden ones (their
    # buffers once overflowed there)
    width = 1 + seed % (dim - 1) if narrow else 24 + seed % 17
    model = fs.ScoreMLP(dim, width, 1 + seed % 3, act, emb, std_sde=fs.VPSDE() if seed % 3 == 0 else None)
    x = 2 * torch.randn(50, dim)
    t = 0.05 + 0.9 * torch.rand(()).item()
    s, tr = score_trace(backend, model, x.numpy(), t)
    md = model.double()
    jac = torch.func.vmap(torch.func.jacrev(lambda xi: md(xi[None], t)[0]))(x.double())
    want = jac.diagonal(dim1=1, dim2=2).sum(1)
    torch.testing.assert_close(reference.divergence(md, x.double(), t)[1], want, rtol=1e-12, atol=1e-12)
    dirs = torch.eye(dim, dtype=torch.float64).expand(50, dim, dim)
    tr_bound_ref, bound, kinked = trace_error_bound(model, x, t, dirs)
    torch.testing.assert_close(tr_bound_ref, want, rtol=1e-12, atol=1e-12)  # the bound's own pass is the trace
    err = (torch.from_numpy(tr).double() - want).abs()
    ok = ~kinked
    assert ok.sum() >= 45, "too many samples sit on a ReLU kink for a meaningful test"
    assert torch.all(err[ok] <= bound[ok]), f"seed {seed}: worst err/bound {(err[ok] / bound[ok]).max():.3g}"
    # the score from the same pass is the float32 forward pass
    s_ref, s_bound = mlp_error_bound(model, x, t)
    assert torch.all((torch.from_numpy(s).double() - s_ref).norm(dim=1) <= s_bound)


@backends
def test_hutchinson_trace_is_the_probe_quadratic_form(backend):
    torch.manual_seed(fresh_seed())
    dim, n = 6, 40
    model = fs.ScoreMLP(dim, 32, 3, "tanh")
    x = torch.randn(n, dim)
    _, tr = score_trace(backend, model, x.numpy(), 0.4, "hutchinson", 17)
    v = torch.from_numpy(rng.rademacher(17, np.arange(n), 0, dim))
    md = model.double()
    jac = torch.func.vmap(torch.func.jacrev(lambda xi: md(xi[None], 0.4)[0]))(x.double())
    want = torch.einsum("ni,nij,nj->n", v, jac, v)
    _, bound, _ = trace_error_bound(model, x, 0.4, v[:, None, :])
    assert torch.all((torch.from_numpy(tr).double() - want).abs() <= bound)


@needs_cpu
@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
@pytest.mark.parametrize("sde", [fs.VPSDE(), fs.VESDE(), fs.SubVPSDE()], ids=lambda s: type(s).__name__)
def test_cpu_fixed_step_log_prob_matches_reference(method, sde):
    torch.manual_seed(fresh_seed())
    model = fs.ScoreMLP(2, 32, 3, "silu", "fourier")
    x = torch.randn(37, 2)
    got, info = fs.log_prob(model, sde, x, method, steps=16, backend="cpu", return_info=True)
    ref, ref_info = fs.log_prob(model.double(), sde, x.double(), method, steps=16, backend="torch", return_info=True)
    assert torch.equal(info["nfe"], ref_info["nfe"])
    # float32 evaluation of the same steps: each of the 16 x stages evaluations changes delta by
    # h g^2/2 tr with a relative rounding error <= ~1e-5 (the trace bound above, ~1e-6 observed,
    # times the condition of the sum), and log p_T(x_T) carries |x_T|^2/2 with x_T off by
    # ~steps x 1e-7 relative: together well under 1e-4 of |log p| + 1e-4.
    assert torch.all((got - ref).abs() <= 1e-4 * ref.abs() + 1e-4), (got - ref).abs().max()


@backends
def test_rk45_per_sample_control(backend):
    torch.manual_seed(fresh_seed())
    sde = fs.VPSDE()
    model = fs.ScoreMLP(2, 32, 2, "tanh")
    x = torch.cat([0.1 * torch.randn(20, 2), 6 + torch.randn(20, 2)])  # near the origin and far out
    tol = 1e-6
    got, info = fs.log_prob(model, sde, x, "rk45", rtol=tol, atol=tol, backend=backend, return_info=True)
    fine = fs.log_prob(model.double(), sde, x.double(), "rk4", steps=2000, backend="torch")
    # a local tolerance of 1e-6 per unit of |y| gives a global error of a few tol x the
    # number of accepted steps' error growth; float32 state adds ~1e-6 relative of |log p|
    assert torch.all((got - fine).abs() <= 100 * tol * (1 + fine.abs()) + 1e-5 * fine.abs())
    nfe = info["nfe"]
    assert len(set(nfe.tolist())) > 1, "per-sample control should give different step counts"
    assert nfe.dtype == torch.int64 and torch.all(nfe >= 7) and torch.all((nfe - 1) % 6 == 0)


@backends
@pytest.mark.parametrize("method", ["rk45", "heun"])
def test_a_point_does_not_depend_on_its_batch(backend, method):
    """A point's log p and evaluation count are its own: the cpu kernel hands a finished lane the
    next point (lanes of one tile then hold points at different stages) and runs a call of a few
    points one at a time (lane type float, rows vectorised over outputs), the numba one does
    neither; any split of the batch gives the same bits, a condition per point included.
    (Hutchinson probes follow the index within the call; tests/test_determinism.py holds those
    across thread counts, which deal the points to lanes differently.)"""
    seed = fresh_seed()
    torch.manual_seed(seed)
    model = fs.ScoreMLP(2, 24, 2, "silu", cond_dim=1)
    x = torch.cat([0.1 * torch.randn(40, 2), 4 + torch.randn(37, 2)])  # easy and hard points mixed
    c = torch.randn(77, 1)
    run = lambda a, b: fs.log_prob(model, fs.VPSDE(), x[a:b], method, steps=9, backend=backend,  # noqa: E731
                                   cond=c[a:b], return_info=True)
    whole, info = run(0, 77)
    parts = [run(a, b) for a, b in ((0, 1), (1, 3), (3, 30), (30, 77))]  # lone, lone, tiles, tiles
    assert torch.equal(torch.cat([p[0] for p in parts]), whole)
    assert torch.equal(torch.cat([p[1]["nfe"] for p in parts]), info["nfe"])
    assert method == "heun" or len(set(info["nfe"].tolist())) > 1


@backends
def test_rk45_reports_failure_instead_of_garbage(backend):
    model = fs.ScoreMLP(1, 8, 1)
    # s(x) = -1e5 x: the VE flow decays at rate 5e4 g(t)^2, so explicit rk45 needs ~1e6 steps (stable
    # h ~ 3 / rate), beyond the attempt limit (1e5); trial steps that overflow are rejected
    stiff = fs.ScoreMLP(1, 2, 1)
    with torch.no_grad():
        for p in stiff.parameters():
            p.zero_()
        stiff.layers[0].weight[:, 0] = torch.tensor([1.0, -1.0])
        stiff.layers[1].weight[0] = torch.tensor([-1e5, 1e5])
    # an honest failure either way: the attempt limit ("gave up") or a step-size underflow
    # reported as a non-finite result; never a number
    with pytest.raises((RuntimeError, FloatingPointError), match="rk45 gave up|not finite"):
        fs.log_prob(stiff, fs.VESDE(), torch.randn(3, 1), "rk45", backend=backend)
    with pytest.raises(ValueError, match="rtol must be >= 1e-12"):  # below it: refused up front
        fs.log_prob(model, fs.VESDE(), torch.randn(3, 1), "rk45", rtol=1e-30, atol=1e-30, backend=backend)


# (method, coarse steps, expected order, allowance): the slope of the float64 solver (the
# reference backend: same grid, same stages) over the pair is within the allowance of the
# order, the pre-asymptotic terms (rk4 at 8 / 16 steps: 3.73-4.05 over 40 seeds)
ORDERS = [("euler", 32, 1, 0.1), ("heun", 16, 2, 0.15), ("rk4", 8, 4, 0.4)]


@backends
@pytest.mark.parametrize("method,steps,order,allowance", ORDERS)
def test_convergence_order(backend, method, steps, order, allowance):
    """The kernel converges at its solver's order: the solver in float64 has the order, and the
    kernel is that solver up to float32 rounding below the truncation error at both steps. Its own
    slope is then the solver's within log2((1 + a) / (1 - b)) (a, b: rounding over truncation at
    the two steps; |err - err64| <= rounding point by point). Measuring the float32 slope alone
    failed when a fresh seed put rk4's finer error near the float32 floor (3.58 against 4 +- 0.4:
    rounding moves that slope by up to 0.23 on its own)."""
    torch.manual_seed(fresh_seed())
    model = fs.ScoreMLP(2, 32, 2, "tanh")  # smooth: the classical orders apply
    sde = fs.VESDE(sigma=5.0)
    x = torch.randn(64, 2)
    exact = fs.log_prob(model.double(), sde, x.double(), "rk4", steps=1024, backend="torch", eps=1e-2)
    pair = (steps, 2 * steps)
    kernel = [fs.log_prob(model, sde, x, method, steps=s, backend=backend, eps=1e-2).double() for s in pair]
    solver = [fs.log_prob(model.double(), sde, x.double(), method, steps=s, backend="torch", eps=1e-2) for s in pair]
    err64 = [(f - exact).abs().mean().item() for f in solver]
    order64 = np.log2(err64[0] / err64[1])
    assert abs(order64 - order) <= allowance, f"{method} in float64: errors {err64}, order {order64:.2f}"
    # rk4's finer step: rounding is 2-33% of the truncation error over 30 seeds; a kernel of a lower
    # order (heun for rk4: 2,000-8,000x; euler for heun: 30-70x, at these steps) is off by more
    rounding = [(k - f).abs().mean().item() for k, f in zip(kernel, solver)]
    assert all(r < e for r, e in zip(rounding, err64)), f"{method}: kernel - solver {rounding}, truncation {err64}"
