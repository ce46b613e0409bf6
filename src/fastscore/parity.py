"""The parity check of a packed network, and the float32 error bound it uses.

``evaluate`` runs a network program (fastscore/netprog.py) in float64 with torch, row by row
as the kernels do, and bounds the error of a float32 kernel running the same program by a
first-order forward rounding analysis (Higham, *Accuracy and Stability of Numerical
Algorithms*, ch. 3): every row's result is given a zero perturbation, autograd yields the
output's exact sensitivity to it, and the bound is

    |s_kernel - s_float64| <= sum over rows r, entries j of |d s / d v_rj| * rho_rj

componentwise, with rho_rj the rounding a float32 kernel may commit in entry j of row r:
  dense    gamma_{n_in + 1} (|init| + |W| |a|), plus u |W| |a| for the weights' own rounding
  unary    8 u (|a| + |f(a)|) (libm functions are within 2 ulp, the formulas add a few roundings)
  binary   u |r|, plus u |parameter operand| for the rounding of a constant
  norm     the mean, variance and 1 / sqrt of a float32 layer norm (``_norm_rounding``)
  export   u |v|: a time- or cond-phase value (float64) rounded when the lane phase imports it
with u = 2^-24 in the lane phase; the time and cond phases run in float64 (u = 2^-53) and
only their float32 parameters (u |p|) and exports round at float32. The module itself runs
in float64, whose own rounding (2^-29 times smaller) the bound ignores.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from .netprog import (BINARY, BINARY_FUNCTIONS, COPY, DENSE, INIT_ARENA, INIT_PARAM, MODE_PARAM_SCALAR,
                      MODE_PARAM_VECTOR, MODE_SCALAR, NORM, SDE_FUNCTIONS, SDE_OP, UNARY, UNARY_FUNCTIONS,
                      NetProgram)

U32, U64 = 2.0**-24, 2.0**-53
TRANSCENDENTAL_ULPS = 8
_UNARY = {code: name for name, code in UNARY_FUNCTIONS.items()}
_BINARY = {code: name for name, code in BINARY_FUNCTIONS.items()}


def gamma(n: int, u: float = U32) -> float:
    return n * u / (1 - n * u)


def _unary(name: str, a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    f = torch.nn.functional
    if name == "leaky_relu":
        return torch.where(a > 0, a, p[0] * a)
    if name == "elu":
        return torch.where(a > 0, a, p[0] * torch.expm1(a))
    if name == "softplus":
        return torch.where(p[0] * a > p[1], a, f.softplus(p[0] * a) / p[0])
    if name == "gelu_tanh":
        return f.gelu(a, approximate="tanh")
    fn = {"relu": torch.relu, "silu": f.silu, "gelu": f.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
          "mish": f.mish, "sin": torch.sin, "cos": torch.cos, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt,
          "neg": torch.neg, "reciprocal": torch.reciprocal, "square": torch.square}[name]
    return fn(a)


def _sde_value(prog: NetProgram, fn: int, t: torch.Tensor) -> torch.Tensor:
    if fn == SDE_FUNCTIONS["t"]:
        return t
    from .sde import from_kind

    sde = from_kind(prog.sde_kind, prog.sde_params)
    return sde.std(t) if fn == SDE_FUNCTIONS["sigma"] else sde.mean_coeff(t)


def _norm_rounding(x: torch.Tensor, y: torch.Tensor, g, b, eps: float) -> torch.Tensor:
    """Rounding of a float32 layer norm of x [n, m] (y: the normalised x, before gamma and beta):
    the mean is off by dm <= gamma_m mean|x|, each centred entry by dm + u |x_j - mean|; the
    variance by gamma_{m+2} var plus what those errors make of it; 1 / sqrt(var + eps) by
    half the relative error of its argument and 2 u; then gamma, beta: 2 u."""
    m = x.shape[1]
    d = x - x.mean(1, keepdim=True)
    var = (d * d).mean(1, keepdim=True)
    dm = gamma(m) * x.abs().mean(1, keepdim=True)
    ed = dm + U32 * d.abs()
    rel_inv = 0.5 * (gamma(m + 2) * var + 2 * (d.abs() * ed).mean(1, keepdim=True) + U32 * eps) / (var + eps) + 2 * U32
    inv = 1.0 / torch.sqrt(var + eps)
    out = y * g + b
    return (ed * inv + y.abs() * rel_inv) * g.abs() + 2 * U32 * (out.abs() + b.abs()) + U32 * ((y * g).abs() + b.abs())


class _Arena:
    """One phase's arena as a list of [n] columns (so rows rewrite entries without in-place
    tensor writes, which autograd would trip over)."""

    def __init__(self, size: int, n: int):
        self.cols = [None] * size
        self.n = n

    def read(self, off: int, k: int) -> torch.Tensor:
        return torch.stack([self.cols[off + j] for j in range(k)], 1)

    def write(self, off: int, v: torch.Tensor) -> None:
        for j, col in enumerate(v.unbind(1)):
            self.cols[off + j] = col


def evaluate(prog: NetProgram, x: torch.Tensor, t, cond=None, bound: bool = False):
    """(s [n, dim], err [n, dim] or None): the program run in float64 on x [n, dim] at time t
    (a float or [n]) with cond [n, cond_dim]; with bound=True, err bounds the componentwise
    error of a float32 kernel running it on the same (float32) x (module docstring)."""
    out, perturbations, _ = _run(prog, x, t, cond, bound, None)
    if not bound:
        return out.detach(), None
    err = torch.stack([_propagated(out[:, j], perturbations, j + 1 < prog.dim) for j in range(prog.dim)], 1)
    return out.detach(), err


def trace(prog: NetProgram, x: torch.Tensor, t, dirs: torch.Tensor, cond=None):
    """(tr [n], err [n]): sum_i dir_i . (ds/dx) dir_i by the program's forward-mode tangents
    (the rows' tangent flags, as the kernels run them) in float64, for directions dirs
    [n, nt, dim] (unit vectors: the exact trace), and the bound on a float32 kernel's error.
    Tangent rows round like their values (dense gamma_{n_in + 1} |W| |da|, a slope times a
    tangent (8 + 1) u, products gamma_3, quotients gamma_4, the layer norm's means), the
    primal's rounding moves the slopes (autograd through the float64 tangents sees it), and
    the final dot product adds gamma_{nt dim} of its terms."""
    dirs = dirs.double()
    out, perturbations, dout = _run(prog, x, t, cond, True, dirs)
    terms = dirs * dout.transpose(1, 2)  # [n, nt, dim]
    tr = terms.sum((1, 2))
    err = gamma(terms.shape[1] * terms.shape[2]) * terms.abs().sum((1, 2)).detach()
    return tr.detach(), err + _propagated(tr, perturbations, False)


def _propagated(value: torch.Tensor, perturbations: list, retain: bool) -> torch.Tensor:
    """sum over rows r, entries j of |d value / d v_rj| rho_rj, per sample: value [n] (one per
    sample, which depends on its own sample's rows only), perturbations from _run."""
    deltas = [d for d, _ in perturbations]
    grads = torch.autograd.grad(value.sum(), deltas, retain_graph=retain, allow_unused=True)
    err = torch.zeros_like(value).detach()
    for g, (_, rho) in zip(grads, perturbations):
        if g is not None:
            err = err + (g.abs() * rho).sum(tuple(range(1, g.dim())))
    return err


def _run(prog: NetProgram, x: torch.Tensor, t, cond, bound: bool, dirs):
    """The program in float64: (output [n, dim], [(zero perturbation, rounding bound)] per row
    and tangent row, output tangents [n, dim, nt] or None)."""
    x = x.double()
    n = x.shape[0]
    t = torch.as_tensor(t, dtype=torch.float64).expand(n) if not torch.is_tensor(t) or t.dim() == 0 else t.double()
    P = torch.from_numpy(prog.params.astype(np.float64))
    arenas = {"time": _Arena(prog.time_arena, n), "cond": _Arena(prog.cond_arena, n), "lane": _Arena(prog.lane_arena, n)}
    tan = None if dirs is None else _Arena(prog.lane_arena, n)
    if prog.cond_dim:
        arenas["cond"].write(0, cond.double())
    arenas["lane"].write(0, x)
    if tan is not None:
        tan.write(0, dirs.transpose(1, 2))  # column d: [n, nt]
    lane0 = prog.n_time_ops + prog.n_cond_ops
    perturbations = []  # (zero perturbation, rounding bound) per row
    for i, op in enumerate(prog.ops.tolist()):
        code, dst, a, b, k, p0, p1, p2, flags = op
        phase = "time" if i < prog.n_time_ops else "lane" if i >= lane0 else "cond"
        ar = arenas[phase]
        u = U32 if phase == "lane" else U64
        rho, prim = None, {}
        if code == DENSE:
            W = P[p1:p1 + k * p0].reshape(k, p0)
            src = ar.read(a, p0)
            init = P[b:b + k].expand(n, k) if p2 == INIT_PARAM else ar.read(b, k) if p2 == INIT_ARENA else 0.0
            r = init + src @ W.T
            mag = src.abs() @ W.abs().T
            rho = gamma(p0 + 1, u) * (mag + torch.as_tensor(init).abs()) + U32 * mag
            prim = {"W": W}
            if p2 == INIT_PARAM:
                rho = rho + U32 * torch.as_tensor(init).abs()
        elif code == UNARY:
            src = ar.read(a, k)
            r = _unary(_UNARY[p0], src, P[p1:p1 + 2])
            rho = TRANSCENDENTAL_ULPS * u * (src.abs() + r.abs())
            prim = {"src": src, "p": P[p1:p1 + 2]}
            if _UNARY[p0] in ("leaky_relu", "elu", "softplus"):
                rho = rho + U32 * (src.abs() + r.abs())
        elif code == BINARY:
            ops = []
            param_part = 0.0
            for mode, off in ((p1, a), (p2, b)):
                if mode <= MODE_SCALAR:
                    v = ar.read(off, 1 if mode == MODE_SCALAR else k)
                else:
                    v = P[off:off + (1 if mode == MODE_PARAM_SCALAR else k)].expand(n, -1)
                    param_part = v
                ops.append(v)
            fn = _BINARY[p0]
            r = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}[fn](*ops).expand(n, k)
            rho = u * r.abs() + U32 * (torch.as_tensor(param_part).abs() if fn in ("add", "sub") else
                                       (r.abs() if torch.is_tensor(param_part) else 0.0))
            prim = {"ops": ops, "r": r}
        elif code == NORM:
            src = ar.read(a, k)
            g = P[p0:p0 + k] if p0 >= 0 else torch.ones(k, dtype=torch.float64)
            be = P[p1:p1 + k] if p1 >= 0 else torch.zeros(k, dtype=torch.float64)
            eps = float(P[b])
            inv = 1.0 / torch.sqrt(src.var(1, unbiased=False, keepdim=True) + eps)
            y = (src - src.mean(1, keepdim=True)) * inv
            r = y * g + be
            prim = {"y": y, "inv": inv, "g": g}
            if phase == "lane":
                rho = _norm_rounding(src, y.detach(), g, be, eps)
            else:
                rho = 4 * U64 * r.abs() + U32 * ((y * g).abs() + be.abs())
        elif code == SDE_OP:
            r = _sde_value(prog, p0, t)[:, None]
            rho = 4 * U64 * r.abs()
        elif code == COPY:
            r = ar.read(a, k)
            rho = U32 * r.abs() if phase != "lane" else None  # an export: rounded on import
        else:
            raise ValueError(f"unknown opcode {code} in row {i}")
        if tan is not None and flags & 4:
            dr, rho_t = _tangent(code, op, prim, tan, n)
            if bound:
                delta = torch.zeros_like(dr, requires_grad=True)
                perturbations.append((delta, rho_t.detach()))
                dr = dr + delta
            tan.write(dst, dr)
        if bound and rho is not None:
            delta = torch.zeros_like(r, requires_grad=True)
            perturbations.append((delta, rho.detach()))
            r = r + delta
        ar.write(dst, r)
        if phase != "lane" and i + 1 == (prog.n_time_ops if phase == "time" else lane0):
            _import(prog, arenas, phase)
    out = arenas["lane"].read(prog.out, prog.dim)
    return out, perturbations, None if tan is None else tan.read(prog.out, prog.dim)


def _tangent(code: int, op: list, v: dict, tan: _Arena, n: int):
    """(tangents [n, k, nt] of a lane row's result, their float32 rounding bound), from the
    row's operands' tangents where its flags say they carry them (net.h run_net); v: the
    primal values of the row that the tangent needs (set by _run per row kind)."""
    _, dst, a, b, k, p0, p1, p2, flags = op
    ta, tb = bool(flags & 1), bool(flags & 2)
    nt = tan.cols[0].shape[1]
    read = lambda off, m, has: tan.read(off, m) if has else torch.zeros(n, m, nt, dtype=torch.float64)  # noqa: E731
    if code == DENSE:
        W = v["W"]
        da, dinit = read(a, p0, ta), read(b, k, p2 == INIT_ARENA and tb)
        dr = dinit + torch.einsum("jk,nkd->njd", W, da)
        return dr, gamma(p0 + 1) * (torch.einsum("jk,nkd->njd", W.abs(), da.abs()) + dinit.abs())
    if code == UNARY:
        src, p = v["src"], v["p"]
        z = src if src.requires_grad else src.detach().requires_grad_(True)
        with torch.enable_grad():  # the elementwise slope f'(src), itself differentiable in src
            (slope,) = torch.autograd.grad(_unary(_UNARY[p0], z, p).sum(), z, create_graph=True)
        dr = slope[..., None] * read(a, k, ta)
        return dr, (TRANSCENDENTAL_ULPS + 1) * U32 * dr.abs()
    if code == BINARY:
        A, B = (o.expand(n, k)[..., None] for o in v["ops"])
        lens = [1 if m in (MODE_SCALAR, MODE_PARAM_SCALAR) else k for m in (p1, p2)]
        da, db = read(a, lens[0], ta).expand(n, k, nt), read(b, lens[1], tb).expand(n, k, nt)
        fn = _BINARY[p0]
        if fn in ("add", "sub"):
            dr = da + db if fn == "add" else da - db
            return dr, U32 * dr.abs()
        if fn == "mul":
            return da * B + A * db, gamma(3) * ((da * B).abs() + (A * db).abs())
        r = v["r"][..., None]
        return (da - r * db) / B, gamma(4) * (da.abs() + (r * db).abs()) / B.abs()
    if code == NORM:
        y, inv, g = v["y"][..., None], v["inv"][..., None], v["g"][None, :, None]
        dx = read(a, k, ta)
        m1 = dx.mean(1, keepdim=True)
        m2 = (y * dx).mean(1, keepdim=True)
        dr = (dx - m1 - y * m2) * inv * g
        rho = g.abs() * inv * (gamma(k) * dx.abs().mean(1, keepdim=True)
                               + y.abs() * gamma(k + 1) * (y * dx).abs().mean(1, keepdim=True)
                               + gamma(4) * (dx.abs() + m1.abs() + (y * m2).abs())) + U32 * dr.abs()
        return dr, rho
    if code == COPY:
        dr = read(a, k, ta)
        return dr, torch.zeros_like(dr)
    raise ValueError(f"row kind {code} carries no tangents")


def _import(prog: NetProgram, arenas: dict, phase: str) -> None:
    """A finished time or cond phase's exports into the lane arena's import region."""
    if phase == "time":
        src, k, dst = prog.time_arena - prog.n_texp, prog.n_texp, prog.dim
    else:
        src, k, dst = prog.cond_arena - prog.n_cexp, prog.n_cexp, prog.dim + prog.n_texp
    if k:
        arenas["lane"].write(dst, arenas[phase].read(src, k))


def kernel_eval(model, x: np.ndarray, t: float, cond=None) -> np.ndarray | None:
    """s(x, t) [n, dim] from the fastest native network pass here (the C++ kernels, else
    Numba), or None when neither is available."""
    from .backends import cpu, numba_backend
    from .nn import pack

    if cpu._core is not None:
        return cpu._core.net_eval(*cpu.net_args(pack(model)), x, None if cond is None else cond.numpy(), t)
    if numba_backend.info()["available"]:
        return numba_backend.net_eval(model, x, t, cond)
    return None


PARITY_TIMES = (0.05, 0.3, 0.9)  # fractions of the time range


def parity(model, n: int = 64, seed: int = 0) -> float | None:
    """Runs the original module (float64) and the packed program on a native evaluator on
    random inputs at a few times; raises ValueError where they differ by more than the
    program's float32 bound (``evaluate``). Returns the largest error as a fraction of its
    bound (also kept as model.parity_error), None where no native evaluator exists."""
    from .nn import pack

    prog = pack(model)
    g = torch.Generator().manual_seed(seed)
    x32 = (torch.randn(n, model.dim, generator=g) * 2).float()
    cond = torch.randn(n, model.cond_dim, generator=g, dtype=torch.float64) if model.cond_dim else None
    sde = getattr(model, "sde", None) or getattr(model, "std_sde", None)
    T = sde.T if sde is not None else 1.0
    ref64 = copy.deepcopy(model).double()
    worst = 0.0
    for frac in PARITY_TIMES:
        t = frac * T
        got = kernel_eval(model, x32.numpy(), t, cond)
        if got is None:
            model.parity_error = None
            return None
        with torch.no_grad():
            want = ref64(x32.double(), t, cond)
        _, err = evaluate(prog, x32.double(), t, cond, bound=True)
        diff = (torch.from_numpy(got).double() - want).abs()
        ratio = (diff / err.clamp_min(1e-300)).max().item()
        if not ratio <= 1.0:
            i, j = divmod(int(torch.argmax(diff - err).item()), model.dim)
            raise ValueError(
                f"parity check failed at t = {t:.3g}: the packed network differs from the module by {diff[i, j]:.3g} "
                f"at sample {i}, component {j}, above the float32 bound {err[i, j]:.3g}. The lowering does not "
                "reproduce this network; please report it with the module's code")
        worst = max(worst, ratio)
    model.parity_error = worst
    return worst
