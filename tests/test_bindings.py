"""fastscore._core checks everything it is given before touching memory: every header field,
network row, code, index and table size, one bad field at a time, raises ValueError (never a crash, never a
kernel run on a layout it did not validate). The Python layer is not the only guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastscore as fs
from fastscore.backends import cpu as cpu_backend
from fastscore.netprog import BINARY, COPY, DENSE, INIT_PARAM, MODE_PARAM_SCALAR, NORM, SDE_OP, UNARY, Builder
from fastscore.plan import make_sample_plan
from fastscore.program import DRAW, EVAL, LIN

core = cpu_backend._core
pytestmark = pytest.mark.skipif(core is None, reason="extension not built")
EULER, RK45 = (cpu_backend.integrator_args(m) for m in ("euler", "rk45"))


def _all_rows(cond_dim=3):
    """A small program with every row kind, operand mode and phase (time, cond, lane; dense
    with each init, unary with parameters, binary on arena vectors and scalars and on
    parameters, layer norm, SDE rows, exports), built with netprog.Builder."""
    g = np.random.default_rng(5)
    w = lambda *shape: g.standard_normal(shape)  # noqa: E731
    b = Builder(dim=2, cond_dim=cond_dim)
    tf = b.unary("time", "sin", b.dense("time", b.sde("t"), w(4, 1), init=w(4)))
    sigma = b.sde("sigma")
    h = b.dense("lane", b.x(), w(4, 2), init=b.export(tf))
    if cond_dim:
        h = b.binary("lane", "add", h, b.export(b.dense("cond", b.cond(), w(4, cond_dim))))
    h = b.unary("lane", "leaky_relu", b.norm("lane", h, w(4), w(4), 1e-5), [0.1])
    h = b.binary("lane", "add", b.binary("lane", "mul", h, 2.0), w(4))
    out = b.dense("lane", h, w(2, 4), init=w(2))
    return b.finish(b.binary("lane", "div", out, b.export(sigma)), fs.VPSDE())


def _valid(method="pc", denoise=True):
    """(network args, program args, sde tuple, cond [5, 3]) of a small valid request."""
    plan = make_sample_plan(fs.ScoreMLP(2, 8, 1), fs.VPSDE(), 5, method, 4, 1e-3, 1, 0, 0.16, 2, denoise)
    p = _all_rows()
    plan = plan.for_kernels(p)
    cond = np.random.default_rng(1).standard_normal((5, 3))
    return cpu_backend.net_args(p), list(cpu_backend.program_args(plan)), cpu_backend.sde_tuple(fs.VPSDE()), cond


def _sample(net, args, cond, n=5, seed=1, start=0):
    return core.sample(*net, *args, cond, n, seed, start)


def _calls(net, args, sde, cond):
    """Every binding that takes a network, on a valid request of 5 samples."""
    x = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    return [
        lambda: _sample(net, args, cond),
        lambda: core.net_eval(*net, x, cond, 0.5),
        lambda: core.score_trace(*net, x, cond, 0.5, False, 0),
        lambda: core.log_prob(*net, sde, x, cond, *EULER, 3, 1e-5, 1e-5, 1e-5, False, 0),
        lambda: core.emulate_sample(*net, *args, cond, 5, 1, 0, True),
        lambda: core.emulate_log_prob(*net, sde, x, cond, *EULER, 3, 1e-5, 1e-5, 1e-5, False, 0, True),
    ]


def test_the_valid_request_runs():
    for call in _calls(*_valid()):
        assert np.isfinite(call()[0]).all()


HEADER_FIELDS = ["dim", "cond_dim", "n_time_ops", "n_cond_ops", "time_arena", "cond_arena", "lane_arena", "n_texp",
                 "n_cexp", "out", "sde_kind"]


def _bad_headers(h, n_ops):
    """(field, value) pairs each of which breaks the header h of a program of n_ops rows."""
    d = dict(zip(HEADER_FIELDS, h))
    return [("dim", 0), ("dim", -1), ("dim", 10**6), ("cond_dim", -1), ("cond_dim", 5000), ("cond_dim", d["cond_dim"] + 1),
            ("n_time_ops", -1), ("n_time_ops", n_ops + 1), ("n_cond_ops", -1), ("n_cond_ops", n_ops),
            ("time_arena", -1), ("time_arena", 2**17), ("time_arena", d["n_texp"] - 1), ("cond_arena", -1),
            ("cond_arena", 2**17), ("cond_arena", d["cond_dim"]), ("lane_arena", -1), ("lane_arena", 2**17),
            ("lane_arena", d["dim"]), ("n_texp", -1), ("n_texp", d["time_arena"] + 1), ("n_cexp", -1),
            ("n_cexp", d["cond_arena"]), ("out", -1), ("out", d["lane_arena"] - 1), ("sde_kind", -2),
            ("sde_kind", 6), ("sde_kind", -1)]  # 6: no such kind; -1: no SDE, but the program reads sigma(t)


def test_every_binding_rejects_a_bad_header_field():
    net, args, sde, cond = _valid()
    params, ops, header = net
    for field, value in _bad_headers(header, len(ops)):
        bad = list(header)
        bad[HEADER_FIELDS.index(field)] = value
        for call in _calls((params, ops, tuple(bad)), args, sde, cond):
            with pytest.raises(ValueError):
                call()
    for sp in [(20.0, 0.1, 1.0), (0.1, 20.0, 0.0), (np.nan, 20.0, 1.0)]:  # the net's own SDE
        for call in _calls((params, ops, (*header[:11], sp)), args, sde, cond):
            with pytest.raises(ValueError, match="net sde"):
                call()


def _row_mutations(p):
    """(row, column, value) changes to program p that each take a row out of range."""
    kinds = p.ops[:, 0]
    first = lambda kind, lane=True: int(np.flatnonzero((kinds == kind) & (  # noqa: E731
        (np.arange(len(kinds)) >= p.n_time_ops + p.n_cond_ops) == lane))[0])
    dense, unary, binary, norm = (first(k) for k in (DENSE, UNARY, BINARY, NORM))
    copy = first(COPY, False)
    param_init = int(np.flatnonzero((kinds == DENSE) & (p.ops[:, 7] == INIT_PARAM))[-1])
    sde_row, time_dense = first(SDE_OP, False), first(DENSE, False)
    n_params, la = p.params.size, p.lane_arena
    binary_param = int(np.flatnonzero((kinds == BINARY) & (p.ops[:, 7] == MODE_PARAM_SCALAR))[0])
    return [
        (dense, 0, 17), (dense, 0, -1),  # unknown opcodes
        (dense, 1, la - 1), (dense, 1, -1), (dense, 4, 0),  # destination
        (dense, 2, la - 1), (dense, 5, 0), (dense, 2, p.ops[dense, 1]),  # source, overlap with dst
        (dense, 6, n_params - 1), (dense, 7, 3), (dense, 3, la),  # weights, init kind, init vector
        (param_init, 3, n_params - 1), (param_init, 8, 2 | 4),  # parameter init, a tangent of it
        (time_dense, 2, p.time_arena), (time_dense, 8, 4),  # a time row: its arena, no tangents
        (unary, 5, 99), (unary, 5, -1), (unary, 6, n_params), (unary, 2, la),
        (binary, 5, 4), (binary, 6, 4), (binary, 2, la), (binary_param, 3, n_params), (binary_param, 8, 2 | 4),
        (norm, 3, n_params), (norm, 5, n_params - 1), (norm, 6, -2), (norm, 2, la - 1),
        (sde_row, 5, 3), (sde_row, 4, 2), (copy, 2, p.time_arena), (dense, 8, 8), (dense, 8, -1),
    ]


def test_every_network_row_field_is_range_checked():
    p = _all_rows()
    net, args, sde, cond = _valid()
    for row, col, value in _row_mutations(p):
        ops = p.ops.copy()
        ops[row, col] = value
        for call in _calls((net[0], ops, net[2]), args, sde, cond):
            with pytest.raises(ValueError, match=r"net ops\[\d+\]"):
                call()
    moved = np.concatenate([p.ops[-1:], p.ops[:-1]])  # an SDE row is time-phase only; lane rows moved too
    for call in _calls((net[0], moved, net[2]), args, sde, cond):
        with pytest.raises(ValueError):
            call()


def test_params_and_conditions_are_checked():
    (params, ops, header), args, sde, cond = _valid()
    bad_params = [params.copy(), params.reshape(1, -1), params[:-1]]
    bad_params[0][3] = np.nan
    for bp in bad_params:
        for call in _calls((bp, ops, header), args, sde, cond):
            with pytest.raises(ValueError):
                call()
    infinite = cond.copy()
    infinite[4, 2] = np.inf
    for bad in (None, cond[:4], cond[:, :2], infinite, cond[None]):
        for call in _calls((params, ops, header), args, sde, bad):
            with pytest.raises(ValueError, match="cond"):
                call()
    unconditional = cpu_backend.net_args(_all_rows(cond_dim=0))
    for call in _calls(unconditional, args, sde, cond):
        with pytest.raises(ValueError, match="takes no condition"):
            call()
    for bad_sde in [(3, 0.1, 20.0, 1.0), (-1, 0.1, 20.0, 1.0), (1, 0.5, 0.0, 1.0), (0, 20.0, 0.1, 1.0),
                    (0, 0.1, 20.0, 0.0), (0, 0.1, np.inf, 1.0)]:
        with pytest.raises(ValueError, match="sde"):
            core.log_prob(params, ops, header, bad_sde, np.zeros((5, 2), np.float32), cond, *EULER, 3, 1e-5, 1e-5,
                          1e-5, False, 0)


def _with_op(args, row, col, value):
    ops = args[0].copy()
    ops[row, col] = value
    return [ops, *args[1:]]


def test_every_step_program_field_is_range_checked():
    net, args, _, cond = _valid()
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
            _sample(net, _with_op(args, row, col, value), cond)
    # a draw in the final program
    moved = _with_op(args, final_eval, 0, DRAW)
    with pytest.raises(ValueError, match="final program may not draw"):
        _sample(net, moved, cond)


def test_program_counts_and_table_shapes_are_checked():
    net, args, _, cond = _valid()
    ops, n_body, n_slots, n_regs, coef, times, prior = args
    cases = {
        "ops": [ops[:, :11], ops[:0]],
        "n_body": [-1, len(ops) + 1],
        "n_slots": [0, 2],  # 2: the times no longer match
        "n_registers": [0, 9, n_regs - 1],
        "coef": [coef[:1], coef[:, :-1], coef[None], np.full_like(coef, np.nan)],
        "times": [times[:-1], times[None], np.full_like(times, np.nan)],
        "prior_std": [0.0, -1.0, np.nan],
    }
    for wide in (ops.astype(np.int64) + 2**32, ops.astype(np.float32)):  # no silent cast of the program
        with pytest.raises(TypeError):
            _sample(net, [wide, *args[1:]], cond)
    names = list(cases)
    for name, values in cases.items():
        for value in values:
            bad = list(args)
            bad[names.index(name)] = value
            with pytest.raises(ValueError):
                _sample(net, bad, cond)
    for n, start in [(-1, 0), (5, -1), (2, 2**32 - 1)]:
        with pytest.raises(ValueError, match="2\\*\\*32"):
            _sample(net, args, np.zeros((n if n >= 0 else 5, 3)), n=n, start=start)


def _integrator(method, where=None, value=None):
    adaptive, table, controller = cpu_backend.integrator_args(method)
    table, controller = table.copy(), controller.copy()
    if where == "table":
        table[value[0]] = value[1]
    elif where == "controller":
        controller[value[0]] = value[1]
    return adaptive, table, controller


def test_integrator_tables_are_checked():
    net, _, sde, cond = _valid()
    x = np.ones((5, 2), np.float32)
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
            core.log_prob(*net, sde, x, cond, *integ, 3, 1e-5, 1e-5, 1e-5, False, 0)


def test_likelihood_and_helper_bindings_check_their_arguments():
    net, _, sde, c = _valid()
    x = np.ones((5, 2), np.float32)
    bad_calls = [
        lambda: core.log_prob(*net, sde, x, c, *EULER, 0, 1e-5, 1e-5, 1e-5, False, 0),  # steps
        lambda: core.log_prob(*net, sde, x, c, *RK45, 3, 0.0, 1e-5, 1e-5, False, 0),  # eps
        lambda: core.log_prob(*net, sde, x, c, *RK45, 3, 2.0, 1e-5, 1e-5, False, 0),
        lambda: core.log_prob(*net, sde, x, c, *RK45, 3, 1e-5, 0.0, 1e-5, False, 0),  # rtol
        lambda: core.log_prob(*net, sde, x, c, *RK45, 3, 1e-5, 1e-5, np.nan, False, 0),  # atol
        lambda: core.log_prob(*net, sde, x[:, :1], c, *EULER, 3, 1e-5, 1e-5, 1e-5, False, 0),  # shape
        lambda: core.log_prob(*net, sde, np.full((5, 2), np.nan, np.float32), c, *EULER, 3, 1e-5, 1e-5,
                              1e-5, False, 0),
        lambda: core.net_eval(*net, x, c, np.nan),
        lambda: core.score_trace(*net, x, c, np.inf, True, 0),
        lambda: core.normals(0, np.array([-1]), 0, 1, 2),
        lambda: core.normals(0, np.array([2**32]), 0, 1, 2),
        lambda: core.normals(0, np.array([1]), 0, 1, 0),
        lambda: core.philox(np.zeros((2, 3), np.uint32), 0),
        lambda: core.sde_coefficients((6, 0.1, 20.0, 1.0), np.array([0.5])),
        lambda: core.matvec_gflops(0, 4),
        lambda: core.matvec_gflops(64, 0),
        lambda: core.matvec_gflops(64, 4, 0),
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
            net = cpu_backend.net_args(p)
            plan = make_sample_plan(model, fs.VPSDE(), 17, "ald", 3, 1e-3, 0, 0, 0.16, 2, True).for_kernels(p)
            assert core.emulate_sample(*net, *cpu_backend.program_args(plan), None, 17, 0, 0, True).shape == (17, dim)
            for hutchinson in (False, True):
                logp, _, failed = core.emulate_log_prob(*net, (0, 0.1, 20.0, 1.0), x.numpy(), None, *RK45, 1, 1e-5,
                                                        1e-5, 1e-5, hutchinson, 0, True)
                assert failed == 0 and np.isfinite(logp).all()
