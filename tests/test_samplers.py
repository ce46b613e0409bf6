"""The sampler rules and their step programs (fastscore/samplers.py, fastscore/program.py):
what each rule declares, what the compiler rejects, and that a new rule runs on the fused
kernels with no kernel change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore import rng
from fastscore.plan import make_sample_plan
from fastscore.program import MAX_REGISTERS, Draw, Eval, Lin, compile_program
from fastscore.samplers import RULES, SamplerRule

from cases import NATIVE_BACKENDS
from rounding import sample_bound


def _plan(method, **options):
    model = fs.ScoreMLP(2, 8, 2)
    return make_sample_plan(model, fs.VPSDE(), 3, method, 5, 1e-3, 0, 0, options.get("snr", 0.16),
                            options.get("corrector_steps", 1), options.get("denoise", False))


def test_rules_declare_their_streams_times_and_history():
    pc = _plan("pc", corrector_steps=3).program
    assert pc.streams == (rng.STREAM_PREDICTOR, rng.STREAM_CORRECTOR, rng.STREAM_CORRECTOR + 1,
                          rng.STREAM_CORRECTOR + 2)
    assert pc.evals_per_step == 4
    ald = _plan("ald", corrector_steps=2).program
    assert ald.streams == (rng.STREAM_CORRECTOR, rng.STREAM_CORRECTOR + 1) and ald.evals_per_step == 2
    assert _plan("ode_heun").program.evals_per_step == 2 and _plan("ode_heun").program.n_slots == 2
    assert _plan("ode_euler").program.streams == () and _plan("em").program.streams == (rng.STREAM_PREDICTOR,)
    for rule in RULES.values():
        assert rule.source and rule.carries == (("dold",) if rule.name.startswith("dpmpp") else ())
        assert len(rule.times) == _plan(rule.name, corrector_steps=1).program.n_slots
    assert RULES["ode_heun"].order == 2 and RULES["ode_euler"].order == 1 and RULES["ald"].order is None


def test_plan_tables_follow_the_grid():
    plan = _plan("ode_heun", denoise=True)
    h = (plan.T - plan.eps) / plan.steps
    t = plan.T - np.arange(plan.steps) * h
    np.testing.assert_allclose(plan.times[:-1], np.stack([t, t - h], axis=1).ravel(), rtol=0, atol=1e-15)
    assert plan.times[-1] == plan.eps and plan.coef.shape == (plan.steps + 1, len(plan.program.coefficients))
    sde = fs.VPSDE()
    col = plan.program.coefficients.index("f")
    np.testing.assert_allclose(plan.coef[:-1, col], sde.drift_coeff(t), rtol=1e-15)


def test_ald_needs_a_corrector_step():
    with pytest.raises(ValueError, match="corrector_steps must be >= 1"):
        _plan("ald", corrector_steps=0)
    assert _plan("pc", corrector_steps=0).program.evals_per_step == 1  # pc's predictor alone


def test_the_compiler_rejects_malformed_programs():
    with pytest.raises(ValueError, match="read before it is written"):
        compile_program((Eval("s", "y"),), (), 1)
    with pytest.raises(ValueError, match="time slot"):
        compile_program((Eval("s", "x", at=1),), (), 1)
    with pytest.raises(ValueError, match="terms"):
        compile_program((Lin("x", x="a", b="b", c="c", d="d", e="e"),), (), 1)
    with pytest.raises(ValueError, match="final part may not draw"):
        compile_program((), (Draw("z", 1),), 1)
    regs = tuple(Lin(f"r{i}", x="one") for i in range(MAX_REGISTERS))
    with pytest.raises(ValueError, match="registers"):
        compile_program(regs, (), 1)
    with pytest.raises(TypeError, match="unknown operation"):
        compile_program(("eval",), (), 1)
    # carried registers may be read before they are written (zero before the first step)
    compile_program((Lin("x", x="a", prev="b"), Lin("prev", x="one")), (), 1, carries=("prev",))


@pytest.mark.skipif(not NATIVE_BACKENDS, reason="no native backend here")
@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_a_new_rule_runs_on_the_kernels_without_kernel_changes(monkeypatch, backend):
    """A rule written here, not in the package: a midpoint-in-noise variant of EM (score at
    t - h/2, the noise split in two draws). It runs fused, against the reference under the
    same derived bound as the built-in rules."""

    def coefficients(sde, t, h, plan):
        g2 = sde.diffusion_sq(t - 0.5 * h)
        return {"a": 1.0 - sde.drift_coeff(t - 0.5 * h) * h, "b": g2 * h, "c": np.sqrt(0.5 * g2 * h)}

    rule = SamplerRule(
        "em_mid", "test rule", order=1, times=(0.5,),
        program=lambda plan: (Eval("s", "x"), Draw("z", rng.STREAM_PREDICTOR), Draw("w", rng.STREAM_CORRECTOR),
                              Lin("x", x="a", s="b", z="c", w="c")),
        coefficients=coefficients)
    monkeypatch.setitem(RULES, "em_mid", rule)
    torch.manual_seed(5)
    model, sde, n = fs.ScoreMLP(2, 16, 2, "silu"), fs.VESDE(), 9
    x = fs.sample(model, sde, n, "em_mid", 12, backend=backend, seed=5, denoise=True)
    ref = fs.sample(model.double(), sde, n, "em_mid", 12, backend="torch", seed=5, denoise=True)
    _, bound = sample_bound(model, sde, "em_mid", 12, {"denoise": True}, n, 5)
    assert torch.all((x.double() - ref).norm(dim=1) <= bound)
    assert not torch.allclose(ref, fs.sample(model.double(), sde, n, "em", 12, backend="torch", seed=5, denoise=True))


def test_pack_is_cached_until_a_weight_changes():
    torch.manual_seed(0)
    model = fs.ScoreMLP(2, 8, 2)
    p = fs.pack(model)
    assert fs.pack(model) is p
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 2), 0.5).pow(2).sum().backward()
    opt.step()  # in place: the version counters move
    q = fs.pack(model)
    assert q is not p and not np.array_equal(q.params, p.params)
    model.load_state_dict(fs.ScoreMLP(2, 8, 2).state_dict())
    assert fs.pack(model) is not q
    copy = fs.ScoreMLP(2, 8, 2)
    copy.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(fs.pack(copy).params, fs.pack(model).params)


def test_declarations_bound_what_each_backend_is_handed():
    """The CUDA kernels' per-thread arrays (dim <= 8, arenas of 1024 per sample and 512 per
    time value) are declared, so a larger model is refused before any launch, naming both
    sides; the CPU declares only its dim."""
    from fastscore.backends import cpu, cuda

    plan = _plan("em")
    wide, deep = fs.pack(fs.ScoreMLP(2, 600, 1)), fs.pack(fs.ScoreMLP(9, 8, 1))
    assert wide.lane_arena > 1024
    assert "backend 'cuda' declares a per-sample arena of <= 1024" in cuda.DECLARES.refuses(
        "cuda", "sample", "em", wide, plan.program)
    assert "backend 'cuda' declares dim <= 8" in cuda.DECLARES.refuses("cuda", "log_prob", "rk45", deep, trace="exact")
    assert cpu.DECLARES.refuses("cpu", "sample", "em", wide, plan.program) is None
