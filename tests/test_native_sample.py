"""The native samplers (C++ and Numba) against the float64 reference, sample by sample,
under the derived rounding bound of tests/rounding.py."""

import pytest
import torch

import fastscore as fs

from cases import METHODS, NATIVE_BACKENDS, NETS, SDES, fresh_seed, method_id, model_for, net_id
from rounding import sample_bound

pytestmark = pytest.mark.skipif(not NATIVE_BACKENDS, reason="no native backend here")
backends = pytest.mark.parametrize("backend", NATIVE_BACKENDS)


@backends
@pytest.mark.parametrize("method", METHODS, ids=method_id)
@pytest.mark.parametrize("net", NETS, ids=net_id)
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_sampler_matches_reference_within_rounding_bound(backend, method, net, sde):
    name, steps, options = method
    seed = fresh_seed()
    torch.manual_seed(seed)
    model = model_for(net, 1 + seed % 3, sde)
    n = 21  # not a multiple of the tile: the last tile is partial
    x = fs.sample(model, sde, n, name, steps, backend=backend, seed=seed, **options)
    ref = fs.sample(model.double(), sde, n, name, steps, backend="torch", seed=seed, **options)
    assert x.shape == (n, model.dim) and x.dtype == torch.float32
    traj, bound = sample_bound(model, sde, name, steps, options, n, seed)
    torch.testing.assert_close(traj, ref, rtol=1e-12, atol=0)  # the bound walks the reference's own trajectory
    err = (x.double() - ref).norm(dim=1)
    assert torch.all(err <= bound), f"seed {seed}: worst err/bound {(err / bound).max():.3g}"
    # Power of the test: the bound is rigorous to first order, so it sits 10^2-10^4 above
    # the observed error (worst-case dot-product rounding, norms of Jacobian products); it
    # still resolves deviations of 1% of a sample's size (measured: 2e-5 to 3e-3), while
    # a wrong stream, index, weight or coefficient moves samples by O(1) of their size.
    assert torch.median(bound / ref.norm(dim=1)) < 1e-2


@backends
@pytest.mark.parametrize("method", METHODS[:4], ids=method_id)
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_sizes_and_batch_splits(backend, n, method):
    name, _, options = method
    torch.manual_seed(n)
    model = fs.ScoreMLP(2, 64, 5)
    sde, steps = fs.VPSDE(), 10
    x = fs.sample(model, sde, n, name, steps, backend=backend, seed=11, **options)
    ref = fs.sample(model.double(), sde, n, name, steps, backend="torch", seed=11, **options)
    assert x.shape == (n, 2) and x.dtype == torch.float32
    _, bound = sample_bound(model, sde, name, steps, options, n, 11)
    assert torch.all((x.double() - ref).norm(dim=1) <= bound)
    # sample i depends only on (seed, i, plan): any split reproduces the same bits
    a = fs.sample(model, sde, n // 3, name, steps, backend=backend, seed=11, **options)
    b = fs.sample(model, sde, n - n // 3, name, steps, backend=backend, seed=11, start=n // 3, **options)
    assert torch.equal(torch.cat([a, b]), x)


@backends
def test_different_seeds_differ_and_start_offsets_the_stream(backend):
    model = fs.ScoreMLP(2, 16, 2)
    a = fs.sample(model, fs.VPSDE(), 50, "em", 10, backend=backend, seed=1)
    b = fs.sample(model, fs.VPSDE(), 50, "em", 10, backend=backend, seed=2)
    assert not torch.isclose(a, b).any()
    c = fs.sample(model, fs.VPSDE(), 40, "em", 10, backend=backend, seed=1, start=10)
    assert torch.equal(c, a[10:])


@backends
@pytest.mark.parametrize("method", METHODS, ids=method_id)
@pytest.mark.parametrize("net", NETS, ids=net_id)
def test_a_lone_sample_is_its_lane_of_a_tile(backend, method, net):
    """A call of a few samples runs them one at a time (the cpu kernel: lane type float, dense
    rows vectorised over their outputs); each is bit for bit the sample a full tile gives at its
    index, whatever the width's remainder blocks."""
    name, steps, options = method
    seed = fresh_seed()
    sde = SDES[seed % len(SDES)]
    torch.manual_seed(seed)
    model = model_for(net, 1 + seed % 3, sde)
    x = fs.sample(model, sde, 21, name, steps, backend=backend, seed=seed, **options)
    for start, n in ((0, 1), (5, 1), (18, 3), (20, 1)):
        assert torch.equal(fs.sample(model, sde, n, name, steps, backend=backend, seed=seed, start=start, **options),
                           x[start:start + n]), (start, n)


@backends
def test_a_lone_conditional_sample_is_its_lane_of_a_tile(backend):
    seed = fresh_seed()
    torch.manual_seed(seed)
    model, sde = fs.ScoreMLP(2, 40, 3, "silu", cond_dim=3), fs.VPSDE()
    cond = torch.randn(17, 3)
    x = fs.sample(model, sde, 17, "pc", 12, backend=backend, seed=seed, cond=cond)
    for i in (0, 9, 16):
        assert torch.equal(fs.sample(model, sde, 1, "pc", 12, backend=backend, seed=seed, start=i, cond=cond[i]), x[i:i + 1])
