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
import torch
from hypothesis import HealthCheck, event, given, settings
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


class _Imported(nn.Module):
    """A user-style network for from_torch: cat([x, t]), LayerNorm, tanh; predicts eps."""

    def __init__(self):
        super().__init__()
        self.l1, self.norm, self.l2 = nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 2)

    def forward(self, x, t):
        return self.l2(torch.tanh(self.norm(self.l1(torch.cat([x, t[:, None]], 1)))))


def _nets():
    torch.manual_seed(0)
    return [fs.ScoreMLP(1, 4, 1), fs.ScoreMLP(2, 8, 2, "silu", "fourier", fourier_features=3),
            fs.ScoreMLP(3, 2, 1, "tanh", std_sde=fs.VESDE()), fs.ScoreMLP(2, 16, 1, "softplus").double(),
            fs.ScoreMLP(2, 8, 1, "silu", cond_dim=2), fs.from_torch(_Imported(), 2, prediction="eps", sde=fs.VPSDE())]


NETS = _nets()
BAD_MODELS = st.one_of(st.sampled_from([nn.Linear(2, 2), lambda x, t: -x]), JUNK)
SDES = st.sampled_from([fs.VPSDE(), fs.VESDE(25.0), fs.SubVPSDE(0.2, 15.0, T=2.0), fs.CosineVPSDE(),
                        fs.GeometricVESDE(0.01, 50.0), fs.EDMSDE(80.0)])


@st.composite
def conds(draw, model, n: int):
    """The condition of a conditional model's request ([n, cond_dim] or one [cond_dim]); None
    for an unconditional one."""
    c = getattr(model, "cond_dim", 0)
    if not c:
        return None
    shape = draw(st.sampled_from([(n, c), (c,)]))
    size = int(np.prod(shape))
    return torch.tensor(draw(st.lists(st.floats(-3, 3), min_size=size, max_size=size))).reshape(shape)


@st.composite
def points(draw, dim=None, wild=False):
    """Point arrays [n, dim]: float32/64 numpy or torch, possibly transposed (not contiguous);
    wild: also float16, ints, bools, NaN / inf / huge / tiny values, wrong ranks, any dim."""
    n = draw(st.sampled_from([0, 1, 2, 7, 33]))
    d = dim if dim is not None else draw(st.integers(1, 4))
    value = st.floats(-4, 4)
    if wild:
        value = st.one_of(value, st.sampled_from([0.0, 1e-38, -1e-30, 1e30, -3e38, np.nan, np.inf]))
    data = np.array(draw(st.lists(value, min_size=n * d, max_size=n * d)), dtype=np.float64).reshape(n, d)
    kinds = [np.float32, np.float64] + ([np.float16, np.int32, np.bool_] if wild else [])
    dtype = draw(st.sampled_from(kinds))
    with np.errstate(invalid="ignore", over="ignore"):
        a = data.astype(dtype)
    if draw(st.booleans()):
        a = np.ascontiguousarray(a.T).T  # a transposed view: not C-contiguous
    if draw(st.booleans()):
        return torch.from_numpy(a)  # keeps the strides
    forms = [a, a[:, :, None], a.ravel(), [list(r) for r in a]] if wild else [a]
    return draw(st.sampled_from(forms))


def _request(data, valid: dict, junk: dict) -> dict:
    """A valid request with none (half the time), one or two arguments replaced by junk, so
    most examples reach the kernels and each rejection has a known culprit."""
    args = {}
    for name, strategy in valid.items():  # a callable strategy depends on the arguments drawn before it
        args[name] = data.draw(strategy(args) if callable(strategy) else strategy, label=name)
    n_bad = data.draw(st.sampled_from([0, 0, 1, 2]), label="n_bad")
    for name in data.draw(st.lists(st.sampled_from(sorted(junk)), min_size=n_bad, max_size=n_bad, unique=True),
                          label="corrupted"):
        args[name] = data.draw(junk[name], label=f"junk {name}")
    return args


def _expect_clear_failure_or(result_check, call):
    try:
        out = call()
    except (ValueError, TypeError) as exc:
        assert str(exc), "an exception without a message"
        event(type(exc).__name__)  # the statistics show how many examples reached a kernel
        return
    except FloatingPointError as exc:
        assert "not finite" in str(exc)
        event("FloatingPointError")
        return
    except RuntimeError as exc:
        assert "is not available here" in str(exc), exc
        event("backend not available")
        return
    result_check(out)
    event("result")


SAMPLE = dict(model=st.sampled_from(NETS), sde=SDES, n=st.integers(0, 40), method=st.sampled_from(list(RULES)),
              steps=st.integers(1, 6), backend=st.sampled_from(BACKENDS[:4]), seed=st.integers(0, 2**64 - 1),
              eps=st.floats(1e-5, 0.5), snr=st.floats(1e-3, 1.0), corrector_steps=st.integers(0, 3),
              denoise=st.booleans(), start=st.integers(0, 2**32 - 41), cond=lambda a: conds(a["model"], a["n"]))
LOG_PROB = dict(model=st.sampled_from(NETS), sde=SDES, x=lambda a: points(a["model"].dim), method=st.sampled_from(["euler", "heun", "rk4", "rk45"]),
                steps=st.integers(1, 6), rtol=st.floats(1e-6, 1e-1), atol=st.floats(1e-6, 1e-1),
                eps=st.floats(1e-5, 0.5), backend=st.sampled_from(BACKENDS[:4]),
                trace=st.sampled_from(["exact", "hutchinson"]), seed=st.integers(0, 2**64 - 1),
                return_info=st.booleans(), cond=lambda a: conds(a["model"], len(a["x"])))
TRAIN = dict(model=st.builds(fs.ScoreMLP, st.integers(1, 3), st.just(4), st.just(1)), sde=SDES,
             data=lambda a: points(a["model"].dim), steps=st.integers(1, 3), batch_size=st.integers(1, 64),
             lr=st.floats(1e-5, 1e-1), weighting=st.sampled_from(["sigma2", "likelihood", "none"]),
             seed=st.integers(0, 2**64 - 1), eps=st.floats(1e-5, 0.5), loss=st.sampled_from(["dsm", "ssm", "ssm_vr"]))


def _junk_for(valid: dict) -> dict:
    junk = {name: JUNK for name in valid}
    junk.update(model=BAD_MODELS, sde=JUNK, backend=st.sampled_from(BACKENDS[4:]), x=st.one_of(points(wild=True), JUNK),
                data=st.one_of(points(wild=True), JUNK))
    return {name: junk[name] for name in valid}


@PROFILE
@given(data=st.data())
def test_fuzz_sample(data):
    args = _request(data, SAMPLE, _junk_for(SAMPLE))

    def check(x):
        assert isinstance(x, torch.Tensor) and x.shape == (args["n"], args["model"].dim) and torch.isfinite(x).all()

    _expect_clear_failure_or(check, lambda: fs.sample(**args))


@PROFILE
@given(data=st.data())
def test_fuzz_log_prob(data):
    args = _request(data, LOG_PROB, _junk_for(LOG_PROB))

    def check(out):
        logp = out[0] if args["return_info"] else out
        assert isinstance(logp, torch.Tensor) and logp.dim() == 1 and torch.isfinite(logp).all()
        if args["return_info"]:
            assert out[1]["nfe"].shape == logp.shape

    _expect_clear_failure_or(check, lambda: fs.log_prob(**args))


@PROFILE
@given(data=st.data())
def test_fuzz_train(data):
    args = _request(data, TRAIN, _junk_for(TRAIN))

    def check(history):
        assert isinstance(history, list) and len(history) == args["steps"]

    _expect_clear_failure_or(check, lambda: fs.train(progress=False, **args))


DEMO_OPTIONS = ["--train-steps", "--batch-size", "--n", "--steps", "--seed"]


@PROFILE
@given(argv=st.lists(st.one_of(st.sampled_from(["demo", "backends", *DEMO_OPTIONS, "--out", "--no-reference"]),
                               st.integers(-5, 5).map(str), st.text(max_size=6)), max_size=6))
def test_fuzz_cli_runs_only_valid_command_lines(argv):
    """A command line ends in argparse's exit 2 with a message, or runs its command with every
    count in range: a bad value never reaches the demo (which would train for minutes first)."""
    import contextlib
    import io
    from unittest import mock

    from fastscore import cli

    err = io.StringIO()
    with mock.patch("fastscore.demo.run") as run, contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        try:
            assert cli.main(argv) == 0
        except SystemExit as exc:
            assert exc.code == 2 and err.getvalue(), (argv, exc.code)
            assert not run.called
            return
    if run.called:
        _, train_steps, batch_size, n, steps, seed, _ = run.call_args.args
        assert min(train_steps, batch_size, n, steps) >= 1 and seed >= 0, argv
