"""The Numba backend: CPU fallbacks of the fused kernels, used when the compiled extension
is missing. numba is imported only when a kernel runs (it is slow to import)."""

from __future__ import annotations

import importlib.util

SUPPORTS: set = set()  # (task, method) pairs with a Numba kernel


def info() -> dict:
    if importlib.util.find_spec("numba") is None:
        return {"available": False, "compiled": False, "detail": "numba not installed (pip install 'fastscore[numba]')"}
    if not SUPPORTS:
        return {"available": False, "compiled": False, "detail": "numba found; no kernels yet"}
    return {"available": True, "compiled": False, "detail": "numba (JIT, cached)"}
