"""Fixed cost of a sampler call, for pipelines that ask for few samples often (a control loop:
one action sample 50 times a second).

Cases (seed 002's network: dim 2, 5 x 64 ReLU, 33,408 FLOP per evaluation; Euler–Maruyama):
n = 1 with 10 and 100 steps, n = 64 with 20 steps, each called four ways:

  kernel   _core.PreparedSampler.run: the C++ kernel and its binding alone (the floor)
  Sampler  s(n, seed) on a prepared fs.Sampler (checks, the kernel, the finiteness check)
  sample   fs.sample(...): the one-call form, its prepared request found in the cache
  fresh    fs.Sampler(...) made and called once: what every call cost before the cache

Each is compared with the arithmetic time, FLOPs / the FMA peak of the threads the call can
use (one per tile of samples, at most the OpenMP threads), measured in the same run. The
overhead of the Python layer is Sampler minus kernel. A call of fewer than half a tile runs
its samples one by one as matrix-vector products, whose every multiply-add loads its own
weight: its bound is the rate `_core.matvec_gflops` measures through the network's four
64 x 64 layers (64 KiB of weights: from L2 where L1 is smaller), also in the same run.

Run (see bench/README.md):
    python -m pytest bench/test_bench_overhead.py -q --benchmark-json=bench/results/overhead.json -p no:cacheprovider
"""

from __future__ import annotations

import math

import pytest
import torch

import fastscore as fs
from fastscore import _core
from fastscore.backends import cpu
from fastscore.machine import fma_peak

SDE = fs.VPSDE(beta_min=0.1, beta_max=20.0, T=1.0)
CASES = [(1, 10), (1, 100), (64, 20)]  # (n, steps)
WAYS = ("kernel", "Sampler", "sample", "fresh")
SEED = 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1064)
    return fs.ScoreMLP(dim=2, width=64, depth=5, activation="relu", time_embedding="concat").eval()


@pytest.fixture(scope="module")
def thread_peak():
    """FMA peak of one thread, GFLOP/s (fastscore.machine.fma_peak), the unit of the arithmetic time."""
    return fma_peak(threads=1)["gflops"]


@pytest.fixture(scope="module")
def matvec_rate():
    """One thread's GFLOP/s through the seed-002 network's hidden layers as a lone sample runs
    them (median of 5), the unit of a lone call's bound."""
    runs = sorted(_core.matvec_gflops(64, 4) for _ in range(5))
    return runs[2]


def call(way: str, model, n: int, steps: int):
    s = fs.Sampler(model, SDE, "em", steps, backend="cpu")
    if way == "kernel":
        prepared = _core.PreparedSampler(*cpu.net_args(s.plan.kernel.packed), *cpu.program_args(s.plan))
        return lambda: prepared.run(None, n, SEED, 0)
    if way == "Sampler":
        return lambda: s(n, SEED)
    if way == "sample":
        return lambda: fs.sample(model, SDE, n, "em", steps, backend="cpu", seed=SEED)
    return lambda: fs.Sampler(model, SDE, "em", steps, backend="cpu")(n, SEED)


@pytest.mark.skipif(not fs.backends()["cpu"]["available"], reason="no compiled cpu backend")
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("n,steps", CASES, ids=[f"n{n}-steps{s}" for n, s in CASES])
def test_call_overhead(benchmark, model, thread_peak, matvec_rate, machine, n, steps, way):
    run = call(way, model, n, steps)
    run()  # warm-up: first-touch allocations
    benchmark.pedantic(run, rounds=200 if way != "fresh" else 30, iterations=5 if way != "fresh" else 1)
    threads = min(math.ceil(n / _core.build_info()["tile"]), _core.build_info()["openmp_threads"])
    flops = n * steps * model.flops_per_eval()
    arithmetic = flops / (thread_peak * threads * 1e9)
    lone = n < _core.build_info()["lone_below"]
    bound = flops / (matvec_rate * 1e9) if lone else arithmetic
    benchmark.extra_info.update(suite="overhead", way=way, n=n, steps=steps, flops=flops, threads=threads,
                                thread_peak_gflops=thread_peak, matvec_gflops=matvec_rate, arithmetic_s=arithmetic,
                                bound_s=bound,
                                cpu_model=machine["cpu_model"])
