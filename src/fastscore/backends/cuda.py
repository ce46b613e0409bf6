"""The CUDA backend: the fused kernels of ``fastscore._core`` on CUDA memory.

The extension does not link against libtorch: this module hands it device pointers and the
caller's current stream as integers, and allocates the outputs as torch tensors on the
input's device (for ``sample``, the model's device if it is a CUDA device, else the current
one). Inputs may be torch CUDA tensors or any ``__cuda_array_interface__`` / DLPack array
(``fastscore.plan.check_points`` takes them without a copy)."""

from __future__ import annotations

import torch

from dataclasses import replace

from ..nn import pack
from ..plan import AdaptivePlan, LogProbPlan, SamplePlan
from ..sde import SDE
from . import cpu
from .cpu import _core, adaptive_args, cond_array, integrator_args, net_args, program_args, rk45_failure, sde_tuple

# the CPU kernels' declaration (the same shared headers) within the per-thread array sizes of
# csrc/cuda/thread_body.h
DECLARES = cpu.DECLARES if _core is None else replace(
    cpu.DECLARES, max_dim=_core.build_info()["cuda_max_dim"], max_lane_arena=_core.build_info()["cuda_max_arena"],
    max_time_arena=_core.build_info()["cuda_max_time_arena"])


def info() -> dict:
    if _core is None or not _core.build_info()["cuda_compiled"]:
        return {"available": False, "compiled": False,
                "detail": "built without CUDA kernels (no nvcc or no GPU at build time, or FASTSCORE_CUDA=OFF; "
                          "FASTSCORE_CUDA=ON pip install . builds them)"}
    names, reason = _core.cuda_devices()
    if not names:
        return {"available": False, "compiled": True, "detail": f"CUDA kernels compiled; no usable device: {reason}"}
    if not torch.cuda.is_available():
        return {"available": False, "compiled": True,
                "detail": f"{names[0]} found, but this torch build has no CUDA (outputs are torch CUDA tensors)"}
    return {"available": True, "compiled": True, "detail": ", ".join(names)}


def model_device(model) -> torch.device:
    """The model's CUDA device, or the current CUDA device for a model on the CPU."""
    device = next(model.parameters()).device
    return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())


def sample(model, plan: SamplePlan, cond=None) -> torch.Tensor:
    p = plan.kernel.packed
    device = model_device(model)
    out = torch.empty((plan.n, p.dim), dtype=torch.float32, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream
    _core.cuda_sample(*net_args(p), *program_args(plan), cond_array(cond), plan.n, plan.seed, plan.start,
                      out.data_ptr(), device.index, stream)
    return out


def sample_adaptive(model, plan: AdaptivePlan, cond=None) -> tuple[torch.Tensor, dict]:
    device = model_device(model)
    out = torch.empty((plan.n, plan.dim), dtype=torch.float32, device=device)
    nfe, acc, rej = (torch.empty(plan.n, dtype=torch.int64, device=device) for _ in range(3))
    stream = torch.cuda.current_stream(device).cuda_stream
    failed = _core.cuda_sample_adaptive(*net_args(pack(model)), *adaptive_args(plan, cond), out.data_ptr(),
                                        nfe.data_ptr(), acc.data_ptr(), rej.data_ptr(), device.index, stream)
    rk45_failure(failed, plan.n)
    return out, {"nfe": nfe, "accepted": acc, "rejected": rej}


def log_prob(model, sde: SDE, x: torch.Tensor, plan: LogProbPlan, cond=None,
             start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    device = x.device if x.is_cuda else model_device(model)
    xs = x.detach().to(device=device, dtype=torch.float32).contiguous()
    n = xs.shape[0]
    logp = torch.empty(n, dtype=torch.float64, device=device)
    nfe = torch.empty(n, dtype=torch.int64, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream
    failed = _core.cuda_log_prob(*net_args(pack(model)), sde_tuple(sde), xs.data_ptr(), n, cond_array(cond),
                                 *integrator_args(plan.method), plan.steps, plan.eps, plan.rtol, plan.atol, plan.trace == "hutchinson", plan.seed,
                                 logp.data_ptr(), nfe.data_ptr(), device.index, stream, start=start)
    rk45_failure(failed, n)
    return logp, nfe
