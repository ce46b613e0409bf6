"""fastscore.distributed on a real dask LocalCluster of 2 worker processes: shards by sample
index give the single-process run bit for bit, as a dask array and written to .npy."""

import numpy as np
import pytest
import torch

import fastscore as fs

distributed = pytest.importorskip("distributed")
import fastscore.distributed as fsd  # noqa: E402

from cases import fresh_seed  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _model(seed, cond_dim=0):
    torch.manual_seed(seed)
    return fs.ScoreMLP(2, 32, 3, "silu", cond_dim=cond_dim)


def _backends():
    return {name: info["available"] for name, info in fs.backends().items()}


def test_a_dask_array_of_shards_is_the_single_process_run(client):
    # the workers import the same fastscore (a source tree without the extension would fall back
    # to another backend, whose float32 rounding differs)
    assert set(map(str, client.run(_backends).values())) == {str(_backends())}
    seed = fresh_seed()
    model, sde, n = _model(seed), fs.VPSDE(), 2500
    x = fsd.sample(model, sde, n, "dpmpp_2m", 12, seed=seed, start=7, shard=600, client=client)
    assert x.shape == (n, 2) and x.chunks[0] == (600, 600, 600, 600, 100)
    got = x.compute()
    want = fs.sample(model, sde, n, "dpmpp_2m", 12, seed=seed, start=7)
    assert np.array_equal(got, want.numpy())
    # the five shards ran on the cluster's workers (processes of their own)
    assert len(client.scheduler_info()["workers"]) == 2


def test_shards_written_to_npy_with_conditions(client, tmp_path):
    seed = fresh_seed()
    model, sde, n = _model(seed, cond_dim=2), fs.VPSDE(), 1500
    cond = torch.randn(n, 2)
    path = fsd.sample(model, sde, n, "em", 20, seed=seed, cond=cond, shard=400, client=client.cluster,
                      out=tmp_path / "x.npy")
    want = fs.sample(model, sde, n, "em", 20, seed=seed, cond=cond)
    assert np.array_equal(np.load(path), want.numpy())


def test_without_a_client_a_local_cluster_is_started_for_the_call(tmp_path):
    model, sde = _model(5), fs.VPSDE()
    path = fsd.sample(model, sde, 300, "ode_heun", 6, seed=2, shard=128, out=tmp_path / "own.npy")
    assert np.array_equal(np.load(path), fs.sample(model, sde, 300, "ode_heun", 6, seed=2).numpy())


def test_requests_are_checked_before_any_work(client, tmp_path):
    model, sde = _model(0), fs.VPSDE()
    with pytest.raises(ValueError, match="steps must be >= 1"):
        fsd.sample(model, sde, 10, "em", 0, client=client)
    with pytest.raises(ValueError, match=r"\.npy"):
        fsd.sample(model, sde, 10, "em", 5, client=client, out=tmp_path / "x.csv")
    with pytest.raises(TypeError, match="client must be"):
        fsd.sample(model, sde, 10, "em", 5, client="tcp://nowhere", out=tmp_path / "x.npy")
    with pytest.raises(ValueError, match="start \\+ n"):
        fsd.sample(model, sde, 10, "em", 5, start=2**32 - 5)
