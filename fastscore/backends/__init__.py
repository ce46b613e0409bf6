"""Backend registry: what each backend can run, and the one place a backend is chosen.

``backends()`` reports availability; ``select`` resolves ``backend="auto"`` (fastest
available: cuda, cpu, numba, then the torch reference) and ends in an error that says how
to fix the request when the named backend cannot run it.
"""

from __future__ import annotations

from . import cpu, cuda, numba_backend, reference

NAMES = ("cpu", "cuda", "numba", "torch")
_MODULES = {"cpu": cpu, "cuda": cuda, "numba": numba_backend, "torch": reference}


def backends() -> dict:
    """Per backend: ``available`` (usable now), ``compiled`` (native code present), ``detail``."""
    return {
        "cpu": cpu.info(),
        "cuda": cuda.info(),
        "numba": numba_backend.info(),
        "torch": {"available": True, "compiled": False, "detail": "reference (PyTorch)"},
    }


def _supports(name: str, task: str, method: str) -> bool:
    """Whether a native backend implements (task, method); the reference implements all."""
    return name in _MODULES and (task, method) in _MODULES[name].SUPPORTS


def resolve(backend: str, task: str, method: str) -> str:
    """The name of the backend that runs (task, method); "auto" picks the fastest that can."""
    if backend not in NAMES and backend != "auto":
        raise ValueError(f"unknown backend {backend!r}; choose 'auto' or one of {', '.join(map(repr, NAMES))}")
    if backend == "torch":
        return backend
    info = backends()
    if backend == "auto":
        for name in ("cuda", "cpu", "numba"):
            if info[name]["available"] and _supports(name, task, method):
                return name
        return "torch"
    if not info[backend]["available"]:
        raise RuntimeError(f"backend {backend!r} is not available here: {info[backend]['detail']}")
    if not _supports(backend, task, method):
        raise ValueError(
            f"{task} method {method!r} is not implemented on backend {backend!r}; "
            "use backend='torch' (the reference) or backend='auto'"
        )
    return backend


def select(backend: str, task: str, method: str):
    """The module that runs (task, method) on `backend` (see ``resolve``)."""
    return _MODULES[resolve(backend, task, method)]
