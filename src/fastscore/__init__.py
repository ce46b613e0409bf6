"""fastscore: fused samplers and exact-trace likelihoods for score-based diffusion models."""

from . import datasets, metrics, samplers, targets
from .backends import backends
from .likelihood import LogProb, bits_per_dim, log_prob
from .fx_import import ImportedModel, UnsupportedNetwork, from_torch
from .netprog import NetProgram
from .nn import ScoreMLP, pack
from .train import train
from .modelfile import ModelFileError, load_model, save_model
from .sampling import Sampler, sample
from .solver_bench import bench
from .sde import EDMSDE, SDE, CosineVPSDE, GeometricVESDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE", "VPSDE", "VESDE", "SubVPSDE", "CosineVPSDE", "GeometricVESDE", "EDMSDE", "ScoreMLP", "NetProgram", "pack", "from_torch", "ImportedModel",
    "UnsupportedNetwork", "save_model", "load_model", "ModelFileError",
    "sample", "Sampler", "log_prob", "LogProb", "bits_per_dim", "backends", "datasets", "samplers", "train", "bench", "metrics", "targets",
]
