"""Users' own networks in the fused kernels: ``from_torch`` traces an ``nn.Module`` with
torch.fx and lowers it to a network program (fastscore/netprog.py).

Why torch.fx: it records the module's forward as a graph of torch calls without running
Python on data, keeps module boundaries (so an error names the layer, e.g. ``net.3``), and
inlines users' own classes; ``torch.export`` would need a fixed batch and guards we do not use.
Each node is classified by what it depends on: nothing (folded to a constant now, in float64),
t alone (the time phase: once per time value), the condition alone (the cond phase: once per
sample), or x (the lane phase: every evaluation). A Linear fed by a concatenation is split
into one dense product per part, so time and condition parts become per-time and per-sample
vectors added to the x part (ARCHITECTURE section 3's time bias, generalised).
"""

from __future__ import annotations

import copy
import os
import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from .netprog import Builder, NetProgram, Value
from .sde import SDE

__all__ = ["from_torch", "ImportedModel", "UnsupportedNetwork", "PREDICTIONS", "TIME_INPUTS"]

#: what the network's output is (score = A(t) F + B(t) x; see _coefficients)
PREDICTIONS = ("score", "scaled_score", "eps", "x0", "v", "edm")
#: what the network is fed as its time argument
TIME_INPUTS = ("t", "1000t", "sigma", "log_sigma", "edm")
ROLES = ("x", "t", "cond")
_BATCH = 7  # batch of the tracing run: values with a leading dimension of this size are per-sample


class UnsupportedNetwork(TypeError):
    """A network (or one of its nodes) the kernels cannot run."""


# -- the wrapper's arithmetic, one definition for torch tensors and for program values ------


def _coefficients(prediction: str, sigma, alpha, sigma_data: float):
    """(A, B, C) with score = A F(C x_in, ...) + B x. x_t = alpha x0 + sigma eps."""
    if prediction == "score":
        return 1.0, 0.0, 1.0
    if prediction == "scaled_score":  # F = sigma * score (score_models, ScoreMLP(std_sde=...))
        return 1.0 / sigma, 0.0, 1.0
    if prediction == "eps":
        return -1.0 / sigma, 0.0, 1.0
    if prediction == "x0":
        return alpha / (sigma * sigma), -1.0 / (sigma * sigma), 1.0
    if prediction == "v":  # v = alpha eps - sigma x0 (Salimans & Ho 2022)
        norm = alpha * alpha + sigma * sigma
        return -alpha / (sigma * norm), -1.0 / norm, 1.0
    # edm (Karras et al. 2022, table 1): D = c_skip x + c_out F(c_in x, c_noise), score = (D - x) / sigma^2
    s2 = sigma * sigma + sigma_data**2
    root = s2**0.5
    return sigma_data / (sigma * root), -1.0 / s2, 1.0 / root


def _time_input(kind: str, t, sigma):
    if kind == "t":
        return t
    if kind == "1000t":
        return 1000.0 * t
    if kind == "sigma":
        return sigma
    if kind == "log_sigma":
        return sigma.log()
    return 0.25 * sigma.log()  # edm's c_noise


class _TimeExpr:
    """A time-phase value with the arithmetic _coefficients and _time_input use."""

    def __init__(self, b: Builder, v: Value):
        self.b, self.v = b, v

    def _bin(self, fn, other, swap=False):
        o = other.v if isinstance(other, _TimeExpr) else float(other)
        a, c = (o, self.v) if swap else (self.v, o)
        return _TimeExpr(self.b, self.b.binary("time", fn, a, c))

    __add__ = lambda s, o: s._bin("add", o)
    __radd__ = lambda s, o: s._bin("add", o, True)
    __sub__ = lambda s, o: s._bin("sub", o)
    __rsub__ = lambda s, o: s._bin("sub", o, True)
    __mul__ = lambda s, o: s._bin("mul", o)
    __rmul__ = lambda s, o: s._bin("mul", o, True)
    __truediv__ = lambda s, o: s._bin("div", o)
    __rtruediv__ = lambda s, o: s._bin("div", o, True)
    __neg__ = lambda s: _TimeExpr(s.b, s.b.unary("time", "neg", s.v))

    def __pow__(self, p):
        assert p == 0.5
        return _TimeExpr(self.b, self.b.unary("time", "sqrt", self.v))

    def log(self):
        return _TimeExpr(self.b, self.b.unary("time", "log", self.v))


# -- the imported model -------------------------------------------------------------------


class ImportedModel(nn.Module):
    """A user's network with its calling convention and parametrisation: forward(x, t, cond)
    returns the score. This is what the reference backend runs; ``pack`` lowers it."""

    def __init__(self, net: nn.Module, dim: int, signature, cond_dim: int, time_input: str, time_shape: str,
                 prediction: str, sde: SDE | None, sigma_data: float, input_mean, input_std):
        super().__init__()
        self.net, self.dim, self.cond_dim = net, dim, cond_dim
        self.signature, self.time_input, self.time_shape = signature, time_input, time_shape
        self.prediction, self.sde, self.sigma_data = prediction, sde, sigma_data
        self.register_buffer("input_mean", None if input_mean is None else torch.as_tensor(input_mean).double())
        self.register_buffer("input_std", None if input_std is None else torch.as_tensor(input_std).double())

    def _call(self, x, t, cond):
        args = {"x": x, "t": t, "cond": cond}
        if isinstance(self.signature, dict):
            return self.net(**{name: args[role] for name, role in self.signature.items()})
        return self.net(*(args[role] for role in self.signature))

    def forward(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        from .nn import _time_column

        tc = _time_column(t, x)
        sigma = self.sde.std(tc) if self.sde is not None else None
        alpha = self.sde.mean_coeff(tc) if self.sde is not None else None
        A, B, C = _coefficients(self.prediction, sigma, alpha, self.sigma_data)
        x_in = x
        if self.input_mean is not None:
            x_in = (x_in - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)
        t_in = _time_input(self.time_input, tc, sigma)
        if self.time_shape == "vector":
            t_in = t_in[:, 0]
        out = self._call(C * x_in, t_in, cond)
        return A * out + B * x


def from_torch(module: nn.Module, dim: int, *, signature=("x", "t"), cond_dim: int = 0, time_input: str = "t",
               time_shape: str = "vector", prediction: str = "score", sde: SDE | None = None,
               sigma_data: float = 0.5, input_mean=None, input_std=None, check: bool = True) -> ImportedModel:
    """Wraps a user's trained network so every backend can run it.

    Args:
        module: the network, called as the signature says; it is traced, not modified.
        dim: data dimension.
        signature: the order of the module's positional arguments, from "x", "t", "cond"
            (e.g. ("x", "t"), ("t", "x"), ("x", "cond", "t")), or a map {argument name: role}.
        cond_dim: size of the condition (0: unconditional).
        time_input: what the time argument is: "t", "1000t", "sigma" (the SDE's marginal std),
            "log_sigma", or "edm" (c_noise = log(sigma) / 4).
        time_shape: "vector" (t as [n]) or "column" ([n, 1]).
        prediction: what the network outputs: "score", "scaled_score" (sigma(t) times the
            score), "eps", "x0", "v", or "edm" (a denoiser with c_skip, c_out, c_in of
            Karras et al. 2022; needs an SDE with alpha(t) = 1, e.g. VESDE).
        sde: the SDE the network was trained for (needed by every prediction but "score" and
            by the time inputs other than "t" and "1000t").
        sigma_data: EDM's data std.
        input_mean, input_std: per-dimension z-scoring the network expects: it is fed
            (x - mean) / std.
        check: run the parity check now (fastscore/parity.py): the module in float64 against
            the packed program on a native evaluator, under the program's derived float32
            bound; raises above it. The measured error (a fraction of the bound) is kept as
            ``model.parity_error``.
    """
    from .plan import check_int

    dim = check_int("dim", dim, 1)
    cond_dim = check_int("cond_dim", cond_dim, 0)
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    roles = list(signature.values()) if isinstance(signature, dict) else list(signature)
    need = {"x", "t"} | ({"cond"} if cond_dim else set())
    if sorted(roles) != sorted(need) or len(set(roles)) != len(roles):
        raise ValueError(f"signature must name each of {sorted(need)} once (cond only with cond_dim > 0), got {signature!r}")
    for name, value, choices in (("time_input", time_input, TIME_INPUTS), ("time_shape", time_shape, ("vector", "column")),
                                 ("prediction", prediction, PREDICTIONS)):
        if value not in choices:
            raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    needs_sde = prediction != "score" or time_input not in ("t", "1000t")
    if needs_sde and not isinstance(sde, SDE):
        raise ValueError(f"prediction={prediction!r} with time_input={time_input!r} reads sigma(t): pass sde=")
    if prediction == "edm" and abs(sde.mean_coeff(0.5 * sde.T) - 1.0) > 0:
        raise ValueError("prediction='edm' assumes x_t = x0 + sigma eps (alpha(t) = 1): use it with a VE-type SDE")
    if (input_mean is None) != (input_std is None):
        raise ValueError("give both input_mean and input_std, or neither")
    if input_mean is not None:
        input_mean = np.broadcast_to(np.asarray(input_mean, dtype=np.float64), (dim,)).copy()
        input_std = np.broadcast_to(np.asarray(input_std, dtype=np.float64), (dim,)).copy()
        if not (np.all(np.isfinite(input_mean)) and np.all(np.isfinite(input_std)) and np.all(input_std > 0)):
            raise ValueError("input_mean must be finite and input_std finite and > 0")
    net = copy.deepcopy(module).eval()  # a copy: training it (fs.train) leaves the user's module as it was
    model = ImportedModel(net, dim, signature, cond_dim, time_input, time_shape, prediction,
                          sde if needs_sde else None, float(sigma_data), input_mean, input_std)
    model.eval()
    lower(model)  # fails now, naming the node, if the network has something the kernels do not run
    if check:
        from .parity import parity

        parity(model)
    return model


# -- lowering -----------------------------------------------------------------------------


@dataclass
class _Concat:
    parts: list  # of Value | torch.Tensor (float64 constant, per-sample row vector)


def _const_row(c: torch.Tensor) -> torch.Tensor:
    return c.reshape(-1)


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.record_stack_traces = True


class _Call(nn.Module):
    """The user's network called with (x, t, cond) in its own argument order (traced)."""

    def __init__(self, model: ImportedModel):
        super().__init__()
        self.model = model

    def forward(self, x, t, cond):
        return self.model._call(x, t, cond)


_INTERNAL = (os.path.dirname(torch.__file__), os.path.dirname(__file__))


def _where(node: fx.Node) -> str:
    """The user's source line that made the node: the innermost frame outside torch and fastscore."""
    lines = (node.meta.get("stack_trace") or "").strip().splitlines()
    frames = [(lines[i].strip(), lines[i + 1].strip()) for i in range(len(lines) - 1)
              if lines[i].strip().startswith("File ")]
    user = [f for f in frames if not any(f'"{d}' in f[0] for d in _INTERNAL)]
    return f" at {user[-1][0]}: {user[-1][1]}" if user else ""


def _unsupported(node: fx.Node, why: str = "") -> UnsupportedNetwork:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", repr(node.target))
    name = target.removeprefix("model.net.") if node.op == "call_module" else node.name
    return UnsupportedNetwork(
        f"node {name!r} ({node.op} {target.removeprefix('model.net.')}){_where(node)} is not supported by the fused kernels"
        f"{': ' + why if why else ''}. Supported: Linear, ReLU, LeakyReLU, SiLU, GELU, Tanh, Sigmoid, ELU, "
        "Softplus, Mish, LayerNorm, Dropout, Identity, +, -, *, /, sin, cos, exp, log, sqrt, cat / chunk / split "
        "on the last dimension, reshapes that keep each sample's values; use backend='torch' for anything else")


_UNARY_MODULES = {nn.ReLU: "relu", nn.SiLU: "silu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Mish: "mish"}
_UNARY_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.silu: "silu", torch.tanh: "tanh", F.tanh: "tanh",
                    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.mish: "mish", torch.sin: "sin",
                    torch.cos: "cos", torch.exp: "exp", torch.log: "log", torch.sqrt: "sqrt", torch.neg: "neg",
                    operator.neg: "neg", torch.reciprocal: "reciprocal", torch.square: "square"}
_UNARY_METHODS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "sin": "sin", "cos": "cos", "exp": "exp",
                  "log": "log", "sqrt": "sqrt", "neg": "neg", "reciprocal": "reciprocal", "square": "square"}
_BINARY = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub", operator.mul: "mul",
           torch.mul: "mul", operator.truediv: "div", torch.div: "div", "add": "add", "sub": "sub", "mul": "mul",
           "div": "div"}
_ALIAS_METHODS = {"view", "reshape", "unsqueeze", "squeeze", "flatten", "contiguous", "float", "double", "to",
                  "type_as"}
_ALIAS_FUNCTIONS = {torch.reshape, torch.unsqueeze, torch.squeeze, torch.flatten}
_NO_OPS = (nn.Dropout, nn.Identity)


class _Lowering:
    """Walks the traced graph once, emitting program rows as it goes."""

    def __init__(self, b: Builder, gm: fx.GraphModule, inputs: dict, examples: dict):
        self.b, self.gm = b, gm
        self.inputs = inputs
        self.env: dict = {}  # node -> Value | torch.Tensor (constant) | _Concat | tuple
        self.examples = examples  # node -> the tensor it produced in the tracing run
        nodes = list(gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(nodes)}
        self.last_use = {n: max((self.index[u] for u in n.users), default=self.index[n]) for n in nodes}
        self.buffer_last = {}  # scratch Buffer -> the index of its last reader

    # -- bookkeeping -------------------------------------------------------------------

    def _hold(self, value, until: int):
        for v in self._values(value):
            if v.buffer is not None:
                self.buffer_last[v.buffer] = max(self.buffer_last.get(v.buffer, -1), until)

    def _values(self, value):
        if isinstance(value, Value):
            return [value]
        if isinstance(value, _Concat):
            return [p for p in value.parts if isinstance(p, Value)]
        if isinstance(value, tuple):
            return [v for item in value for v in self._values(item)]
        return []

    def run(self):
        out = None
        for node in self.gm.graph.nodes:
            i = self.index[node]
            if node.op == "output":
                out = self._materialise(self._arg(node.args[0], node), node)
                break
            value = self._node(node)
            self.env[node] = value
            self._hold(value, self.last_use[node])
            for buf in [buf for buf, last in self.buffer_last.items() if last <= i]:
                del self.buffer_last[buf]
                self.b.release(buf)
        return out

    def _arg(self, a, node):
        if isinstance(a, fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg(x, node) for x in a)
        return a

    def _size(self, node) -> int:
        """Per-sample size of a node's value from the tracing run."""
        ex = self.examples[node]
        if not isinstance(ex, torch.Tensor) or ex.dim() == 0 or ex.shape[0] != _BATCH or ex.dim() > 3:
            raise _unsupported(node, "its value is not one vector per sample (a reduction over the batch, or a "
                                     "batch-free shape)")
        return int(np.prod(ex.shape[1:], dtype=np.int64))

    # -- nodes -------------------------------------------------------------------------

    def _node(self, node: fx.Node):
        if node.op == "placeholder":
            return self.inputs[node.target]
        if node.op == "get_attr":
            return _fetch(self.gm, node.target).detach().to(torch.float64)
        args = self._arg(node.args, node)
        kwargs = {k: self._arg(v, node) for k, v in node.kwargs.items()}
        flat = [a for a in _flatten(args) + _flatten(list(kwargs.values()))]
        if not any(isinstance(a, (Value, _Concat)) for a in flat):
            return self._fold(node, args, kwargs)
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            return self._module(node, mod, args[0])
        if node.op == "call_function":
            return self._function(node, node.target, args, kwargs)
        if node.op == "call_method":
            return self._method(node, node.target, args, kwargs)
        raise _unsupported(node)

    def _fold(self, node, args, kwargs):
        """A node that depends on no input: evaluated now (a constant of the program)."""
        try:
            if node.op == "call_module":
                return self.gm.get_submodule(node.target).double()(*args, **kwargs)
            if node.op == "call_function":
                return node.target(*args, **kwargs)
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the node named
            raise _unsupported(node, f"folding it as a constant failed ({exc})") from exc

    def _module(self, node, mod, x):
        if isinstance(mod, _NO_OPS):
            return x
        if isinstance(mod, nn.Linear):
            return self._linear(node, x, mod.weight.detach().double(), None if mod.bias is None else mod.bias.detach().double())
        if isinstance(mod, nn.LayerNorm):
            if len(mod.normalized_shape) != 1:
                raise _unsupported(node, "layer norm over more than the last dimension")
            w = None if mod.weight is None else mod.weight.detach().double()
            bias = None if getattr(mod, "bias", None) is None else mod.bias.detach().double()
            return self._norm(node, x, w, bias, mod.eps)
        if isinstance(mod, nn.LeakyReLU):
            return self._unary(node, x, "leaky_relu", (mod.negative_slope,))
        if isinstance(mod, nn.GELU):
            return self._unary(node, x, "gelu_tanh" if mod.approximate == "tanh" else "gelu")
        if isinstance(mod, nn.ELU):
            return self._unary(node, x, "elu", (mod.alpha,))
        if isinstance(mod, nn.Softplus):
            return self._unary(node, x, "softplus", (mod.beta, mod.threshold))
        for cls, fn in _UNARY_MODULES.items():
            if type(mod) is cls:
                return self._unary(node, x, fn)
        raise _unsupported(node, f"module type {type(mod).__name__}")

    def _function(self, node, f, args, kwargs):
        if f in _UNARY_FUNCTIONS:
            return self._unary(node, args[0], _UNARY_FUNCTIONS[f])
        if f is F.leaky_relu:
            return self._unary(node, args[0], "leaky_relu", (_get(args, kwargs, 1, "negative_slope", 0.01),))
        if f is F.gelu:
            approx = kwargs.get("approximate", "none")
            return self._unary(node, args[0], "gelu_tanh" if approx == "tanh" else "gelu")
        if f is F.elu:
            return self._unary(node, args[0], "elu", (_get(args, kwargs, 1, "alpha", 1.0),))
        if f is F.softplus:
            return self._unary(node, args[0], "softplus",
                               (_get(args, kwargs, 1, "beta", 1.0), _get(args, kwargs, 2, "threshold", 20.0)))
        if f in _BINARY:
            if kwargs.get("alpha", 1) != 1:
                raise _unsupported(node, "add / sub with alpha")
            return self._binary(node, _BINARY[f], args[0], args[1])
        if f in (torch.cat, torch.concat):
            dim = _get(args, kwargs, 1, "dim", 0)
            return self._cat(node, list(args[0]), dim)
        if f in _ALIAS_FUNCTIONS:
            return self._alias(node, args[0])
        if f is operator.getitem:
            return self._getitem(node, args[0], args[1])
        if f in (torch.chunk, torch.split):
            return self._split(node, f.__name__, args[0], args[1], _get(args, kwargs, 2, "dim", 0))
        if f is F.linear:
            w, bias = args[1], _get(args, kwargs, 2, "bias", None)
            if isinstance(w, (Value, _Concat)) or isinstance(bias, (Value, _Concat)):
                raise _unsupported(node, "a linear map whose weights depend on the inputs")
            return self._linear(node, args[0], w, bias)
        if f is F.layer_norm:
            shape = _get(args, kwargs, 1, "normalized_shape", None)
            if len(shape) != 1:
                raise _unsupported(node, "layer norm over more than the last dimension")
            return self._norm(node, args[0], _get(args, kwargs, 2, "weight", None), _get(args, kwargs, 3, "bias", None),
                              _get(args, kwargs, 4, "eps", 1e-5))
        if f is F.dropout:
            return args[0]
        if f is getattr and args[1] in ("dtype", "device"):
            return self.examples[node]
        raise _unsupported(node)

    def _method(self, node, name, args, kwargs):
        if name in _UNARY_METHODS:
            return self._unary(node, args[0], _UNARY_METHODS[name])
        if name in _BINARY:
            return self._binary(node, _BINARY[name], args[0], args[1])
        if name in _ALIAS_METHODS:
            return self._alias(node, args[0])
        if name in ("chunk", "split"):
            return self._split(node, name, args[0], args[1], _get(args, kwargs, 2, "dim", 0))
        raise _unsupported(node)

    # -- lowering rules ----------------------------------------------------------------

    def _value(self, node, v) -> Value:
        return self._materialise(v, node) if isinstance(v, _Concat) else v

    def _materialise(self, v, node):
        if isinstance(v, Value):
            return v
        if not isinstance(v, _Concat):
            raise _unsupported(node, "the network's output does not depend on x")
        phases = {p.phase for p in v.parts if isinstance(p, Value)}
        phase = phases.pop() if len(phases) == 1 else "lane"
        n = sum(p.n if isinstance(p, Value) else p.numel() for p in v.parts)
        dst = self.b.new(phase, n, any(isinstance(p, Value) and p.tangent for p in v.parts))
        off = 0
        for p in v.parts:
            src = self.b.export(p) if isinstance(p, Value) and phase == "lane" else p
            k = src.n if isinstance(src, Value) else src.numel()
            if isinstance(src, Value):
                self.b.copy(phase, src, dst.slice(off, k))
            else:
                self.b.binary(phase, "mul", src.numpy(), 1.0, dst=dst.slice(off, k))
            off += k
        return dst

    def _unary(self, node, x, fn, fparams=()):
        x = self._value(node, x)
        return self.b.unary(x.phase, fn, x, fparams)

    def _binary(self, node, fn, a, c):
        n = self._size(node)
        operands = []
        for v in (a, c):
            if isinstance(v, (Value, _Concat)):
                v = self._value(node, v)
                if v.n not in (1, n):
                    raise _unsupported(node, "a broadcast other than a scalar per sample against a vector")
            elif isinstance(v, torch.Tensor):
                if v.numel() not in (1, n) or (v.dim() >= 1 and v.numel() > 1 and v.shape[-1] != n):
                    raise _unsupported(node, "a constant that does not broadcast along each sample's values")
                v = v.double().reshape(-1).numpy()
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                v = float(v)
            else:
                raise _unsupported(node, f"an operand of type {type(v).__name__}")
            operands.append(v)
        values = [v for v in operands if isinstance(v, Value)]
        phases = {v.phase for v in values}
        phase = phases.pop() if len(phases) == 1 else "lane"
        if phase == "lane":
            operands = [self.b.export(v) if isinstance(v, Value) else v for v in operands]
        return self.b.binary(phase, fn, *operands)

    def _norm(self, node, x, weight, bias, eps):
        x = self._value(node, x)
        as_np = lambda a: None if a is None else a.double().reshape(-1).numpy()
        return self.b.norm(x.phase, x, as_np(weight), as_np(bias), float(eps))

    def _cat(self, node, parts, dim):
        ex = self.examples[node]
        if dim not in (-1, ex.dim() - 1):
            raise _unsupported(node, "a concatenation along a dimension other than the last")
        flat = []
        for p in parts:
            if isinstance(p, _Concat):
                flat.extend(p.parts)
            elif isinstance(p, torch.Tensor):
                flat.append(_const_row(p.double()))
            else:
                flat.append(p)
        return _Concat(flat)

    def _alias(self, node, x):
        self._size(node)  # each sample's values unchanged, only their shape
        return x

    def _getitem(self, node, x, index):
        if isinstance(x, tuple):
            return x[index]
        index = index if isinstance(index, tuple) else (index,)
        real = [i for i in index if i is not None and i is not Ellipsis]
        if all(isinstance(i, slice) and i == slice(None) for i in real):
            return self._alias(node, x)
        # x[:, a:b]: a slice of each sample's values
        if len(real) == 2 and real[0] == slice(None) and isinstance(real[1], slice) and real[1].step in (None, 1):
            v = self._value(node, x)
            start, stop, _ = real[1].indices(v.n)
            return v.slice(start, stop - start)
        raise _unsupported(node, "indexing other than [:, a:b] or adding unit dimensions")

    def _split(self, node, how, x, size, dim):
        v = self._value(node, x)
        ex = self.examples[node.args[0]]
        if dim not in (-1, ex.dim() - 1):
            raise _unsupported(node, f"{how} along a dimension other than the last")
        if how == "chunk":
            step = -(-v.n // size)
            sizes = [min(step, v.n - s) for s in range(0, v.n, step)]
        else:
            sizes = [size] * (v.n // size) + ([v.n % size] if v.n % size else []) if isinstance(size, int) else list(size)
        out, off = [], 0
        for k in sizes:
            out.append(v.slice(off, k))
            off += k
        return tuple(out)

    def _linear(self, node, x, weight: torch.Tensor, bias):
        parts = x.parts if isinstance(x, _Concat) else [x]
        W = weight.double().numpy()
        bias = None if bias is None else bias.double().reshape(-1).numpy().copy()
        groups = {"time": [], "cond": [], "lane": []}
        col = 0
        for p in parts:
            k = p.n if isinstance(p, Value) else p.numel()
            if isinstance(p, Value):
                groups[p.phase].append((p, W[:, col:col + k]))
            else:  # a constant part folds into the bias
                contrib = W[:, col:col + k] @ p.numpy()
                bias = contrib if bias is None else bias + contrib
            col += k
        if col != W.shape[1]:
            raise _unsupported(node, f"its input has {col} values per sample, the layer takes {W.shape[1]}")
        partial = []  # per-phase sums of the time and cond parts
        for phase in ("time", "cond"):
            init = bias
            acc = None
            for v, w in groups[phase]:
                acc = self.b.dense(phase, v, w, init=acc if acc is not None else init)
                init = None
            if acc is not None:
                bias = None
                partial.append(acc)
        if not groups["lane"] and len(partial) == 1:
            return partial[0]
        init = bias
        if partial:
            init = self.b.export(partial[0])
            if len(partial) == 2:
                init = self.b.binary("lane", "add", init, self.b.export(partial[1]))
        for v, w in groups["lane"]:
            init = self.b.dense("lane", v, w, init=init)
        return init


def _get(args, kwargs, i, name, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _flatten(a):
    if isinstance(a, (list, tuple)):
        return [y for x in a for y in _flatten(x)]
    return [a]


def _fetch(root: nn.Module, target: str) -> torch.Tensor:
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class _Recorder(fx.Interpreter):
    """Runs the traced graph once on example inputs, keeping every node's output."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n] = out
        return out


def trace(model: ImportedModel) -> fx.GraphModule:
    """The user's network as a torch.fx graph over placeholders x, t, cond."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(_Call(model))
    except Exception as exc:  # noqa: BLE001 - fx raises many types; the user needs to know which line
        raise UnsupportedNetwork(
            f"torch.fx could not trace the network ({type(exc).__name__}: {exc}). The fused kernels need a forward "
            "without Python control flow on tensor values; use backend='torch' for this network") from exc
    return fx.GraphModule(tracer.root, graph)


def lower(model: ImportedModel) -> NetProgram:
    """The network program of an imported model (the wrapper's parametrisation included)."""
    gm = trace(model)
    b = Builder(model.dim, model.cond_dim)
    sde = model.sde
    t = b.sde("t")
    sigma = _TimeExpr(b, b.sde("sigma")) if sde is not None else None
    alpha = _TimeExpr(b, b.sde("alpha")) if sde is not None else None
    A, B, C = _coefficients(model.prediction, sigma, alpha, model.sigma_data)
    t_in = _time_input(model.time_input, _TimeExpr(b, t), sigma)
    x = b.x()
    if model.input_mean is not None:
        x = b.binary("lane", "div", b.binary("lane", "sub", x, model.input_mean.numpy()), model.input_std.numpy())
    if isinstance(C, _TimeExpr):
        x = b.binary("lane", "mul", x, b.export(C.v))
    examples = {"x": torch.randn(_BATCH, model.dim, dtype=torch.float64),
                "t": torch.rand(_BATCH, dtype=torch.float64) * 0.5 + 0.25,
                "cond": torch.randn(_BATCH, max(model.cond_dim, 1), dtype=torch.float64) if model.cond_dim else None}
    if model.time_shape == "column":
        examples["t"] = examples["t"][:, None]
    net = copy.deepcopy(gm).double()
    rec = _Recorder(net)
    with torch.no_grad():
        rec.run(examples["x"], examples["t"], examples["cond"])
    inputs = {"x": x, "t": t_in.v if isinstance(t_in, _TimeExpr) else t_in,
              "cond": b.cond() if model.cond_dim else None}
    F_out = _Lowering(b, net, inputs, rec.values).run()
    score = F_out
    if A != 1.0:
        score = b.binary("lane", "mul", score, b.export(A.v))
    if B != 0.0:
        score = b.binary("lane", "add", score, b.binary("lane", "mul", b.x(), b.export(B.v)))
    return b.finish(score, sde)
