"""Large runs in chunks of sample (or point) indices: each chunk is one kernel call on indices
[a, b), so results are those of one call (sample i depends only on its index), a progress bar
and a callback follow the chunks, and Ctrl-C is honoured between them (a kernel call runs
without the GIL and cannot be interrupted inside; chunks are sized to about CHUNK_SECONDS).

Destinations for samples (``out=``): a preallocated torch tensor or numpy array (a
``np.memmap`` included), or a path ending in ``.npy`` written as a memory-mapped file, so a run
larger than memory goes straight to disk. Whether the result fits where it is asked to go is
checked before any work starts.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .plan import check_memory

CHUNK_SECONDS = 0.25  # aimed-for duration of one chunk: interrupts and progress within ~1 s
MAX_FIRST_CHUNK = 4096  # indices of the first chunk at most (it measures the rate)
MAX_CHUNK = 2**22
# a low guess of the kernels' rate, FLOP/s, to size the first chunk (the chunks after it follow
# the rate measured on it): they run 20-200 GFLOP/s on 2 cores
GUESSED_RATE = 2e10
GUESSED_FLOPS = 1e6  # per evaluation of a network of unknown size (a torch module on the reference)
PROGRESS_AFTER_S = 2.0  # progress=None: a bar appears once the run is expected to take longer


def first_chunk(backend: str, model, evaluations: float, least: int) -> int | None:
    """Indices of a run's first chunk: about CHUNK_SECONDS at a low guess of the kernels' rate,
    each index costing `evaluations` network evaluations, and at least `least` (the backend's
    least_chunk, which the caller keeps for the later chunks). A call of at most this many runs as
    one kernel call (a control loop's few samples). None for the reference backend, which runs
    a request whole: its rk45 shares one step size over the batch and its float32 products
    round by batch size, so chunks would change its numbers (and, being Python, it is
    interrupted at once anyway)."""
    from .fx_import import ImportedModel
    from .nn import ScoreMLP, pack

    if backend == "torch":
        return None
    flops = pack(model).flops_per_eval if isinstance(model, (ScoreMLP, ImportedModel)) else GUESSED_FLOPS
    guess = GUESSED_RATE * CHUNK_SECONDS // max(evaluations * flops, 1.0)
    return int(min(MAX_FIRST_CHUNK, max(least, guess)))


def least_chunk(backend: str) -> int:
    """The fewest indices a chunk should have: on the cpu backend a tile for every OpenMP thread,
    as a chunk of fewer tiles leaves threads idle for all of it (em with 19,332 steps went in
    chunks of 7 to 16 samples and ran at half the FMA peak on 2 threads). Long trajectories then
    make chunks longer than CHUNK_SECONDS; 1 on the other backends."""
    if backend != "cpu":
        return 1
    from . import _core

    info = _core.build_info()
    return min(MAX_FIRST_CHUNK, info["tile"] * info["openmp_threads"])


def run_chunks(n: int, run: Callable[[int, int], object], write: Callable[[int, int, object], None], *,
               first: int | None, progress: bool | None, callback: Callable[[int, int], None] | None,
               desc: str, least: int = 1) -> None:
    """run(a, b) computes indices [a, b); write(a, b, result) stores it. The first chunk has
    `first` indices (None: all n in one), the next ones about CHUNK_SECONDS each at the measured
    rate, and at least `least` (least_chunk); after each, callback(done, n) is called and the bar
    advances."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None (automatic), got {type(progress).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(done, total), got {type(callback).__name__}")
    bar, done, size, began = None, 0, n if first is None else max(1, first), time.perf_counter()
    try:
        if progress:
            bar = _bar(n, 0, desc)
        while done < n:
            b = min(n, done + size)
            t0 = time.perf_counter()
            write(done, b, run(done, b))
            took = time.perf_counter() - t0
            done = b
            if callback is not None:
                callback(done, n)
            if bar is None and progress is None and done < n:
                remaining = (n - done) * (time.perf_counter() - began) / done
                if time.perf_counter() - began + remaining > PROGRESS_AFTER_S:
                    bar = _bar(n, done, desc)
            elif bar is not None:
                bar.update(b - bar.n)
            size = int(min(MAX_CHUNK, max(least, size * CHUNK_SECONDS / max(took, 1e-6), size // 4)))
    finally:
        if bar is not None:
            bar.close()


def _bar(n: int, done: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=n, initial=done, desc=desc, unit="sample", unit_scale=True, dynamic_ncols=True)


def destination(out, n: int, dim: int, dtype: torch.dtype, device: torch.device):
    """Where to write [n, dim] samples: out=None (a new tensor of dtype on device), a tensor, a
    numpy array or a .npy path (a new float32 memory-mapped file), checked before any work."""
    if out is None:
        check_memory(f"the output of n={n} samples of dim {dim}", n * dim * dtype.itemsize)
        return torch.empty((n, dim), dtype=dtype, device=device)
    if isinstance(out, (str, os.PathLike)):
        path = Path(out)
        if path.suffix != ".npy":
            raise ValueError(f"out: a path must end in .npy (written as a memory-mapped array), got {str(path)!r}")
        if not path.parent.is_dir():
            raise ValueError(f"out: folder {str(path.parent)!r} does not exist")
        need, free = n * dim * 4 + 4096, shutil.disk_usage(path.parent).free
        if need > free:
            raise ValueError(f"out: {need / 2**30:.2f} GiB of samples do not fit the {free / 2**30:.2f} GiB free "
                             f"under {str(path.parent)!r}")
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    if isinstance(out, (torch.Tensor, np.ndarray)):
        if tuple(out.shape) != (n, dim):
            raise ValueError(f"out must have shape [n, dim] = [{n}, {dim}], got {tuple(out.shape)}")
        floating = out.is_floating_point() if isinstance(out, torch.Tensor) else np.issubdtype(out.dtype, np.floating)
        if not floating:
            raise TypeError(f"out must hold floating-point values, got {out.dtype}")
        if isinstance(out, np.ndarray) and not out.flags.writeable:
            raise ValueError("out is a read-only array")
        return out
    raise TypeError(f"out must be None, a torch tensor, a numpy array or a .npy path, got {type(out).__name__}")


def store(dest, a: int, b: int, x: torch.Tensor) -> None:
    """dest[a:b] = x for a tensor or numpy destination."""
    if isinstance(dest, torch.Tensor):
        dest[a:b].copy_(x)
    else:
        dest[a:b] = x.detach().cpu().numpy()
