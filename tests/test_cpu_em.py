"""The fused C++ Euler–Maruyama kernel against the float64 reference, sample by sample."""

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore import rng
from fastscore.plan import make_sample_plan

from rounding import em_error_bound

pytestmark = pytest.mark.skipif(not fs.backends()["cpu"]["available"], reason="extension not built")

NETS = [  # (width, depth, activation, time_embedding, output scaled by sigma(t))
    (64, 5, "relu", "concat", False),  # seed 002's network
    (33, 2, "tanh", "fourier", True),  # seed 003's kind, odd width (register-block remainder)
    (17, 3, "silu", "concat", False),
    (48, 1, "leaky_relu", "fourier", False),
    (8, 4, "softplus", "concat", True),
]
SDES = [fs.VPSDE(), fs.VESDE(sigma=25.0), fs.SubVPSDE(beta_min=0.2, beta_max=15.0, T=1.0)]


def _noise(plan):
    idx = np.arange(plan.start, plan.start + plan.n)
    return lambda k: torch.from_numpy(rng.normals(plan.seed, idx, k, rng.STREAM_PREDICTOR, plan.dim))


@pytest.mark.parametrize("net", NETS, ids=lambda n: f"{n[2]}-{n[3]}-w{n[0]}d{n[1]}")
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_em_matches_reference_within_rounding_bound(net, sde):
    width, depth, act, emb, scaled = net
    seed = int(np.random.SeedSequence().generate_state(1)[0])  # fresh networks and streams each run
    torch.manual_seed(seed)
    dim = 1 + seed % 3
    model = fs.ScoreMLP(dim, width, depth, act, emb, std_sde=sde if scaled else None)
    n, steps = 37, 40  # n not a multiple of the tile: the last tile is partial
    x = fs.sample(model, sde, n, "em", steps, backend="cpu", seed=seed)
    ref = fs.sample(model.double(), sde, n, "em", steps, backend="torch", seed=seed)
    plan = make_sample_plan(model, sde, n, "em", steps, 1e-3, seed, 0, 0.16, 1, False)
    x0 = sde.prior_std * torch.from_numpy(rng.normals(seed, np.arange(n), 0, rng.STREAM_PRIOR, dim))
    traj, bound = em_error_bound(model, sde, plan, x0, _noise(plan))
    torch.testing.assert_close(traj, ref, rtol=0, atol=0)  # the bound walks the reference's own trajectory
    err = (x.double() - ref).norm(dim=1)
    assert torch.all(err <= bound), f"seed {seed}: worst err/bound {(err / bound).max():.3g}"
    # Power of the test: the bound is rigorous to first order, so it sits 10^2-10^4 above
    # the observed error (worst-case dot-product rounding, norms of Jacobian products). For
    # the typical sample it must still be well below the smallest plausible bug, a time
    # grid shifted by one step (the score evaluated at t_{k+1} instead of t_k).
    shifted = fs.sample(model.double(), sde, n, "em", steps, backend="torch", seed=seed, eps=1e-3 + plan.h)
    assert torch.median(bound / (shifted - ref).norm(dim=1)) < 0.5


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_em_n_and_batch_split(n):
    torch.manual_seed(n)
    model = fs.ScoreMLP(2, 64, 5)
    sde = fs.VPSDE()
    x = fs.sample(model, sde, n, "em", 20, backend="cpu", seed=11)
    ref = fs.sample(model.double(), sde, n, "em", 20, backend="torch", seed=11)
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert (x.double() - ref).abs().max() < 1e-4 * ref.abs().max()
    # sample i depends only on (seed, i, plan): any split reproduces the same bits
    a = fs.sample(model, sde, n // 3, "em", 20, backend="cpu", seed=11)
    b = fs.sample(model, sde, n - n // 3, "em", 20, backend="cpu", seed=11, start=n // 3)
    assert torch.equal(torch.cat([a, b]), x)


def test_em_different_seeds_differ():
    model = fs.ScoreMLP(2, 16, 2)
    a = fs.sample(model, fs.VPSDE(), 50, "em", 10, backend="cpu", seed=1)
    b = fs.sample(model, fs.VPSDE(), 50, "em", 10, backend="cpu", seed=2)
    assert not torch.isclose(a, b).any()
