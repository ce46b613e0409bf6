"""``fastscore.bench``: samplers against a target law, one cell per method and NFE budget.

A cell runs ``fastscore.sample`` with one method at one budget and reports its wall time, its
network evaluations (NFE) and how far its samples are from the law it should reproduce:
sliced Wasserstein-2, energy distance and, when the target's density is known, KL
(``fastscore.metrics``). Every cell uses the same seed, so every method starts from the same
prior draws and reads the same Philox streams: differences between cells are the solvers',
not the noise's.

Targets:
  * analytic: a ``GaussianMixture`` (or its name, ``fastscore.targets.TARGET_NAMES``). The
    network is its exact diffused score (``targets.ExactGMMScore``, float64), a torch module
    that only the reference backend runs, so these cells time ``backend="torch"``. The law to
    reproduce is the mixture diffused to eps (the mixture itself with ``denoise=True``),
    known exactly: KL is estimated, and the PF-ODE likelihood error is measured once.
  * a trained network: an ``nn.Module`` the samplers take, with ``reference`` draws of the law
    it should reproduce (e.g. its training data); any backend.

Budgets: a fixed-step method (``fastscore.samplers.RULES``) with E network evaluations per step
gets steps = max(1, B // E) for an NFE budget B. An adaptive method (``ADAPTIVE_METHODS``) ignores
steps; its axis is a tolerance (rtol = atol), and its cells report the measured NFE.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import bench_report, machine, metrics
from .datasets import GaussianMixture
from .likelihood import log_prob
from .grids import GRIDS
from .plan import ADAPTIVE_METHODS, check_eps, check_int, check_sde, check_seed, check_tolerance, model_dim
from .program import Eval
from .samplers import RULES
from .sampling import sample
from .sde import SDE
from .targets import TARGET_NAMES, ExactGMMScore, target as named_target

__all__ = ["ADAPTIVE_METHODS", "GRIDS", "MethodSpec", "BenchConfig", "BenchResult", "configure", "run", "bench",
           "require_extras"]

#: fs.sample's defaults of the options a step program reads (evaluations per step of "pc")
_SAMPLE_OPTIONS = SimpleNamespace(snr=0.16, corrector_steps=1)
#: streams of numpy seeds derived from the bench's seed: target draws independent of the sampler's
_REFERENCE, _TARGET_ROW, _LIKELIHOOD = 1, 2, 3
EXTRAS_HINT = 'pip install "fastscore[bench]"'
LIKELIHOOD_TOL = 1e-5  # rtol = atol of the PF-ODE likelihood check (fastscore.log_prob's default)


def require_extras() -> None:
    """Raises ImportError naming the extra to install if POT or matplotlib is missing."""
    for module in ("ot", "matplotlib"):
        try:
            __import__(module)
        except ImportError as err:
            raise ImportError(f"the solver bench needs POT and matplotlib ({module!r} is missing): "
                              f"{EXTRAS_HINT}") from err


@dataclass(frozen=True)
class MethodSpec:
    """A sampler the bench runs: a method and, for a fixed-step method, its time grid (None: the
    sampler's default, and no ``grid`` argument is passed). Text form: "method" or "method:grid"."""

    method: str
    grid: str | None = None

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        method, _, grid = text.strip().partition(":")
        return cls(method, grid or None)

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS

    @property
    def label(self) -> str:
        return f"{self.method} ({self.grid})" if self.grid else self.method

    def check(self) -> MethodSpec:
        known = (*RULES, *ADAPTIVE_METHODS)
        if self.method not in known:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(known)}")
        if self.grid is not None and self.adaptive:
            raise ValueError(f"{self.method} is adaptive: it takes a tolerance, not a grid (got {self.grid!r})")
        if self.grid is not None and self.grid not in GRIDS:
            raise ValueError(f"unknown grid {self.grid!r} in {self.label}; choose one of {', '.join(GRIDS)}")
        return self


def evals_per_step(method: str) -> int:
    """Network evaluations in one step of a fixed-step method: the Eval ops of its program."""
    return sum(isinstance(op, Eval) for op in RULES[method].program(_SAMPLE_OPTIONS))


@dataclass(frozen=True)
class Cell:
    """One method at one budget: ``steps`` for a fixed-step method, ``tol`` for an adaptive one."""

    spec: MethodSpec
    budget: float  # the NFE budget, or the tolerance
    steps: int | None = None
    tol: float | None = None

    def kwargs(self) -> dict:
        """The arguments of fastscore.sample this cell sets, and only those."""
        kw: dict = {"grid": self.spec.grid} if self.spec.grid else {}
        if self.spec.adaptive:
            return {**kw, "rtol": self.tol, "atol": self.tol}
        return {**kw, "steps": self.steps}


def _cells(specs: Sequence[MethodSpec], budgets, tolerances) -> tuple[Cell, ...]:
    cells: list[Cell] = []
    for spec in specs:
        if spec.adaptive:
            cells += [Cell(spec, tol, tol=tol) for tol in tolerances]
            continue
        per_step = evals_per_step(spec.method)
        seen = set()
        for budget in budgets:
            steps = max(1, budget // per_step)
            if steps not in seen:  # two budgets that give the same steps are the same run
                seen.add(steps)
                cells.append(Cell(spec, budget, steps=steps))
    return tuple(cells)


def _derived_seed(seed: int, stream: int) -> int:
    """A numpy seed for one of the bench's own draws, independent of the sampler's stream."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


@dataclass(frozen=True)
class BenchConfig:
    """A validated bench request (``configure``); ``run`` executes it."""

    model: nn.Module
    sde: SDE
    name: str  # what the report calls the target
    mixture: GaussianMixture | None  # the analytic target (None: a trained network)
    law: GaussianMixture | None  # the exact law the samples should follow: mixture at eps, or itself
    reference: torch.Tensor  # [n, dim] draws of the law, what every cell is compared with
    independent: torch.Tensor  # [n, dim] another draw: the target row (noise floor)
    cells: tuple[Cell, ...]
    n: int
    backend: str
    seed: int
    eps: float
    denoise: bool
    rounds: int
    projections: int
    knn_k: int
    likelihood_points: int

    def settings(self) -> dict:
        return {"target": self.name, "dim": self.reference.shape[1], "sde": repr(self.sde), "backend": self.backend,
                "n": self.n, "seed": self.seed, "eps": self.eps, "denoise": self.denoise, "rounds": self.rounds,
                "projections": self.projections, "knn_k": self.knn_k, "analytic": self.mixture is not None}


@dataclass
class BenchResult:
    """rows: the target row (an independent draw of the law: each metric's noise floor at this
    n), then one row per cell; likelihood: the PF-ODE log-density error (analytic targets)."""

    settings: dict
    machine: dict
    rows: list[dict]
    likelihood: dict | None = None
    files: dict = field(default_factory=dict)  # what write() produced: kind -> path

    def write(self, out) -> dict:
        """Writes bench.md, bench.json and bench.png into the folder ``out``; their paths."""
        self.files = bench_report.write(self, Path(out))
        return self.files


def _check_list(name: str, values, check) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a non-empty list, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must be a non-empty list, got []")
    return [check(v) for v in values]


def _target_draws(law: GaussianMixture, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, independent): two draws of n from the exact law, on seeds of their own."""
    return tuple(law.sample(n, seed=_derived_seed(seed, s)).double() for s in (_REFERENCE, _TARGET_ROW))


def _from_data(model: nn.Module, reference, n: int, seed: int):
    if reference is None:
        raise ValueError("a trained network needs reference draws of the law it should reproduce "
                         "(reference=[m, dim] with m >= 2 n, e.g. its training data)")
    dim = model_dim(model)
    reference = torch.as_tensor(reference).detach().to("cpu", torch.float64)
    if reference.dim() != 2 or reference.shape[1] != dim or reference.shape[0] < 2 * n:
        raise ValueError(f"reference must have shape [m, {dim}] with m >= 2 n = {2 * n} (n to compare with, n for "
                         f"the target row), got {tuple(reference.shape)}")
    rows = torch.from_numpy(np.random.default_rng(_derived_seed(seed, _REFERENCE)).permutation(reference.shape[0]))
    return reference[rows[:n]], reference[rows[n:2 * n]]


def configure(target, sde: SDE, methods, budgets=(10, 20, 50, 100), tolerances=(1e-2, 1e-3, 1e-4), *,
              n: int = 10_000, backend: str | None = None, seed: int = 0, eps: float = 1e-3, denoise: bool = False,
              rounds: int = 3, reference=None, projections: int = 256, knn_k: int = 5,
              likelihood_points: int = 256) -> BenchConfig:
    """Checks a bench request (arguments as ``bench``) and tries every method once on 2
    samples, so that a request the sampler refuses fails now, not after minutes of timing."""
    require_extras()
    sde = check_sde(sde)
    eps, seed = check_eps(eps, sde), check_seed(seed)
    n, rounds = check_int("n", n, 2), check_int("rounds", rounds, 1)
    projections, likelihood_points = check_int("projections", projections, 1), check_int(
        "likelihood_points", likelihood_points, 0)
    knn_k = check_int("knn_k", knn_k, 1, n - 1)
    specs = _check_list("methods", methods, lambda m: (MethodSpec.parse(m) if isinstance(m, str) else m).check())
    budgets = _check_list("budgets", budgets, lambda b: check_int("NFE budget", b, 1))
    tolerances = _check_list("tolerances", tolerances, lambda t: check_tolerance("tolerance", t))
    name = target if isinstance(target, str) else None
    if name is not None:
        target = named_target(name)
    if isinstance(target, GaussianMixture):
        if backend not in (None, "torch"):
            raise ValueError(f"an analytic target's exact score is a torch module that only backend 'torch' runs "
                             f"(got backend={backend!r}); bench a trained network to time the fused backends")
        if reference is not None:
            raise ValueError("an analytic target draws its own reference samples from the exact law; "
                             "reference is for trained networks")
        mixture, law, backend = target, target if denoise else target.diffused(sde, eps), "torch"
        model = ExactGMMScore(target, sde)
        ref, independent = _target_draws(law, n, seed)
        name = name or repr(target)
    elif isinstance(target, nn.Module):
        mixture, law, model, backend = None, None, target, backend or "auto"
        ref, independent = _from_data(model, reference, n, seed)
        name = type(model).__name__
    else:
        raise TypeError(f"target must be a GaussianMixture, a target name ({TARGET_NAMES}) or a trained "
                        f"nn.Module, got {type(target).__name__}")
    config = BenchConfig(model, sde, name, mixture, law, ref, independent, _cells(specs, budgets, tolerances), n,
                         backend, seed, eps, bool(denoise), rounds, projections, knn_k, likelihood_points)
    for spec in dict.fromkeys(cell.spec for cell in config.cells):
        first = next(cell for cell in config.cells if cell.spec == spec)
        try:
            _sample(config, first, 2)
        except FloatingPointError:
            pass  # numerics of 2 samples at the smallest budget, not a refused request: the cell reports it
        except (ValueError, TypeError, RuntimeError) as err:  # RuntimeError: a named backend not available here
            raise ValueError(f"{spec.label}: {err}") from err
    return config


def _sample(config: BenchConfig, cell: Cell, n: int):
    """(samples [n, dim], NFE per sample [n]) of one call of fastscore.sample."""
    x, info = sample(config.model, config.sde, n, cell.spec.method, backend=config.backend, seed=config.seed,
                     eps=config.eps, denoise=config.denoise, return_info=True, **cell.kwargs())
    return x, info["nfe"]


def _metrics(config: BenchConfig, x: torch.Tensor) -> dict:
    x = x.detach().to("cpu", torch.float64)
    row = {"sw2": metrics.sliced_wasserstein(x, config.reference, config.projections, seed=config.seed),
           "energy": metrics.energy_distance(x, config.reference)}
    if config.law is not None:
        row["kl"] = metrics.kl_divergence(x, config.law.log_prob(x), config.knn_k)
    return row


def _run_cell(config: BenchConfig, cell: Cell) -> dict:
    grid = None if cell.spec.adaptive else cell.spec.grid or RULES[cell.spec.method].default_grid
    row = {"method": cell.spec.method, "grid": grid,
           "budget": cell.budget, "steps": cell.steps, "tol": cell.tol}
    times = []
    try:
        for _ in range(config.rounds + 1):  # the first call is a warm-up (JIT compiles, caches)
            start = time.perf_counter()
            x, nfe = _sample(config, cell, config.n)
            times.append(time.perf_counter() - start)
    except FloatingPointError as err:  # a blown-up run is a result of the bench, not a failure of it
        return {**row, "error": str(err)}
    nfe = nfe.double()
    return {**row, "nfe_mean": nfe.mean().item(), "nfe_max": int(nfe.max().item()),
            "time_s": statistics.median(times[1:]), "times_s": times[1:], **_metrics(config, x)}


def _likelihood(config: BenchConfig) -> dict:
    """The PF-ODE log p_eps (fastscore.log_prob, rk45) against the exact log-density of the
    mixture diffused to eps, at points drawn from that law. It does not depend on the sampler, so
    it is measured once. The error includes the prior's mismatch with p_T, which the ODE cannot see."""
    law = config.mixture.diffused(config.sde, config.eps)
    x = law.sample(config.likelihood_points, seed=_derived_seed(config.seed, _LIKELIHOOD)).double()
    start = time.perf_counter()
    logp, info = log_prob(config.model, config.sde, x, method="rk45", rtol=LIKELIHOOD_TOL, atol=LIKELIHOOD_TOL,
                          eps=config.eps, backend=config.backend, return_info=True)
    elapsed = time.perf_counter() - start
    err = (logp.double() - torch.from_numpy(law.log_prob(x))).abs()
    return {"method": "rk45", "rtol": LIKELIHOOD_TOL, "atol": LIKELIHOOD_TOL, "points": config.likelihood_points,
            "mean_abs_error": err.mean().item(), "max_abs_error": err.max().item(),
            "nfe_mean": info["nfe"].double().mean().item(), "time_s": elapsed}


def run(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Runs every cell of a configured bench; ``progress`` gets a line per cell."""
    say = progress or (lambda line: None)
    rows = [{"method": "target", "grid": None, "budget": None, "steps": None, "tol": None, "nfe_mean": None,
             "nfe_max": None, "time_s": None, **_metrics(config, config.independent)}]
    say(f"target row (independent draw of the law): SW2 {rows[0]['sw2']:.4g}")
    for cell in config.cells:
        row = _run_cell(config, cell)
        rows.append(row)
        budget = f"tol {cell.tol:g}" if cell.spec.adaptive else f"{cell.steps} steps"
        outcome = (f"failed: {row['error']}" if "error" in row else
                   f"NFE {row['nfe_mean']:.4g}, {row['time_s']:.3g} s, SW2 {row['sw2']:.4g}")
        say(f"{cell.spec.label}, {budget}: {outcome}")
    likelihood = None
    if config.mixture is not None and config.likelihood_points:
        likelihood = _likelihood(config)
        say(f"PF-ODE likelihood: mean |error| {likelihood['mean_abs_error']:.3g} nats")
    # the machine described last: its load averages then cover the run
    return BenchResult(config.settings(), machine.describe(), rows, likelihood)


def bench(target, sde: SDE, methods, budgets=(10, 20, 50, 100), tolerances=(1e-2, 1e-3, 1e-4), *,
          n: int = 10_000, backend: str | None = None, seed: int = 0, eps: float = 1e-3, denoise: bool = False,
          rounds: int = 3, reference=None, projections: int = 256, knn_k: int = 5, likelihood_points: int = 256,
          out=None, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmarks samplers against a target: a table of wall time, NFE and distribution error per
    method and budget.

    Args:
        target: a ``datasets.GaussianMixture``, a target name ("gmm2d", "mixture1d",
            "mixture2d" ... "mixture16d"; analytic: exact score, runs on backend "torch") or a
            trained score network (nn.Module) together with ``reference``.
        methods: samplers as "method" or "method:grid" strings or ``MethodSpec``s: fixed-step
            rules of ``fastscore.samplers.RULES`` or adaptive ``ADAPTIVE_METHODS``.
        budgets: NFE budgets of the fixed-step methods (steps = max(1, budget // evaluations per step)).
        tolerances: rtol = atol of the adaptive methods.
        n: samples per cell, and the size of the reference draw they are compared with.
        backend: None for "torch" (analytic targets) or "auto" (networks); a network may name any.
        seed: the sampler's seed, the same for every cell; the target's draws use seeds derived from it.
        eps, denoise: as in ``fastscore.sample``; the law to reproduce is the target at eps, or
            the target itself with denoise.
        rounds: timed calls per cell, after one untimed warm-up call; the cell reports their median.
        reference: for a network, draws of the law it should reproduce, [m, dim] with m >= 2 n
            (shuffled; n to compare with, n for the target row).
        projections, knn_k: directions of the sliced Wasserstein distance, neighbour of the KL estimate.
        likelihood_points: points of the PF-ODE likelihood check (analytic targets; 0 skips it).
        out: a folder to write bench.md, bench.json and bench.png into (None: write nothing).
        progress: called with a line of text per finished cell (e.g. ``print``).

    Returns a ``BenchResult``: settings, machine, rows (the target row first) and likelihood.
    A cell whose run blew up (FloatingPointError) reports the error instead of numbers.
    """
    config = configure(target, sde, methods, budgets, tolerances, n=n, backend=backend, seed=seed, eps=eps,
                       denoise=denoise, rounds=rounds, reference=reference, projections=projections, knn_k=knn_k,
                       likelihood_points=likelihood_points)
    result = run(config, progress)
    if out is not None:
        result.write(out)
    return result
