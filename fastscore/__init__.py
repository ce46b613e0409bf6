"""fastscore: fused samplers and exact-trace likelihoods for score-based diffusion models."""

from .nn import ScoreMLP, pack
from .sde import SDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"
