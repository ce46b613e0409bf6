"""Conditional networks: sample(..., cond=c) and log_prob(..., cond=c) with one condition per
sample [n, cond_dim] or one for all [cond_dim], on every backend, against the float64
reference running the module itself; n conditions in one run equal n single-condition runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore.backends import cpu as cpu_backend
from fastscore.plan import make_sample_plan

from cases import fresh_seed
from rounding import sample_bound

core = cpu_backend._core
NATIVE = [b for b in ("cpu", "numba") if fs.backends()[b]["available"]]
METHODS = [("em", 12, {}), ("pc", 6, {"corrector_steps": 1}), ("ode_heun", 8, {"denoise": True})]
C_DIM = 3


def _model(seed: int) -> fs.ScoreMLP:
    torch.manual_seed(seed)
    model = fs.ScoreMLP(2, 32, 2, "silu", "fourier", cond_dim=C_DIM, std_sde=fs.VPSDE())
    with torch.no_grad():  # a condition that matters: its columns as large as the others
        model.layers[0].weight[:, -C_DIM:].mul_(3.0)
    return model


def _emulate_sample(model, sde, n, method, steps, seed, cond, **options):
    plan = make_sample_plan(model, sde, n, method, steps, 1e-3, seed, 0, 0.16, options.get("corrector_steps", 1),
                            options.get("denoise", False)).for_kernels(fs.pack(model))
    out = core.emulate_sample(*cpu_backend.net_args(plan.kernel.packed), *cpu_backend.program_args(plan),
                              cond.double().numpy(), n, seed, 0, True)
    return torch.from_numpy(out)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m[0])
@pytest.mark.parametrize("backend", [*NATIVE, "emulate"])
def test_conditional_sampling_matches_the_reference_module(backend, method):
    if backend == "emulate" and core is None:
        pytest.skip("extension not built")
    name, steps, options = method
    seed = fresh_seed()
    model, sde, n = _model(seed), fs.VPSDE(), 37
    cond = torch.randn(n, C_DIM, dtype=torch.float64)
    if backend == "emulate":
        got = _emulate_sample(model, sde, n, name, steps, seed, cond, **options)
    else:
        got = fs.sample(model, sde, n, name, steps, backend=backend, seed=seed, cond=cond, **options)
    ref = fs.sample(model.double(), sde, n, name, steps, backend="torch", seed=seed, cond=cond, **options)
    _, bound = sample_bound(model, sde, name, steps, options, n, seed, cond)
    err = (got.double() - ref).norm(dim=1)
    assert torch.all(err <= bound), f"seed {seed}: worst err/bound {(err / bound).max():.3g}"
    # the condition is used: the same samples under other conditions end elsewhere
    other = fs.sample(model.double(), sde, n, name, steps, backend="torch", seed=seed, cond=cond.roll(1, 0), **options)
    assert torch.all((other - ref).norm(dim=1) > bound)


@pytest.mark.parametrize("backend", [*NATIVE, "torch"])
def test_n_conditions_equal_n_single_condition_runs(backend):
    """Amortised sampling: sample i of one run with conditions c_0 .. c_{n-1} is sample i of a
    run with the single condition c_i (start = i): bit for bit on the kernels, to float64
    rounding on the reference (batched and single matrix products may round differently)."""
    seed = fresh_seed()
    model, sde, n = _model(seed), fs.VESDE(), 19
    if backend == "torch":
        model = model.double()
    cond = torch.randn(n, C_DIM)
    whole = fs.sample(model, sde, n, "pc", 5, backend=backend, seed=seed, cond=cond)
    for i in range(n):
        one = fs.sample(model, sde, 1, "pc", 5, backend=backend, seed=seed, start=i, cond=cond[i])
        if backend == "torch":
            torch.testing.assert_close(one[0], whole[i], rtol=1e-12, atol=1e-12)
        else:
            assert torch.equal(one[0], whole[i]), (i, seed)
    logp = fs.log_prob(model, sde, whole, "rk45", backend=backend, cond=cond)
    for i in range(0, n, 6):
        one = fs.log_prob(model, sde, whole[i:i + 1], "rk45", backend=backend, cond=cond[i])
        if backend == "torch":  # scipy's step control is per batch: one point takes its own steps
            continue
        assert torch.equal(one[0], logp[i]), (i, seed)


@pytest.mark.parametrize("method", ["heun", "rk4"])
@pytest.mark.parametrize("backend", NATIVE)
def test_conditional_log_prob_matches_the_reference_module(backend, method):
    seed = fresh_seed()
    model, sde = _model(seed), fs.SubVPSDE()
    x = torch.randn(29, 2)
    cond = torch.randn(29, C_DIM)
    got = fs.log_prob(model, sde, x, method, steps=12, backend=backend, cond=cond)
    ref = fs.log_prob(model.double(), sde, x.double(), method, steps=12, backend="torch", cond=cond)
    # as test_native_log_prob.py::test_cpu_fixed_step_log_prob_matches_reference
    assert torch.all((got - ref).abs() <= 1e-4 * ref.abs() + 1e-4), f"seed {seed}: {(got - ref).abs().max()}"
    broadcast = fs.log_prob(model, sde, x[:5], method, steps=12, backend=backend, cond=cond[3])
    assert torch.equal(broadcast, fs.log_prob(model, sde, x[:5], method, steps=12, backend=backend,
                                              cond=cond[3].expand(5, C_DIM)))


@pytest.mark.parametrize("backend", [*NATIVE, "torch"])
def test_bad_conditions_raise(backend):
    model, plain = _model(1), fs.ScoreMLP(2, 8, 1)
    x = torch.randn(4, 2)
    cases = [(model, None, ValueError, "this model is conditional"),
             (model, torch.randn(3, C_DIM), ValueError, r"cond must have shape \[n, 3\] = \[4, 3\]"),
             (model, torch.randn(4, C_DIM + 1), ValueError, "cond must have shape"),
             (model, torch.full((4, C_DIM), float("nan")), ValueError, "non-finite"),
             (model, "a", TypeError, "cond must be a torch tensor"),
             (plain, torch.randn(4, C_DIM), ValueError, "takes no condition")]
    for m, cond, exc, match in cases:
        with pytest.raises(exc, match=match):
            fs.sample(m, fs.VPSDE(), 4, "em", 3, backend=backend, cond=cond)
        with pytest.raises(exc, match=match):
            fs.log_prob(m, fs.VPSDE(), x, "euler", 2, backend=backend, cond=cond)
    with pytest.raises(ValueError, match="cond must be None for an unconditional network"):
        plain(x, 0.5, torch.randn(4, C_DIM))
