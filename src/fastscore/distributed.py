"""Scale-out on Dask: a sampling run sharded by sample index over a ``dask.distributed``
cluster. Sample i depends only on (seed, i, plan), so shard [a, b) is ``fs.sample(...,
n=b - a, start=start + a)`` on any worker, and the shards together are bit for bit the
single-process run with the same seed.

    import fastscore.distributed as fsd
    x = fsd.sample(model, sde, 10**8, "em", 100, seed=0)             # a lazy dask array [n, dim]
    x[:1000].compute()                                                # any scheduler computes it
    fsd.sample(model, sde, 10**9, "em", 100, out="x.npy")            # written now, on a LocalCluster
    fsd.sample(..., client=Client(SLURMCluster(...)), out="x.npy")    # or on yours (dask-jobqueue)

The network goes to each worker once (scattered with the client); every worker prepares the
request once (``fs.sample``'s cache) and keeps it for its shards. Needs the ``distributed``
extra: ``pip install "fastscore[distributed]"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import sampling
from .plan import MAX_INDEX, check_cond, check_int, model_dim

DEFAULT_SHARD = 2**20  # samples per task: seconds of kernel time, a few MB of output


def _dask():
    try:
        import dask
        import dask.array as da
        import distributed
    except ImportError as exc:
        raise ImportError("fastscore.distributed needs Dask: pip install 'fastscore[distributed]'") from exc
    return dask, da, distributed


def _shard(model, sde, a: int, b: int, start: int, cond, kwargs: dict) -> np.ndarray:
    """Samples of stream indices start + a .. start + b - 1, on a worker (float32 numpy)."""
    torch.set_num_threads(1)  # a worker's threads are dask's; the kernels use OpenMP
    x = sampling.sample(model, sde, b - a, start=start + a, cond=cond, progress=False, **kwargs)
    return x.detach().cpu().numpy().astype(np.float32, copy=False)


def _write_shard(path: str, model, sde, a: int, b: int, start: int, cond, kwargs: dict) -> int:
    """Shard [a, b) written into rows a .. b - 1 of the .npy file at path (made by the caller)."""
    rows = np.load(path, mmap_mode="r+")
    rows[a:b] = _shard(model, sde, a, b, start, cond, kwargs)
    rows.flush()
    return b - a


def _bounds(n: int, shard: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + shard)) for a in range(0, n, shard)]


def sample(model, sde, n: int, method: str = "em", steps: int = 1000, *, seed: int = 0, start: int = 0, cond=None,
           shard: int = DEFAULT_SHARD, client=None, out=None, **options):
    """n samples of ``fs.sample(model, sde, n, method, steps, seed=seed, start=start, cond=cond,
    **options)``, computed in shards of `shard` sample indices by Dask.

    client: a ``distributed.Client``, or a cluster (anything with a ``scheduler_address``:
        LocalCluster, dask-jobqueue's SLURMCluster, dask-cuda's LocalCUDACluster) to connect to.
    out: None returns a lazy dask array [n, dim] (float32), computed by the client's cluster
        when one is given, else by whichever scheduler computes it. A ``.npy`` path: the samples
        are written into it now (by the client's cluster, or a LocalCluster of this machine's
        cores started for the call) and the path is returned; it must be on storage the workers
        share.
    cond: [n, cond_dim] or [cond_dim], as ``fs.sample``'s; each shard ships its rows.
    """
    dask, da, distributed = _dask()
    dim = model_dim(model)
    n, start, shard = check_int("n", n, 0), check_int("start", start, 0), check_int("shard", shard, 1)
    if start + n > MAX_INDEX:
        raise ValueError(f"start + n must be <= 2**32 (sample indices of the random stream), got {start + n}")
    cond = check_cond(model, cond, n)
    kwargs = dict(method=method, steps=steps, seed=seed, **options)
    sampling.Sampler(model, sde, method, steps, **{k: v for k, v in options.items() if k in _PLAN_OPTIONS})  # check now
    rows = (lambda a, b: None) if cond is None else (lambda a, b: cond[a:b].numpy())
    if out is None:
        return _lazy(dask, da, model, sde, n, dim, start, rows, kwargs, shard,
                     _client(distributed, client, create=False))
    path = Path(out)
    if path.suffix != ".npy":
        raise ValueError(f"out must be a .npy path, got {str(out)!r}")
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim)).flush()
    own = client is None
    c = _client(distributed, client, create=True)
    try:
        remote = c.scatter(model, broadcast=True)
        futures = [c.submit(_write_shard, str(path), remote, sde, a, b, start, rows(a, b), kwargs, pure=False)
                   for a, b in _bounds(n, shard)]
        c.gather(futures)
    finally:
        if own:
            cluster = c.cluster
            c.close()
            cluster.close()
    return path


# fs.Sampler's options (the rest of fs.sample's keywords are per call)
_PLAN_OPTIONS = ("backend", "eps", "snr", "corrector_steps", "denoise", "grid", "rtol", "atol")


def _client(distributed, client, create: bool):
    """The Client to use: the one given, one connected to a given cluster, or (create) a new
    LocalCluster's with a worker process per core and one thread each."""
    if client is None:
        if not create:
            return None
        cluster = distributed.LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
        return distributed.Client(cluster)
    if isinstance(client, distributed.Client):
        return client
    if hasattr(client, "scheduler_address"):
        return distributed.Client(client)
    raise TypeError(f"client must be a distributed.Client or a cluster, got {type(client).__name__}")


def _lazy(dask, da, model, sde, n, dim, start, rows, kwargs, shard, client):
    """The dask array of the shards (the network scattered to the client's workers if any)."""
    held = client.scatter(model, broadcast=True) if client is not None else model
    blocks = [da.from_delayed(dask.delayed(_shard, pure=True)(held, sde, a, b, start, rows(a, b), kwargs),
                              shape=(b - a, dim), dtype=np.float32)
              for a, b in _bounds(n, shard)]
    return da.concatenate(blocks) if blocks else da.zeros((0, dim), dtype=np.float32)
