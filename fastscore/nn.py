"""The score network and the flat float32 format every backend consumes.

``ScoreMLP`` is a plain torch module. ``pack`` turns it into a ``PackedModel``: one
contiguous float32 buffer plus a small layout record (ARCHITECTURE section 3). The
buffer order is fixed and mirrored by ``csrc/include/fastscore/mlp.h``:

    W0 [width, dim + E] b0 [width]  (first layer; columns dim.. take the time features)
    W1 [width, width]   b1 [width]  ... (depth - 1 hidden-to-hidden layers)
    Wout [dim, width]   bout [dim]
    freqs [E / 2]                   (Fourier time embedding only)

with E = 1 for the "concat" embedding (raw t) and E = 2 F for "fourier" (sin and cos of
2 pi t w_f: Gaussian Fourier features, Tancik et al. 2020, as in Song et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .sde import SDE

__all__ = ["ScoreMLP", "PackedModel", "pack", "ACTIVATIONS", "TIME_EMBEDDINGS"]

#: activation name -> integer code shared with ``fastscore::Activation``
ACTIVATIONS = {"relu": 0, "tanh": 1, "silu": 2, "leaky_relu": 3, "softplus": 4}
#: time embedding name -> integer code shared with ``fastscore::TimeEmbedding``
TIME_EMBEDDINGS = {"concat": 0, "fourier": 1}
LEAKY_SLOPE = 0.01  # torch's default negative slope; the kernels use the same constant

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
    ):
        super().__init__()
        for name, value in (("dim", dim), ("width", width), ("depth", depth), ("fourier_features", fourier_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {sorted(TIME_EMBEDDINGS)}, got {time_embedding!r}")
        if std_sde is not None and not isinstance(std_sde, SDE):
            raise TypeError(f"std_sde must be a fastscore SDE or None, got {type(std_sde).__name__}")
        self.dim, self.width, self.depth = dim, width, depth
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
        sizes = [dim + embed] + [width] * depth + [dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = _ACTIVATION_MODULES[activation]()

    @property
    def embed_dim(self) -> int:
        return 1 if self.freqs is None else 2 * self.freqs.shape[0]

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """Time features [n, E] from a time column [n, 1]."""
        if self.freqs is None:
            return t
        proj = 2 * math.pi * t * self.freqs[None, :]
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [n, {self.dim}], got {tuple(x.shape)}")
        tc = _time_column(t, x)
        h = torch.cat([x, self.embed(tc)], dim=-1)
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        out = self.layers[-1](h)
        if self.std_sde is not None:
            out = out / self.std_sde.std(tc)
        return out

    def flops_per_eval(self) -> int:
        """Multiply-adds x 2 of one evaluation (time features counted as inputs, biases not):
        33,408 for the seed-002 network."""
        return sum(2 * layer.in_features * layer.out_features for layer in self.layers)


@dataclass(frozen=True)
class PackedModel:
    """A ScoreMLP flattened for the kernels: ``weights`` float32 [size] plus its layout."""

    weights: np.ndarray
    dim: int
    width: int
    depth: int
    activation: int
    time_embedding: int
    n_freqs: int
    std_sde_kind: int  # -1: no output scaling
    std_sde_params: tuple[float, float, float]
    flops_per_eval: int
    std_sde: SDE | None = None

    @property
    def embed_dim(self) -> int:
        return 1 if self.time_embedding == 0 else 2 * self.n_freqs

    def time_tables(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bias [len(t), width], scale [len(t)]), float32: the first layer's time bias
        c(t) = b0 + W0[:, dim:] phi(t) and the output scale (1 / sigma(t) or 1) at each time,
        formed in float64 and rounded once. Time enters the first layer linearly, so the
        kernels add c(t) instead of feeding phi(t) through the layer for every sample."""
        t = np.asarray(t, dtype=np.float64)
        n_in, w = self.dim + self.embed_dim, self.width
        W0 = self.weights[: w * n_in].reshape(w, n_in).astype(np.float64)
        b0 = self.weights[w * n_in : w * n_in + w].astype(np.float64)
        if self.time_embedding == TIME_EMBEDDINGS["concat"]:
            phi = t[:, None]
        else:  # sin and cos of 2 pi t w_f, with the packed (float32) frequencies
            proj = 2 * math.pi * t[:, None] * self.weights[-self.n_freqs :].astype(np.float64)[None, :]
            phi = np.concatenate([np.sin(proj), np.cos(proj)], axis=1)
        bias = b0[None, :] + phi @ W0[:, self.dim :].T
        scale = np.ones_like(t) if self.std_sde is None else 1.0 / self.std_sde.std(t)
        return bias.astype(np.float32), scale.astype(np.float32)


def _weights_key(model: nn.Module) -> tuple:
    """Identifies what pack reads: the configuration and, per tensor, its storage, in-place
    version, shape and dtype."""
    config = (model.activation, model.time_embedding, model.std_sde)
    return config, tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype)
                         for t in (*model.parameters(), *model.buffers()))


def pack(model: nn.Module) -> PackedModel:
    """Flatten a ``ScoreMLP`` into the float32 format of ``csrc/include/fastscore/mlp.h``.

    The result is cached on the module and rebuilt when a weight changes (an optimiser step,
    ``load_state_dict``, ``.to()``), so repeated calls with the same network do not repack.
    Raises TypeError for modules the kernels cannot run and ValueError for non-finite weights.
    """
    if not isinstance(model, ScoreMLP):
        raise TypeError(
            f"the fused kernels run fastscore.ScoreMLP networks; got {type(model).__name__}. "
            "Use backend='torch' for other modules, or rebuild the network as a ScoreMLP."
        )
    key = _weights_key(model)
    cached = model.__dict__.get("_packed")
    if cached is not None and cached[0] == key:
        return cached[1]
    packed = _pack(model)
    model.__dict__["_packed"] = (key, packed)
    return packed


def _pack(model: ScoreMLP) -> PackedModel:
    parts = []
    for i, layer in enumerate(model.layers):
        for name, p in (("weight", layer.weight), ("bias", layer.bias)):
            a = p.detach().to("cpu", torch.float64).numpy()
            if not np.all(np.isfinite(a)):
                raise ValueError(f"layer {i} {name} of the model has non-finite values; the network cannot be run")
            parts.append(a.ravel())
    if model.freqs is not None:
        parts.append(model.freqs.detach().to("cpu", torch.float64).numpy().ravel())
    std_sde = model.std_sde
    return PackedModel(
        weights=np.ascontiguousarray(np.concatenate(parts), dtype=np.float32),
        dim=model.dim,
        width=model.width,
        depth=model.depth,
        activation=ACTIVATIONS[model.activation],
        time_embedding=TIME_EMBEDDINGS[model.time_embedding],
        n_freqs=0 if model.freqs is None else int(model.freqs.shape[0]),
        std_sde_kind=-1 if std_sde is None else std_sde.kind,
        std_sde_params=(0.0, 0.0, 0.0) if std_sde is None else std_sde.params,
        flops_per_eval=model.flops_per_eval(),
        std_sde=std_sde,
    )
