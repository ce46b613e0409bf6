"""What a timing ran on: the facts a benchmark report states next to its numbers."""

from __future__ import annotations

import os
import platform
import statistics
from importlib import metadata

import numpy as np
import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nominal_ghz() -> float | None:
    """The clock /proc/cpuinfo reports (on a VM the nominal one; boost runs above it), GHz."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000.0
    except (OSError, ValueError):
        pass
    return None


def fma_peak(threads: int = 0, repeats: int = 5) -> dict:
    """The FP32 FMA peak that benchmarks quote "% of peak" against, measured now: the median of
    `repeats` runs of the probe at each of its chain counts (``_core.fma_chains_gflops``: from
    latency x pipes up to what the register file holds), the best count's median being the peak.
    threads: OpenMP threads (0: all). Also the FLOP per nominal cycle per thread that it implies,
    beside one full-width FMA per cycle (2 x the vector width): a core with two FMA pipes of its
    vector width reaches twice that, boost clocks raise it further."""
    from . import _core

    info = _core.build_info()
    by_chains = {c: statistics.median(_core.fma_chains_gflops(c, threads=threads) for _ in range(repeats))
                 for c in info["fma_chains"]}
    best = max(by_chains, key=by_chains.get)
    used = threads or info["openmp_threads"]
    ghz = nominal_ghz()
    return {"gflops": by_chains[best], "chains": best, "by_chains": by_chains, "threads": used,
            "nominal_ghz": ghz, "flop_per_nominal_cycle": by_chains[best] / used / ghz if ghz else None,
            "one_fma_per_cycle": 2 * info["fma_width"]}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict:
    """CPU model, cores (all, and those this process may use), the load averages (1, 5, 15 min:
    above the core count, something else competed for the CPU), torch threads and the versions
    of the libraries that set the speed."""
    from . import __version__  # the package's __init__ may still be importing this module

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numba": _version("numba"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "fastscore": __version__,
    }
