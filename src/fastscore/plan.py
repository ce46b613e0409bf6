"""Plans: a validated request that every backend executes the same way.

A plan holds everything but the network and the SDE: method, sizes, time grid, options,
seed. Validation happens here, once, with messages that say what to fix; backends assume
a valid plan.

Time grids:
  sampling   T = t_0 > ... > t_steps = eps, uniform in t, in log-SNR or Karras' (fastscore/grids.py);
             step k goes t_k -> t_{k+1}
  likelihood t_k = eps + k h, h = (T - eps) / steps, integrating the probability-flow ODE from eps to T

A SamplePlan is the one object a sampler request becomes: Python builds it once (rule, step
program, coefficient and time tables; for the native kernels the packed model and its float32
tables too) and every backend consumes it unchanged.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from .netprog import NetProgram
from .grids import GRIDS, time_grid
from .program import Eval, Program, compile_program
from .samplers import RULES, TWEEDIE, SamplerRule, tweedie_coefficients
from .sde import SDE, SDE_CLASSES

SAMPLE_METHODS = tuple(RULES)  # fixed-step: a rule's step program on a grid
ADAPTIVE_METHODS = ("ode_rk45", "em_adaptive")  # per-sample step control (AdaptivePlan)
#: (rtol, atol) when a request gives none: rk45's likelihood defaults loosened to what float32
#: kernels resolve; Gotta Go Fast's eps_rel = 0.05 tightened for low-dimensional data, where
#: the error of a single coordinate is visible
DEFAULT_TOLERANCES = {"ode_rk45": (1e-3, 1e-3), "em_adaptive": (1e-2, 1e-2)}
LOG_PROB_METHODS = ("euler", "heun", "rk4", "rk45")
# integer codes the native likelihood kernels take: fastscore::LogProbMethod in csrc and the
# numba kernels follow this order
LOG_PROB_CODES = {m: i for i, m in enumerate(LOG_PROB_METHODS)}
TRACES = ("exact", "hutchinson")
MAX_INDEX = 2**32  # sample and step indices address 32-bit Philox counter words
MAX_CORRECTOR_STEPS = 2**16  # corrector sweep j draws from stream STREAM_CORRECTOR + j
MAX_COUNT = 2**31 - 1  # step counts and batch sizes: far beyond any run, inside a C int (native kernels, tqdm)


def check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


MIN_TOLERANCE = 1e-12  # below it no float64 solve (scipy's included) can meet a tolerance


def check_tolerance(name: str, value) -> float:
    value = check_positive(name, value)
    if value < MIN_TOLERANCE:
        raise ValueError(f"{name} must be >= {MIN_TOLERANCE} (float64 resolution), got {value}")
    return value


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value


def check_memory(what: str, nbytes: int) -> None:
    """Refuses a request whose buffers exceed this machine's memory: it would fail, or be
    killed, long after it was accepted."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes > total:
        raise ValueError(f"{what} would need {nbytes / 2**30:.1f} GiB, more than this machine's "
                         f"{total / 2**30:.1f} GiB of memory; split the request (sample: n and start)")


def check_sde(sde) -> SDE:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a fastscore SDE ({', '.join(c.__name__ for c in SDE_CLASSES.values())}), "
                        f"got {type(sde).__name__}")
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


def model_cond_dim(model: nn.Module) -> int:
    """Size of the condition a network takes (0: unconditional), from its `cond_dim`."""
    c = getattr(model, "cond_dim", 0)
    if isinstance(c, bool) or not isinstance(c, int) or c < 0:
        raise TypeError(f"model.cond_dim must be an int >= 0, got {c!r}")
    return c


def check_cond(model: nn.Module, cond, n: int) -> torch.Tensor | None:
    """The condition of n samples or points as [n, cond_dim] (float64, CPU): one row per
    sample, or one [cond_dim] vector for all of them. None for an unconditional model."""
    c_dim = model_cond_dim(model)
    if cond is None:
        if c_dim:
            raise ValueError(f"this model is conditional: give cond of shape [n, {c_dim}] or [{c_dim}]")
        return None
    if not c_dim:
        raise ValueError("this model takes no condition (its cond_dim is 0); leave cond=None")
    cond = as_tensor(cond)
    if not isinstance(cond, torch.Tensor):
        raise TypeError(f"cond must be a torch tensor or numpy array [n, {c_dim}] or [{c_dim}], got {type(cond).__name__}")
    if not (cond.is_floating_point() or cond.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"cond must hold numbers, got {cond.dtype}")
    if cond.dim() == 1 and cond.shape[0] == c_dim:
        cond = cond[None].expand(n, c_dim)
    if cond.dim() != 2 or tuple(cond.shape) != (n, c_dim):
        raise ValueError(f"cond must have shape [n, {c_dim}] = [{n}, {c_dim}] or [{c_dim}], got {tuple(cond.shape)}")
    cond = cond.detach().to("cpu", torch.float64)
    if not torch.isfinite(cond).all():
        raise ValueError("cond has non-finite values (nan or inf)")
    return cond.contiguous()


def check_finite_result(values: torch.Tensor, what: str, offset: int = 0) -> torch.Tensor:
    """The documented failure of a run that blew up: a result with non-finite entries (the
    network or a step overflowed along some trajectories) raises FloatingPointError naming how
    many and the first, on every backend, instead of being returned as numbers. offset: the
    index of values[0] in the run (a chunk of a larger one)."""
    finite = torch.isfinite(values)
    bad = ~(finite.all(dim=1) if values.dim() == 2 else finite)  # samples [n, dim] or log p [n]
    if bool(bad.any()):
        first = int(bad.nonzero()[0]) + offset
        where = "" if offset == 0 else f" (in indices {offset} .. {offset + values.shape[0] - 1})"
        raise FloatingPointError(
            f"{what}: {int(bad.sum())} of {values.shape[0]} results{where} are not finite (the first: index {first}); "
            "the network or a step overflowed along the trajectory. Check the model at these inputs and times, "
            "or use more steps or a larger eps")
    return values


@dataclass(frozen=True)
class SamplePlan:
    """A sampling request made concrete: the rule, its compiled step program, every step's
    coefficients (float64 [steps + 1, n_coefficients]; row `steps` is the final program's) and
    every evaluation time (float64 [steps * n_slots + 1]: row k * n_slots + slot, then eps for
    the final program). ``for_kernels`` adds what the native kernels read, built once here:
    the packed model and the float32 tables."""

    method: str
    n: int
    dim: int
    steps: int
    grid: str
    eps: float
    T: float
    seed: int
    start: int  # index of the first sample in the random stream
    snr: float
    corrector_steps: int
    denoise: bool
    sde: SDE
    rule: SamplerRule
    program: Program
    coef: np.ndarray
    times: np.ndarray
    prior_std: float
    kernel: KernelTables | None = None

    @property
    def nfe(self) -> int:
        """Network evaluations per sample: every step's, plus the final program's."""
        return self.steps * self.program.evals_per_step + sum(isinstance(op, Eval) for op in self.program.final)

    def for_kernels(self, packed: NetProgram) -> SamplePlan:
        check_memory(f"the network's time table of steps={self.steps} ({packed.n_texp} values per time)",
                     len(self.times) * packed.n_texp * 4)
        return replace(self, kernel=kernel_tables(self, packed))


@dataclass(frozen=True)
class KernelTables:
    """What the native kernels read (csrc/include/fastscore/program.h SamplePlan): the packed
    network, the step program and its coefficients (float32, rounded once from float64). The
    network's time phase at every evaluation time (plan.times) is tabulated by each kernel."""

    packed: NetProgram
    ops: np.ndarray  # int32 [n_ops, OP_WIDTH]
    n_body: int
    n_slots: int
    n_registers: int
    coef: np.ndarray  # float32 [steps + 1, n_coefficients]


def kernel_tables(plan: SamplePlan, packed: NetProgram) -> KernelTables:
    return KernelTables(packed, plan.program.ops, plan.program.n_body, plan.program.n_slots,
                        len(plan.program.registers), plan.coef.astype(np.float32))


def _coefficient_table(rule: SamplerRule, program: Program, sde: SDE, t: np.ndarray, plan) -> np.ndarray:
    """[steps + 1, n_coefficients] float64: row k from rule.coefficients over step t_k -> t_{k+1}
    of the grid t [steps + 1], the last row from the final program's (Tweedie's when denoising)."""
    steps, eps = len(t) - 1, t[-1]
    table = np.zeros((steps + 1, len(program.coefficients)))
    rows = [(slice(0, steps), rule.coefficients(sde, t[:-1], t[1:], plan))]
    if program.final:
        rows.append((slice(steps, steps + 1), tweedie_coefficients(sde, eps)))
    for where, values in rows:
        for name, value in values.items():
            if name in program.coefficients:
                table[where, program.coefficients.index(name)] = value
    # the kernels read them in float32: a coefficient beyond its range would arrive as inf
    if not np.all(np.isfinite(table)) or np.abs(table).max(initial=0.0) > np.finfo(np.float32).max:
        raise ValueError(f"sampler {rule.name!r}: coefficients not finite in float32 for this SDE, grid and options "
                         f"(steps={steps}, eps={eps}, snr={plan.snr}); use more steps, a larger eps or a smaller snr")
    return table


def make_sample_plan(model, sde, n, method, steps, eps, seed, start, snr, corrector_steps, denoise,
                     grid=None) -> SamplePlan:
    dim = model_dim(model)
    check_sde(sde)
    rule = RULES[check_choice("method", method, tuple(RULES))]
    if not isinstance(sde, rule.sdes):
        raise ValueError(f"sampler {method!r} does not support {type(sde).__name__}; it runs on "
                         f"{', '.join(s.__name__ for s in rule.sdes)}")
    n = check_int("n", n, 0)
    start = check_int("start", start, 0)
    if start + n > MAX_INDEX:
        raise ValueError(f"start + n must be <= 2**32 (sample indices of the random stream), got {start + n}")
    steps = check_int("steps", steps, 1)
    if steps >= MAX_INDEX:
        raise ValueError(f"steps must be < 2**32 (step indices of the random stream), got {steps}")
    corrector_steps = check_int("corrector_steps", corrector_steps, 1 if rule.needs_corrector else 0)
    if corrector_steps > MAX_CORRECTOR_STEPS:
        raise ValueError(f"corrector_steps must be <= {MAX_CORRECTOR_STEPS}, got {corrector_steps}")
    options = _Options(snr=check_positive("snr", snr), corrector_steps=corrector_steps)
    eps = check_eps(eps, sde)
    check_memory(f"the output of n={n} samples of dim {dim}", n * dim * 8)
    program = compile_program(rule.program(options), TWEEDIE if denoise else (), len(rule.times), rule.carries)
    check_memory(f"the per-step tables of steps={steps}", steps * (len(program.coefficients) + program.n_slots) * 8)
    grid = check_choice("grid", rule.default_grid if grid is None else grid, GRIDS)
    t = time_grid(sde, grid, steps, eps)
    times = (t[:-1, None] - np.asarray(rule.times)[None, :] * (t[:-1] - t[1:])[:, None]).ravel()
    return SamplePlan(
        method=method, n=n, dim=dim, steps=steps, grid=grid, eps=eps, T=sde.T, seed=check_seed(seed), start=start,
        snr=options.snr, corrector_steps=corrector_steps, denoise=bool(denoise), sde=sde, rule=rule,
        program=program, coef=_coefficient_table(rule, program, sde, t, options),
        times=np.append(times, eps), prior_std=float(sde.prior_std),
    )


@dataclass(frozen=True)
class _Options:
    """The options a rule's program and coefficients may read."""

    snr: float
    corrector_steps: int


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
        steps=check_int("steps", steps, 1, MAX_COUNT),
        eps=check_eps(eps, sde),
        T=sde.T,
        rtol=check_tolerance("rtol", rtol),
        atol=check_tolerance("atol", atol),
        trace=check_choice("trace", trace, TRACES),
        seed=check_seed(seed),
    )


@dataclass(frozen=True)
class AdaptivePlan:
    """A per-sample adaptive sampling request (ADAPTIVE_METHODS): each sample runs its own
    step-size controller from T to eps (fastscore/integrators.py), then the Tweedie step if
    ``denoise``. No grid and no step count: rtol and atol set the work."""

    method: str
    n: int
    dim: int
    eps: float
    T: float
    seed: int
    start: int
    rtol: float
    atol: float
    denoise: bool
    sde: SDE
    prior_std: float


def make_adaptive_plan(model, sde, n, method, eps, seed, start, rtol, atol, denoise) -> AdaptivePlan:
    dim = model_dim(model)
    check_sde(sde)
    method = check_choice("method", method, ADAPTIVE_METHODS)
    n = check_int("n", n, 0)
    start = check_int("start", start, 0)
    if start + n > MAX_INDEX:
        raise ValueError(f"start + n must be <= 2**32 (sample indices of the random stream), got {start + n}")
    check_memory(f"the output of n={n} samples of dim {dim}", n * dim * 8)
    r0, a0 = DEFAULT_TOLERANCES[method]
    return AdaptivePlan(method=method, n=n, dim=dim, eps=check_eps(eps, sde), T=sde.T, seed=check_seed(seed),
                        start=start, rtol=check_tolerance("rtol", r0 if rtol is None else rtol),
                        atol=check_tolerance("atol", a0 if atol is None else atol), denoise=bool(denoise), sde=sde,
                        prior_std=float(sde.prior_std))
