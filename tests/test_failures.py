"""Honest failures and concurrent use: a network that blows up mid-trajectory raises
FloatingPointError naming how many results and the first (the same on every backend),
never returns silent garbage; calls from several Python threads at once (the kernels release
the GIL) give the bits of sequential calls."""

from __future__ import annotations

import threading

import pytest
import torch

import fastscore as fs

BACKENDS = ["torch"] + [b for b in ("cpu", "numba") if fs.backends()[b]["available"]]


def _overflowing_net() -> fs.ScoreMLP:
    """s(x) = 1e38 relu(x_0) e_0 (one hidden unit): float32 overflow exactly where x_0 > 3.4,
    zero score elsewhere, so which samples fail is known in advance."""
    model = fs.ScoreMLP(2, 1, 1, "relu")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.layers[0].weight[0, 0] = 1.0
        model.layers[1].weight[0, 0] = 1e38
    return model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["euler", "rk4", "rk45"])
def test_log_prob_that_blows_up_names_the_first_failing_point(backend, method):
    x = torch.full((10, 2), -1.0)
    x[4, 0] = x[8, 0] = 5.0  # these two overflow at the first evaluation
    with pytest.raises(FloatingPointError, match=r"2 of 10 results are not finite \(the first: index 4\)"):
        fs.log_prob(_overflowing_net(), fs.VPSDE(), x, method, steps=40, backend=backend)
    ok = fs.log_prob(_overflowing_net(), fs.VPSDE(), x[:4], method, steps=40, backend=backend)  # stable steps: x_0 stays < 0
    assert torch.isfinite(ok).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["em", "pc", "ald", "ode_heun"])
def test_sampler_that_blows_up_raises_instead_of_returning_garbage(backend, method):
    with pytest.raises(FloatingPointError, match=r"results are not finite \(the first: index \d+\)"):
        fs.sample(_overflowing_net(), fs.VPSDE(), 64, method, 10, backend=backend, seed=3)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_concurrent_calls_from_threads_match_sequential_calls(backend):
    torch.manual_seed(0)
    model = fs.ScoreMLP(2, 32, 3, "silu")
    x = torch.randn(200, 2)
    jobs = [("sample", seed) for seed in range(4)] + [("log_prob", method) for method in ("heun", "rk45")]

    def run(job):
        kind, arg = job
        if kind == "sample":
            return fs.sample(model, fs.VPSDE(), 300, "pc", 20, backend=backend, seed=arg)
        return fs.log_prob(model, fs.VPSDE(), x, arg, steps=10, backend=backend)

    sequential = [run(job) for job in jobs]
    results = [None] * len(jobs)
    errors = []

    def worker(i):
        try:
            results[i] = run(jobs[i])
        except Exception as exc:  # reported below with the job that raised
            errors.append((jobs[i], exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for job, got, want in zip(jobs, results, sequential):
        assert torch.equal(got, want), job
