"""ScoreMLP (the torch network) and its packed float32 form run by the C++ forward pass.

The packed-layout test runs ``_core.net_eval`` (float32, tiled SIMD) on ``pack(model)``
and holds it against the float64 torch model with the *same* weights (the model is built
in float32 and converted exactly to float64, so weights, Fourier frequencies and inputs
are identical and only arithmetic rounding separates the two). The tolerance is a
forward error bound propagated in float64 through the actual network:

  * first layer: c = b0 + W0t phi(t) is formed in double and rounded once, then
    z = c + W0x x is a float32 dot product of length dim + 1:
    |dz| <= gamma_{dim+2} (|c| + |W0x| |x|),   gamma_n = n u / (1 - n u),  u = 2^-24;
  * each later layer z = b + W h with error e in h (fan-in n):
    |dz| <= |W| e + gamma_{n+1} (|b| + |W| (|h| + e))
    (the standard bound for any summation order, FMA or not);
  * activation a = act(z): |da| <= L |dz| + c_act u (|a| + L |dz|), L its Lipschitz
    constant (1; SiLU 1.0998 < 1.1) and c_act its own rounding in units of u: 0 for ReLU
    (exact), 1 for leaky ReLU (one product), 10 for tanh/SiLU/softplus: libm's expf /
    expm1f / log1pf are within 2 ulp = 4 u, the formulas in net.h add <= 3 roundings and
    tanh's -e / (2 + e) doubles the relative error of e (condition number <= 2);
  * output scaling by 1/sigma(t): the scale is rounded once and multiplied once: 2 u.

Float64 rounding in the reference (2^-53, 2^29 times smaller) is absorbed by using
u = 2^-24 + 2^-53. The bound is rigorous to first order, and a measured 0.46 of it in the
worst case (width 1, where a single chain of roundings is all there is).
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

import fastscore as fs
from fastscore import _core
from fastscore.backends import cpu
from fastscore.nn import ACTIVATIONS, TIME_EMBEDDINGS
from fastscore.netprog import DENSE, INIT_ARENA, INIT_PARAM, UNARY

U32 = 2.0**-24 + 2.0**-53
LIPSCHITZ = {"relu": 1.0, "leaky_relu": 1.0, "tanh": 1.0, "silu": 1.1, "softplus": 1.0}
C_ACT = {"relu": 0.0, "leaky_relu": 1.0, "tanh": 10.0, "silu": 10.0, "softplus": 10.0}


def _gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def _model(seed, **kw) -> fs.ScoreMLP:
    torch.manual_seed(seed)
    return fs.ScoreMLP(**kw)


# -- shapes, time arguments -------------------------------------------------------------


@pytest.mark.parametrize("dim,width,depth", [(1, 5, 1), (2, 64, 5), (5, 33, 3)])
@pytest.mark.parametrize("time_embedding", list(TIME_EMBEDDINGS))
def test_output_shape_and_dtype(dim, width, depth, time_embedding):
    m = _model(1, dim=dim, width=width, depth=depth, time_embedding=time_embedding)
    x = torch.randn(11, dim, generator=torch.Generator().manual_seed(2))
    out = m(x, 0.37)
    assert out.shape == (11, dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out64 = m.double()(x.double(), 0.37)
    assert out64.dtype == torch.float64


@pytest.mark.parametrize("time_embedding", list(TIME_EMBEDDINGS))
def test_time_as_float_vector_or_column_agree(time_embedding):
    m = _model(3, dim=3, width=16, depth=2, activation="silu", time_embedding=time_embedding)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(9, 3, generator=g)
    t = 0.6180339887
    ref = m(x, t)
    t32 = torch.tensor(t, dtype=torch.float32)  # what a float becomes in x's dtype
    # every form reaches the network as the same float32 column -> bitwise identical
    for form in (t32, torch.full((9,), t), torch.full((9, 1), t), torch.full((9,), t, dtype=torch.float64)):
        assert torch.equal(m(x, form), ref)
    # per-sample times: row i of a batch at times t_i equals a batch of one at t_i. In
    # float64 (a batch size may change the BLAS summation order): sums of <= 17 products of
    # O(1) terms differ by <= 17 * 2^-53 * sum|terms| ~ 1e-14 per layer -> 1e-12 is safe
    m64, x64 = m.double(), x.double()
    ts = torch.rand(9, generator=g, dtype=torch.float64)
    batch = m64(x64, ts)
    for i in range(9):
        torch.testing.assert_close(batch[i : i + 1], m64(x64[i : i + 1], float(ts[i])), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(m64(x64, 0.1), m64(x64, 0.9))  # time matters


@pytest.mark.parametrize("bad", [(8,), (10,), (9, 2), (1, 9), (9, 1, 1), (3, 3)])
def test_bad_time_shapes_raise(bad):
    m = _model(5, dim=2, width=8, depth=1)
    x = torch.randn(9, 2, generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="t must be"):
        m(x, torch.full(bad, 0.5))


@pytest.mark.parametrize("shape", [(9,), (9, 3), (9, 1), (1, 9, 2)])
def test_bad_x_shapes_raise(shape):
    m = _model(5, dim=2, width=8, depth=1)
    with pytest.raises(ValueError, match="x must have shape"):
        m(torch.ones(shape) * 0.3, 0.5)


# -- architecture -----------------------------------------------------------------------------


def test_seed002_basic_net():
    """seed 002's basic_net: concat(x, t) -> 64 x 5 ReLU -> 2 is width=64, depth=5."""
    m = fs.ScoreMLP(dim=2, width=64, depth=5)
    linears = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    assert len(linears) == 6
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(3, 64)] + [(64, 64)] * 4 + [(64, 2)]
    assert m.flops_per_eval() == 33408
    # the kernels' work per evaluation: the time column is a per-time bias (time phase), so
    # the first layer multiplies x alone
    assert fs.pack(m).flops_per_eval == 33408 - 2 * 64


@pytest.mark.parametrize("dim,width,depth", [(1, 1, 1), (3, 7, 2), (5, 130, 4), (2, 33, 6)])
@pytest.mark.parametrize("time_embedding,features", [("concat", 8), ("fourier", 3), ("fourier", 8)])
def test_depth_width_give_the_layers(dim, width, depth, time_embedding, features):
    m = fs.ScoreMLP(dim, width, depth, time_embedding=time_embedding, fourier_features=features)
    E = 1 if time_embedding == "concat" else 2 * features
    assert m.embed_dim == E
    sizes = [dim + E] + [width] * depth + [dim]
    linears = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    assert len(linears) == depth + 1
    assert [(lin.in_features, lin.out_features) for lin in linears] == list(zip(sizes[:-1], sizes[1:]))
    assert m.flops_per_eval() == sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))
    p = fs.pack(m)
    assert p.params.dtype == np.float32 and p.params.flags.c_contiguous
    assert (p.dim, p.width, p.cond_dim) == (dim, max(width, dim), 0)
    assert p.flops_per_eval == m.flops_per_eval() - 2 * width * E


def test_fourier_frequencies_are_fixed_buffers():
    a = fs.ScoreMLP(2, 8, 1, time_embedding="fourier", fourier_features=5, fourier_scale=3.0)
    b = fs.ScoreMLP(2, 8, 1, time_embedding="fourier", fourier_features=5, fourier_scale=3.0)
    assert "freqs" in dict(a.named_buffers()) and "freqs" not in dict(a.named_parameters())
    assert torch.equal(a.freqs, b.freqs) and a.freqs.shape == (5,)
    # features are sin / cos of 2 pi t w; in float64 the argument carries <= 3 roundings
    # (3 U |proj|), sin/cos are 1-Lipschitz and within an ulp or two (2 U)
    a = a.double()
    t = torch.tensor([[0.3]], dtype=torch.float64)
    proj = 2 * np.pi * 0.3 * a.freqs.numpy()
    want = np.concatenate([np.sin(proj), np.cos(proj)])
    U = 2.0**-53
    np.testing.assert_array_less(np.abs(a.embed(t).numpy()[0] - want), 3 * U * np.abs(np.tile(proj, 2)) + 2 * U)


@pytest.mark.parametrize("sde", [fs.VPSDE(0.1, 20.0), fs.VESDE(25.0), fs.SubVPSDE(0.3, 12.0, 2.0)], ids=repr)
@pytest.mark.parametrize("time_embedding", list(TIME_EMBEDDINGS))
def test_std_sde_divides_by_sigma(sde, time_embedding):
    scaled = _model(6, dim=3, width=16, depth=2, activation="tanh", time_embedding=time_embedding, std_sde=sde)
    plain = fs.ScoreMLP(dim=3, width=16, depth=2, activation="tanh", time_embedding=time_embedding)
    plain.load_state_dict(scaled.state_dict())
    scaled, plain = scaled.double(), plain.double()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    t = torch.rand(10, generator=g, dtype=torch.float64) * sde.T * 0.99 + 0.01 * sde.T
    sigma = sde.std(t)[:, None]
    # the same division done here: one rounding at most between the two
    torch.testing.assert_close(scaled(x, t), plain(x, t) / sigma, rtol=2 * 2.0**-53, atol=0)
    assert not torch.allclose(scaled(x, t), plain(x, t))  # sigma(t) != 1 here


# -- the packed format, through the C++ forward pass -----------------------------------------


def _forward_with_error_bound(model: fs.ScoreMLP, x: torch.Tensor, t: float):
    """float64 forward pass of `model` and the bound of the module docstring on the
    float32 kernel's error, elementwise [n, dim]."""
    act, lip, c_act = model.act, LIPSCHITZ[model.activation], C_ACT[model.activation]
    with torch.no_grad():
        tc = torch.full((x.shape[0], 1), t, dtype=torch.float64)
        first = model.layers[0]
        W, b = first.weight, first.bias
        Wx, Wt = W[:, : model.dim], W[:, model.dim :]
        c = b + model.embed(tc) @ Wt.T  # the kernel's time bias
        z = x @ Wx.T + c
        err = _gamma(model.dim + 2) * (c.abs() + x.abs() @ Wx.abs().T)
        for layer in model.layers[1:]:
            a = act(z)
            err = lip * err + c_act * U32 * (a.abs() + lip * err)
            W, b = layer.weight, layer.bias
            z = a @ W.T + b
            err = err @ W.abs().T + _gamma(W.shape[1] + 1) * (b.abs() + (a.abs() + err) @ W.abs().T)
        if model.std_sde is not None:
            scale = 1.0 / float(model.std_sde.std(t))
            z = z * scale
            err = err * scale + 2 * U32 * (z.abs() + err * scale)
    return z, err


_SDES = [fs.VPSDE(0.1, 20.0), fs.VESDE(25.0), fs.SubVPSDE(0.5, 10.0, 1.5)]


@pytest.mark.parametrize("std_on", [False, True], ids=["plain", "std_sde"])
@pytest.mark.parametrize("time_embedding", list(TIME_EMBEDDINGS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_packed_layout_matches_torch(activation, time_embedding, std_on):
    key = (list(ACTIVATIONS).index(activation), list(TIME_EMBEDDINGS).index(time_embedding), std_on)
    rng = np.random.default_rng(1000 + 10 * key[0] + 2 * key[1] + key[2])
    for width in (1, 7, 33, 64, 130):
        depth, dim = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        sde = _SDES[int(rng.integers(len(_SDES)))] if std_on else None
        torch.manual_seed(int(rng.integers(2**31)))
        model = fs.ScoreMLP(dim, width, depth, activation, time_embedding,
                            fourier_features=int(rng.integers(1, 9)), fourier_scale=float(rng.uniform(0.5, 4.0)),
                            std_sde=sde)
        with torch.no_grad():  # wider-than-default weights so that activations leave the linear range
            for p in model.layers.parameters():
                p.mul_(float(rng.uniform(1.0, 3.0)))
        packed = fs.pack(model)
        x32 = (rng.standard_normal((45, dim)) * rng.uniform(0.5, 3.0)).astype(np.float32)  # 45: full tiles + a tail
        t = float(rng.uniform(0.02, 1.0)) * (sde.T if sde else 1.0)
        got = _core.net_eval(*cpu.net_args(packed), x32, None, t)
        ref, bound = _forward_with_error_bound(model.double(), torch.from_numpy(x32).double(), t)
        # the helper's forward is the model's own (checked in float64: same ops reordered)
        torch.testing.assert_close(ref, model(torch.from_numpy(x32).double(), t), rtol=1e-12, atol=1e-12)
        assert got.shape == (45, dim) and got.dtype == np.float32
        err = np.abs(got.astype(np.float64) - ref.numpy())
        ctx = f"width={width} depth={depth} dim={dim} sde={sde} max err/bound={(err / bound.numpy()).max():.3g}"
        assert np.all(err <= bound.numpy()), ctx


def test_program_of_a_score_mlp():
    """The lane phase is the layers on x (dense, activation, ..., dense), each weight an exact
    float32 copy of its layer's; the time features and the first layer's time columns and
    bias are one per-time vector of the time phase, the first dense row's init."""
    m = _model(8, dim=3, width=5, depth=3, time_embedding="fourier", fourier_features=2)
    p = fs.pack(m)
    lane = p.ops[p.n_time_ops + p.n_cond_ops:]
    dense = lane[lane[:, 0] == DENSE]
    assert [tuple(r[[4, 5]]) for r in dense] == [(5, 3), (5, 5), (5, 5), (3, 5)]  # (n_out, n_in)
    assert dense[0, 7] == INIT_ARENA and all(dense[1:, 7] == INIT_PARAM)
    assert (lane[:, 0] == UNARY).sum() == 3 and p.n_time_ops > 0 and p.n_texp == 5
    for row, layer in zip(dense, m.layers):
        w = layer.weight.detach().numpy()[:, : row[5]]
        np.testing.assert_array_equal(p.params[row[6]:row[6] + w.size].reshape(w.shape), w)
    assert p.sde_kind == -1


def test_pack_records_the_std_sde():
    sde = fs.VESDE(31.0, 0.7)
    p = fs.pack(fs.ScoreMLP(2, 4, 1, std_sde=sde))
    assert p.sde_kind == sde.kind == 1 and p.sde_params == sde.params


def test_pack_rejects_other_modules():
    for module in (nn.Linear(2, 2), nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))):
        with pytest.raises(TypeError, match="ScoreMLP"):
            fs.pack(module)


@pytest.mark.parametrize("where", ["first weight", "hidden bias", "last weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_pack_rejects_non_finite_weights(where, value):
    m = _model(9, dim=2, width=6, depth=2)
    param = {"first weight": m.layers[0].weight, "hidden bias": m.layers[1].bias, "last weight": m.layers[-1].weight}[where]
    with torch.no_grad():
        param.view(-1)[3] = value
    with pytest.raises(ValueError, match="non-finite"):
        fs.pack(m)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(dim=0), ValueError, "dim"),
        (dict(dim=-2), ValueError, "dim"),
        (dict(dim=2.0), ValueError, "dim"),
        (dict(dim=True), ValueError, "dim"),
        (dict(width=0), ValueError, "width"),
        (dict(width=3.5), ValueError, "width"),
        (dict(depth=0), ValueError, "depth"),
        (dict(depth=-1), ValueError, "depth"),
        (dict(fourier_features=0), ValueError, "fourier_features"),
        (dict(activation="gelu"), ValueError, "activation"),
        (dict(activation="ReLU"), ValueError, "activation"),
        (dict(time_embedding="sinusoidal"), ValueError, "time_embedding"),
        (dict(time_embedding="fourier", fourier_scale=0.0), ValueError, "fourier_scale"),
        (dict(time_embedding="fourier", fourier_scale=-1.0), ValueError, "fourier_scale"),
        (dict(time_embedding="fourier", fourier_scale=float("nan")), ValueError, "fourier_scale"),
        (dict(time_embedding="fourier", fourier_scale=float("inf")), ValueError, "fourier_scale"),
        (dict(std_sde="vp"), TypeError, "std_sde"),
        (dict(std_sde=1.0), TypeError, "std_sde"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, exc, match):
    args = dict(dim=2, width=8, depth=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fs.ScoreMLP(**args)
