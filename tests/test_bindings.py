"""fastscore._core checks everything it is given before touching memory: every layout field,
code, index and table size, one bad field at a time, raises ValueError (never a crash, never a
kernel run on a layout it did not validate). The Python layer is not the only guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore.backends import cpu as cpu_backend
from fastscore.plan import make_sample_plan
from fastscore.program import DRAW, EVAL, LIN

core = cpu_backend._core
pytestmark = pytest.mark.skipif(core is None, reason="extension not built")
EULER, RK45 = (cpu_backend.integrator_args(m) for m in ("euler", "rk45"))


def _valid(method="pc", denoise=True):
    """(packed weights, layout, program args, sde tuple) of a small valid request."""
    torch.manual_seed(0)
    model = fs.ScoreMLP(2, 8, 2, "tanh", "fourier", fourier_features=3)
    plan = make_sample_plan(model, fs.VPSDE(), 5, method, 4, 1e-3, 1, 0, 0.16, 2, denoise)
    plan = plan.for_kernels(fs.pack(model))
    p = plan.kernel.packed
    return p.weights, cpu_backend.layout(p), list(cpu_backend.program_args(plan)), cpu_backend.sde_tuple(fs.VPSDE())


def _sample(weights, layout, args, n=5, seed=1, start=0):
    return core.sample(weights, layout, *args, n, seed, start)


def test_the_valid_request_runs():
    weights, layout, args, _ = _valid()
    assert np.isfinite(_sample(weights, layout, args)).all()


LAYOUT_FIELDS = ["dim", "width", "depth", "activation", "time_embedding", "n_freqs", "std_kind"]
BAD_LAYOUT = [  # (field index, value)
    (0, 0), (0, -1), (0, 10**6), (1, 0), (1, -3), (1, 2**20), (2, 0), (2, 10**5),
    (3, 5), (3, -1), (3, 99), (4, 2), (4, -1), (4, 7), (5, 0), (5, 10**6), (6, 3), (6, -2),
]


@pytest.mark.parametrize("field,value", BAD_LAYOUT, ids=[f"{LAYOUT_FIELDS[f]}={v}" for f, v in BAD_LAYOUT])
def test_every_binding_rejects_a_bad_layout_field(field, value):
    weights, layout, args, sde = _valid()
    bad = list(layout)
    bad[field] = value
    bad = tuple(bad)
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    calls = [
        lambda: _sample(weights, bad, args),
        lambda: core.mlp_eval(weights, bad, x, 0.5),
        lambda: core.score_trace(weights, bad, x, 0.5, False, 0),
        lambda: core.log_prob(weights, bad, sde, x, *EULER, 3, 1e-5, 1e-5, 1e-5, False, 0),
        lambda: core.emulate_sample(weights, bad, *args, 5, 1, 0, True),
        lambda: core.emulate_log_prob(weights, bad, sde, x, *EULER, 3, 1e-5, 1e-5, 1e-5, False, 0, True),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_the_time_embedding_code_that_crashed_is_rejected():
    """The crash of issue 8/12: a concat layout with an unknown embedding code and a large
    frequency count, whose buffer was sized for one layout and filled for another."""
    weights, layout, args, _ = _valid()
    bad = (layout[0], layout[1], layout[2], layout[3], 5, 4000, layout[6], layout[7])
    with pytest.raises(ValueError, match="time-embedding"):
        _sample(weights, bad, args)


def test_weights_and_std_sde_are_checked():
    weights, layout, args, sde = _valid()
    for w in (weights[:-1], np.append(weights, 1.0), weights.reshape(1, -1)):
        with pytest.raises(ValueError, match="packed_size"):
            _sample(w.astype(np.float32), layout, args)
    nan = weights.copy()
    nan[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        _sample(nan, layout, args)
    for std in [(1, (0.5, 0.0, 1.0)), (0, (0.1, 20.0, -1.0)), (2, (np.nan, 1.0, 1.0))]:
        bad = (*layout[:6], std[0], std[1])
        with pytest.raises(ValueError, match="std_sde"):
            _sample(weights, bad, args)
    for bad_sde in [(3, 0.1, 20.0, 1.0), (-1, 0.1, 20.0, 1.0), (1, 0.5, 0.0, 1.0), (0, 20.0, 0.1, 1.0),
                    (0, 0.1, 20.0, 0.0), (0, 0.1, np.inf, 1.0)]:
        with pytest.raises(ValueError, match="sde"):
            core.log_prob(weights, layout, bad_sde, np.zeros((2, 2), np.float32), *EULER, 3, 1e-5, 1e-5, 1e-5, False,
                          0)


def _with_op(args, row, col, value):
    ops = args[0].copy()
    ops[row, col] = value
    return [ops, *args[1:]]


def test_every_op_field_is_range_checked():
    weights, layout, args, _ = _valid()
    ops, n_body, n_slots, n_regs = args[0], args[1], args[2], args[3]
    kinds = ops[:, 0]
    ev, dr, ln = (int(np.flatnonzero(kinds[:n_body] == k)[0]) for k in (EVAL, DRAW, LIN))
    final_eval = n_body + int(np.flatnonzero(kinds[n_body:] == EVAL)[0])
    n_coef = args[4].shape[1]
    bad = [
        (ev, 0, 7), (ev, 0, -1),  # unknown opcodes
        (ev, 1, n_regs), (ev, 1, -1), (ev, 2, n_regs), (ev, 3, n_slots), (ev, 3, -1),  # registers, slot
        (final_eval, 3, 1),  # the final program has one evaluation row
        (dr, 2, -1),  # stream
        (ln, 2, 0), (ln, 2, 5), (ln, 4, n_regs), (ln, 5, n_coef), (ln, 5, -1),  # terms
    ]
    for row, col, value in bad:
        with pytest.raises(ValueError, match=r"ops\[|opcode"):
            _sample(weights, layout, _with_op(args, row, col, value))
    # a draw in the final program
    moved = _with_op(args, final_eval, 0, DRAW)
    with pytest.raises(ValueError, match="final program may not draw"):
        _sample(weights, layout, moved)


def test_program_counts_and_table_shapes_are_checked():
    weights, layout, args, _ = _valid()
    ops, n_body, n_slots, n_regs, coef, bias, scale, prior = args
    cases = {
        "ops": [ops[:, :11], ops[:0]],
        "n_body": [-1, len(ops) + 1],
        "n_slots": [0, 2],  # 2: the bias table no longer matches
        "n_registers": [0, 9, n_regs - 1],
        "coef": [coef[:1], coef[:, :-1], coef[None], np.full_like(coef, np.nan)],
        "bias": [bias[:-1], bias[:, :-1], bias.ravel(), np.full_like(bias, np.inf)],
        "scale": [scale[:-1], scale[None], np.full_like(scale, np.nan)],
        "prior_std": [0.0, -1.0, np.nan],
    }
    for wide in (ops.astype(np.int64) + 2**32, ops.astype(np.float32)):  # no silent cast of the program
        with pytest.raises(TypeError):
            _sample(weights, layout, [wide, *args[1:]])
    names = list(cases)
    for name, values in cases.items():
        for value in values:
            bad = list(args)
            bad[names.index(name)] = value
            with pytest.raises(ValueError):
                _sample(weights, layout, bad)
    for n, start in [(-1, 0), (5, -1), (2, 2**32 - 1)]:
        with pytest.raises(ValueError, match="2\\*\\*32"):
            _sample(weights, layout, args, n=n, start=start)


def _integrator(method, where=None, value=None):
    adaptive, table, controller = cpu_backend.integrator_args(method)
    table, controller = table.copy(), controller.copy()
    if where == "table":
        table[value[0]] = value[1]
    elif where == "controller":
        controller[value[0]] = value[1]
    return adaptive, table, controller


def test_integrator_tables_are_checked():
    weights, layout, _, sde = _valid()
    x = np.ones((3, 2), np.float32)
    bad = [
        _integrator("rk4", "table", ((1, 2), 0.3)),  # an entry on or above the diagonal: implicit
        _integrator("rk4", "table", ((0, 1), np.nan)),
        _integrator("rk45", "table", ((8, 0), 0.5)),  # a[-1] != b: not first-same-as-last
        _integrator("rk45", "table", ((0, 6), 0.9)),  # c[-1] != 1
        _integrator("rk45", "controller", (0, 0.0)),  # h0
        _integrator("rk45", "controller", (2, 2.0)),  # min factor > 1
        _integrator("rk45", "controller", (4, 0.2)),  # exponent >= 0
        _integrator("rk45", "controller", (5, 0.0)),  # attempts
        (True, np.zeros((11, 8)), _integrator("rk45")[2]),  # 8 stages
        (False, np.zeros((4, 2)), _integrator("rk45")[2]),  # wrong shape
        (False, _integrator("heun")[1], np.zeros(5)),
    ]
    for integ in bad:
        with pytest.raises(ValueError, match="tableau|controller|adaptive"):
            core.log_prob(weights, layout, sde, x, *integ, 3, 1e-5, 1e-5, 1e-5, False, 0)


def test_likelihood_and_helper_bindings_check_their_arguments():
    weights, layout, _, sde = _valid()
    x = np.ones((3, 2), np.float32)
    bad_calls = [
        lambda: core.log_prob(weights, layout, sde, x, *EULER, 0, 1e-5, 1e-5, 1e-5, False, 0),  # steps
        lambda: core.log_prob(weights, layout, sde, x, *RK45, 3, 0.0, 1e-5, 1e-5, False, 0),  # eps
        lambda: core.log_prob(weights, layout, sde, x, *RK45, 3, 2.0, 1e-5, 1e-5, False, 0),
        lambda: core.log_prob(weights, layout, sde, x, *RK45, 3, 1e-5, 0.0, 1e-5, False, 0),  # rtol
        lambda: core.log_prob(weights, layout, sde, x, *RK45, 3, 1e-5, 1e-5, np.nan, False, 0),  # atol
        lambda: core.log_prob(weights, layout, sde, x[:, :1], *EULER, 3, 1e-5, 1e-5, 1e-5, False, 0),  # shape
        lambda: core.log_prob(weights, layout, sde, np.full((3, 2), np.nan, np.float32), *EULER, 3, 1e-5, 1e-5,
                              1e-5, False, 0),
        lambda: core.mlp_eval(weights, layout, x, np.nan),
        lambda: core.score_trace(weights, layout, x, np.inf, True, 0),
        lambda: core.normals(0, np.array([-1]), 0, 1, 2),
        lambda: core.normals(0, np.array([2**32]), 0, 1, 2),
        lambda: core.normals(0, np.array([1]), 0, 1, 0),
        lambda: core.philox(np.zeros((2, 3), np.uint32), 0),
        lambda: core.sde_coefficients((5, 0.1, 20.0, 1.0), np.array([0.5])),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()


def test_kernels_run_at_their_limits():
    """The largest dim each kernel takes, with a network narrower than its data (tangent
    buffers of stride max(width, dim)), through the sampler, both traces and the CUDA emulation:
    under .ci/sanitize this is where an out-of-bounds access would show."""
    torch.manual_seed(1)
    info = core.build_info()
    for dim, backend in ((info["max_dim"], "cpu"), (info["cuda_max_dim"], "emulate")):
        model = fs.ScoreMLP(dim, 3, 2, "silu", "fourier", fourier_features=2)
        x = torch.randn(5, dim)
        if backend == "cpu":
            assert fs.sample(model, fs.VPSDE(), 17, "pc", 3, backend="cpu", corrector_steps=2).shape == (17, dim)
            for trace in ("exact", "hutchinson"):
                assert fs.log_prob(model, fs.VPSDE(), x, "rk45", backend="cpu", trace=trace).shape == (5,)
        else:
            p = fs.pack(model)
            plan = make_sample_plan(model, fs.VPSDE(), 17, "ald", 3, 1e-3, 0, 0, 0.16, 2, True).for_kernels(p)
            assert core.emulate_sample(p.weights, cpu_backend.layout(p), *cpu_backend.program_args(plan), 17, 0, 0,
                                       True).shape == (17, dim)
            for hutchinson in (False, True):
                logp, _, failed = core.emulate_log_prob(p.weights, cpu_backend.layout(p), (0, 0.1, 20.0, 1.0),
                                                        x.numpy(), *RK45, 1, 1e-5, 1e-5, 1e-5, hutchinson, 0, True)
                assert failed == 0 and np.isfinite(logp).all()
