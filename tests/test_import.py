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
from fastscore.backends import cpu, numba_backend
from fastscore.backends.reference import divergence
from fastscore.parity import evaluate, parity, trace
from fastscore.plan import make_sample_plan

from cases import NATIVE_BACKENDS as NATIVE, fresh_seed
from rounding import sample_bound

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

    def __init__(self, dim=3, cond_dim=4, width=64, embed=16, blocks=2):
        super().__init__()
        self.time = nn.Sequential(GaussianFourier(embed, 4.0), nn.Linear(embed, embed), nn.ELU())
        self.inp = nn.Linear(dim + cond_dim, width)
        self.blocks = nn.ModuleList([SbiBlock(width, embed) for _ in range(blocks)])
        self.out = nn.Sequential(nn.LayerNorm(width, elementwise_affine=False), nn.Tanh(), nn.Linear(width, dim))

    def forward(self, input, condition, time):
        e = self.time(time)
        h = self.inp(torch.cat([input, condition], dim=-1))
        for b in self.blocks:
            h = b(h, e)
        return self.out(h)


class SbiPlain(Sbi):
    """The sbi-style network without a condition."""

    def forward(self, input, time):
        e = self.time(time)
        h = self.inp(input)
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
def test_program_is_the_module_in_float64(family):
    """The lowering is exact in real arithmetic: the program run in float64 (parity.evaluate)
    is the module in float64, up to the float32 rounding of constants the lowering folds
    (2 pi, 1000, ...), which the float32 bound counts (u |p| per parameter)."""
    model = FAMILIES[family]()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(23, model.dim, generator=g, dtype=torch.float64)
    cond = _cond(model, 23, g)
    ref = copy.deepcopy(model).double()
    for t in (0.02, 0.4, 0.95):
        got, err = evaluate(fs.pack(model), x, t, cond, bound=True)
        with torch.no_grad():
            want = ref(x, t, cond)
        assert torch.all((got - want).abs() <= err), (family, t)
        tr, tr_err = trace(fs.pack(model), x, t, torch.eye(model.dim, dtype=torch.float64).expand(23, -1, -1), cond)
        _, tr_want = divergence(lambda xx, tt: ref(xx, tt, cond), x, t)
        assert torch.all((tr - tr_want).abs() <= tr_err), (family, t)  # the tangent rows are the Jacobian


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_imported_network_matches_the_module(family, backend):
    """The packed program (float32 kernels) against the original module in float64: the score
    under the program's derived bound (parity.evaluate), and its exact trace (forward-mode
    tangents through LayerNorm, GELU, FiLM products, residuals) against autograd under the
    tangents' derived bound (parity.trace)."""
    model = FAMILIES[family]()
    prog = fs.pack(model)
    ref = copy.deepcopy(model).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(41, model.dim, generator=g).double()  # float32 values: what the kernels take
    cond = _cond(model, 41, g)
    for t in (0.02, 0.4, 0.95):
        with torch.no_grad():
            want = ref(x, t, cond)
        if backend == "cpu":
            got = cpu._core.net_eval(*cpu.net_args(prog), x.float().numpy(), None if cond is None else cond.numpy(), t)
            s, tr = cpu._core.score_trace(*cpu.net_args(prog), x.float().numpy(), None if cond is None else cond.numpy(),
                                          t, False, 0)
        else:
            got = numba_backend.net_eval(model, x.float().numpy(), t, cond)
            s, tr = numba_backend.score_trace(model, x.numpy(), t, cond=cond)
        _, bound = evaluate(prog, x, t, cond, bound=True)
        assert np.all(np.abs(got - want.numpy()) <= bound.numpy()), (family, t)
        assert np.all(np.abs(s - want.numpy()) <= bound.numpy()), (family, t)  # the likelihood's pass
        _, tr_want = divergence(lambda xx, tt: ref(xx, tt, cond), x, t)
        _, tr_bound = trace(prog, x, t, torch.eye(model.dim, dtype=torch.float64).expand(41, -1, -1), cond)
        assert torch.all((torch.from_numpy(np.asarray(tr)).double() - tr_want).abs() <= tr_bound), (family, t)


SAMPLERS = [("em", 8, {}), ("pc", 4, {"corrector_steps": 1}), ("ode_heun", 6, {"denoise": True})]


def _emulate_sample(model, sde, n, name, steps, seed, cond, options):
    plan = make_sample_plan(model, sde, n, name, steps, 1e-3, seed, 0, 0.16, options.get("corrector_steps", 1),
                            options.get("denoise", False)).for_kernels(fs.pack(model))
    return torch.from_numpy(cpu._core.emulate_sample(*cpu.net_args(plan.kernel.packed), *cpu.program_args(plan),
                                                     None if cond is None else cond.numpy(), n, seed, 0, True))


@pytest.mark.parametrize("method", SAMPLERS, ids=lambda m: m[0])
@pytest.mark.parametrize("backend", [*NATIVE, "emulate"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_imported_network_samples_match_the_module(family, backend, method):
    """Every sampler on every native backend and the CUDA emulation, against the float64
    reference running the original module, under the suite's derived sampler bound
    (tests/rounding.py, with the program's bound for each evaluation)."""
    name, steps, options = method
    seed = fresh_seed()
    model = FAMILIES[family]()
    sde = model.sde or fs.VPSDE()
    n = 13
    cond = _cond(model, n, torch.Generator().manual_seed(seed))
    if backend == "emulate":
        got = _emulate_sample(model, sde, n, name, steps, seed, cond, options)
    else:
        got = fs.sample(model, sde, n, name, steps, backend=backend, seed=seed, cond=cond, **options)
    ref = fs.sample(copy.deepcopy(model).double(), sde, n, name, steps, backend="torch", seed=seed, cond=cond,
                    **options)
    _, bound = sample_bound(copy.deepcopy(model), sde, name, steps, options, n, seed, cond)
    err = (got.double() - ref).norm(dim=1)
    assert torch.all(err <= bound), f"{family} seed {seed}: worst err/bound {(err / bound).max():.3g}"


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_imported_network_log_prob_matches_the_module(family, backend):
    seed = fresh_seed()
    model = FAMILIES[family]()
    sde = model.sde or fs.VPSDE()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(11, model.dim, generator=g)
    cond = _cond(model, 11, g)
    for method in ("heun", "rk4"):  # rk45's step control is tested on the kernels' own terms elsewhere
        got = fs.log_prob(model, sde, x, method, steps=8, backend=backend, cond=cond)
        ref = fs.log_prob(copy.deepcopy(model).double(), sde, x.double(), method, steps=8, backend="torch", cond=cond)
        # as test_native_log_prob.py::test_cpu_fixed_step_log_prob_matches_reference
        bound = 1e-4 * ref.abs() + 1e-4
        assert torch.all((got - ref).abs() <= bound), (family, method, (got - ref).abs().max())


@pytest.mark.parametrize("width,blocks", [(8, 1), (33, 3), (130, 2)])
def test_parity_across_widths_and_depths(width, blocks):
    """The parity check passes (measured error within its bound) for the sbi-style network, the
    family with every row kind, at odd widths and depths, conditional and not."""
    for cond_dim, signature, cls in ((4, ("x", "cond", "t"), Sbi), (0, ("x", "t"), SbiPlain)):
        net = _randomise(cls(width=width, blocks=blocks, cond_dim=cond_dim))
        model = fs.from_torch(net, 3, signature=signature, cond_dim=cond_dim, prediction="eps", sde=fs.SubVPSDE())
        assert model.parity_error is None or 0 <= model.parity_error <= 1


def test_parity_check_reports_its_error():
    model = fs.from_torch(_randomise(Seed002()), 2, time_shape="column")
    assert 0 <= model.parity_error <= 1


def test_parity_check_fails_loudly_on_a_wrong_program():
    """The check's power: one weight of the packed program changed by 1e-3 is caught."""
    model = fs.from_torch(_randomise(Seed002()), 2, time_shape="column", check=False)
    prog = fs.pack(model)
    prog.params[prog.ops[-1, 6]] += 1e-3  # the output layer's first weight
    with pytest.raises(ValueError, match="parity check failed"):
        parity(model)


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
