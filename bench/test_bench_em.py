"""Throughput of the reverse-SDE Euler–Maruyama sampler, ``fastscore.sample(method="em")``.

Cases: batch n in N_VALUES x hidden width in WIDTHS (depth 5, dim 2, concat time, ReLU; width
64 is seed 002's ``basic_net``, 33,408 FLOP per evaluation) x three ways to run it:

  torch  ``backend="torch"``, the reference (plain PyTorch on the float32 model)
  seed   seed 002's own ``sample_sde`` loop (bench/seed_loops.py) on the same module
  cpu    ``backend="cpu"``, the fused C++ kernel
  numba  ``backend="numba"``, the Numba fallback (compiled before timing by the warm-up round)

The step count of each case is chosen from a rough cost model (STEP_COST) so that one round
takes about TARGET_S seconds (at least MIN_STEPS steps). Throughput is compared per
sample-step, so different step counts per backend do not bias the speed-ups.

Run (see bench/README.md):
    python -m pytest bench -q --benchmark-json=bench/results/em_cpu.json -p no:cacheprovider
"""

from __future__ import annotations

import copy
import os
import time

import pytest
import torch

import fastscore as fs
from seed_loops import sample_sde

N_VALUES = (64, 1024, 16384)
WIDTHS = (32, 64, 128, 256)
DEPTH, DIM = 5, 2
BACKENDS = ("torch", "seed", "cpu", "numba")
SEED = 0

TARGET_S = 0.4  # aimed-for seconds per round
MIN_STEPS, MAX_STEPS = 10, 50_000
# rough time per step: overhead_s + n * flops_per_eval / rate (rate in FLOP/s; the torch
# loops' rate grows with width as the GEMMs get larger). Measured on an idle 2-core box.
STEP_COST = {
    "cpu": lambda w: (1e-5, 200e9),
    "numba": lambda w: (1e-5, 150e9),
    "torch": lambda w: (2.5e-4, min(150e9, 0.6e9 * w)),
    "seed": lambda w: (2.0e-4, min(150e9, 0.6e9 * w)),
}

CHECK_N = 8  # samples compared against the float64 reference before timing
CHECK_MAX_STEPS = 2000  # the check runs min(steps, this) steps: the reference is slow at n = 8
CHECK_RTOL = 1e-4  # relative to max |x| of the reference

SDE = fs.VPSDE(beta_min=0.1, beta_max=20.0, T=1.0)


def make_model(width: int) -> fs.ScoreMLP:
    """An untrained float32 ScoreMLP, the same weights for a given width in every case."""
    torch.manual_seed(1000 + width)
    return fs.ScoreMLP(dim=DIM, width=width, depth=DEPTH, activation="relu", time_embedding="concat").eval()


def choose_steps(backend: str, n: int, width: int, flops_per_eval: int) -> int:
    overhead, rate = STEP_COST[backend](width)
    per_step = overhead + n * flops_per_eval / rate
    return int(min(MAX_STEPS, max(MIN_STEPS, round(TARGET_S / per_step))))


def runner(backend: str, model, n: int, steps: int):
    if backend == "seed":
        return lambda: sample_sde(model, batch_size=n, steps=steps)
    return lambda: fs.sample(model, SDE, n, method="em", steps=steps, backend=backend, seed=SEED)


def check_against_reference(backend: str, model, steps: int) -> None:
    """Sanity check (not the correctness test): the first CHECK_N trajectories of a native
    backend match the float64 reference, same plan and seed, to CHECK_RTOL of max |x|."""
    got = fs.sample(model, SDE, CHECK_N, method="em", steps=steps, backend=backend, seed=SEED).double()
    ref = fs.sample(copy.deepcopy(model).double(), SDE, CHECK_N, method="em", steps=steps, backend="torch", seed=SEED)
    assert torch.isfinite(got).all(), f"{backend} backend produced non-finite samples"
    scale = ref.abs().max().item()
    err = (got - ref).abs().max().item()
    assert err <= CHECK_RTOL * scale, (
        f"{backend} backend disagrees with the float64 reference: max |diff| {err:.3g} > {CHECK_RTOL} * {scale:.3g}"
    )


def cpu_counters() -> tuple[float, int, int] | None:
    """(wall time, busy jiffies of the whole machine, jiffies of this process) from /proc."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()  # fields after "(comm)"; utime, stime are 14, 15
    except (OSError, ValueError, IndexError):
        return None
    return time.perf_counter(), v[0] + v[1] + v[2] + v[5] + v[6] + v[7], int(own[11]) + int(own[12])


def foreign_cpu(before, after) -> float | None:
    """Cores' worth of CPU used by other processes between two cpu_counters(), as a fraction
    of all cores: 0 on an idle machine; 0.5 means another process held one of two cores."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    ticks = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, ticks / os.sysconf("SC_CLK_TCK") / (after[0] - before[0]) / (os.cpu_count() or 1))


CASES = [
    pytest.param(b, n, w, id=f"{b}-n{n}-w{w}")
    for w in WIDTHS
    for n in N_VALUES
    for b in BACKENDS
]


@pytest.mark.parametrize(("backend", "n", "width"), CASES)
def test_em(benchmark, record, backend, n, width):
    model = make_model(width)
    flops_per_eval = model.flops_per_eval()
    steps = choose_steps(backend, n, width, flops_per_eval)
    if backend in ("cpu", "numba"):
        check_against_reference(backend, model, min(steps, CHECK_MAX_STEPS))
    benchmark.group = f"em-w{width}-n{n}"
    benchmark.extra_info["loadavg_before"] = os.getloadavg()[0]
    before = cpu_counters()
    out = benchmark.pedantic(runner(backend, model, n, steps), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["foreign_cpu"] = foreign_cpu(before, cpu_counters())
    benchmark.extra_info["loadavg_after"] = os.getloadavg()[0]
    assert out.shape == (n, DIM) and torch.isfinite(out).all()
    record(backend=backend, n=n, width=width, steps=steps, flops_per_eval=flops_per_eval)
