"""Backend registry: what each backend declares it runs, and the one place a backend is chosen.

``backends()`` reports availability. Every native backend declares what it runs (``Declares``:
the step-program operations its sampler interprets, its register file, its likelihood methods
and size limits); ``resolve`` holds each request against the declaration before anything runs,
so no backend is handed work it did not declare. ``backend="auto"`` takes the fastest available
backend that runs the request (cuda, cpu, numba) and falls back to the torch reference, which
runs everything; a named backend that cannot run the request raises an error naming both sides.
"""

from __future__ import annotations

from dataclasses import replace

from ..nn import pack
from ..plan import AdaptivePlan
from . import cpu, cuda, numba_backend, reference
from .declares import Declares

NAMES = ("cpu", "cuda", "numba", "torch")
_MODULES = {"cpu": cpu, "cuda": cuda, "numba": numba_backend, "torch": reference}

__all__ = ["NAMES", "Declares", "backends", "resolve", "module", "prepare_sample"]


def backends() -> dict:
    """Per backend: ``available`` (usable now), ``compiled`` (native code present), ``detail``."""
    return {
        "cpu": cpu.info(),
        "cuda": cuda.info(),
        "numba": numba_backend.info(),
        "torch": {"available": True, "compiled": False, "detail": "reference (PyTorch)"},
    }


def _refusal(name: str, task: str, method: str, model, program, trace) -> str | None:
    """Why backend `name` does not run the request, or None if it declares all of it. A model
    the kernels cannot run at all raises pack's TypeError."""
    return _MODULES[name].DECLARES.refuses(name, task, method, pack(model), program, trace)


def resolve(backend: str, task: str, method: str, model, program=None, trace: str | None = None) -> str:
    """The name of the backend that runs the request; "auto" picks the fastest that can.
    program: a sampler's compiled step program; trace: the likelihood's trace estimator."""
    if backend not in NAMES and backend != "auto":
        raise ValueError(f"unknown backend {backend!r}; choose 'auto' or one of {', '.join(map(repr, NAMES))}")
    if backend == "torch":
        return backend
    info = backends()
    if backend == "auto":
        try:
            for name in ("cuda", "cpu", "numba"):
                if info[name]["available"] and _refusal(name, task, method, model, program, trace) is None:
                    return name
        except TypeError:  # not a network the kernels run
            pass
        return "torch"
    if not info[backend]["available"]:
        raise RuntimeError(f"backend {backend!r} is not available here: {info[backend]['detail']}")
    reason = _refusal(backend, task, method, model, program, trace)
    if reason is not None:
        raise ValueError(f"{reason}; use backend='torch' (the reference) or backend='auto'")
    return backend


def module(name: str):
    """The module of a resolved backend name."""
    return _MODULES[name]


def prepare_sample(name: str, model, plan):
    """run(n, seed, start, cond) -> samples (adaptive plans: (samples, info)) of the plan's
    request on backend `name`, for a plan made with n = 0. A backend with work to do once per
    request (the cpu kernels stage the network and tabulate the time phase) does it here, in
    its own prepare_sample(plan); the others take the plan with each call's sizes."""
    mod = _MODULES[name]
    if hasattr(mod, "prepare_sample") and not isinstance(plan, AdaptivePlan):
        return mod.prepare_sample(plan)
    run = mod.sample_adaptive if isinstance(plan, AdaptivePlan) else mod.sample
    return lambda n, seed, start, cond: run(model, replace(plan, n=n, seed=seed, start=start), cond)
