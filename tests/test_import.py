"""fs.from_torch: users' networks, written as their authors write them, lowered to network
programs and run by the CPU kernels against the original module in float64."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import fastscore as fs
from fastscore.backends import cpu
from fastscore.backends.reference import divergence

pytestmark = pytest.mark.skipif(cpu._core is None, reason="compiled extension not built")


# -- the five families of the issue ------------------------------------------------------


class Seed002(nn.Module):
    """seed 002: a plain Sequential fed torch.cat([x, t], 1) inside forward."""

    def __init__(self, dim=2, width=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, dim))

    def forward(self, x, t):
        return self.net(torch.cat([x, t], 1))


class GaussianFourier(nn.Module):
    def __init__(self, d, scale=16.0, learnable=False):
        super().__init__()
        self.W = nn.Parameter(torch.randn(d // 2) * scale, requires_grad=learnable)

    def forward(self, t):
        proj = t[:, None] * self.W[None, :] * 2 * np.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class ScoreModels(nn.Module):
    """score_models / seed 003: Fourier features, output divided by sigma(t) outside."""

    def __init__(self, dim=2, width=48, embed=16):
        super().__init__()
        self.embed = nn.Sequential(GaussianFourier(embed, learnable=True), nn.Linear(embed, embed))
        self.l1, self.l2, self.l3 = nn.Linear(dim, width), nn.Linear(width, width), nn.Linear(width, dim)
        self.d1 = nn.Linear(embed, width)
        self.act = nn.SiLU()

    def forward(self, x, t):
        e = self.act(self.embed(t))
        h = self.act(self.l1(x) + self.d1(e))
        return self.l3(self.act(self.l2(h)))


def sinusoidal(t, d):
    half = d // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    args = t[:, None] * freqs[None].to(t.dtype)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # TabDDPM's [cos, sin] order


class TabDDPM(nn.Module):
    """TabDDPM / diffusion-policy low-dim: sinusoidal embedding -> Linear-SiLU-Linear, added to
    a projection of x; predicts eps."""

    def __init__(self, dim=2, width=64, d=32):
        super().__init__()
        self.d = d
        self.time_embed = nn.Sequential(nn.Linear(d, width), nn.SiLU(), nn.Linear(width, width))
        self.proj = nn.Linear(dim, width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.Mish(), nn.Dropout(0.1), nn.Linear(width, width),
                                 nn.GELU(), nn.Linear(width, dim))

    def forward(self, x, t):
        return self.mlp(self.proj(x) + self.time_embed(sinusoidal(t, self.d)))


class SbiBlock(nn.Module):
    def __init__(self, width, embed):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin = nn.Linear(width, width)
        self.film = nn.Linear(embed, 2 * width)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, h, e):
        scale, shift = self.film(e).chunk(2, dim=-1)
        return h + self.lin(self.act(self.norm(h) * (1 + scale) + shift))


class Sbi(nn.Module):
    """sbi-style posterior score net: net(input, condition, time), LayerNorm + skip blocks with
    FiLM time conditioning, z-scored inputs outside."""

    def __init__(self, dim=3, cond_dim=4, width=64, embed=16):
        super().__init__()
        self.time = nn.Sequential(GaussianFourier(embed, 4.0), nn.Linear(embed, embed), nn.ELU())
        self.inp = nn.Linear(dim + cond_dim, width)
        self.blocks = nn.ModuleList([SbiBlock(width, embed) for _ in range(2)])
        self.out = nn.Sequential(nn.LayerNorm(width, elementwise_affine=False), nn.Tanh(), nn.Linear(width, dim))

    def forward(self, input, condition, time):
        e = self.time(time)
        h = self.inp(torch.cat([input, condition], dim=-1))
        for b in self.blocks:
            h = b(h, e)
        return self.out(h)


class EDMDenoiser(nn.Module):
    """k-diffusion / EDM: F(c_in x, c_noise), wrapped by c_skip, c_out."""

    def __init__(self, dim=2, width=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.Softplus(beta=2.0), nn.Linear(width, width),
                                 nn.Sigmoid(), nn.Linear(width, dim))

    def forward(self, x, c_noise):
        return self.net(torch.cat([x, c_noise[:, None]], dim=1))


def _randomise(module):
    """Fresh, non-trivial weights (biases too), so no op is tested on zeros."""
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(2**31)))
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.6 / math.sqrt(max(p.shape[-1], 1))) + 0.05)
    return module


FAMILIES = {
    "seed002": lambda: fs.from_torch(_randomise(Seed002()), 2, time_shape="column", check=False),
    "score_models": lambda: fs.from_torch(_randomise(ScoreModels()), 2, prediction="scaled_score", sde=fs.VESDE(),
                                          check=False),
    "tabddpm": lambda: fs.from_torch(_randomise(TabDDPM()), 2, time_input="1000t", prediction="eps", sde=fs.VPSDE(),
                                     check=False),
    "sbi": lambda: fs.from_torch(_randomise(Sbi()), 3, signature=("x", "cond", "t"), cond_dim=4, prediction="eps",
                                 sde=fs.SubVPSDE(), input_mean=[0.5, -1.0, 2.0], input_std=[2.0, 0.5, 1.5],
                                 check=False),
    "edm": lambda: fs.from_torch(_randomise(EDMDenoiser()), 2, time_input="edm", prediction="edm", sde=fs.VESDE(),
                                 check=False),
}


def _cond(model, n, g):
    return torch.randn(n, model.cond_dim, generator=g, dtype=torch.float64) if model.cond_dim else None


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_imported_network_matches_the_module(family):
    """The packed program (float32 CPU kernel) against the original module in float64: the
    score and its exact trace (forward-mode tangents) against autograd."""
    model = FAMILIES[family]()
    prog = fs.pack(model)
    ref = copy.deepcopy(model).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(41, model.dim, generator=g, dtype=torch.float64)
    cond = _cond(model, 41, g)
    cnp = None if cond is None else cond.numpy()
    for t in (0.02, 0.4, 0.95):
        with torch.no_grad():
            want = ref(x, t, cond)
        got = cpu._core.net_eval(*cpu.net_args(prog), x.float().numpy(), cnp, t)
        scale = want.abs().max().item()
        # float32 rounding through the program: each value carries <= (fan-in + 4) u relative
        # error of its terms' magnitudes; 1e3 u covers fan-ins <= 128 over the depths here
        bound = 1e3 * 2.0**-24 * max(scale, 1.0) * 10
        assert np.abs(got - want.numpy()).max() <= bound, (family, t)
        s, tr = cpu._core.score_trace(*cpu.net_args(prog), x.float().numpy(), cnp, t, False, 0)
        _, tr_want = divergence(lambda xx, tt: ref(xx, tt, cond), x, t)
        tscale = tr_want.abs().max().item()
        assert np.abs(tr - tr_want.numpy()).max() <= 1e3 * 2.0**-24 * max(tscale, 1.0) * 10 * model.dim, (family, t)


def test_parity_check_reports_its_error():
    model = fs.from_torch(_randomise(Seed002()), 2, time_shape="column")
    assert 0 <= model.parity_error < 1e-4


# -- unsupported constructs name the node -------------------------------------------------


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x, t):
        return self.bn(self.lin(torch.cat([x, t[:, None]], 1)))


class BatchMean(nn.Module):
    def forward(self, x, t):
        return x - x.mean(0, keepdim=True) + t[:, None]


class ControlFlow(nn.Module):
    def forward(self, x, t):
        if t.max() > 0.5:
            return x
        return -x


@pytest.mark.parametrize("net,match", [
    (BatchNormNet(), r"node 'bn'.*module type BatchNorm1d"),
    (BatchMean(), r"node 'mean'"),
    (ControlFlow(), r"torch.fx could not trace"),
])
def test_unsupported_constructs_raise_naming_the_node(net, match):
    with pytest.raises(fs.UnsupportedNetwork, match=match):
        fs.from_torch(net, 2)
