"""Prepared requests (fs.Sampler, fs.LogProb) and the cache behind fs.sample / fs.log_prob:
the same numbers as the one-call forms, the network as it was when prepared, changed weights
noticed, entries gone with their model, calls checked."""

import gc
import threading
import weakref

import pytest
import torch

import fastscore as fs
from fastscore import plan as plan_module
from fastscore import prepared

from cases import NATIVE_BACKENDS, fresh_seed

BACKENDS = [*NATIVE_BACKENDS, "torch"]
REQUESTS = [("em", 30, {}), ("dpmpp_2m", 8, {"denoise": True}), ("pc", 6, {"corrector_steps": 2}),
            ("ode_rk45", 1, {"rtol": 1e-3, "atol": 1e-3}), ("em_adaptive", 1, {"rtol": 0.05, "atol": 0.05})]


def _model(seed, cond_dim=0):
    torch.manual_seed(seed)
    return fs.ScoreMLP(2, 16, 2, "silu", cond_dim=cond_dim)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method,steps,options", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_a_sampler_draws_what_sample_draws(backend, method, steps, options):
    seed = fresh_seed()
    model, sde = _model(seed), fs.VPSDE()
    s = fs.Sampler(model, sde, method, steps, backend=backend, **options)
    assert s.backend == backend and s.method == method
    x, info = s(9, seed, start=4, return_info=True)
    y, yinfo = fs.sample(model, sde, 9, method, steps, backend=backend, seed=seed, start=4, return_info=True,
                         **options)
    assert torch.equal(x, y) and info.keys() == yinfo.keys()
    assert all(torch.equal(info[k], yinfo[k]) for k in info)
    # sample i is the same in any call: one prepared sampler serves every batch (the kernels
    # bit for bit; torch's float32 matmul may round differently per batch size)
    if backend != "torch":
        assert torch.equal(s(3, seed, start=6), x[2:5])
    assert s(0, seed).shape == (0, 2)


def test_conditions_are_checked_per_call():
    seed = fresh_seed()
    model, sde = _model(seed, cond_dim=3), fs.VPSDE()
    cond = torch.randn(5, 3)
    s = fs.Sampler(model, sde, "em", 20, backend="auto")
    assert torch.equal(s(5, seed, cond=cond), fs.sample(model, sde, 5, "em", 20, seed=seed, cond=cond))
    assert torch.equal(s(5, seed, cond=cond[1]), s(5, seed, cond=cond[1].expand(5, 3)))
    with pytest.raises(ValueError, match="conditional"):
        s(5, seed)
    with pytest.raises(ValueError, match=r"cond must have shape"):
        s(5, seed, cond=cond[:4])
    with pytest.raises(ValueError, match="non-finite"):
        s(5, seed, cond=torch.full((5, 3), float("nan")))


def test_calls_are_checked():
    s = fs.Sampler(_model(0), fs.VPSDE(), "em", 10)
    for kwargs, error, match in (({"n": -1}, ValueError, "n must be >= 0"), ({"n": 1.5}, TypeError, "n must be an int"),
                                 ({"n": 2, "seed": -3}, ValueError, "seed"), ({"n": 2, "start": 2**32 - 1}, ValueError,
                                                                              "start \\+ n"),
                                 ({"n": 2, "cond": torch.zeros(2, 1)}, ValueError, "takes no condition")):
        with pytest.raises(error, match=match):
            s(**kwargs)
    for backend in BACKENDS:  # the reference, which runs a request whole, included
        wide = fs.Sampler(fs.ScoreMLP(64, 8, 1), fs.VPSDE(), "em", 10, backend=backend)
        with pytest.raises(ValueError, match="more than this machine"):  # 1 TiB of samples, refused before any work
            wide(2**32 - 1, 0)
    with pytest.raises(ValueError, match="rtol and atol"):
        fs.Sampler(_model(0), fs.VPSDE(), "em", rtol=1e-3)
    with pytest.raises(ValueError, match="takes no grid"):
        fs.Sampler(_model(0), fs.VPSDE(), "ode_rk45", grid="karras")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sampler_keeps_the_network_it_was_made_with(backend):
    """The kernels run the network as it was packed; the reference runs the module itself."""
    seed = fresh_seed()
    model, sde = _model(seed), fs.VPSDE()
    s = fs.Sampler(model, sde, "ode_heun", 10, backend=backend)
    before = s(6, seed)
    with torch.no_grad():
        model.layers[0].weight.mul_(1.5)  # in place: the same storage, a new version
    assert torch.equal(s(6, seed), before) == (backend != "torch")
    after = fs.sample(model, sde, 6, "ode_heun", 10, backend=backend, seed=seed)  # noticed by the one-call form
    assert not torch.equal(after, before)
    assert torch.equal(after, fs.Sampler(model, sde, "ode_heun", 10, backend=backend)(6, seed))


def test_one_call_forms_prepare_once_per_request_and_weights(monkeypatch):
    built = []
    real = plan_module.make_sample_plan
    monkeypatch.setattr("fastscore.sampling.make_sample_plan", lambda *a, **k: built.append(1) or real(*a, **k))
    model, sde = _model(1), fs.VPSDE()
    for seed in range(3):
        fs.sample(model, sde, 4, "em", 12, seed=seed)
    assert len(built) == 1
    fs.sample(model, sde, 4, "em", 13)  # another request
    model.load_state_dict(_model(2).state_dict())  # new weights, copied in place
    fs.sample(model, sde, 4, "em", 12)
    assert len(built) == 3
    x = torch.randn(4, 2)
    assert torch.equal(fs.log_prob(model, sde, x, "heun", 8), fs.LogProb(model, sde, "heun", 8)(x))


@pytest.mark.skipif(not NATIVE_BACKENDS, reason="no compiled backend: nothing is cached")
def test_the_weights_key_walks_past_empty_submodule_slots():
    """An imported module with a None submodule slot (register_module(name, None), as torch
    allows) is cached and repacked like any other: the key sees its weights change."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = torch.nn.Linear(3, 16), torch.nn.Linear(16, 2)
            self.register_module("unused", None)

        def forward(self, x, t):
            return self.l2(torch.tanh(self.l1(torch.cat([x, t], -1))))

    torch.manual_seed(fresh_seed())
    model, sde = fs.from_torch(Net(), 2, time_shape="column"), fs.VPSDE()
    backend = NATIVE_BACKENDS[0]
    first = fs.sample(model, sde, 4, "em", 5, backend=backend, seed=1)
    assert torch.equal(fs.sample(model, sde, 4, "em", 5, backend=backend, seed=1), first)
    assert len(prepared._table[model]) == 1
    with torch.no_grad():
        model.net.l2.bias += 1.0
    assert not torch.equal(fs.sample(model, sde, 4, "em", 5, backend=backend, seed=1), first)


def test_entries_go_with_their_model():
    model = _model(3)
    fs.sample(model, fs.VPSDE(), 2, "em", 5)
    fs.log_prob(model, fs.VPSDE(), torch.randn(2, 2), "euler", 4)
    assert len(prepared._table[model]) == 2
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # the cache held no strong reference to it


def test_modules_the_kernels_do_not_run_are_prepared_afresh():
    """A plain torch module runs on the reference only; its behaviour may hang on state the
    weights key does not see, so nothing of it is cached."""
    sde = fs.VPSDE()
    target = fs.targets.ExactGMMScore(fs.targets.target("gmm2d"), sde)
    fs.sample(target, sde, 3, "em", 5, backend="torch")
    assert target not in prepared._table


@pytest.mark.skipif("cpu" not in NATIVE_BACKENDS, reason="no compiled cpu backend here")
def test_a_sampler_serves_threads_at_once():
    seed = fresh_seed()
    s = fs.Sampler(_model(seed), fs.VPSDE(), "em", 50, backend="cpu")
    want = s(64, seed)
    got = {}

    def worker(i):
        got[i] = s(16, seed, start=16 * i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(torch.cat([got[i] for i in range(4)]), want)


def test_log_prob_prepared_matches_and_checks():
    seed = fresh_seed()
    model, sde = _model(seed), fs.VPSDE()
    x = torch.randn(7, 2)
    lp = fs.LogProb(model, sde, "rk45", rtol=1e-4, atol=1e-4)
    got, info = lp(x, return_info=True)
    want, winfo = fs.log_prob(model, sde, x, "rk45", rtol=1e-4, atol=1e-4, return_info=True)
    assert torch.equal(got, want) and torch.equal(info["nfe"], winfo["nfe"])
    with pytest.raises(ValueError, match=r"shape \[n, 2\]"):
        lp(torch.randn(3, 3))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        fs.LogProb(model, sde, "euler", 0)
