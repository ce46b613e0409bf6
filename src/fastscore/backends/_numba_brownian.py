"""Brownian trees for the Numba kernels: rng.brownian (and brownian.h) lane by lane, float64.

Sample i's path W_i on [eps, T] is a function of (seed, i, t) alone: W(T) from node 0, then
BROWNIAN_DEPTH bisections, each midpoint the Brownian bridge of its interval with the normals
of its node (step = node on stream STREAM_BROWNIAN, drawn by the kernels' Philox in float64),
then linear within the leaf. Every operation is rng.brownian's, in its order."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .. import rng
from ._numba_kernels import lane_normals

BROWNIAN_DEPTH = rng.BROWNIAN_DEPTH
STREAM_BROWNIAN = rng.STREAM_BROWNIAN
_JIT = dict(cache=True, fastmath=False, nogil=True)


@njit(**_JIT)
def brownian_lane(k0, k1, index, t, eps, T, w, wb, z, lane):
    """w[:, lane] <- W(t) of sample `index` (w, wb, z [dim, LANES] float64; wb and z: scratch,
    column lane). w holds the left end W(a) of the interval [a, b] being bisected, wb W(b)."""
    dim = w.shape[0]
    lane_normals(k0, k1, index, 0, STREAM_BROWNIAN, z, lane)
    root = math.sqrt(T - eps)
    for d in range(dim):
        w[d, lane] = 0.0
        wb[d, lane] = root * z[d, lane]
    a, b = eps, T
    node = 1
    for _ in range(BROWNIAN_DEPTH):
        mid = 0.5 * (a + b)
        lane_normals(k0, k1, index, node, STREAM_BROWNIAN, z, lane)
        sd = math.sqrt(0.25 * (b - a))
        left = t < mid
        for d in range(dim):
            wm = 0.5 * (w[d, lane] + wb[d, lane]) + sd * z[d, lane]
            if left:
                wb[d, lane] = wm
            else:
                w[d, lane] = wm
        if left:
            b = mid
        else:
            a = mid
        node = 2 * node + (0 if left else 1)
    frac = (t - a) / (b - a)
    for d in range(dim):
        w[d, lane] = w[d, lane] + (wb[d, lane] - w[d, lane]) * frac


@njit(**_JIT)
def brownian_kernel(k0, k1, samples, ts, eps, T, out):
    """out [n, dim] = W_i(ts[i]) of sample samples[i] (rng.brownian's twin, for tests)."""
    n, dim = out.shape
    w, wb, z = np.empty((dim, 1)), np.empty((dim, 1)), np.empty((dim, 1))
    for i in range(n):
        brownian_lane(k0, k1, samples[i], ts[i], eps, T, w, wb, z, 0)
        for d in range(dim):
            out[i, d] = w[d, 0]
