"""The CUDA kernels' per-thread bodies run on the CPU (csrc/cuda/emulate.cpp): the same launch
plan, grid arithmetic, shared-memory staging and thread code as the GPU, scheduled block by
block. Held against the float64 reference and the CPU kernel like the CPU kernels are, so
an indexing, offset, staging or table bug shows here before any GPU sees it. Runs with or
without a CUDA build: the harness is always compiled."""

import pytest
import torch

import fastscore as fs
from fastscore.backends import cpu as cpu_backend
from fastscore.plan import make_sample_plan

from cases import CUDA_METHODS, CUDA_NETS, SDES, fresh_seed, model_for
from rounding import sample_bound

core = cpu_backend._core
pytestmark = pytest.mark.skipif(core is None, reason="extension not built")

BLOCK = 128  # csrc/cuda/thread_body.h kBlock


def emulate_sample(model, sde, n, method, steps, seed, start=0, stage_shared=True, **options):
    plan = make_sample_plan(model, sde, n, method, steps, 1e-3, seed, start, options.get("snr", 0.16),
                            options.get("corrector_steps", 1), options.get("denoise", False)).for_kernels(fs.pack(model))
    p = plan.kernel.packed
    out = core.emulate_sample(*cpu_backend.net_args(p), *cpu_backend.program_args(plan), None, n, seed, start,
                              stage_shared)
    return torch.from_numpy(out)


def emulate_log_prob(model, sde, x, method, steps, trace="exact", seed=0, tol=1e-5, stage_shared=True, start=0):
    p = fs.pack(model)
    logp, nfe, failed = core.emulate_log_prob(*cpu_backend.net_args(p), cpu_backend.sde_tuple(sde),
                                              x.numpy(), None, *cpu_backend.integrator_args(method), steps, 1e-5, tol, tol,
                                              trace == "hutchinson", seed, stage_shared, start=start)
    assert failed == 0
    return torch.from_numpy(logp), torch.from_numpy(nfe)


@pytest.mark.parametrize("method", CUDA_METHODS, ids=lambda m: m[0])
@pytest.mark.parametrize("net", CUDA_NETS, ids=lambda n: f"w{n[0]}")
def test_emulated_sampler_matches_reference_and_cpu_kernel(net, method):
    name, steps, options = method
    seed = fresh_seed()
    torch.manual_seed(seed)
    sde = SDES[seed % len(SDES)]
    model = model_for(net, 1 + seed % 3, sde)
    n = BLOCK + 5  # two blocks, the second almost empty
    got = emulate_sample(model, sde, n, name, steps, seed, **options)
    ref = fs.sample(model.double(), sde, n, name, steps, backend="torch", seed=seed, **options)
    cpu = fs.sample(model, sde, n, name, steps, backend="cpu", seed=seed, **options)
    _, bound = sample_bound(model, sde, name, steps, options, n, seed)
    # the derived float32 bound of the CPU kernels' tests; GPU and CPU code each lie within it
    # of the reference, so within twice of each other
    assert torch.all((got.double() - ref).norm(dim=1) <= bound), f"seed {seed}"
    assert torch.all((got - cpu).double().norm(dim=1) <= 2 * bound), f"seed {seed}"


@pytest.mark.parametrize("net", CUDA_NETS, ids=lambda n: f"w{n[0]}")
def test_emulated_sample_depends_only_on_its_index(net):
    """Staging through shared memory reads the same weights, and sample i gives the same bits
    whatever block, thread or launch it lands in."""
    seed = fresh_seed()
    torch.manual_seed(seed)
    model = model_for(net, 2, fs.VPSDE())
    n, split = 2 * BLOCK + 3, BLOCK - 7
    whole = emulate_sample(model, fs.VPSDE(), n, "em", 9, seed, denoise=True)
    assert torch.equal(emulate_sample(model, fs.VPSDE(), n, "em", 9, seed, stage_shared=False, denoise=True), whole)
    tail = emulate_sample(model, fs.VPSDE(), n - split, "em", 9, seed, start=split, denoise=True)
    assert torch.equal(tail, whole[split:])


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
@pytest.mark.parametrize("net", CUDA_NETS, ids=lambda n: f"w{n[0]}")
def test_emulated_fixed_step_log_prob_matches_cpu_kernel(net, method, trace):
    seed = fresh_seed()
    torch.manual_seed(seed)
    sde = SDES[seed % len(SDES)]
    model = model_for(net, 2, sde)
    x = torch.randn(BLOCK + 9, 2)
    got, nfe = emulate_log_prob(model, sde, x, method, 12, trace, seed)
    cpu, info = fs.log_prob(model, sde, x, method, steps=12, backend="cpu", trace=trace, seed=seed,
                            return_info=True)
    assert torch.equal(nfe, info["nfe"])
    # both float32 solves of the same steps with the same probes, each within
    # 1e-4 |log p| + 1e-4 of the reference (test_native_log_prob.py gives the reasoning)
    assert torch.all((got - cpu).abs() <= 2 * (1e-4 * cpu.abs() + 1e-4)), (got - cpu).abs().max()
    if trace == "hutchinson":  # a launch of the later points (a chunk) takes their probes: the same bits
        k = 5 + seed % BLOCK
        assert torch.equal(emulate_log_prob(model, sde, x[k:], method, 12, trace, seed, start=k)[0], got[k:])


@pytest.mark.parametrize("net", CUDA_NETS[1:], ids=lambda n: f"w{n[0]}")
def test_emulated_rk45_meets_tolerance_per_sample(net):
    seed = fresh_seed()
    torch.manual_seed(seed)
    sde = fs.VPSDE()
    model = model_for(net, 2, sde)
    x = torch.cat([0.1 * torch.randn(BLOCK // 2, 2), 6 + torch.randn(BLOCK // 2 + 3, 2)])
    tol = 1e-6
    got, nfe = emulate_log_prob(model, sde, x, "rk45", 1, tol=tol)
    fine = fs.log_prob(model.double(), sde, x.double(), "rk4", steps=2000, backend="torch")
    # as test_native_log_prob.py::test_rk45_per_sample_control
    assert torch.all((got - fine).abs() <= 100 * tol * (1 + fine.abs()) + 1e-5 * fine.abs())
    assert len(set(nfe.tolist())) > 1 and torch.all((nfe - 1) % 6 == 0)


@pytest.mark.parametrize("too_big", ["dim", "arena"])
def test_emulation_rejects_layouts_beyond_the_gpu_limits(too_big):
    info = core.build_info()
    dim = info["cuda_max_dim"] + (too_big == "dim")
    width = info["cuda_max_arena"] // 2 if too_big == "arena" else 8  # x, the time bias and a layer exceed it
    model = fs.ScoreMLP(dim, width, 1)
    assert (fs.pack(model).lane_arena > info["cuda_max_arena"]) == (too_big == "arena")
    with pytest.raises(ValueError, match="CUDA kernels"):
        emulate_sample(model, fs.VPSDE(), 3, "em", 2, 0)
