"""The CUDA backend on a GPU: the same checks as the CPU kernels and the emulation harness,
plus streams, devices and array interop. Skipped where fs.backends()["cuda"] is unavailable."""

import pytest
import torch

import fastscore as fs

from cases import CUDA_METHODS, CUDA_NETS, SDES, fresh_seed, model_for
from rounding import sample_bound

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not fs.backends()["cuda"]["available"], reason=fs.backends()["cuda"]["detail"]),
]

@pytest.mark.parametrize("method", CUDA_METHODS, ids=lambda m: m[0])
@pytest.mark.parametrize("net", CUDA_NETS, ids=lambda n: f"w{n[0]}")
def test_gpu_sampler_matches_reference_and_cpu_kernel(net, method):
    name, steps, options = method
    seed = fresh_seed()
    torch.manual_seed(seed)
    sde = SDES[seed % len(SDES)]
    model = model_for(net, 1 + seed % 3, sde)
    n = 1000
    got = fs.sample(model.cuda(), sde, n, name, steps, backend="cuda", seed=seed, **options)
    assert got.device.type == "cuda" and got.dtype == torch.float32
    got = got.cpu()
    ref = fs.sample(model.double().cpu(), sde, n, name, steps, backend="torch", seed=seed, **options)
    cpu = fs.sample(model.float(), sde, n, name, steps, backend="cpu", seed=seed, **options)
    _, bound = sample_bound(model, sde, name, steps, options, n, seed)
    assert torch.all((got.double() - ref).norm(dim=1) <= bound), f"seed {seed}"
    assert torch.all((got - cpu).double().norm(dim=1) <= 2 * bound), f"seed {seed}"


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
@pytest.mark.parametrize("net", CUDA_NETS, ids=lambda n: f"w{n[0]}")
def test_gpu_fixed_step_log_prob_matches_cpu_kernel(net, method, trace):
    seed = fresh_seed()
    torch.manual_seed(seed)
    sde = SDES[seed % len(SDES)]
    model = model_for(net, 2, sde)
    x = torch.randn(500, 2)
    got, info = fs.log_prob(model, sde, x.cuda(), method, steps=12, backend="cuda", trace=trace, seed=seed,
                            return_info=True)
    assert got.device.type == "cuda" and info["nfe"].device.type == "cuda"
    cpu, cpu_info = fs.log_prob(model, sde, x, method, steps=12, backend="cpu", trace=trace, seed=seed,
                                return_info=True)
    assert torch.equal(info["nfe"].cpu(), cpu_info["nfe"])
    # as tests/test_cuda_emulation.py: each within 1e-4 |log p| + 1e-4 of the reference
    assert torch.all((got.cpu() - cpu).abs() <= 2 * (1e-4 * cpu.abs() + 1e-4))


def test_gpu_rk45_meets_tolerance_per_sample():
    torch.manual_seed(fresh_seed())
    sde, tol = fs.VPSDE(), 1e-6
    model = fs.ScoreMLP(2, 32, 2, "tanh")
    x = torch.cat([0.1 * torch.randn(200, 2), 6 + torch.randn(200, 2)])
    got, info = fs.log_prob(model, sde, x, "rk45", rtol=tol, atol=tol, backend="cuda", return_info=True)
    assert got.device == x.device  # a CPU input gets CPU outputs
    fine = fs.log_prob(model.double(), sde, x.double(), "rk4", steps=2000, backend="torch")
    assert torch.all((got - fine).abs() <= 100 * tol * (1 + fine.abs()) + 1e-5 * fine.abs())
    assert len(set(info["nfe"].tolist())) > 1


def test_gpu_runs_on_the_callers_stream_and_splits_reproduce():
    torch.manual_seed(fresh_seed())
    model = fs.ScoreMLP(2, 64, 5).cuda()
    whole = fs.sample(model, fs.VPSDE(), 3000, "em", 50, backend="cuda", seed=5)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        tail = fs.sample(model, fs.VPSDE(), 1000, "em", 50, backend="cuda", seed=5, start=2000)
    stream.synchronize()
    assert torch.equal(tail, whole[2000:])


class CudaArray:
    """A CUDA array of another library: only __cuda_array_interface__."""

    def __init__(self, t):
        self._t = t
        self.__cuda_array_interface__ = t.__cuda_array_interface__


def test_gpu_takes_cuda_array_interface_without_copying():
    model = fs.ScoreMLP(2, 32, 2).cuda()
    x = torch.randn(64, 2, device="cuda")
    got = fs.log_prob(model, fs.VPSDE(), CudaArray(x), "heun", steps=8, backend="cuda")
    assert torch.equal(got, fs.log_prob(model, fs.VPSDE(), x, "heun", steps=8, backend="cuda"))


def test_gpu_rejects_layouts_beyond_its_limits():
    with pytest.raises(ValueError, match="backend 'cuda' declares width <= 256"):
        fs.sample(fs.ScoreMLP(2, 300, 2), fs.VPSDE(), 4, "em", 2, backend="cuda")
