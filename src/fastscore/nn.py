"""The score network, and ``pack``: any supported network as the program every kernel runs.

``ScoreMLP`` is a plain torch module. ``pack`` lowers it, or a user's network imported with
``fastscore.from_torch``, to a ``NetProgram`` (fastscore/netprog.py): int32 rows over scratch
arenas plus one float32 parameter buffer, mirrored by ``csrc/include/fastscore/net.h``. Time
enters ScoreMLP's first layer by concatenation: raw t ("concat") or Gaussian Fourier features
sin and cos of 2 pi t w_f ("fourier": Tancik et al. 2020, as in Song et al. 2021).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .netprog import NetProgram
from .sde import SDE

__all__ = ["ScoreMLP", "pack", "ACTIVATIONS", "TIME_EMBEDDINGS"]

ACTIVATIONS = ("relu", "tanh", "silu", "leaky_relu", "softplus")
TIME_EMBEDDINGS = ("concat", "fourier")
LEAKY_SLOPE = 0.01  # torch's default negative slope

_ACTIVATION_MODULES = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE),
    "softplus": nn.Softplus,
}


def _time_column(t, x: torch.Tensor) -> torch.Tensor:
    """Broadcast t (float, [n] or [n, 1]) to a column [n, 1] in x's dtype and device."""
    n = x.shape[0]
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(float(t), dtype=x.dtype, device=x.device)
    t = t.to(dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t.expand(n, 1)
    if t.dim() == 1 and t.shape[0] == n:
        return t[:, None]
    if t.dim() == 2 and t.shape == (n, 1):
        return t
    raise ValueError(f"t must be a float, an [n] or an [n, 1] tensor with n = {n}; got shape {tuple(t.shape)}")


class ScoreMLP(nn.Module):
    """MLP score network s_theta(x, t) for low-dimensional data.

    Args:
        dim: data dimension D.
        width: hidden width (the same for every hidden layer).
        depth: number of hidden layers; seed 002's ``basic_net`` (6 Linear layers) is
            ``width=64, depth=5``.
        activation: one of ``ACTIVATIONS``.
        time_embedding: "concat" (raw t appended to x) or "fourier" (Gaussian Fourier
            features sin/cos(2 pi w t) with fixed w ~ N(0, fourier_scale^2), Tancik et al. 2020).
        fourier_features: number of frequencies F (the embedding has 2 F entries).
        fourier_scale: std of the fixed frequencies.
        std_sde: if given, the output is divided by that SDE's marginal std sigma(t), the
            parametrisation of Song et al. 2021 (the network then predicts -noise, not the score).
        cond_dim: size of a condition c appended to the first layer's input (0: none); the
            network is then s(x, t, c) (forward(x, t, cond) with cond [n, cond_dim]).
    """

    def __init__(
        self,
        dim: int,
        width: int = 64,
        depth: int = 5,
        activation: str = "relu",
        time_embedding: str = "concat",
        fourier_features: int = 8,
        fourier_scale: float = 1.0,
        std_sde: SDE | None = None,
        cond_dim: int = 0,
    ):
        super().__init__()
        for name, value in (("dim", dim), ("width", width), ("depth", depth), ("fourier_features", fourier_features),
                            ("cond_dim", cond_dim + 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {sorted(TIME_EMBEDDINGS)}, got {time_embedding!r}")
        if std_sde is not None and not isinstance(std_sde, SDE):
            raise TypeError(f"std_sde must be a fastscore SDE or None, got {type(std_sde).__name__}")
        self.dim, self.width, self.depth, self.cond_dim = dim, width, depth, cond_dim
        self.activation, self.time_embedding = activation, time_embedding
        self.std_sde = std_sde
        if time_embedding == "fourier":
            if not (math.isfinite(fourier_scale) and fourier_scale > 0):
                raise ValueError(f"fourier_scale must be positive, got {fourier_scale!r}")
            # fixed, not trained (seed 003); a buffer so it follows .to() and state_dict
            g = torch.Generator().manual_seed(0x5EED)
            self.register_buffer("freqs", torch.randn(fourier_features, generator=g) * fourier_scale)
            embed = 2 * fourier_features
        else:
            self.freqs = None
            embed = 1
        sizes = [dim + embed + cond_dim] + [width] * depth + [dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = _ACTIVATION_MODULES[activation]()

    def config(self) -> dict:
        """The constructor's arguments (std_sde as (class name, its config)), so that a network
        of the same shape can be made and its state_dict loaded (the Fourier frequencies are a
        buffer: they come with the state_dict, so fourier_scale is not needed)."""
        return {"dim": self.dim, "width": self.width, "depth": self.depth, "activation": self.activation,
                "time_embedding": self.time_embedding,
                "fourier_features": 8 if self.freqs is None else int(self.freqs.shape[0]),
                "std_sde": None if self.std_sde is None else (type(self.std_sde).__name__, self.std_sde.config()),
                "cond_dim": self.cond_dim}

    @property
    def embed_dim(self) -> int:
        return 1 if self.freqs is None else 2 * self.freqs.shape[0]

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """Time features [n, E] from a time column [n, 1]."""
        if self.freqs is None:
            return t
        proj = 2 * math.pi * t * self.freqs[None, :]
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def core(self, x: torch.Tensor, tc: torch.Tensor, cond=None) -> torch.Tensor:
        """The layers on x [n, dim], a time column [n, 1] and the condition [n, cond_dim],
        before output scaling."""
        h = torch.cat([x, self.embed(tc)] + ([cond] if self.cond_dim else []), dim=-1)
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        return self.layers[-1](h)

    def forward(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [n, {self.dim}], got {tuple(x.shape)}")
        if (cond is None) != (self.cond_dim == 0) or (
                cond is not None and tuple(cond.shape) != (x.shape[0], self.cond_dim)):
            raise ValueError(f"cond must be None for an unconditional network, else [n, cond_dim] = "
                             f"[{x.shape[0]}, {self.cond_dim}]; got {None if cond is None else tuple(cond.shape)}")
        tc = _time_column(t, x)
        out = self.core(x, tc, cond)
        if self.std_sde is not None:
            out = out / self.std_sde.std(tc)
        return out

    def flops_per_eval(self) -> int:
        """Multiply-adds x 2 of one evaluation (time features and condition counted as inputs, biases not):
        33,408 for the seed-002 network."""
        return sum(2 * layer.in_features * layer.out_features for layer in self.layers)


def _as_imported(model: ScoreMLP):
    """A ScoreMLP as an imported network: its layers called with (x, t [n, 1]); with std_sde,
    the output is sigma(t) times the score."""
    from .fx_import import ImportedModel

    signature = ("x", "t", "cond") if model.cond_dim else ("x", "t")
    wrapped = ImportedModel(_ScoreMLPCore(model), model.dim, signature, model.cond_dim, "t", "column",
                            "scaled_score" if model.std_sde is not None else "score", model.std_sde, 0.5, None, None)
    return wrapped


class _ScoreMLPCore(nn.Module):
    """ScoreMLP.forward without its argument checks and output scaling (what is traced)."""

    def __init__(self, model: ScoreMLP):
        super().__init__()
        self.model = model

    def forward(self, x, t, cond=None):
        return self.model.core(x, t, cond)


def _weights_key(model: nn.Module) -> tuple:
    """Identifies what pack reads: the configuration and, per tensor, its storage, in-place
    version, shape and dtype."""
    config = tuple(sorted((k, repr(v)) for k, v in vars(model).items()
                          if not k.startswith("_") and k not in ("training", "parity_error") and not isinstance(v, nn.Module)))
    return config, tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in _tensors(model))


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of model and its submodules: what parameters() and buffers()
    yield, by a plain walk (their generators cost most of a cached fs.sample call)."""
    out, stack = [], [model]
    while stack:
        m = stack.pop()
        out += [t for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
        stack += [sub for sub in m._modules.values() if sub is not None]  # as named_modules(), a None slot is skipped
    return out


def pack(model: nn.Module) -> NetProgram:
    """Lower a ``ScoreMLP`` or an imported network (``fastscore.from_torch``) to the program of
    ``csrc/include/fastscore/net.h``.

    The result is cached on the module and rebuilt when a weight changes (an optimiser step,
    ``load_state_dict``, ``.to()``), so repeated calls with the same network do not repack.
    Raises TypeError for modules the kernels cannot run and ValueError for non-finite weights.
    """
    from .fx_import import ImportedModel, lower

    if not isinstance(model, (ScoreMLP, ImportedModel)):
        raise TypeError(
            f"the fused kernels run fastscore.ScoreMLP networks and networks imported with fastscore.from_torch; "
            f"got {type(model).__name__}. Import it with fs.from_torch(module, dim, ...), or use backend='torch'."
        )
    key = _weights_key(model)
    cached = model.__dict__.get("_packed")
    if cached is not None and cached[0] == key:
        return cached[1]
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"model parameter {name!r} has non-finite values; the network cannot be run")
    packed = lower(_as_imported(model) if isinstance(model, ScoreMLP) else model)
    model.__dict__["_packed"] = (key, packed)
    return packed
