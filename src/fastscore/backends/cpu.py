"""The compiled C++ backend (``fastscore._core``): fused kernels over packed models."""

from __future__ import annotations

import numpy as np
import torch

from .. import integrators

from ..netprog import NetProgram
from ..nn import pack
from ..plan import ADAPTIVE_METHODS, LOG_PROB_CODES, TRACES, AdaptivePlan, LogProbPlan, SamplePlan
from ..program import DRAW, EVAL, LIN, MAX_REGISTERS
from ..sde import SDE
from .declares import Declares

_IMPORT_ERROR = "no compiled module"
try:
    from .. import _core
except ImportError as exc:  # a source checkout without a build, or a broken build
    _core = None
    _IMPORT_ERROR = str(exc)


# the fused kernels interpret any step program (csrc/include/fastscore/program.h) and run
# every likelihood method; per-lane stack buffers bound the dimension
DECLARES = Declares(ops=frozenset({EVAL, DRAW, LIN}), max_registers=MAX_REGISTERS,
                    log_prob=frozenset(LOG_PROB_CODES), traces=frozenset(TRACES), adaptive=frozenset(ADAPTIVE_METHODS),
                    max_dim=None if _core is None else _core.build_info()["max_dim"])


def info() -> dict:
    if _core is None:
        return {"available": False, "compiled": False,
                "detail": f"extension not built ({_IMPORT_ERROR}); reinstall with `pip install .`"}
    b = _core.build_info()
    return {"available": True, "compiled": True,
            "detail": f"OpenMP, {b['openmp_threads']} threads, {b['isa']}, tile {b['tile']}"}


def net_args(p: NetProgram) -> tuple:
    """A network program as the bindings take it (csrc/bindings.cpp NET_ARGS)."""
    return (p.params, p.ops, p.header())


def sde_tuple(sde: SDE) -> tuple:
    return (sde.kind, *sde.params)


def program_args(plan: SamplePlan) -> tuple:
    """The step program and tables of a plan as the bindings take them (csrc/bindings.cpp)."""
    k = plan.kernel
    return (k.ops, k.n_body, k.n_slots, k.n_registers, k.coef, plan.times, plan.prior_std)


def cond_array(cond) -> np.ndarray | None:
    """A checked condition [n, cond_dim] (fastscore/plan.py check_cond) as the bindings take it."""
    return None if cond is None else cond.detach().to("cpu", torch.float64).contiguous().numpy()


def sample(model, plan: SamplePlan, cond=None) -> torch.Tensor:
    return prepare_sample(plan)(plan.n, plan.seed, plan.start, cond)


def prepare_sample(plan: SamplePlan):
    """run(n, seed, start, cond) of fs.Sampler: the network staged and the time phase tabulated
    once (_core.PreparedSampler, which keeps its own copies)."""
    prepared = _core.PreparedSampler(*net_args(plan.kernel.packed), *program_args(plan))

    def run(n: int, seed: int, start: int, cond) -> torch.Tensor:
        return torch.from_numpy(prepared.run(cond_array(cond), n, seed, start))

    return run


def integrator_args(method: str) -> tuple:
    """(adaptive, tableau [stages + 3, stages], controller [7]) of a log_prob method from
    fastscore/integrators.py, as the bindings take them (csrc/include/fastscore/ode.h). The
    adaptive pair's last stage is its first-same-as-last derivative at y + h sum b_i k_i."""
    adaptive = method == "rk45"
    if adaptive:
        t = integrators.DOPRI5
        c, a, b, e = (*t.c, 1.0), (*t.a, t.b), (*t.b, 0.0), t.e
    else:
        t = integrators.FIXED[method]
        c, a, b, e = t.c, t.a, t.b, (0.0,) * len(t.c)
    S = len(c)
    table = np.zeros((S + 3, S))
    table[0], table[S + 1], table[S + 2] = c, b, e
    for i, row in enumerate(a):
        table[1 + i, : len(row)] = row
    return adaptive, table, controller_args()


def controller_args(h0_fraction: float = integrators.RK45_H0_FRACTION,
                    exponent: float = integrators.RK45_EXPONENT) -> np.ndarray:
    """The step-size controller [7] (ode.h Controller): rk45's, or Gotta Go Fast's first step
    and exponent."""
    return np.array([h0_fraction, integrators.RK45_SAFETY, integrators.RK45_MIN_FACTOR, integrators.RK45_MAX_FACTOR,
                     exponent, integrators.RK45_MAX_ATTEMPTS, integrators.RK45_MIN_STEP_FRACTION])


def adaptive_args(plan: AdaptivePlan, cond) -> tuple:
    """The arguments of _core's adaptive samplers after the network's: the SDE, cond, the
    controller (Gotta Go Fast's for em_adaptive, else rk45's with its Dormand–Prince pair) and
    the run."""
    brownian = plan.method == "em_adaptive"
    _, table, controller = integrator_args("rk45")
    if brownian:
        controller = controller_args(integrators.GGF_H0_FRACTION, -integrators.GGF_R)
    return (sde_tuple(plan.sde), cond_array(cond), brownian, table, controller, plan.eps, plan.rtol, plan.atol,
            plan.denoise, plan.prior_std, plan.n, plan.seed, plan.start)


def sample_adaptive(model, plan: AdaptivePlan, cond=None) -> tuple[torch.Tensor, dict]:
    x, nfe, acc, rej, failed = _core.sample_adaptive(*net_args(pack(model)), *adaptive_args(plan, cond))
    rk45_failure(failed, plan.n)
    info = {"nfe": torch.from_numpy(nfe), "accepted": torch.from_numpy(acc), "rejected": torch.from_numpy(rej)}
    return torch.from_numpy(x), info


def log_prob(model, sde: SDE, x: torch.Tensor, plan: LogProbPlan, cond=None,
             start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    xs = x.detach().to("cpu", torch.float32).contiguous().numpy()
    logp, nfe, failed = _core.log_prob(*net_args(pack(model)), sde_tuple(sde), xs, cond_array(cond),
                                       *integrator_args(plan.method),
                                       plan.steps, plan.eps, plan.rtol, plan.atol, plan.trace == "hutchinson",
                                       plan.seed, start=start)
    rk45_failure(failed, len(xs))
    return torch.from_numpy(logp), torch.from_numpy(nfe)


def rk45_failure(failed: int, n: int) -> None:
    """Raises when a kernel's adaptive solve gave up on some samples (their results are garbage)."""
    if failed:
        raise RuntimeError(f"the adaptive solve gave up on {failed} of {n} samples (too many steps); loosen rtol/atol "
                           "or use a fixed-step method")
