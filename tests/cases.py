"""Test cases shared by the native backends' tests: which backends run here, the networks,
SDEs and methods every kernel is held against the reference on, and the network pass of
the likelihood kernels by backend."""

import os

import numpy as np

import fastscore as fs
from fastscore.backends import cpu as cpu_backend
from fastscore.backends import numba_backend

NATIVE_BACKENDS = [name for name in ("cpu", "numba") if fs.backends()[name]["available"]]

NETS = [  # (width, depth, activation, time_embedding, output scaled by sigma(t))
    (64, 5, "relu", "concat", False),  # seed 002's network
    (33, 2, "tanh", "fourier", True),  # seed 003's kind, odd width (register-block remainder)
    (17, 3, "silu", "concat", False),
    (100, 1, "leaky_relu", "fourier", False),  # wider than one lone block (64 + remainder vectors + floats)
    (8, 4, "softplus", "concat", True),
]
SDES = [fs.VPSDE(), fs.VESDE(sigma=25.0), fs.SubVPSDE(beta_min=0.2, beta_max=15.0, T=1.0)]
METHODS = [  # (method, steps, options)
    ("em", 40, {}),
    ("pc", 20, {"corrector_steps": 2}),
    ("ode_euler", 40, {"denoise": True}),
    ("ode_heun", 20, {}),
    ("em", 25, {"denoise": True, "grid": "logsnr"}),
    ("pc", 12, {"corrector_steps": 1, "snr": 0.3, "denoise": True}),
    ("ald", 15, {"corrector_steps": 2, "denoise": True}),
    ("dpmpp_2m", 15, {}),
    ("dpmpp_2m_sde", 20, {"denoise": True, "grid": "karras"}),
    ("edm_heun", 10, {"grid": "logsnr"}),
]
ACTIVATIONS = ["relu", "tanh", "silu", "leaky_relu", "softplus"]

# The CUDA kernels (on a GPU and emulated): one network per kernel instantiation, widths 64
# and 32 (activations in registers) and 33 (the generic kernel).
CUDA_NETS = [(64, 5, "relu", "concat", False), (32, 3, "tanh", "fourier", True), (33, 2, "silu", "concat", False)]
CUDA_METHODS = [
    ("em", 280, {}),
    ("ald", 10, {"corrector_steps": 2}),
    ("pc", 12, {"corrector_steps": 2, "denoise": True}),
    ("ode_euler", 30, {"denoise": True}),
    ("ode_heun", 15, {}),
    ("dpmpp_2m_sde", 12, {"denoise": True}),
    ("edm_heun", 8, {}),
]


def method_id(m):
    return "-".join([m[0], *(f"{k}={v}" for k, v in m[2].items())])


def net_id(n):
    return f"{n[2]}-{n[3]}-w{n[0]}d{n[1]}"


def model_for(net, dim: int, sde):
    """The ScoreMLP of a NETS / CUDA_NETS entry (output scaled by sde's sigma(t) if flagged)."""
    width, depth, act, emb, scaled = net
    return fs.ScoreMLP(dim, width, depth, act, emb, std_sde=sde if scaled else None)


SEEDS_USED: list[int] = []  # this test's seeds, in order; conftest.py resets it and reports it on failure


def fresh_seed() -> int:
    """A test's seeds: s, s + 1, s + 2, ... from a first seed s that is new every run (so
    networks and streams are fresh) or FASTSCORE_TEST_SEED if set. A failing test reports
    its seeds and the setting that reruns it with the same ones (conftest.py)."""
    if SEEDS_USED:
        seed = (SEEDS_USED[0] + len(SEEDS_USED)) % 2**32
    elif "FASTSCORE_TEST_SEED" in os.environ:
        seed = int(os.environ["FASTSCORE_TEST_SEED"]) % 2**32
    else:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    SEEDS_USED.append(seed)
    return seed


def score_trace(backend: str, model, x: np.ndarray, t: float, trace: str = "exact", seed: int = 0):
    """(s [n, dim], tr [n]) from a native backend's likelihood network pass alone."""
    if backend == "numba":
        return numba_backend.score_trace(model, x, t, trace, seed=seed)
    return cpu_backend._core.score_trace(*cpu_backend.net_args(fs.pack(model)), np.asarray(x, dtype=np.float32), None,
                                         t, trace == "hutchinson", seed)
