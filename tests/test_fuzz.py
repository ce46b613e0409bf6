"""A fuzz campaign over the public API (Hypothesis): random shapes (n = 0, 1, odd, large),
dims, dtypes, devices, non-contiguous inputs, NaN / inf, huge and tiny values, wrong types, and
every option at and beyond its limits. The outcome must be a result of the promised shape, or a
clear Python exception: ValueError / TypeError for a bad argument (the message names it),
FloatingPointError for a run that blew up, RuntimeError only for a backend that is not
available here. Never a crash or a hang.

Profiles: "ci" (a short run, part of the suite) and "long" (10,000 examples per target):
    FASTSCORE_FUZZ_PROFILE=long pytest tests/test_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import fastscore as fs
from fastscore.samplers import RULES

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
settings.register_profile("long", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
PROFILE = settings.get_profile(os.environ.get("FASTSCORE_FUZZ_PROFILE", "ci"))

BACKENDS = ["auto", "cpu", "numba", "torch", "cuda", "jax"]
#: values of no argument's type or range: huge ints (valid ones are drawn separately, bounded so
#: a valid request stays small), NaN / inf, wrong types
JUNK = st.one_of(st.none(), st.booleans(), st.sampled_from([-1, -7, -2**63, 2**64, 2**80]),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4), st.just([1, 2]),
                 st.just(object()))


def _nets():
    torch.manual_seed(0)
    return [fs.ScoreMLP(1, 4, 1), fs.ScoreMLP(2, 8, 2, "silu", "fourier", fourier_features=3),
            fs.ScoreMLP(3, 2, 1, "tanh", std_sde=fs.VESDE()), fs.ScoreMLP(2, 16, 1, "softplus").double()]


NETS = _nets()
MODELS = st.one_of(st.sampled_from(NETS), st.sampled_from([nn.Linear(2, 2), lambda x, t: -x]), JUNK)
SDES = st.one_of(st.sampled_from([fs.VPSDE(), fs.VESDE(25.0), fs.SubVPSDE(0.2, 15.0, T=2.0)]), JUNK)


def _or_junk(valid):
    return st.one_of(valid, valid, JUNK)  # valid twice as often


@st.composite
def points(draw):
    """Arrays of many kinds: numpy or torch, float16/32/64, ints, bools, transposed (not
    contiguous), with NaN / inf / huge / tiny values, of shape [n, d]."""
    n = draw(st.sampled_from([0, 1, 2, 7, 33]))
    d = draw(st.integers(1, 4))
    value = st.one_of(st.floats(-4, 4), st.sampled_from([0.0, 1e-38, -1e-30, 1e30, -3e38, np.nan, np.inf]))
    data = np.array(draw(st.lists(value, min_size=n * d, max_size=n * d)), dtype=np.float64).reshape(n, d)
    if draw(st.booleans()):  # mostly sane values
        data = np.nan_to_num(np.clip(data, -5, 5))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.bool_]))
    with np.errstate(invalid="ignore", over="ignore"):
        a = data.astype(dtype)
    if draw(st.booleans()):
        a = np.ascontiguousarray(a.T).T  # a transposed view: not C-contiguous
    if draw(st.booleans()):
        return torch.from_numpy(a)  # keeps the strides
    return draw(st.sampled_from([a, a[:, :, None], a.ravel(), [list(r) for r in a]]))


def _expect_clear_failure_or(result_check, call):
    try:
        out = call()
    except (ValueError, TypeError) as exc:
        assert str(exc), "an exception without a message"
        return
    except FloatingPointError as exc:
        assert "not finite" in str(exc)
        return
    except RuntimeError as exc:
        assert "is not available here" in str(exc), exc
        return
    result_check(out)


@PROFILE
@given(model=MODELS, sde=SDES, n=_or_junk(st.integers(0, 40)), method=_or_junk(st.sampled_from(list(RULES))),
       steps=_or_junk(st.integers(1, 6)), backend=st.sampled_from(BACKENDS), seed=_or_junk(st.integers(0, 2**64 - 1)),
       eps=_or_junk(st.floats(1e-5, 0.5)), snr=_or_junk(st.floats(1e-3, 1.0)),
       corrector_steps=_or_junk(st.integers(0, 3)), denoise=st.booleans(), start=_or_junk(st.integers(0, 2**32)))
def test_fuzz_sample(model, sde, n, method, steps, backend, seed, eps, snr, corrector_steps, denoise, start):
    def check(x):
        assert isinstance(x, torch.Tensor) and x.shape == (n, model.dim) and torch.isfinite(x).all()

    _expect_clear_failure_or(check, lambda: fs.sample(model, sde, n, method, steps, backend, seed, eps, snr=snr,
                                                      corrector_steps=corrector_steps, denoise=denoise, start=start))


@PROFILE
@given(model=MODELS, sde=SDES, x=st.one_of(points(), JUNK),
       method=_or_junk(st.sampled_from(["euler", "heun", "rk4", "rk45"])), steps=_or_junk(st.integers(1, 6)),
       rtol=_or_junk(st.floats(1e-6, 1e-1)), atol=_or_junk(st.floats(1e-6, 1e-1)), eps=_or_junk(st.floats(1e-5, 0.5)),
       backend=st.sampled_from(BACKENDS), trace=_or_junk(st.sampled_from(["exact", "hutchinson"])),
       seed=_or_junk(st.integers(0, 2**64 - 1)), info=st.booleans())
def test_fuzz_log_prob(model, sde, x, method, steps, rtol, atol, eps, backend, trace, seed, info):
    def check(out):
        logp = out[0] if info else out
        assert isinstance(logp, torch.Tensor) and logp.dim() == 1 and torch.isfinite(logp).all()
        if info:
            assert out[1]["nfe"].shape == logp.shape

    _expect_clear_failure_or(check, lambda: fs.log_prob(model, sde, x, method, steps, rtol, atol, eps, backend,
                                                        trace=trace, seed=seed, return_info=info))


@PROFILE
@given(sde=SDES, data=st.one_of(points(), JUNK), steps=_or_junk(st.integers(1, 3)),
       batch_size=_or_junk(st.integers(1, 64)), lr=_or_junk(st.floats(1e-5, 1e-1)),
       weighting=_or_junk(st.sampled_from(["sigma2", "likelihood", "none"])), seed=_or_junk(st.integers(0, 2**64 - 1)),
       eps=_or_junk(st.floats(1e-5, 0.5)), dim=st.integers(1, 3))
def test_fuzz_train(sde, data, steps, batch_size, lr, weighting, seed, eps, dim):
    model = fs.ScoreMLP(dim, 4, 1)

    def check(history):
        assert isinstance(history, list) and len(history) == steps

    _expect_clear_failure_or(check, lambda: fs.train(model, sde, data, steps, batch_size, lr, weighting, seed, eps,
                                                     progress=False))
