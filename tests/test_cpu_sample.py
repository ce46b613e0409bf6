"""The fused C++ samplers against the float64 reference, sample by sample."""

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore import rng
from fastscore.plan import make_sample_plan

from rounding import step_error_bound

pytestmark = pytest.mark.skipif(not fs.backends()["cpu"]["available"], reason="extension not built")

NETS = [  # (width, depth, activation, time_embedding, output scaled by sigma(t))
    (64, 5, "relu", "concat", False),  # seed 002's network
    (33, 2, "tanh", "fourier", True),  # seed 003's kind, odd width (register-block remainder)
    (17, 3, "silu", "concat", False),
    (48, 1, "leaky_relu", "fourier", False),
    (8, 4, "softplus", "concat", True),
]
SDES = [fs.VPSDE(), fs.VESDE(sigma=25.0), fs.SubVPSDE(beta_min=0.2, beta_max=15.0, T=1.0)]


METHODS = [  # (method, steps, options)
    ("em", 40, {}),
    ("pc", 20, {"corrector_steps": 2}),
    ("ode_euler", 40, {"denoise": True}),
    ("ode_heun", 20, {}),
]


def _noise(plan, stream):
    idx = np.arange(plan.start, plan.start + plan.n)
    return lambda k: torch.from_numpy(rng.normals(plan.seed, idx, k, stream, plan.dim))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m[0])
@pytest.mark.parametrize("net", NETS, ids=lambda n: f"{n[2]}-{n[3]}-w{n[0]}d{n[1]}")
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_sampler_matches_reference_within_rounding_bound(method, net, sde):
    name, steps, options = method
    width, depth, act, emb, scaled = net
    seed = int(np.random.SeedSequence().generate_state(1)[0])  # fresh networks and streams each run
    torch.manual_seed(seed)
    dim = 1 + seed % 3
    model = fs.ScoreMLP(dim, width, depth, act, emb, std_sde=sde if scaled else None)
    n = 21  # not a multiple of the tile: the last tile is partial
    x = fs.sample(model, sde, n, name, steps, backend="cpu", seed=seed, **options)
    ref = fs.sample(model.double(), sde, n, name, steps, backend="torch", seed=seed, **options)
    plan = make_sample_plan(model, sde, n, name, steps, 1e-3, seed, 0, 0.16, options.get("corrector_steps", 1),
                            options.get("denoise", False))
    x0 = sde.prior_std * torch.from_numpy(rng.normals(seed, np.arange(n), 0, rng.STREAM_PRIOR, dim))
    correctors = [_noise(plan, rng.STREAM_CORRECTOR + j) for j in range(plan.corrector_steps if name == "pc" else 0)]
    traj, bound = step_error_bound(model, sde, plan, x0, _noise(plan, rng.STREAM_PREDICTOR), correctors)
    torch.testing.assert_close(traj, ref, rtol=1e-12, atol=0)  # the bound walks the reference's own trajectory
    err = (x.double() - ref).norm(dim=1)
    assert torch.all(err <= bound), f"seed {seed}: worst err/bound {(err / bound).max():.3g}"
    # Power of the test: the bound is rigorous to first order, so it sits 10^2-10^4 above
    # the observed error (worst-case dot-product rounding, norms of Jacobian products); it
    # still resolves deviations of 1% of a sample's size (measured: 2e-5 to 3e-3), while
    # a wrong stream, index, weight or coefficient moves samples by O(1) of their size.
    assert torch.median(bound / ref.norm(dim=1)) < 1e-2


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m[0])
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_sizes_and_batch_splits(n, method):
    name, _, options = method
    torch.manual_seed(n)
    model = fs.ScoreMLP(2, 64, 5)
    sde, steps = fs.VPSDE(), 10
    x = fs.sample(model, sde, n, name, steps, backend="cpu", seed=11, **options)
    ref = fs.sample(model.double(), sde, n, name, steps, backend="torch", seed=11, **options)
    assert x.shape == (n, 2) and x.dtype == torch.float32
    plan = make_sample_plan(model, sde, n, name, steps, 1e-3, 11, 0, 0.16, options.get("corrector_steps", 1),
                            options.get("denoise", False))
    x0 = torch.from_numpy(rng.normals(11, np.arange(n), 0, rng.STREAM_PRIOR, 2))
    correctors = [_noise(plan, rng.STREAM_CORRECTOR + j) for j in range(plan.corrector_steps if name == "pc" else 0)]
    _, bound = step_error_bound(model, sde, plan, x0, _noise(plan, rng.STREAM_PREDICTOR), correctors)
    assert torch.all((x.double() - ref).norm(dim=1) <= bound)
    # sample i depends only on (seed, i, plan): any split reproduces the same bits
    a = fs.sample(model, sde, n // 3, name, steps, backend="cpu", seed=11, **options)
    b = fs.sample(model, sde, n - n // 3, name, steps, backend="cpu", seed=11, start=n // 3, **options)
    assert torch.equal(torch.cat([a, b]), x)


def test_em_different_seeds_differ():
    model = fs.ScoreMLP(2, 16, 2)
    a = fs.sample(model, fs.VPSDE(), 50, "em", 10, backend="cpu", seed=1)
    b = fs.sample(model, fs.VPSDE(), 50, "em", 10, backend="cpu", seed=2)
    assert not torch.isclose(a, b).any()
