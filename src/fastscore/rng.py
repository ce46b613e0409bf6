"""Counter-based random numbers shared by every backend (numpy reference).

Every backend (C++, CUDA, this numpy reference, numba) draws its noise from the
same Philox4x32-10 stream (Salmon et al., SC'11; Random123). Philox is a keyed
bijection of a 128-bit counter, so a random number is *addressed*, not pulled
from a sequential state:

    key     = (seed & 0xffffffff, seed >> 32)          # uint64 seed
    counter = (sample i, step k, block b, stream)      # four uint32 words

Normal draw ``d`` (``0 <= d < dim``) of ``(seed, i, k, stream)`` is lane
``d % 4`` of block ``b = d // 4``: Box-Muller turns the words ``(x0, x1)`` into
``(z0, z1)`` and ``(x2, x3)`` into ``(z2, z3)`` with

    u_open(x) = ((x >> 8) + 1) * 2**-24     in (0, 1]  (safe for log)
    u_half(x) = (x >> 8) * 2**-24           in [0, 1)
    r = sqrt(-2 log u_open(x0)),  th = 2 pi u_half(x1),  z0 = r cos th, z1 = r sin th

The 24-bit uniforms are exact in float32, so a float32 kernel and this float64
reference start from the same uniforms and differ only by the rounding of
log/sqrt/cos/sin. Rademacher probes use stream ``STREAM_PROBE`` and the top bit
of the same words: +1 if ``x >> 31 == 0`` else -1.

Because nothing depends on a running state, a sample's numbers are the same
whatever the batch split, the thread count or the device, and a kernel can be
compared with the reference trajectory by trajectory. The C++/CUDA twin of this
module is ``csrc/include/fastscore/philox.h``; ``tests/test_rng.py`` holds the
two against each other and against the Random123 known-answer vectors.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "STREAM_PRIOR",
    "STREAM_PREDICTOR",
    "STREAM_PROBE",
    "STREAM_CORRECTOR",
    "STREAM_BROWNIAN",
    "philox4x32_10",
    "philox_rounds",
    "normals",
    "rademacher",
    "brownian",
]

#: fourth counter word: which consumer a block of randomness belongs to
#: (``fastscore::Stream`` in philox.h). Corrector sweep j uses STREAM_CORRECTOR + j.
STREAM_PRIOR = 0
STREAM_PREDICTOR = 1
STREAM_PROBE = 2
STREAM_BROWNIAN = 3  # the Brownian tree of the adaptive SDE sampler (brownian())
STREAM_CORRECTOR = 16

_M0 = np.uint64(0xD2511F53)  # round multipliers
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)  # Weyl key increments
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_TWO_M24 = 2.0**-24  # 24-bit uniforms: exact in float32 and float64

_U32_LIMIT = 1 << 32
_U64_LIMIT = 1 << 64


# -- Philox ------------------------------------------------------------------


def philox_rounds(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10: the ten rounds on 32-bit words held in uint64 values.

    A pure function of its six words, written so that it runs as it stands on numpy arrays
    (elementwise, broadcasting; ``_philox_words`` broadcasts the four results to one shape)
    and compiles with numba (``njit(philox_rounds)`` in ``backends/_numba_kernels.py``, on
    np.uint64 scalars): no numpy calls, only uint64 arithmetic on the module's constants.
    Products of two 32-bit words fit in uint64, so there is no overflow (and no numpy
    warning); sums and XORs stay below 2**33 and are masked back to 32 bits. Returns the
    four output words (c0, c1, c2, c3).
    """
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> _SHIFT32) ^ c1 ^ k0,
            p1 & _MASK32,
            (p0 >> _SHIFT32) ^ c3 ^ k1,
            p0 & _MASK32,
        )
    return c0, c1, c2, c3


def _philox_words(c0, c1, c2, c3, k0, k1) -> list:
    """philox_rounds on broadcastable uint64 arrays: four uint64 arrays of the broadcast shape
    of all six inputs."""
    shape = np.broadcast_shapes(*(np.shape(w) for w in (c0, c1, c2, c3, k0, k1)))
    return [np.broadcast_to(w, shape) for w in philox_rounds(c0, c1, c2, c3, k0, k1)]


def _as_words(name: str, a, width: int) -> np.ndarray:
    """``a`` as a uint64 array of 32-bit words with last axis ``width``."""
    a = np.asarray(a)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.ndim == 0 or a.shape[-1] != width:
        raise ValueError(f"{name} must have last axis of length {width}, got shape {a.shape}")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= _U32_LIMIT):
        raise ValueError(f"{name} words must lie in [0, 2**32)")
    return a.astype(np.uint64)


def philox4x32_10(counter, key) -> np.ndarray:
    """Philox4x32-10 of ``counter`` (uint32 [..., 4]) under ``key`` (uint32 [..., 2]).

    The leading axes broadcast against each other; the result is uint32 [..., 4].
    Matches the Random123 known-answer vectors.
    """
    c = _as_words("counter", counter, 4)
    k = _as_words("key", key, 2)
    words = _philox_words(c[..., 0], c[..., 1], c[..., 2], c[..., 3], k[..., 0], k[..., 1])
    return np.stack(words, axis=-1).astype(np.uint32)


# -- addressing and validation -------------------------------------------------


def _check_int(name: str, value, limit: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not 0 <= value < limit:
        raise ValueError(f"{name} must lie in [0, 2**{limit.bit_length() - 1}), got {value}")
    return value


def _check_index_array(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise ValueError(f"{name} must be an array of integers, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of indices, got shape {a.shape}")
    if a.size and (int(a.min()) < 0 or int(a.max()) >= _U32_LIMIT):
        raise ValueError(f"{name} must lie in [0, 2**32), got values in [{a.min()}, {a.max()}]")
    return a.astype(np.uint64)


def _blocks(seed, samples, steps, stream, dim, paired=False):
    """Validate the address and draw the Philox words of every block.

    Returns ``(words, lead, dim)``: four uint64 arrays of shape [s, n, n_blocks]
    (s = 1 when ``steps`` is an int, or ``paired``: steps [n], one per sample) and the
    leading shape of the result.
    """
    seed = _check_int("seed", seed, _U64_LIMIT)
    stream = _check_int("stream", stream, _U32_LIMIT)
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    dim = int(dim)
    samples = _check_index_array("samples", samples)
    if paired:
        step_arr = _check_index_array("steps", steps)
        if step_arr.shape != samples.shape:
            raise ValueError(f"paired steps must have one entry per sample, got {step_arr.shape} for {samples.shape}")
        step_arr, lead = step_arr[None, :], (samples.size,)
    elif np.ndim(steps) == 0:
        if isinstance(steps, np.ndarray):  # a 0-d array counts as an int
            steps = steps[()]
        step_arr = np.array([_check_int("steps", steps, _U32_LIMIT)], dtype=np.uint64)
        lead = (samples.size,)
    else:
        step_arr = _check_index_array("steps", steps)
        lead = (step_arr.size, samples.size)

    n_blocks = (dim + 3) // 4
    blocks = np.arange(n_blocks, dtype=np.uint64)
    words = _philox_words(
        samples[None, :, None],  # c0: sample i
        step_arr[:, :, None] if paired else step_arr[:, None, None],  # c1: step k
        blocks[None, None, :],  # c2: block b
        np.uint64(stream),  # c3: stream
        np.uint64(seed & 0xFFFFFFFF),  # k0: low word of the seed
        np.uint64(seed >> 32),  # k1: high word of the seed
    )
    return words, lead, dim


def _gather_lanes(lanes, lead, dim) -> np.ndarray:
    """Interleave per-lane arrays [s, n, n_blocks] into draws [*lead, dim]."""
    s, n, n_blocks = lanes[0].shape
    out = np.empty((s, n, n_blocks, 4), dtype=np.float64)
    for lane, z in enumerate(lanes):
        out[:, :, : z.shape[-1], lane] = z
    out = out.reshape(s, n, 4 * n_blocks)[:, :, :dim]
    return np.ascontiguousarray(out).reshape(*lead, dim)


# -- draws ----------------------------------------------------------------------


def _box_muller(xa, xb):
    r = np.sqrt(-2.0 * np.log(((xa >> np.uint64(8)) + np.uint64(1)) * _TWO_M24))
    th = (2.0 * np.pi) * ((xb >> np.uint64(8)) * _TWO_M24)
    return r * np.cos(th), r * np.sin(th)


def normals(seed, samples, steps, stream, dim, paired=False) -> np.ndarray:
    """Standard normal draws at address (seed; sample, step, stream), float64.

    ``samples``: 1-D int array [n] of sample indices (any subset, any order).
    ``steps``: an int -> result [n, dim]; a 1-D int array [s] -> result [s, n, dim];
    with ``paired``, a 1-D int array [n], step ``steps[i]`` for sample i -> [n, dim].
    Row ``i`` depends only on ``(seed, samples[i], step, stream)``, never on the
    other samples in the batch. Raises ValueError for a seed outside [0, 2**64),
    indices or stream outside [0, 2**32), or ``dim < 1``.
    """
    (x0, x1, x2, x3), lead, dim = _blocks(seed, samples, steps, stream, dim, paired)
    z0, z1 = _box_muller(x0, x1)
    # Lanes 2 and 3 of the last block are dropped when dim % 4 is 1 or 2: skip them.
    n_pair2 = x0.shape[-1] - (1 if dim % 4 in (1, 2) else 0)
    z2, z3 = _box_muller(x2[..., :n_pair2], x3[..., :n_pair2])
    return _gather_lanes((z0, z1, z2, z3), lead, dim)


def rademacher(seed, samples, steps, dim) -> np.ndarray:
    """Rademacher (+-1, float64) probes on stream STREAM_PROBE; shapes as :func:`normals`."""
    words, lead, dim = _blocks(seed, samples, steps, STREAM_PROBE, dim)
    lanes = [np.where((x >> np.uint64(31)) == 0, 1.0, -1.0) for x in words]
    return _gather_lanes(lanes, lead, dim)


# -- Brownian paths ---------------------------------------------------------------

BROWNIAN_DEPTH = 24  # bisection levels: a leaf spans (T - eps) 2^-24


def brownian(seed, samples, t, eps: float, T: float, dim: int) -> np.ndarray:
    """W_i(t) [n, dim], float64: sample i's Brownian path on [eps, T] (W(eps) = 0), a
    function of (seed, i, t) alone, whatever else is queried, in any order (a Brownian tree;
    Gaines & Lyons 1997, torchsde's BrownianTree):

        W(T) = sqrt(T - eps) N(node 0);  over [a, b] with node j, the midpoint
        W((a + b) / 2) = (W(a) + W(b)) / 2 + sqrt((b - a) / 4) N(node j), children 2j, 2j + 1
        (node 1 spans [eps, T]); below BROWNIAN_DEPTH levels W is linear within the leaf.

    N(node) is the sample's normals at step = node on stream STREAM_BROWNIAN. ``t`` [n]
    (one time per sample) in [eps, T]. The kernels' twin is brownian.h."""
    samples = np.asarray(samples)
    t = np.asarray(t, dtype=np.float64)
    a, b = np.full_like(t, eps), np.full_like(t, T)
    wa = np.zeros((t.size, dim))
    wb = np.sqrt(T - eps) * normals(seed, samples, np.zeros(t.size, np.int64), STREAM_BROWNIAN, dim, paired=True)
    node = np.ones(t.size, dtype=np.int64)
    for _ in range(BROWNIAN_DEPTH):
        mid = 0.5 * (a + b)
        z = normals(seed, samples, node, STREAM_BROWNIAN, dim, paired=True)
        wm = 0.5 * (wa + wb) + np.sqrt(0.25 * (b - a))[:, None] * z
        left = t < mid
        a, b = np.where(left, a, mid), np.where(left, mid, b)
        wa, wb = np.where(left[:, None], wa, wm), np.where(left[:, None], wm, wb)
        node = 2 * node + ~left
    return wa + (wb - wa) * ((t - a) / (b - a))[:, None]
