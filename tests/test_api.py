"""The public front-ends ``fastscore.sample`` / ``fastscore.log_prob`` / ``fastscore.backends``:
every bad input fails early with ValueError or TypeError and a message that names the
problem; backends report themselves; empty requests give empty answers everywhere."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import fastscore as fs
from fastscore.backends import cpu as cpu_backend
from fastscore.plan import check_points
from fastscore.program import DRAW

NAN, INF = float("nan"), float("inf")
SDE = fs.VPSDE(0.1, 20.0)


def _model(dim=2, seed=0, **kw):
    torch.manual_seed(seed)
    return fs.ScoreMLP(dim, width=kw.pop("width", 16), depth=kw.pop("depth", 2), **kw)


def _x(n=5, dim=2, seed=1):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


# -- fastscore.sample ---------------------------------------------------------------------------

SAMPLE_BAD = [
    (dict(n=-1), ValueError, "n must be >= 0"),
    (dict(n=2.0), TypeError, "n must be an int"),
    (dict(n=True), TypeError, "n must be an int"),
    (dict(n="3"), TypeError, "n must be an int"),
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(steps=-3), ValueError, "steps must be >= 1"),
    (dict(steps=10.0), TypeError, "steps must be an int"),
    (dict(method="heun"), ValueError, "unknown method 'heun'"),
    (dict(method="EM"), ValueError, "unknown method 'EM'"),
    (dict(backend="gpu"), ValueError, "unknown backend 'gpu'"),
    (dict(backend=None), ValueError, "unknown backend None"),
    (dict(eps=0.0), ValueError, "eps must be a finite number > 0"),
    (dict(eps=-1e-3), ValueError, "eps must be a finite number > 0"),
    (dict(eps=NAN), ValueError, "eps must be a finite number > 0"),
    (dict(eps=1.0), ValueError, "eps must be < T"),
    (dict(eps=3.0), ValueError, "eps must be < T"),
    (dict(eps="1e-3"), TypeError, "eps must be a real number"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(seed=2**64), ValueError, r"seed must be < 2\*\*64"),
    (dict(seed=0.5), TypeError, "seed must be an int"),
    (dict(snr=0.0), ValueError, "snr must be a finite number > 0"),
    (dict(snr=-0.16), ValueError, "snr must be a finite number > 0"),
    (dict(snr=INF), ValueError, "snr must be a finite number > 0"),
    # found by the long fuzz: a finite snr whose Langevin coefficients overflow float32
    (dict(snr=5.6e20), ValueError, "coefficients not finite in float32"),
    (dict(corrector_steps=-1), ValueError, "corrector_steps must be >= 0"),
    (dict(corrector_steps=1.0), TypeError, "corrector_steps must be an int"),
    (dict(start=-1), ValueError, "start must be >= 0"),
    (dict(start=2**32 - 2, n=3), ValueError, r"start \+ n must be <= 2\*\*32"),
]


@pytest.mark.parametrize("backend", ["auto", "torch", "cpu"])
@pytest.mark.parametrize("kwargs,exc,match", SAMPLE_BAD, ids=[f"{k}" for k, _, _ in SAMPLE_BAD])
def test_sample_rejects_bad_arguments(kwargs, exc, match, backend):
    args = dict(n=4, method="pc", steps=3, backend=backend)  # pc: snr/corrector_steps are in play
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fs.sample(_model(), SDE, **args)


@pytest.mark.parametrize("backend", ["torch", "cpu", "auto"])
def test_sample_rejects_bad_model_and_sde(backend):
    model = _model()
    with torch.no_grad():
        model.layers[1].weight[2, 3] = NAN
    with pytest.raises(ValueError, match="'layers.1.weight' has non-finite values"):
        fs.sample(model, SDE, 3, steps=2, backend=backend)
    with torch.no_grad():
        model.layers[1].weight[2, 3] = INF
    with pytest.raises(ValueError, match="non-finite"):
        fs.sample(model, SDE, 3, steps=2, backend=backend)
    for sde in ("vp", None, 25.0):
        with pytest.raises(TypeError, match="sde must be a fastscore SDE"):
            fs.sample(_model(), sde, 3, steps=2, backend=backend)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fs.sample(lambda x, t: -x, SDE, 3, steps=2, backend=backend)
    with pytest.raises(TypeError, match="`dim`"):
        fs.sample(nn.Linear(2, 2), SDE, 3, steps=2, backend=backend)


@pytest.mark.parametrize("task,method", [("sample", "pc"), ("log_prob", "rk45")])
def test_backend_that_does_not_declare_a_request_names_both_sides(monkeypatch, task, method):
    declared = cpu_backend.DECLARES
    monkeypatch.setattr(cpu_backend, "DECLARES", replace(declared, ops=declared.ops - {DRAW},
                                                         log_prob=declared.log_prob - {"rk45"}))
    expect = ("sampler 'pc' uses step operations \\['Draw'\\], which backend 'cpu' does not declare" if task == "sample"
              else "log_prob method 'rk45' is not declared by backend 'cpu'")
    with pytest.raises(ValueError, match=expect + ".*backend='torch'"):
        if task == "sample":
            fs.sample(_model(), SDE, 4, method=method, steps=2, backend="cpu")
        else:
            fs.log_prob(_model(), SDE, torch.randn(3, 2), method=method, steps=2, backend="cpu")
    # and "auto" quietly takes another backend that declares it
    if task == "sample":
        assert fs.sample(_model(), SDE, 4, method=method, steps=2, backend="auto").shape == (4, 2)


def test_cpu_backend_rejects_what_its_kernels_cannot_run():
    class Custom(nn.Module):
        dim = 2

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x, t):
            return self.lin(x)

    with pytest.raises(TypeError, match="ScoreMLP.*backend='torch'"):
        fs.sample(Custom(), SDE, 4, steps=2, backend="cpu")
    wide = _model(dim=65, width=4, depth=1)
    with pytest.raises(ValueError, match=r"dim <= \d+.*backend='torch'"):
        fs.sample(wide, SDE, 4, steps=2, backend="cpu")
    # the reference runs both
    assert fs.sample(Custom(), SDE, 3, steps=2, backend="torch").shape == (3, 2)
    assert fs.sample(wide, SDE, 3, steps=2, backend="torch").shape == (3, 65)


# -- fastscore.log_prob ----------------------------------------------------------------------------

LOG_PROB_BAD = [
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(steps=2.5), TypeError, "steps must be an int"),
    # found by the long fuzz: 2**64 fixed steps were accepted and the reference looped for ever
    (dict(steps=2**64), ValueError, r"steps must be <= 2147483647"),
    (dict(steps=2**31), ValueError, r"steps must be <= 2147483647"),
    (dict(method="rk2"), ValueError, "unknown method 'rk2'"),
    (dict(method="em"), ValueError, "unknown method 'em'"),
    (dict(backend="jax"), ValueError, "unknown backend 'jax'"),
    (dict(eps=0.0), ValueError, "eps must be a finite number > 0"),
    (dict(eps=-1.0), ValueError, "eps must be a finite number > 0"),
    (dict(eps=1.0), ValueError, "eps must be < T"),
    (dict(seed=-2), ValueError, "seed must be >= 0"),
    (dict(rtol=0.0), ValueError, "rtol must be a finite number > 0"),
    (dict(rtol=-1e-5), ValueError, "rtol must be a finite number > 0"),
    (dict(rtol=NAN), ValueError, "rtol must be a finite number > 0"),
    (dict(atol=0.0), ValueError, "atol must be a finite number > 0"),
    (dict(atol=-1e-5), ValueError, "atol must be a finite number > 0"),
    (dict(atol=INF), ValueError, "atol must be a finite number > 0"),
    (dict(trace="hutch"), ValueError, "unknown trace 'hutch'"),
    (dict(trace=None), ValueError, "unknown trace None"),
]


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("kwargs,exc,match", LOG_PROB_BAD, ids=[f"{k}" for k, _, _ in LOG_PROB_BAD])
def test_log_prob_rejects_bad_arguments(kwargs, exc, match, backend):
    args = dict(method="rk4", steps=2, backend=backend)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fs.log_prob(_model(), SDE, _x(), **args)


X_BAD = [
    (torch.ones(5) * 0.3, ValueError, r"x must have shape \[n, 2\]"),
    (torch.ones(5, 3) * 0.3, ValueError, r"x must have shape \[n, 2\].*\(5, 3\)"),
    (torch.ones(5, 1) * 0.3, ValueError, r"x must have shape \[n, 2\]"),
    (torch.ones(5, 2, 1) * 0.3, ValueError, r"x must have shape \[n, 2\]"),
    (torch.tensor([[0.1, NAN], [0.2, 0.3]]), ValueError, "non-finite"),
    (torch.tensor([[0.1, 0.5], [INF, 0.3]]), ValueError, "non-finite"),
    (np.array([[0.1, -INF]]), ValueError, "non-finite"),
    (torch.ones(4, 2, dtype=torch.int64), TypeError, "floating-point"),
    (np.ones((4, 2), dtype=np.int32), TypeError, "floating-point"),
    (torch.ones(4, 2, dtype=torch.bool), TypeError, "floating-point"),
    ([[0.1, 0.2], [0.3, 0.4]], TypeError, "x must be a torch tensor, numpy array"),
    ("x", TypeError, "x must be a torch tensor, numpy array"),
    (None, TypeError, "x must be a torch tensor, numpy array"),
]


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("x,exc,match", X_BAD, ids=[f"x{i}" for i in range(len(X_BAD))])
def test_log_prob_rejects_bad_points(x, exc, match, backend):
    with pytest.raises(exc, match=match):
        fs.log_prob(_model(), SDE, x, method="rk4", steps=2, backend=backend)


def test_log_prob_rejects_bad_model_and_sde():
    model = _model()
    with torch.no_grad():
        model.layers[0].bias[1] = NAN
    with pytest.raises(ValueError, match="'layers.0.bias' has non-finite values"):
        fs.log_prob(model, SDE, _x(), method="rk4", steps=2)
    with pytest.raises(TypeError, match="sde must be a fastscore SDE"):
        fs.log_prob(_model(), "ve", _x(), method="rk4", steps=2)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fs.log_prob(object(), SDE, _x(), method="rk4", steps=2)


def test_log_prob_accepts_numpy_points():
    """x may be a numpy array (documented in check_points); numpy's default dtype is
    float64 while a ScoreMLP is float32, so this is the common case. The answer must be
    the log-density of those points: the float32 model's value for x rounded to float32,
    up to float32 rounding of the solve (4 steps x 4 stages x ~3 layers of roundings of
    size 2^-24 on terms |prior|, |delta| <= 15: < 1e-4 absolute)."""
    model = _model()
    x64 = np.random.default_rng(2).standard_normal((6, 2))
    want = fs.log_prob(model, SDE, torch.from_numpy(x64).float(), method="rk4", steps=4, backend="torch")
    got32 = fs.log_prob(model, SDE, x64.astype(np.float32), method="rk4", steps=4, backend="torch")
    torch.testing.assert_close(got32, want, rtol=0, atol=0)
    got64 = fs.log_prob(model, SDE, x64, method="rk4", steps=4, backend="torch")
    assert got64.shape == (6,)
    torch.testing.assert_close(got64.to(want.dtype), want, rtol=0, atol=1e-4)


def test_log_prob_of_no_points_is_empty():
    for method in ("rk4", "rk45"):
        out = fs.log_prob(_model(), SDE, torch.ones(0, 2), method=method, steps=2, backend="torch")
        assert isinstance(out, torch.Tensor) and out.shape == (0,)


# -- fastscore.backends -------------------------------------------------------------------------------


def test_backends_report():
    info = fs.backends()
    assert set(info) == {"cpu", "cuda", "numba", "torch"}
    for name, entry in info.items():
        assert set(entry) >= {"available", "compiled", "detail"}, name
        assert type(entry["available"]) is bool and type(entry["compiled"]) is bool, name
        assert isinstance(entry["detail"], str) and entry["detail"], name
    assert info["torch"]["available"] is True and info["torch"]["compiled"] is False
    for native in ("cpu", "cuda"):  # a native backend runs compiled code
        assert info[native]["compiled"] or not info[native]["available"], native


@pytest.mark.skipif(cpu_backend._core is None or not cpu_backend._core.build_info()["cuda_compiled"],
                    reason="built without CUDA kernels")
def test_cuda_build_imports_and_reports_without_a_gpu():
    """A module with CUDA kernels imports on a machine without a GPU or driver (static CUDA
    runtime) and reports why it cannot run them."""
    names, reason = cpu_backend._core.cuda_devices()
    entry = fs.backends()["cuda"]
    assert entry["compiled"] is True
    if not names:
        assert entry["available"] is False and reason in entry["detail"]
    if not entry["available"]:  # auto then runs elsewhere, with the same numbers
        assert fs.backends()["cpu"]["available"]
        model = _model()
        assert torch.equal(fs.sample(model, SDE, 3, steps=2), fs.sample(model, SDE, 3, steps=2, backend="cpu"))


@pytest.mark.parametrize("name", ["cpu", "cuda", "numba"])
def test_unavailable_backend_says_why(name):
    entry = fs.backends()[name]
    if entry["available"]:
        pytest.skip(f"{name} is available here")
    with pytest.raises(RuntimeError, match=f"backend '{name}' is not available"):
        fs.sample(_model(), SDE, 2, steps=2, backend=name)


@pytest.mark.parametrize("dim", [1, 3])
def test_zero_samples_give_an_empty_tensor_on_every_backend(dim):
    model = _model(dim=dim)
    ran = []
    for name, entry in fs.backends().items():
        if not entry["available"]:
            continue
        for method in ("em", "pc", "ode_euler", "ode_heun"):
            try:
                out = fs.sample(model, SDE, 0, method=method, steps=3, backend=name)
            except ValueError as exc:  # a method this backend does not implement (yet)
                assert "not implemented" in str(exc) and name != "torch"
                continue
            assert isinstance(out, torch.Tensor) and out.shape == (0, dim), (name, method)
            assert out.dtype == torch.float32, (name, method)
            ran.append((name, method))
    assert ("torch", "em") in ran and len(ran) >= 4
    assert fs.sample(model, SDE, 0, steps=3, backend="auto").shape == (0, dim)


class DLPackOnly:
    """An array of another library that offers only the DLPack protocol."""

    def __init__(self, t):
        self._t = t

    def __dlpack__(self, **kwargs):
        return self._t.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


def test_log_prob_takes_dlpack_arrays_without_copying():
    model = fs.ScoreMLP(2, 16, 2)
    x = torch.randn(5, 2)
    wrapped = DLPackOnly(x)
    assert check_points(wrapped, 2).data_ptr() == x.data_ptr()
    got = fs.log_prob(model, fs.VPSDE(), wrapped, "euler", steps=4, backend="torch")
    assert torch.equal(got, fs.log_prob(model, fs.VPSDE(), x, "euler", steps=4, backend="torch"))
