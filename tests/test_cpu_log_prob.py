"""The fused CPU likelihood kernel: exact traces against autograd Jacobians, and whole
log-likelihoods against the float64 reference."""

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore import _core, rng
from fastscore.backends.cpu import layout

from rounding import trace_error_bound

pytestmark = pytest.mark.skipif(not fs.backends()["cpu"]["available"], reason="extension not built")

ACTIVATIONS = ["relu", "tanh", "silu", "leaky_relu", "softplus"]


def _fresh_seed():
    return int(np.random.SeedSequence().generate_state(1)[0])


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 8, 16])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_exact_trace_matches_autograd_jacobian(dim, act):
    seed = _fresh_seed()
    torch.manual_seed(seed)
    emb = "fourier" if seed % 2 else "concat"
    model = fs.ScoreMLP(dim, 24 + seed % 17, 1 + seed % 3, act, emb, std_sde=fs.VPSDE() if seed % 3 == 0 else None)
    x = 2 * torch.randn(50, dim)
    t = 0.05 + 0.9 * torch.rand(()).item()
    p = fs.pack(model)
    s, tr = _core.score_trace(p.weights, layout(p), x.numpy(), t, False, 0)
    md = model.double()
    jac = torch.func.vmap(torch.func.jacrev(lambda xi: md(xi[None], t)[0]))(x.double())
    want = jac.diagonal(dim1=1, dim2=2).sum(1)
    dirs = torch.eye(dim, dtype=torch.float64).expand(50, dim, dim)
    tr_bound_ref, bound, kinked = trace_error_bound(model, x, t, dirs)
    torch.testing.assert_close(tr_bound_ref, want, rtol=1e-12, atol=1e-12)  # the bound's own pass is the trace
    err = (torch.from_numpy(tr).double() - want).abs()
    ok = ~kinked
    assert ok.sum() >= 45, "too many samples sit on a ReLU kink for a meaningful test"
    assert torch.all(err[ok] <= bound[ok]), f"seed {seed}: worst err/bound {(err[ok] / bound[ok]).max():.3g}"
    # the score from the same pass is the forward pass
    torch.testing.assert_close(torch.from_numpy(s).double(), md(x.double(), t).detach(), rtol=1e-4, atol=1e-5)


def test_hutchinson_trace_is_the_probe_quadratic_form():
    torch.manual_seed(_fresh_seed())
    dim, n = 6, 40
    model = fs.ScoreMLP(dim, 32, 3, "tanh")
    x = torch.randn(n, dim)
    p = fs.pack(model)
    _, tr = _core.score_trace(p.weights, layout(p), x.numpy(), 0.4, True, 17)
    v = torch.from_numpy(rng.rademacher(17, np.arange(n), 0, dim))
    md = model.double()
    jac = torch.func.vmap(torch.func.jacrev(lambda xi: md(xi[None], 0.4)[0]))(x.double())
    want = torch.einsum("ni,nij,nj->n", v, jac, v)
    _, bound, _ = trace_error_bound(model, x, 0.4, v[:, None, :])
    assert torch.all((torch.from_numpy(tr).double() - want).abs() <= bound)


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
@pytest.mark.parametrize("sde", [fs.VPSDE(), fs.VESDE(), fs.SubVPSDE()], ids=lambda s: type(s).__name__)
def test_fixed_step_log_prob_matches_reference(method, sde):
    torch.manual_seed(_fresh_seed())
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


def test_rk45_per_sample_control():
    torch.manual_seed(_fresh_seed())
    sde = fs.VPSDE()
    model = fs.ScoreMLP(2, 32, 2, "tanh")
    x = torch.cat([0.1 * torch.randn(20, 2), 6 + torch.randn(20, 2)])  # near the origin and far out
    tol = 1e-6
    got, info = fs.log_prob(model, sde, x, "rk45", rtol=tol, atol=tol, backend="cpu", return_info=True)
    fine = fs.log_prob(model.double(), sde, x.double(), "rk4", steps=2000, backend="torch")
    # a local tolerance of 1e-6 per unit of |y| gives a global error of a few tol x the
    # number of accepted steps' error growth; float32 state adds ~1e-6 relative of |log p|
    assert torch.all((got - fine).abs() <= 100 * tol * (1 + fine.abs()) + 1e-5 * fine.abs())
    nfe = info["nfe"]
    assert len(set(nfe.tolist())) > 1, "per-sample control should give different step counts"
    assert nfe.dtype == torch.int64 and torch.all(nfe >= 7) and torch.all((nfe - 1) % 6 == 0)


def test_rk45_reports_failure_instead_of_garbage():
    model = fs.ScoreMLP(1, 8, 1)
    with pytest.raises(RuntimeError, match="rk45 gave up"):
        # an absurd tolerance cannot be met in float32 within the attempt limit
        fs.log_prob(model, fs.VESDE(), torch.randn(3, 1), "rk45", rtol=1e-30, atol=1e-30, backend="cpu")


# (method, coarse steps, expected order, allowance): the finest pair still in the asymptotic
# regime and at least ~5x above the float32 floor of log p (~1e-6 of |log p|), where the
# measured slope is within the allowance of the order (pre-asymptotic terms + rounding)
ORDERS = [("euler", 32, 1, 0.1), ("heun", 16, 2, 0.15), ("rk4", 8, 4, 0.4)]


@pytest.mark.parametrize("method,steps,order,allowance", ORDERS)
def test_convergence_order(method, steps, order, allowance):
    torch.manual_seed(_fresh_seed())
    model = fs.ScoreMLP(2, 32, 2, "tanh")  # smooth: the classical orders apply
    sde = fs.VESDE(sigma=5.0)
    x = torch.randn(64, 2)
    exact = fs.log_prob(model.double(), sde, x.double(), "rk4", steps=1024, backend="torch", eps=1e-2)
    err = [(fs.log_prob(model, sde, x, method, steps=s, backend="cpu", eps=1e-2) - exact).abs().mean().item()
           for s in (steps, 2 * steps)]
    measured = np.log2(err[0] / err[1])
    assert abs(measured - order) <= allowance, f"{method}: errors {err}, order {measured:.2f}"
