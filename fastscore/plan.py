"""Plans: a validated request that every backend executes the same way.

A plan holds everything but the network and the SDE: method, sizes, time grid, options,
seed. Validation happens here, once, with messages that say what to fix; backends assume
a valid plan.

Time grids (shared with ``csrc/include/fastscore/samplers.h``):
  sampling   t_k = T - k h, h = (T - eps) / steps, k = 0..steps-1; step k goes t_k -> t_k - h
  likelihood t_k = eps + k h, the same h, integrating the probability-flow ODE from eps to T
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .sde import SDE

SAMPLE_METHODS = ("em", "pc", "ode_euler", "ode_heun")
LOG_PROB_METHODS = ("euler", "heun", "rk4", "rk45")
# integer codes the native kernels take: fastscore::SampleMethod / LogProbMethod in csrc and
# the numba kernels' constants follow this order
METHOD_CODES = {m: i for i, m in enumerate(SAMPLE_METHODS)}
LOG_PROB_CODES = {m: i for i, m in enumerate(LOG_PROB_METHODS)}
TRACES = ("exact", "hutchinson")
MAX_INDEX = 2**32  # sample indices address the 32-bit Philox counter word


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


def check_sde(sde) -> SDE:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a fastscore SDE (VPSDE, VESDE, SubVPSDE), got {type(sde).__name__}")
    return sde


def check_eps(eps, sde: SDE) -> float:
    eps = check_positive("eps", eps)
    if eps >= sde.T:
        raise ValueError(f"eps must be < T = {sde.T} (the end time of sampling / start of likelihood), got {eps}")
    return eps


def check_seed(seed) -> int:
    seed = check_int("seed", seed, 0)
    if seed >= 2**64:
        raise ValueError(f"seed must be < 2**64, got {seed}")
    return seed


def model_dim(model: nn.Module) -> int:
    """Data dimension of a score network, with checks that its weights can be run."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module s(x, t), got {type(model).__name__}")
    dim = getattr(model, "dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise TypeError("model must expose its data dimension as an int attribute `dim` (fs.ScoreMLP does)")
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"model parameter {name!r} has non-finite values; the network cannot be run")
    return dim


def as_tensor(x):
    """x as a torch tensor without copying: numpy arrays, and CUDA arrays of other libraries
    through ``__cuda_array_interface__`` or DLPack; anything else is returned unchanged."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return torch.as_tensor(x, device="cuda")
    if hasattr(x, "__dlpack__"):
        return torch.from_dlpack(x)
    return x


def check_points(x, dim: int) -> torch.Tensor:
    """Data points [n, dim] as a tensor; rejects wrong shapes and non-finite values."""
    x = as_tensor(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch tensor, numpy array or CUDA / DLPack array [n, {dim}], "
                        f"got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"x must have shape [n, {dim}] for this model, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must hold floating-point values, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("x has non-finite values (nan or inf)")
    return x


@dataclass(frozen=True)
class SamplePlan:
    method: str
    n: int
    dim: int
    steps: int
    eps: float
    T: float
    seed: int
    start: int  # index of the first sample in the random stream
    snr: float
    corrector_steps: int
    denoise: bool

    @property
    def h(self) -> float:
        return (self.T - self.eps) / self.steps

    def time(self, k: int) -> float:
        """t_k of the sampling grid (the same expression as grid_time in samplers.h)."""
        return self.T - k * ((self.T - self.eps) / self.steps)


def make_sample_plan(model, sde, n, method, steps, eps, seed, start, snr, corrector_steps, denoise) -> SamplePlan:
    dim = model_dim(model)
    check_sde(sde)
    n = check_int("n", n, 0)
    start = check_int("start", start, 0)
    if start + n > MAX_INDEX:
        raise ValueError(f"start + n must be <= 2**32 (sample indices of the random stream), got {start + n}")
    return SamplePlan(
        method=check_choice("method", method, SAMPLE_METHODS),
        n=n,
        dim=dim,
        steps=check_int("steps", steps, 1),
        eps=check_eps(eps, sde),
        T=sde.T,
        seed=check_seed(seed),
        start=start,
        snr=check_positive("snr", snr),
        corrector_steps=check_int("corrector_steps", corrector_steps, 0),
        denoise=bool(denoise),
    )


@dataclass(frozen=True)
class LogProbPlan:
    method: str
    dim: int
    steps: int
    eps: float
    T: float
    rtol: float
    atol: float
    trace: str
    seed: int

    @property
    def h(self) -> float:
        return (self.T - self.eps) / self.steps

    def time(self, k: int) -> float:
        """t_k of the likelihood grid, eps -> T."""
        return self.eps + k * ((self.T - self.eps) / self.steps)


def make_log_prob_plan(model, sde, method, steps, eps, rtol, atol, trace, seed) -> LogProbPlan:
    dim = model_dim(model)
    check_sde(sde)
    return LogProbPlan(
        method=check_choice("method", method, LOG_PROB_METHODS),
        dim=dim,
        steps=check_int("steps", steps, 1),
        eps=check_eps(eps, sde),
        T=sde.T,
        rtol=check_positive("rtol", rtol),
        atol=check_positive("atol", atol),
        trace=check_choice("trace", trace, TRACES),
        seed=check_seed(seed),
    )
