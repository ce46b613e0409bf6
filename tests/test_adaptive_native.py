"""The per-sample adaptive samplers in the C++ kernels against the reference."""

import pytest
import torch

import fastscore as fs

from cases import fresh_seed

pytestmark = pytest.mark.skipif(not fs.backends()["cpu"]["available"], reason="no compiled cpu backend here")


@pytest.mark.parametrize("sde", [fs.VPSDE(), fs.VESDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("denoise", [False, True])
def test_ode_rk45_matches_the_reference_step_for_step(sde, denoise):
    """The float32 kernel takes the reference's step sequence on most samples (a decision can
    flip where err is within rounding of 1: measured 36-40 of 40), and there its sample is the
    reference's to the tolerance's order (measured <= 5e-4 relative at rtol = 1e-3)."""
    seed = fresh_seed()
    torch.manual_seed(seed)
    model, n, tol = fs.ScoreMLP(2, 16, 2, "silu"), 40, 1e-3
    kw = dict(backend="cpu", seed=seed, rtol=tol, atol=tol, return_info=True, denoise=denoise)
    x, info = fs.sample(model, sde, n, "ode_rk45", **kw)
    ref, rinfo = fs.sample(model.double(), sde, n, "ode_rk45", **{**kw, "backend": "torch"})
    same = (info["accepted"] == rinfo["accepted"]) & (info["rejected"] == rinfo["rejected"])
    assert int(same.sum()) >= 0.8 * n
    assert torch.equal(info["nfe"], 1 + 6 * (info["accepted"] + info["rejected"]) + int(denoise))
    rel = (x.double() - ref).norm(dim=1) / (1 + ref.norm(dim=1))
    assert float(rel[same].max()) < 10 * tol


def test_em_adaptive_counts_and_batch_independence():
    """Each sample's noise is its Brownian tree, so a sample is bit-identical in any batch
    split; nfe = 2 per attempt. (Against the reference the float32 step sizes move the query
    times of a rough path, so trajectories agree in law, not to rounding: see the note in
    fastscore/sampling.py.)"""
    torch.manual_seed(1)
    model, sde = fs.ScoreMLP(2, 16, 2, "silu"), fs.VPSDE()
    x, info = fs.sample(model, sde, 20, "em_adaptive", backend="cpu", seed=4, rtol=0.05, atol=0.05, return_info=True)
    assert torch.equal(info["nfe"], 2 * (info["accepted"] + info["rejected"]))
    a = fs.sample(model, sde, 7, "em_adaptive", backend="cpu", seed=4, rtol=0.05, atol=0.05)
    b = fs.sample(model, sde, 13, "em_adaptive", backend="cpu", seed=4, rtol=0.05, atol=0.05, start=7)
    assert torch.equal(torch.cat([a, b]), x)
    one = fs.sample(model, sde, 1, "em_adaptive", backend="cpu", seed=4, rtol=0.05, atol=0.05, start=11)
    assert torch.equal(one[0], x[11])


def test_adaptive_requests_are_checked():
    model, sde = fs.ScoreMLP(2, 8, 1), fs.VPSDE()
    with pytest.raises(ValueError, match="takes no grid"):
        fs.sample(model, sde, 3, "ode_rk45", grid="karras")
    with pytest.raises(ValueError, match="rtol and atol set the adaptive"):
        fs.sample(model, sde, 3, "em", rtol=1e-3)
    with pytest.raises(ValueError, match="rtol"):
        fs.sample(model, sde, 3, "em_adaptive", rtol=0.0)
