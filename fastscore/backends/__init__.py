"""Backend registry: what each backend can run, and the one place a backend is chosen.

``backends()`` reports availability; ``select`` resolves ``backend="auto"`` (fastest
available: cpu, then numba, then the torch reference) and ends in an error that says how
to fix the request when the named backend cannot run it.
"""

from __future__ import annotations

from . import cpu, reference

NAMES = ("cpu", "cuda", "numba", "torch")

# (task, method) pairs each native backend implements; the reference implements all
_SUPPORTS = {
    "cpu": {("sample", "em")},
    "cuda": set(),
    "numba": set(),
}


def _numba_info() -> dict:
    try:
        import numba
    except ImportError as exc:  # numba is an optional extra
        return {"available": False, "compiled": False, "detail": f"numba not installed ({exc})"}
    return {"available": False, "compiled": False, "detail": f"numba {numba.__version__}: no kernels yet"}


def backends() -> dict:
    """Per backend: ``available`` (usable now), ``compiled`` (native code present), ``detail``."""
    return {
        "cpu": cpu.info(),
        "cuda": cpu.cuda_info(),
        "numba": _numba_info(),
        "torch": {"available": True, "compiled": False, "detail": "reference (PyTorch)"},
    }


def resolve(backend: str, task: str, method: str) -> str:
    """The name of the backend that runs (task, method); "auto" picks the fastest that can."""
    if backend not in NAMES and backend != "auto":
        raise ValueError(f"unknown backend {backend!r}; choose 'auto' or one of {', '.join(map(repr, NAMES))}")
    if backend == "torch":
        return backend
    info = backends()
    if backend == "auto":
        for name in ("cuda", "cpu", "numba"):
            if info[name]["available"] and (task, method) in _SUPPORTS[name]:
                return name
        return "torch"
    if not info[backend]["available"]:
        raise RuntimeError(f"backend {backend!r} is not available here: {info[backend]['detail']}")
    if (task, method) not in _SUPPORTS[backend]:
        raise ValueError(
            f"{task} method {method!r} is not implemented on backend {backend!r}; "
            "use backend='torch' (the reference) or backend='auto'"
        )
    return backend


def select(backend: str, task: str, method: str):
    """The module that runs (task, method) on `backend` (see ``resolve``)."""
    return {"cpu": cpu, "torch": reference}[resolve(backend, task, method)]
