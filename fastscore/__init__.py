"""fastscore: fused samplers and exact-trace likelihoods for score-based diffusion models."""

from . import datasets, samplers
from .backends import backends
from .likelihood import bits_per_dim, log_prob
from .nn import PackedModel, ScoreMLP, pack
from .train import train
from .sampling import sample
from .sde import SDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE", "VPSDE", "VESDE", "SubVPSDE", "ScoreMLP", "PackedModel", "pack",
    "sample", "log_prob", "bits_per_dim", "backends", "datasets", "samplers", "train",
]
