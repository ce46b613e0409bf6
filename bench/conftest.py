"""Shared fixtures of the benchmark suites: the measured FMA peak and the machine.

Every benchmark records its throughput next to the peak measured in the same session
(``fastscore.machine.fma_peak``: the FMA probe's best chain count, median of 5), so a result reads as "% of what this
machine's FMA units can do" and is comparable across machines. The peak and a machine
description also go into the JSON's ``machine_info`` (hook below), where ``render.py``
reads them for the report header.
"""

from __future__ import annotations


import pytest

from fastscore import _core
from fastscore.machine import describe, fma_peak as probe_peak

_cache: dict = {}


def measure_peak() -> dict:
    """The FMA peak of all OpenMP threads (fastscore.machine.fma_peak: GFLOP/s, chain counts,
    nominal clock), measured once per session."""
    if "peak" not in _cache:
        _cache["peak"] = probe_peak()
    return _cache["peak"]


def describe_machine() -> dict:
    if "machine" not in _cache:
        _cache["machine"] = {**describe(), "build_info": dict(_core.build_info())}
    return _cache["machine"]


@pytest.fixture(scope="session")
def fma_peak() -> float:
    """Measured FP32 FMA peak of this machine, GFLOP/s (all OpenMP threads)."""
    return measure_peak()["gflops"]


@pytest.fixture(scope="session")
def machine() -> dict:
    return describe_machine()


@pytest.fixture
def record(benchmark, fma_peak, machine):
    """Puts the peak and machine into the benchmark's extra_info; returns a function that,
    after the timing, adds the case's sizes and its throughput (from the median round)."""
    benchmark.extra_info["peak_gflops"] = fma_peak
    benchmark.extra_info["cpu_model"] = machine["cpu_model"]
    benchmark.extra_info["threads"] = machine["build_info"]["openmp_threads"]

    def done(*, backend: str, n: int, width: int, steps: int, flops_per_eval: int) -> float:
        median = benchmark.stats.stats.median
        flops = n * steps * flops_per_eval
        gflops = flops / median / 1e9
        benchmark.extra_info.update(
            backend=backend, n=n, width=width, steps=steps, flops_per_eval=flops_per_eval,
            flops=flops, median_s=median, gflops=gflops, pct_peak=100.0 * gflops / fma_peak,
        )
        return gflops

    return done


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add the CPU model, core count, build and the measured peak to the JSON's machine_info."""
    machine_info["fastscore"] = describe_machine()
    machine_info["fastscore"]["fma_peak"] = measure_peak()


@pytest.fixture
def record_log_prob(benchmark, machine):
    """Records a likelihood case: backend, size, accuracy against a fine solve, evaluations."""

    def done(**info) -> None:
        benchmark.extra_info.update(suite="log_prob", cpu_model=machine["cpu_model"], **info)

    return done
