"""Large runs in chunks (fastscore/chunks.py): the same numbers as one call, written where out=
says, checked before any work, with progress, callbacks and Ctrl-C between chunks."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore import chunks

from cases import NATIVE_BACKENDS, fresh_seed



@pytest.fixture
def small_chunks(monkeypatch):
    """First chunks of 5 indices, then chunks of at most 37: many chunks on a small run,
    whatever the machine's speed."""
    monkeypatch.setattr(chunks, "MAX_FIRST_CHUNK", 5)
    monkeypatch.setattr(chunks, "MAX_CHUNK", 37)


def _model(seed):
    torch.manual_seed(seed)
    return fs.ScoreMLP(2, 16, 2, "silu", cond_dim=1)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("method,steps", [("em", 7), ("ode_rk45", 1)])
def test_chunked_runs_give_one_call_s_samples(small_chunks, backend, method, steps):
    seed = fresh_seed()
    model, sde, n = _model(seed), fs.VPSDE(), 300
    cond = torch.randn(n, 1)
    seen = []
    s = fs.Sampler(model, sde, method, steps, backend=backend)
    assert s._first == 5
    x, info = s(n, seed, start=3, cond=cond, return_info=True, callback=lambda done, total: seen.append((done, total)))
    assert len(seen) >= 9 and seen[-1] == (n, n) and all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
    for a, b in ((0, 5), (5, 40), (290, 300)):  # any sub-range as its own call
        part, part_info = s(b - a, seed, start=3 + a, cond=cond[a:b], return_info=True)
        assert torch.equal(part, x[a:b]) and torch.equal(part_info["nfe"], info["nfe"][a:b])


def test_the_reference_runs_whole(small_chunks, tmp_path):
    """Its rk45 shares a step size over the batch: chunks would change its numbers."""
    model, sde = _model(4).double(), fs.VPSDE()
    seen = []
    x = fs.sample(model, sde, 40, "em", 5, backend="torch", cond=torch.zeros(1), out=tmp_path / "r.npy",
                  callback=lambda d, n: seen.append(d))
    assert seen == [40] and x.shape == (40, 2)
    points, cond = torch.randn(30, 2, dtype=torch.float64), torch.randn(30, 1)
    lp = fs.log_prob(model, sde, points, "rk45", backend="torch", cond=cond, callback=lambda d, n: seen.append(d))
    assert seen == [40, 30] and torch.equal(lp, fs.log_prob(model, sde, points, "rk45", backend="torch", cond=cond))


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_hutchinson_chunks_keep_each_point_s_probe(monkeypatch, backend):
    """A chunk's points take the probes of their indices in the whole call (its offset goes to
    the kernel), so the chunking, which follows the measured rate, changes no value."""
    seed = fresh_seed()
    model, sde = _model(seed), fs.VPSDE()
    x, cond = torch.randn(60, 2), torch.randn(60, 1)
    request = (model, sde, "heun", 6)
    whole = fs.LogProb(*request, backend=backend, trace="hutchinson", seed=seed)(x, cond=cond)
    monkeypatch.setattr(chunks, "MAX_FIRST_CHUNK", 5)
    monkeypatch.setattr(chunks, "MAX_CHUNK", 37)
    seen = []
    got = fs.LogProb(*request, backend=backend, trace="hutchinson", seed=seed)(
        x, cond=cond, callback=lambda done, total: seen.append(done))
    assert len(seen) > 2 and torch.equal(got, whole)


def test_log_prob_chunks_give_one_call_s_values(small_chunks):
    seed = fresh_seed()
    model, sde = _model(seed), fs.VPSDE()
    x, cond = torch.randn(60, 2), torch.randn(60, 1)
    seen = []
    got, info = fs.log_prob(model, sde, x, "heun", 6, cond=cond, return_info=True,
                            callback=lambda done, total: seen.append(done))
    assert len(seen) > 2 and seen[-1] == 60
    lp = fs.LogProb(model, sde, "heun", 6)
    for a, b in ((0, 5), (17, 60)):
        assert torch.equal(lp(x[a:b], cond=cond[a:b]), got[a:b])


def test_out_takes_tensors_arrays_and_npy_paths(tmp_path):
    model, sde, n = _model(1), fs.VPSDE(), 5000
    cond = torch.randn(n, 1)
    s = fs.Sampler(model, sde, "ode_euler", 4)
    want = s(n, 2, cond=cond)
    buf = torch.full((n, 2), float("nan"), dtype=torch.float64)
    assert s(n, 2, cond=cond, out=buf) is buf and torch.equal(buf, want.double())
    arr = np.zeros((n, 2), np.float32)
    assert s(n, 2, cond=cond, out=arr) is arr and np.array_equal(arr, want.numpy())
    mm = np.lib.format.open_memmap(tmp_path / "pre.npy", mode="w+", dtype=np.float32, shape=(n, 2))
    assert s(n, 2, cond=cond, out=mm) is mm and np.array_equal(np.load(tmp_path / "pre.npy"), want.numpy())
    path = tmp_path / "samples.npy"
    got = fs.sample(model, sde, n, "ode_euler", 4, seed=2, cond=cond, out=str(path))
    assert isinstance(got, np.memmap) and np.array_equal(np.load(path), want.numpy())


def test_a_destination_that_cannot_hold_the_run_is_refused_before_any_work(tmp_path, monkeypatch):
    s = fs.Sampler(fs.ScoreMLP(2, 8, 1), fs.VPSDE(), "em", 3)
    called = []
    cb = called.append
    cases = [
        (dict(out=torch.zeros(9, 2)), ValueError, r"shape \[n, dim\] = \[10, 2\]"),
        (dict(out=np.zeros((10, 2), np.int32)), TypeError, "floating-point"),
        (dict(out=tmp_path / "x.csv"), ValueError, "must end in .npy"),
        (dict(out=tmp_path / "missing" / "x.npy"), ValueError, "does not exist"),
        (dict(out=[[0.0, 0.0]] * 10), TypeError, "out must be None"),
        (dict(progress="yes"), TypeError, "progress must be"),
    ]
    ro = np.zeros((10, 2), np.float32)
    ro.flags.writeable = False
    cases.append((dict(out=ro), ValueError, "read-only"))
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            s(10, 0, callback=lambda d, n: cb(d), **kwargs)
    monkeypatch.setattr(chunks.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(ValueError, match="do not fit"):
        s(10**6, 0, out=tmp_path / "big.npy")
    assert not called and not (tmp_path / "big.npy").exists()


def test_progress_bar_when_asked_or_long(small_chunks, capsys, monkeypatch):
    s = fs.Sampler(fs.ScoreMLP(2, 8, 1), fs.VPSDE(), "em", 3)
    s(200, 0, progress=False)
    assert "sample em" not in capsys.readouterr().err
    s(200, 0, progress=True)
    assert "sample em" in capsys.readouterr().err
    monkeypatch.setattr(chunks, "PROGRESS_AFTER_S", 0.0)  # every run counts as long
    s(200, 0)
    assert "sample em" in capsys.readouterr().err


SCRIPT = """
import sys, time, torch, fastscore as fs
model = fs.ScoreMLP(2, 64, 5)
print("start", flush=True)
fs.sample(model, fs.VPSDE(), 10**7, "em", 1000, progress=False)
"""


@pytest.mark.skipif("cpu" not in NATIVE_BACKENDS, reason="extension not built")
def test_cpu_chunks_keep_every_thread_busy(monkeypatch):
    """However long each index's trajectory, a cpu chunk holds a tile per OpenMP thread: chunks
    sized by time alone went down to 7-16 samples of a 19,332-step em run, one thread's work."""
    info = fs._core.build_info()
    least = info["tile"] * info["openmp_threads"]
    s = fs.Sampler(_model(fresh_seed()), fs.VPSDE(), "em", 1_000_000, backend="cpu")
    assert s._first >= least  # the time guess alone: 1 sample
    monkeypatch.setattr(chunks, "CHUNK_SECONDS", 1e-4)  # every chunk takes far longer than aimed at
    sizes = []
    chunks.run_chunks(5 * least, lambda a, b: sizes.append(b - a) or time.sleep(0.01), lambda a, b, r: None,
                      first=2 * least, progress=False, callback=None, desc="", least=chunks.least_chunk("cpu"))
    assert sizes[0] == 2 * least and all(size == least for size in sizes[1:]), sizes


def test_ctrl_c_stops_a_long_run_within_about_a_second(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(fs.__file__).parents[1]))  # the fastscore under test
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)
    assert proc.stdout.readline().strip() == "start"
    time.sleep(1.5)  # into the chunks
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    waited = time.perf_counter() - sent
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    # chunks aim at 0.25 s: 1 s leaves room for a slow or shared machine, not for a whole run
    assert waited < 1.5, waited
