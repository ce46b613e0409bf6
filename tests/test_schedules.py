"""The schedules beyond the seeds' three (cosine VP, score_sde's geometric VE, EDM's sigma = t)
through the native samplers and likelihoods, against the float64 reference: their closed
forms in the kernels (sde.h, _numba_sde.py) are the ones tests/test_sde.py holds to Python."""

import pytest
import torch

import fastscore as fs
from fastscore.backends import cpu as cpu_backend
from fastscore.plan import make_sample_plan

from cases import NATIVE_BACKENDS, fresh_seed
from rounding import sample_bound

SCHEDULES = [fs.CosineVPSDE(), fs.GeometricVESDE(0.01, 50.0), fs.EDMSDE(80.0)]
METHODS = [("em", 30, {}), ("pc", 12, {"corrector_steps": 1}), ("ode_heun", 15, {"denoise": True})]
BACKENDS = [*NATIVE_BACKENDS, *(["emulate"] if cpu_backend._core is not None else [])]


def _model(sde, seed):
    torch.manual_seed(seed)
    return fs.ScoreMLP(2, 32, 2, "silu", "fourier", std_sde=sde)


def _sample(backend, model, sde, n, name, steps, seed, options):
    if backend != "emulate":
        return fs.sample(model, sde, n, name, steps, backend=backend, seed=seed, **options)
    plan = make_sample_plan(model, sde, n, name, steps, 1e-3, seed, 0, 0.16, options.get("corrector_steps", 1),
                            options.get("denoise", False)).for_kernels(fs.pack(model))
    return torch.from_numpy(cpu_backend._core.emulate_sample(*cpu_backend.net_args(plan.kernel.packed),
                                                             *cpu_backend.program_args(plan), None, n, seed, 0, True))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m[0])
@pytest.mark.parametrize("sde", SCHEDULES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("backend", BACKENDS)
def test_schedule_samples_match_the_reference(backend, sde, method):
    name, steps, options = method
    seed = fresh_seed()
    model, n = _model(sde, seed), 21
    got = _sample(backend, model, sde, n, name, steps, seed, options)
    ref = fs.sample(model.double(), sde, n, name, steps, backend="torch", seed=seed, **options)
    _, bound = sample_bound(model, sde, name, steps, options, n, seed)
    err = (got.double() - ref).norm(dim=1)
    assert torch.all(err <= bound), f"seed {seed}: worst err/bound {(err / bound).max():.3g}"


@pytest.mark.parametrize("sde", SCHEDULES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_schedule_log_prob_matches_the_reference(backend, sde):
    seed = fresh_seed()
    model = _model(sde, seed)
    x = torch.randn(17, 2)
    got = fs.log_prob(model, sde, x, "rk4", steps=12, backend=backend)
    ref = fs.log_prob(model.double(), sde, x.double(), "rk4", steps=12, backend="torch")
    # as test_native_log_prob.py::test_cpu_fixed_step_log_prob_matches_reference
    assert torch.all((got - ref).abs() <= 1e-4 * ref.abs() + 1e-4), f"seed {seed}: {(got - ref).abs().max()}"
