"""What a timing ran on: the facts a benchmark report states next to its numbers."""

from __future__ import annotations

import os
import platform
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
