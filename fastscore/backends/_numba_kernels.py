"""Numba kernels of the fused samplers and likelihoods (imported on a kernel's first call).

They follow ``csrc/include/fastscore`` (mlp.h, program.h, ode.h, sde.h) and the readable
reference ``fastscore/backends/reference.py`` step for step, and take every constant, code
and table from the Python modules that declare it: the Philox rounds and stream numbers from
``fastscore.rng``, activation and time-embedding codes from ``fastscore.nn``, opcodes from
``fastscore.program``, SDE kinds from ``fastscore.sde``, likelihood method codes from
``fastscore.plan`` and the Runge–Kutta tableaux and rk45 controller from
``fastscore.integrators``. An unknown code raises ValueError (the Python wrapper
``numba_backend`` validates every code first, so these raises are the last line):

* sampling interprets the plan's step program (``fastscore/program.py``): Eval, Draw and Lin
  over per-sample float32 registers, with the coefficient, time-bias and output-scale tables
  the plan precomputed in float64 and rounded once (``plan.KernelTables``); no sampler is
  written here;
* the MLP runs in float32 from the packed float32 weights; the time features enter the
  first layer as a per-time bias c(t) = b0 + W0[:, dim:] phi(t), formed in float64 and
  rounded once (mlp.h ``time_bias``; the sampler reads it from the plan's table, the
  likelihood forms it here at each lane's time); the output is scaled by 1/sigma(t) of
  ``std_sde``;
* the likelihood integrates [x, delta] in float64 and only the network (values and
  forward-mode tangents) runs in float32;
* normals come from the shared Philox4x32-10 stream, Box-Muller in float64, then cast.

Samples are processed in tiles of ``LANES`` samples held as the last (contiguous) axis of
every work array (as the C++ tile kernels hold them in SIMD lanes): each weight loaded
feeds ``LANES`` independent multiply-adds. Small LLVM intrinsics ("lane rows" below) load,
combine and store whole rows as vectors, since LLVM leaves the equivalent numba loops
scalar; they use plain fmul/fadd (``fastmath=False`` semantics: no contraction to FMA, no
reassociation), so every lane does the scalar arithmetic of its own sample in a fixed
order and a sample's result depends only on (seed, index, plan), never on the tile it
shares, the batch split or the thread count. Tiles are spread over threads with
``numba.prange``; each runs its whole trajectory (sampling) or solve (likelihood) inside
the kernel.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import integrators, rng
from ..nn import ACTIVATIONS, LEAKY_SLOPE, TIME_EMBEDDINGS
from ..plan import LOG_PROB_CODES
from ..program import DRAW, EVAL, LIN
from ..sde import VESDE, VPSDE, SubVPSDE

LANES = 16  # samples per tile: one AVX-512 register of float32 (two AVX2 ones)

# -- constants and codes (frozen into the kernels with their numpy types) ------------------

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_FM2 = np.float32(-2.0)
_LEAKY = np.float32(LEAKY_SLOPE)  # mlp.h kLeakySlope

_SH31 = np.uint64(31)
_SH8 = np.uint64(8)
_ONE64 = np.uint64(1)
_TWO_M24 = rng._TWO_M24
_TWO_PI = 2.0 * math.pi

STREAM_PRIOR = rng.STREAM_PRIOR
STREAM_PROBE = rng.STREAM_PROBE

KIND_VP, KIND_VE, KIND_SUBVP = VPSDE.kind, VESDE.kind, SubVPSDE.kind
ACT_RELU, ACT_TANH, ACT_SILU = ACTIVATIONS["relu"], ACTIVATIONS["tanh"], ACTIVATIONS["silu"]
ACT_LEAKY, ACT_SOFTPLUS = ACTIVATIONS["leaky_relu"], ACTIVATIONS["softplus"]
TE_CONCAT, TE_FOURIER = TIME_EMBEDDINGS["concat"], TIME_EMBEDDINGS["fourier"]
LP_RK45 = LOG_PROB_CODES["rk45"]


def _lower(rows, n: int) -> np.ndarray:
    """A strictly lower matrix given by rows of i entries, as a zero-padded [n, n] array."""
    a = np.zeros((n, n))
    for i, row in enumerate(rows):
        a[i, :len(row)] = row
    return a


# fixed-step tableaux (integrators.FIXED) indexed by log-prob code: stages (0: not a fixed-step
# method), nodes c, matrix a (row i: a[i, :i]), weights b
_S = max(tab.stages for tab in integrators.FIXED.values())
FIXED_STAGES = np.zeros(len(LOG_PROB_CODES), dtype=np.int64)
FIXED_C = np.zeros((len(LOG_PROB_CODES), _S))
FIXED_A = np.zeros((len(LOG_PROB_CODES), _S, _S))
FIXED_B = np.zeros((len(LOG_PROB_CODES), _S))
for _name, _tab in integrators.FIXED.items():
    _code = LOG_PROB_CODES[_name]
    FIXED_STAGES[_code] = _tab.stages
    FIXED_C[_code, :_tab.stages] = _tab.c
    FIXED_A[_code, :_tab.stages, :_tab.stages] = _lower(_tab.a, _tab.stages)
    FIXED_B[_code, :_tab.stages] = _tab.b

# Dormand–Prince 5(4) (integrators.DOPRI5, scipy's RK45): nodes, matrix (row i: a[i, :i]),
# 5th-order weights, error weights over the 7 stages (the 7th is the derivative at the new point)
DP_C = np.array(integrators.DOPRI5.c)
DP_A = _lower(integrators.DOPRI5.a, len(DP_C))
DP_B = np.array(integrators.DOPRI5.b)
DP_E = np.array(integrators.DOPRI5.e)
RK45_MAX_ATTEMPTS = integrators.RK45_MAX_ATTEMPTS
RK45_H0_FRACTION = integrators.RK45_H0_FRACTION
RK45_SAFETY = integrators.RK45_SAFETY
RK45_MIN_FACTOR = integrators.RK45_MIN_FACTOR
RK45_MIN_STEP_FRACTION = integrators.RK45_MIN_STEP_FRACTION
RK45_MAX_FACTOR = integrators.RK45_MAX_FACTOR
RK45_EXPONENT = integrators.RK45_EXPONENT

_JIT = dict(cache=True, fastmath=False, nogil=True)


# -- Philox4x32-10 and the shared stream (rng.py / philox.h) ------------------------------

philox = njit(**_JIT)(rng.philox_rounds)  # the reference's rounds, compiled as they stand


@njit(**_JIT)
def fill_normals(k0, k1, index0, step, stream, dim, z):
    """z [dim, LANES] (float32) <- standard normals of samples index0 + lane at (step, stream):
    draw d is lane d % 4 of Philox block d // 4, Box-Muller in float64, then rounded."""
    s1 = np.uint64(step)
    s3 = np.uint64(stream)
    for lane in range(LANES):
        c0 = np.uint64((index0 + lane) & 0xFFFFFFFF)
        for b in range((dim + 3) // 4):
            x0, x1, x2, x3 = philox(c0, s1, np.uint64(b), s3, k0, k1)
            d = 4 * b
            r = math.sqrt(-2.0 * math.log(np.float64((x0 >> _SH8) + _ONE64) * _TWO_M24))
            th = _TWO_PI * (np.float64(x1 >> _SH8) * _TWO_M24)
            z[d, lane] = np.float32(r * math.cos(th))
            if d + 1 < dim:
                z[d + 1, lane] = np.float32(r * math.sin(th))
            if d + 2 < dim:
                r = math.sqrt(-2.0 * math.log(np.float64((x2 >> _SH8) + _ONE64) * _TWO_M24))
                th = _TWO_PI * (np.float64(x3 >> _SH8) * _TWO_M24)
                z[d + 2, lane] = np.float32(r * math.cos(th))
                if d + 3 < dim:
                    z[d + 3, lane] = np.float32(r * math.sin(th))


@njit(**_JIT)
def fill_rademacher(k0, k1, index0, dim, v):
    """v [dim, LANES] (float32) <- Rademacher probes (stream STREAM_PROBE, step 0): +1 where
    the top bit of word d % 4 of block d // 4 is 0, else -1."""
    for lane in range(LANES):
        c0 = np.uint64((index0 + lane) & 0xFFFFFFFF)
        for b in range((dim + 3) // 4):
            w = philox(c0, np.uint64(0), np.uint64(b), np.uint64(STREAM_PROBE), k0, k1)
            for q in range(4):
                d = 4 * b + q
                if d < dim:
                    v[d, lane] = _F1 if (w[q] >> _SH31) == np.uint64(0) else -_F1


# -- SDE coefficients, float64 (sde.h / sde.py formula by formula) ----------------------
#
# Only the likelihood needs them here, at each lane's own time (rk45 moves lanes apart); the
# sampler's coefficients come precomputed in the plan.


@njit(**_JIT)
def _beta(p0, p1, T, t):
    return p0 + (p1 - p0) * t / T


@njit(**_JIT)
def _beta_integral(p0, p1, T, t):
    return p0 * t + 0.5 * (p1 - p0) * t * t / T


@njit(**_JIT)
def drift_coeff(kind, p0, p1, T, t):
    if kind == KIND_VE:
        return 0.0
    if kind == KIND_VP or kind == KIND_SUBVP:
        return -0.5 * _beta(p0, p1, T, t)
    raise ValueError("unknown SDE kind (fastscore.sde: VPSDE, VESDE, SubVPSDE)")


@njit(**_JIT)
def diffusion_sq(kind, p0, p1, T, t):
    if kind == KIND_VE:
        return math.exp(2.0 * math.log(p0) * t)
    if kind == KIND_SUBVP:
        return _beta(p0, p1, T, t) * -math.expm1(-2.0 * _beta_integral(p0, p1, T, t))
    if kind == KIND_VP:
        return _beta(p0, p1, T, t)
    raise ValueError("unknown SDE kind (fastscore.sde: VPSDE, VESDE, SubVPSDE)")


@njit(**_JIT)
def marginal_std(kind, p0, p1, T, t):
    if kind == KIND_VE:
        ls = math.log(p0)
        return math.sqrt(math.expm1(2.0 * ls * t) / (2.0 * ls))
    if kind == KIND_SUBVP:
        return -math.expm1(-_beta_integral(p0, p1, T, t))
    if kind == KIND_VP:
        return math.sqrt(-math.expm1(-_beta_integral(p0, p1, T, t)))
    raise ValueError("unknown SDE kind (fastscore.sde: VPSDE, VESDE, SubVPSDE)")


@njit(**_JIT)
def output_scale(std_kind, sp, t):
    """1 / sigma(t) of the model's std_sde, or 1 without output scaling (std_kind -1)."""
    if std_kind == -1:
        return 1.0
    return 1.0 / marginal_std(std_kind, sp[0], sp[1], sp[2], t)


# -- lane rows: one sample tile's unit, as one LLVM vector -------------------------------
#
# A work array is [rows, LANES] float32, C-contiguous; row j holds unit j for every sample of
# the tile. These intrinsics load and store whole rows as <LANES x float> vectors. Written as
# plain loops, LLVM would keep them scalar: it cannot prove that two numba arrays do not
# overlap, and the lane loop is unrolled before the vectoriser could add a runtime check.
# The vector ops are the lane-by-lane IEEE operations in the same order (fmul, fadd: no
# fusion, no reassociation), so each lane computes exactly what scalar code would.

_VEC = ir.VectorType(ir.FloatType(), LANES)
_I32 = ir.IntType(32)


def _row_ptr(context, builder, aryty, ary, idxty, idx, offset=0):
    """Pointer to element (idx + offset, 0) of a 2-D array."""
    arr = context.make_array(aryty)(context, builder, ary)
    row = context.cast(builder, idx, idxty, types.intp)
    if offset:
        row = builder.add(row, context.get_constant(types.intp, offset))
    zero = context.get_constant(types.intp, 0)
    return cgutils.get_item_pointer2(context, builder, data=arr.data, shape=cgutils.unpack_tuple(builder, arr.shape),
                                     strides=cgutils.unpack_tuple(builder, arr.strides), layout=aryty.layout,
                                     inds=[row, zero])


def _vload(builder, ptr):
    return builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=4)


def _vstore(builder, value, ptr):
    builder.store(value, builder.bitcast(ptr, _VEC.as_pointer()), align=4)


def _splat(builder, scalar):
    v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined), ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _is_rows(a):
    return isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.float32 and a.layout == "C"


@intrinsic
def row_fill(typingctx, z, j, value):
    """z[j, :] = value."""
    if not (_is_rows(z) and isinstance(j, types.Integer) and value == types.float32):
        return None

    def codegen(context, builder, sig, args):
        _vstore(builder, _splat(builder, args[2]), _row_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1]))
        return context.get_dummy_value()

    return types.void(z, j, value), codegen


@intrinsic
def row_copy(typingctx, z, j, src, i):
    """z[j, :] = src[i, :]."""
    if not (_is_rows(z) and _is_rows(src) and isinstance(j, types.Integer) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        v = _vload(builder, _row_ptr(context, builder, sig.args[2], args[2], sig.args[3], args[3]))
        _vstore(builder, v, _row_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1]))
        return context.get_dummy_value()

    return types.void(z, j, src, i), codegen


@intrinsic
def accumulate(typingctx, WT, x, z):
    """z += W x for z [n_out, LANES], x [n_in, LANES], WT = W^T [n_in, n_out] (float32, C order):
    lane by lane z[j] = (...((z[j] + W[j, 0] x[0]) + W[j, 1] x[1]) ...) + W[j, n_in-1] x[n_in-1],
    mlp.h's order. Emitted as loops over input quads (x rows loaded once per quad, kept in
    registers) and output rows (z row loaded, four multiply-adds, stored)."""
    if not (_is_rows(WT) and _is_rows(x) and _is_rows(z)):
        return None

    def codegen(context, builder, sig, args):
        wty, xty, zty = sig.args
        W = context.make_array(wty)(context, builder, args[0])
        n_in, n_out = cgutils.unpack_tuple(builder, W.shape)
        w_strides = cgutils.unpack_tuple(builder, W.strides)
        intp = context.get_value_type(types.intp)

        def const(v):
            return ir.Constant(intp, v)

        def pass_over_z(k0, n_terms):
            xs = [_vload(builder, _row_ptr(context, builder, xty, args[1], types.intp, builder.add(k0, const(q))))
                  for q in range(n_terms)]
            with cgutils.for_range(builder, n_out) as loop:
                j = loop.index
                zp = _row_ptr(context, builder, zty, args[2], types.intp, j)
                acc = _vload(builder, zp)
                for q in range(n_terms):
                    wp = cgutils.get_item_pointer2(context, builder, data=W.data, shape=[n_in, n_out],
                                                   strides=w_strides, layout="C", inds=[builder.add(k0, const(q)), j])
                    acc = builder.fadd(acc, builder.fmul(_splat(builder, builder.load(wp)), xs[q]))
                _vstore(builder, acc, zp)

        n_quads = builder.sdiv(n_in, const(4))
        with cgutils.for_range(builder, n_quads) as loop:
            pass_over_z(builder.mul(loop.index, const(4)), 4)
        with cgutils.for_range_slice(builder, builder.mul(n_quads, const(4)), n_in, const(1), inc=True) as (k, _):
            pass_over_z(k, 1)
        return context.get_dummy_value()

    return types.void(WT, x, z), codegen


@intrinsic
def row_mul(typingctx, z, j, a, i, b, m):
    """z[j, :] = a[i, :] * b[m, :] (a tangent times the activation's slope)."""
    if not (_is_rows(z) and _is_rows(a) and _is_rows(b)):
        return None

    def codegen(context, builder, sig, args):
        va = _vload(builder, _row_ptr(context, builder, sig.args[2], args[2], sig.args[3], args[3]))
        vb = _vload(builder, _row_ptr(context, builder, sig.args[4], args[4], sig.args[5], args[5]))
        _vstore(builder, builder.fmul(va, vb), _row_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1]))
        return context.get_dummy_value()

    return types.void(z, j, a, i, b, m), codegen


def _rectifier_codegen(leaky, with_slope):
    """In place z[j] = z > 0 ? z : (leaky ? LEAKY z : 0) (mlp.h); with_slope: also
    slope[m] = z > 0 ? 1 : (leaky ? LEAKY : 0)."""

    def codegen(context, builder, sig, args):
        zp = _row_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        v = _vload(builder, zp)
        zero = ir.Constant(_VEC, [0.0] * LANES)
        pos = builder.fcmp_ordered(">", v, zero)
        neg_slope = ir.Constant(_VEC, [float(_LEAKY) if leaky else 0.0] * LANES)
        _vstore(builder, builder.select(pos, v, builder.fmul(neg_slope, v) if leaky else zero), zp)
        if with_slope:
            sp = _row_ptr(context, builder, sig.args[2], args[2], sig.args[3], args[3])
            _vstore(builder, builder.select(pos, ir.Constant(_VEC, [1.0] * LANES), neg_slope), sp)
        return context.get_dummy_value()

    return codegen


@intrinsic
def row_relu(typingctx, z, j):
    if not (_is_rows(z) and isinstance(j, types.Integer)):
        return None
    return types.void(z, j), _rectifier_codegen(False, False)


@intrinsic
def row_leaky(typingctx, z, j):
    if not (_is_rows(z) and isinstance(j, types.Integer)):
        return None
    return types.void(z, j), _rectifier_codegen(True, False)


@intrinsic
def row_relu_slope(typingctx, z, j, slope, m):
    if not (_is_rows(z) and _is_rows(slope)):
        return None
    return types.void(z, j, slope, m), _rectifier_codegen(False, True)


@intrinsic
def row_leaky_slope(typingctx, z, j, slope, m):
    if not (_is_rows(z) and _is_rows(slope)):
        return None
    return types.void(z, j, slope, m), _rectifier_codegen(True, True)


# -- the packed MLP in float32 lanes (mlp.h) ---------------------------------------------


@njit(**_JIT)
def check_codes(act, te, std_kind):
    """Raises ValueError for an activation, time-embedding or std_sde code the kernels do not
    know (fastscore.nn ACTIVATIONS, TIME_EMBEDDINGS; fastscore.sde kinds; -1: no scaling).
    The kernels call it before their parallel loop, where a raise surfaces as itself."""
    if not (act == ACT_RELU or act == ACT_TANH or act == ACT_SILU or act == ACT_LEAKY or act == ACT_SOFTPLUS):
        raise ValueError("unknown activation code (fastscore.nn.ACTIVATIONS)")
    if not (te == TE_CONCAT or te == TE_FOURIER):
        raise ValueError("unknown time-embedding code (fastscore.nn.TIME_EMBEDDINGS)")
    if not (std_kind == -1 or std_kind == KIND_VP or std_kind == KIND_VE or std_kind == KIND_SUBVP):
        raise ValueError("unknown std_sde kind (fastscore.sde kinds, or -1)")


@njit(**_JIT)
def time_bias(W0, b0, freqs, dim, te, t, c):
    """c [width] (float32) = b0 + W0[:, dim:] phi(t), accumulated in float64 and rounded once;
    phi(t) = t (concat) or sin, cos of 2 pi t w_f (Fourier). W0: the packed [width, dim + E].
    (PackedModel.time_tables forms the same values in numpy for the sampler's plan.)"""
    if not (te == TE_CONCAT or te == TE_FOURIER):
        raise ValueError("unknown time-embedding code (fastscore.nn.TIME_EMBEDDINGS)")
    width = b0.shape[0]
    nf = freqs.shape[0]
    for j in range(width):
        acc = np.float64(b0[j])
        if te == TE_CONCAT:
            acc += np.float64(W0[j, dim]) * t
        else:
            for f in range(nf):
                proj = 2.0 * math.pi * t * np.float64(freqs[f])
                acc += np.float64(W0[j, dim + f]) * math.sin(proj)
            for f in range(nf):
                proj = 2.0 * math.pi * t * np.float64(freqs[f])
                acc += np.float64(W0[j, dim + nf + f]) * math.cos(proj)
        c[j] = np.float32(acc)


@njit(**_JIT)
def dense(WT, b, x, z):
    """z [n_out, LANES] = b + W x (mlp.h ``dense``: acc = b, then acc += W[j, k] x[k], k = 0, 1, ...)."""
    for j in range(WT.shape[1]):
        row_fill(z, j, b[j])
    accumulate(WT, x, z)


@njit(**_JIT)
def dense_lane_bias(WT, c, x, z):
    """As ``dense`` with a bias per unit and lane, c [n_out, LANES] (lanes at their own times)."""
    for j in range(WT.shape[1]):
        row_copy(z, j, c, j)
    accumulate(WT, x, z)


@njit(**_JIT)
def dense_nobias(WT, x, z):
    """z = W x (tangents): as ``dense`` from 0."""
    for j in range(WT.shape[1]):
        row_fill(z, j, _F0)
    accumulate(WT, x, z)


@njit(**_JIT)
def _tanh(v):
    """tanh|v| = -expm1(-2|v|) / (2 + expm1(-2|v|)), signed: no cancellation near 0 (mlp.h)."""
    e = math.expm1(_FM2 * abs(v))
    r = -e / (_F2 + e)
    return -r if v < _F0 else r


@njit(**_JIT)
def activate(act, z):
    """z = act(z) in place over [width, LANES] (mlp.h ``activation``)."""
    n = z.shape[0]
    if act == ACT_RELU:
        for j in range(n):
            row_relu(z, j)
    elif act == ACT_LEAKY:
        for j in range(n):
            row_leaky(z, j)
    elif act == ACT_TANH:
        for j in range(n):
            for lane in range(LANES):
                z[j, lane] = _tanh(z[j, lane])
    elif act == ACT_SILU:
        for j in range(n):
            for lane in range(LANES):
                v = z[j, lane]
                z[j, lane] = v / (_F1 + math.exp(-v))
    elif act == ACT_SOFTPLUS:  # max(v, 0) + log1p(exp(-|v|))
        for j in range(n):
            for lane in range(LANES):
                v = z[j, lane]
                z[j, lane] = (v if v > _F0 else _F0) + math.log1p(math.exp(-abs(v)))
    else:
        raise ValueError("unknown activation code (fastscore.nn.ACTIVATIONS)")


@njit(**_JIT)
def activate_slope(act, z, slope):
    """z = act(z) in place and slope = act'(z) (mlp.h ``activation_and_slope``)."""
    n = z.shape[0]
    if act == ACT_RELU:
        for j in range(n):
            row_relu_slope(z, j, slope, j)
    elif act == ACT_LEAKY:
        for j in range(n):
            row_leaky_slope(z, j, slope, j)
    elif act == ACT_TANH:
        for j in range(n):
            for lane in range(LANES):
                r = _tanh(z[j, lane])
                z[j, lane] = r
                slope[j, lane] = _F1 - r * r
    elif act == ACT_SILU:
        for j in range(n):
            for lane in range(LANES):
                v = z[j, lane]
                sig = _F1 / (_F1 + math.exp(-v))
                z[j, lane] = v * sig
                slope[j, lane] = sig * (_F1 + v * (_F1 - sig))
    elif act == ACT_SOFTPLUS:
        for j in range(n):
            for lane in range(LANES):
                v = z[j, lane]
                z[j, lane] = (v if v > _F0 else _F0) + math.log1p(math.exp(-abs(v)))
                slope[j, lane] = _F1 / (_F1 + math.exp(-v))
    else:
        raise ValueError("unknown activation code (fastscore.nn.ACTIVATIONS)")


@njit(**_JIT)
def mlp_forward(W0xT, c, WhT, bh, WoT, bo, act, scale, x, out, ha, hb):
    """out [dim, LANES] = s(x, t) for x [dim, LANES] (mlp.h ``mlp_forward``); c [width] =
    time_bias(t), scale = float32(output_scale(t)). ha, hb: scratch [width, LANES]."""
    dense(W0xT, c, x, ha)
    activate(act, ha)
    for layer in range(WhT.shape[0]):
        dense(WhT[layer], bh[layer], ha, hb)
        activate(act, hb)
        ha, hb = hb, ha
    dense(WoT, bo, ha, out)
    for d in range(out.shape[0]):
        for lane in range(LANES):
            out[d, lane] = out[d, lane] * scale


@njit(**_JIT)
def mlp_tangents(W0xT, cl, WhT, bh, WoT, bo, act, x, dirs, out, dout, z, sl, dz, dh):
    """Forward-mode tangents (mlp.h ``mlp_forward_tangents``), output scale not applied:
    out [dim, LANES] = network output and dout [nt, dim, LANES] = its derivative along each
    direction dirs [nt, dim, LANES] (unit vectors: the Jacobian's columns; a probe v: J v).
    The tangents go through the same weights as the values, times act'(z) per layer; no
    autograd, no differences. cl [width, LANES]: the time bias of each lane.
    Scratch: z, sl [width, LANES]; dz, dh [nt, width, LANES]."""
    nt = dirs.shape[0]
    width = z.shape[0]
    dense_lane_bias(W0xT, cl, x, z)
    for i in range(nt):
        dense_nobias(W0xT, dirs[i], dz[i])
    n_hidden = WhT.shape[0]
    for layer in range(n_hidden + 1):
        activate_slope(act, z, sl)  # z now holds h = act(z)
        for i in range(nt):
            dhi = dh[i]
            dzi = dz[i]
            for j in range(width):
                row_mul(dhi, j, sl, j, dzi, j)
        if layer < n_hidden:
            for i in range(nt):
                dense_nobias(WhT[layer], dh[i], dz[i])
            dense(WhT[layer], bh[layer], z, sl)  # sl is free again: the next pre-activation
            z, sl = sl, z
        else:
            for i in range(nt):
                dense_nobias(WoT, dh[i], dout[i])
            dense(WoT, bo, z, out)


# -- sampling: the step-program interpreter (program.h, program.execute; reference.sample) ---
#
# `model` below is the tuple (W0, b0, freqs, W0xT, WhT, bh, WoT, bo, act, te, std_kind, sp)
# built by numba_backend._model_args. A step program is the int32 [n_ops, OP_WIDTH] table of
# fastscore/program.py; the tables come from plan.KernelTables: coef [steps + 1, n_coef],
# bias [steps * n_slots + 1, width], scale [steps * n_slots + 1] (float32).


@njit(**_JIT)
def lin(c, op, regs, acc, dst):
    """dst [dim, LANES] <- sum_j c[c_j] * regs[r_j] for the terms (r_j, c_j) of the Lin row `op`,
    in float32, left to right: acc = c_0 r_0, then acc = acc + c_j r_j. The terms are summed
    into the scratch acc first, so dst may be one of them."""
    n_terms = op[2]
    a = c[op[5]]
    src = regs[op[4]]
    dim = dst.shape[0]
    for d in range(dim):
        for lane in range(LANES):
            acc[d, lane] = a * src[d, lane]
    for j in range(1, n_terms):
        a = c[op[5 + 2 * j]]
        src = regs[op[4 + 2 * j]]
        for d in range(dim):
            for lane in range(LANES):
                acc[d, lane] = acc[d, lane] + a * src[d, lane]
    for d in range(dim):
        row_copy(dst, d, acc, d)


@njit(**_JIT)
def run_ops(model, ops, first, last, k, n_slots, coef, bias, scale, k0, k1, index0, regs, acc, ha, hb):
    """Rows [first, last) of the program for step k (k == steps: the final program) on a
    tile's registers regs [n_registers, dim, LANES] (program.h ``run_ops``):
    Eval [EVAL, dst, src, slot]: dst <- s(src) with bias and scale row k * n_slots + slot;
    Draw [DRAW, dst, stream]: dst <- the normals of (step k, stream);
    Lin [LIN, dst, n, 0, r0, c0, ...]: dst <- sum_j coef[k, c_j] regs[r_j] (``lin``)."""
    W0xT, WhT, bh, WoT, bo, act = model[3], model[4], model[5], model[6], model[7], model[8]
    dim = regs.shape[1]
    c = coef[k]
    for i in range(first, last):
        op = ops[i]
        code = op[0]
        dst = regs[op[1]]
        if code == EVAL:
            row = k * n_slots + op[3]
            mlp_forward(W0xT, bias[row], WhT, bh, WoT, bo, act, scale[row], regs[op[2]], dst, ha, hb)
        elif code == DRAW:
            fill_normals(k0, k1, index0, k, op[2], dim, dst)
        elif code == LIN:
            lin(c, op, regs, acc, dst)
        else:
            raise ValueError("step program: unknown opcode (fastscore.program: EVAL, DRAW, LIN)")


@njit(parallel=True, **_JIT)
def sample_kernel(model, ops, n_body, n_slots, n_registers, coef, bias, scale, prior_std, k0, k1, start, out):
    """out [n, dim] (float32): samples start + 0..n-1, each from its prior draw at T through the
    program's body for steps k = 0..steps-1 (coefficient row k, draws at step k) and its final
    rows once after the last step (row steps; they never draw). Registers start at zero,
    register 0 (the state x) at prior_std times the normals of (step 0, STREAM_PRIOR)."""
    check_codes(model[8], model[9], model[10])
    n, dim = out.shape
    width = bias.shape[1]
    steps = coef.shape[0] - 1
    n_ops = ops.shape[0]
    for i in range(n_ops):
        if not (ops[i, 0] == EVAL or ops[i, 0] == DRAW or ops[i, 0] == LIN):
            raise ValueError("step program: unknown opcode (fastscore.program: EVAL, DRAW, LIN)")
    prior = np.float32(prior_std)
    n_tiles = (n + LANES - 1) // LANES
    for tile in prange(n_tiles):
        first = tile * LANES
        index0 = start + first
        regs = np.zeros((n_registers, dim, LANES), dtype=np.float32)
        acc = np.empty((dim, LANES), dtype=np.float32)
        ha = np.empty((width, LANES), dtype=np.float32)
        hb = np.empty((width, LANES), dtype=np.float32)
        x = regs[0]
        fill_normals(k0, k1, index0, 0, STREAM_PRIOR, dim, x)
        for d in range(dim):
            for lane in range(LANES):
                x[d, lane] = x[d, lane] * prior
        for k in range(steps):
            run_ops(model, ops, 0, n_body, k, n_slots, coef, bias, scale, k0, k1, index0, regs, acc, ha, hb)
        run_ops(model, ops, n_body, n_ops, steps, n_slots, coef, bias, scale, k0, k1, index0, regs, acc, ha, hb)
        count = min(LANES, n - first)
        for lane in range(count):
            for d in range(dim):
                out[first + lane, d] = x[d, lane]


# -- likelihood (ode.h; reference.log_prob) ----------------------------------------------
#
# `model` as for sampling, `sde` the tuple (kind, p0, p1, T) of numba_backend._sde_args, and
# `ws` a tile's scratch from _workspace.


@njit(**_JIT)
def _workspace(width, dim, nt):
    """Scratch of one tile: cb [width], cl [width, LANES], xf, out [dim, LANES],
    dout [nt, dim, LANES], z, sl [width, LANES], dz, dh [nt, width, LANES], and per lane
    the float64 score s [dim, LANES], trace tr, and coefficients f, q, scale [LANES]."""
    return (np.empty(width, dtype=np.float32), np.empty((width, LANES), dtype=np.float32),
            np.empty((dim, LANES), dtype=np.float32), np.empty((dim, LANES), dtype=np.float32),
            np.empty((nt, dim, LANES), dtype=np.float32),
            np.empty((width, LANES), dtype=np.float32), np.empty((width, LANES), dtype=np.float32),
            np.empty((nt, width, LANES), dtype=np.float32), np.empty((nt, width, LANES), dtype=np.float32),
            np.empty((dim, LANES)), np.empty(LANES), np.empty(LANES), np.empty(LANES), np.empty(LANES))


@njit(**_JIT)
def score_trace_lanes(model, sde, ts, y, dirs, ws):
    """ws's s [dim, LANES] = s(x, t) and tr [LANES] = sum_i dir_i . (ds/dx) dir_i for x = the
    first dim rows of y (float64, rounded to float32 for the network), lane l at time ts[l];
    also ws's f, q = drift f(t) and 1/2 g(t)^2 per lane. The network and its tangents run
    in float32; the output scale 1/sigma(t) multiplies in float64. Time biases, coefficients
    and scales are formed once per distinct time in the tile (always once for fixed steps)."""
    W0, b0, freqs, W0xT, WhT, bh, WoT, bo, act, te, std_kind, sp = model
    kind, p0, p1, T = sde
    cb, cl, xf, out, dout, z, sl, dz, dh, s, tr, fco, qco, sco = ws
    dim = xf.shape[0]
    width = b0.shape[0]
    nt = dirs.shape[0]
    last = np.nan
    f = 0.0
    q = 0.0
    scl = 1.0
    for lane in range(LANES):
        t = ts[lane]
        if not t == last:
            last = t
            time_bias(W0, b0, freqs, dim, te, t, cb)
            f = drift_coeff(kind, p0, p1, T, t)
            q = 0.5 * diffusion_sq(kind, p0, p1, T, t)
            scl = output_scale(std_kind, sp, t)
        for j in range(width):
            cl[j, lane] = cb[j]
        fco[lane] = f
        qco[lane] = q
        sco[lane] = scl
    for d in range(dim):
        for lane in range(LANES):
            xf[d, lane] = np.float32(y[d, lane])
    mlp_tangents(W0xT, cl, WhT, bh, WoT, bo, act, xf, dirs, out, dout, z, sl, dz, dh)
    for lane in range(LANES):
        acc = _F0
        for i in range(nt):
            for d in range(dim):
                acc += dirs[i, d, lane] * dout[i, d, lane]
        tr[lane] = np.float64(acc) * sco[lane]
        for d in range(dim):
            s[d, lane] = np.float64(out[d, lane]) * sco[lane]


@njit(**_JIT)
def velocity(model, sde, ts, y, k, dirs, ws):
    """k [dim + 1, LANES] = augmented probability-flow velocity at y [dim + 1, LANES] (float64),
    lane l at time ts[l] (reference._augmented):
    dx/dt = f(t) x - 1/2 g(t)^2 s(x, t),  d delta/dt = dim f(t) - 1/2 g(t)^2 tr(ds/dx)."""
    score_trace_lanes(model, sde, ts, y, dirs, ws)
    s, tr, fco, qco = ws[9], ws[10], ws[11], ws[12]
    dim = s.shape[0]
    for lane in range(LANES):
        f = fco[lane]
        q = qco[lane]
        for d in range(dim):
            k[d, lane] = f * y[d, lane] - q * s[d, lane]
        k[dim, lane] = dim * f - q * tr[lane]


@njit(**_JIT)
def set_directions(hutchinson, k0, k1, index0, dirs):
    """Tangent directions [nt, dim, LANES]: the unit vectors (exact trace) or one Rademacher
    probe per sample (Hutchinson; stream STREAM_PROBE, step 0, sample index0 + lane)."""
    dim = dirs.shape[1]
    if hutchinson:
        fill_rademacher(k0, k1, index0, dim, dirs[0])
        return
    for i in range(dim):
        for d in range(dim):
            for lane in range(LANES):
                dirs[i, d, lane] = _F1 if i == d else _F0


@njit(parallel=True, **_JIT)
def score_trace_kernel(model, x, t, hutchinson, k0, k1, s_out, tr_out):
    """s_out [n, dim] = s(x, t) and tr_out [n] = exact trace (or the Hutchinson form with
    the probe of sample i) for points x [n, dim] (float64) at one time t: the network pass
    every likelihood kernel evaluates, exposed for tests."""
    check_codes(model[8], model[9], model[10])
    n, dim = x.shape
    width = model[1].shape[0]
    nt = 1 if hutchinson else dim
    sde = (KIND_VP, 0.1, 20.0, 1.0)  # any valid SDE: score_trace_lanes' drift and diffusion are unused here
    for tile in prange((n + LANES - 1) // LANES):
        first = tile * LANES
        count = min(LANES, n - first)
        ws = _workspace(width, dim, nt)
        y = np.zeros((dim, LANES))
        for lane in range(count):
            for d in range(dim):
                y[d, lane] = x[first + lane, d]
        dirs = np.empty((nt, dim, LANES), dtype=np.float32)
        set_directions(hutchinson, k0, k1, first, dirs)
        ts = np.full(LANES, t)
        score_trace_lanes(model, sde, ts, y, dirs, ws)
        for lane in range(count):
            for d in range(dim):
                s_out[first + lane, d] = ws[9][d, lane]
            tr_out[first + lane] = ws[10][lane]


@njit(parallel=True, **_JIT)
def log_prob_kernel(model, sde, x_in, method, steps, eps, rtol, atol, hutchinson, k0, k1, x_out, delta_out, nfe_out):
    """Integrates y = [x, delta] from eps to T for every sample: x_out [n, dim] = x(T),
    delta_out [n] = delta(T) (float64), nfe_out [n]. Returns the number of samples for which
    rk45 gave up (more than RK45_MAX_ATTEMPTS attempted steps)."""
    check_codes(model[8], model[9], model[10])
    if not (sde[0] == KIND_VP or sde[0] == KIND_VE or sde[0] == KIND_SUBVP):
        raise ValueError("unknown SDE kind (fastscore.sde: VPSDE, VESDE, SubVPSDE)")
    if not (method == LP_RK45 or (0 <= method < FIXED_STAGES.shape[0] and FIXED_STAGES[method] > 0)):
        raise ValueError("unknown log_prob method code (fastscore.plan.LOG_PROB_CODES)")
    T = sde[3]
    n, dim = x_in.shape
    width = model[1].shape[0]
    C = dim + 1
    nt = 1 if hutchinson else dim
    n_tiles = (n + LANES - 1) // LANES
    failed = np.zeros(n_tiles, dtype=np.int64)
    for tile in prange(n_tiles):
        first = tile * LANES
        count = min(LANES, n - first)
        ws = _workspace(width, dim, nt)
        y = np.zeros((C, LANES))
        y1 = np.empty((C, LANES))
        K = np.empty((7, C, LANES))
        ts = np.empty(LANES)
        nfe = np.zeros(LANES, dtype=np.int64)
        for lane in range(count):
            for d in range(dim):
                y[d, lane] = x_in[first + lane, d]
        # one set of directions per sample for the whole solve; Hutchinson probes are
        # addressed by the index in this batch (as reference.log_prob: no start offset)
        dirs = np.empty((nt, dim, LANES), dtype=np.float32)
        set_directions(hutchinson, k0, k1, first, dirs)
        if method != LP_RK45:
            # fixed steps on t_k = eps + k h with the tableaux of integrators.FIXED
            hh = (T - eps) / steps
            S = FIXED_STAGES[method]
            for kk in range(steps):
                t0 = eps + kk * ((T - eps) / steps)  # LogProbPlan.time(k)
                for i in range(S):
                    for c in range(C):
                        for lane in range(LANES):
                            if i == 0:
                                y1[c, lane] = y[c, lane]
                            else:
                                acc = 0.0
                                for j in range(i):
                                    acc += FIXED_A[method, i, j] * K[j, c, lane]
                                y1[c, lane] = y[c, lane] + hh * acc
                    for lane in range(LANES):
                        ts[lane] = t0 + FIXED_C[method, i] * hh
                    velocity(model, sde, ts, y1, K[i], dirs, ws)
                for c in range(C):
                    for lane in range(LANES):
                        acc = 0.0
                        for i in range(S):
                            acc += FIXED_B[method, i] * K[i, c, lane]
                        y[c, lane] = y[c, lane] + hh * acc
            for lane in range(LANES):
                nfe[lane] = steps * S
        else:
            failed[tile] = rk45_tile(model, sde, eps, rtol, atol, count, y, y1, K, ts, nfe, dirs, ws)
        for lane in range(count):
            for d in range(dim):
                x_out[first + lane, d] = y[d, lane]
            delta_out[first + lane] = y[dim, lane]
            nfe_out[first + lane] = nfe[lane]
    return failed.sum()


@njit(**_JIT)
def rk45_tile(model, sde, eps, rtol, atol, count, y, y5, K, ts, nfe, dirs, ws):
    """Adaptive Dormand–Prince 5(4) with step-size control per sample: the project's
    definition of `rk45` (csrc/include/fastscore/ode.h implements the identical controller).

    * tableau: the standard Dormand–Prince coefficients (as scipy's RK45: C, A, B and error
      weights E = B5 - B4 including the 7th stage); FSAL: the derivative at the accepted new
      point is the next step's first stage.
    * state per sample: y = [x (dim), delta]; t from eps to T; h0 = RK45_H0_FRACTION (T - eps).
    * per attempt: err_j = h sum_i E_i k_i[j]; scale_j = atol + rtol max(|y_j|, |y5_j|);
      err_norm = sqrt(mean_j (err_j / scale_j)^2) over the dim + 1 components.
    * accept if err_norm <= 1 (t += h, y = y5). factor = MAX_FACTOR if err_norm == 0 else
      min(MAX_FACTOR, max(MIN_FACTOR, SAFETY err_norm^EXPONENT)); on rejection factor =
      min(factor, 1). The constants: integrators.RK45_* (10, 0.2, 0.9, -1/5).
      h *= factor; then h = min(h, T - t); the step that reaches T lands exactly on T.
    * nfe: 1 (initial derivative) + 6 per attempted step; a sample still short of T after
      RK45_MAX_ATTEMPTS attempts has failed (the caller raises RuntimeError with the count).

    Here y [dim + 1, LANES] (float64) holds a tile of samples, each lane with its own t, h
    and acceptance; the stages use y5 as scratch. A lane that reached T idles (state frozen,
    step 0) until the tile is done. Returns how many real lanes (< count) failed.
    """
    T = sde[3]
    C = y.shape[0]
    t = np.full(LANES, eps)
    hs = np.full(LANES, RK45_H0_FRACTION * (T - eps))
    hv = np.zeros(LANES)
    done = np.zeros(LANES, dtype=np.bool_)
    for lane in range(LANES):
        done[lane] = lane >= count  # padding lanes do not hold the tile back
        nfe[lane] = 1
    velocity(model, sde, t, y, K[0], dirs, ws)
    y1 = np.empty((C, LANES))
    attempt = 0
    while True:
        active = 0
        for lane in range(LANES):
            if not done[lane]:
                active += 1
        if active == 0:
            return 0
        if attempt == RK45_MAX_ATTEMPTS:
            return active
        attempt += 1
        for lane in range(LANES):
            hv[lane] = 0.0 if done[lane] else hs[lane]
        for i in range(1, 6):
            for c in range(C):
                for lane in range(LANES):
                    acc = 0.0
                    for j in range(i):
                        acc += DP_A[i, j] * K[j, c, lane]
                    y1[c, lane] = y[c, lane] + hv[lane] * acc
            for lane in range(LANES):
                ts[lane] = t[lane] + DP_C[i] * hv[lane]
            velocity(model, sde, ts, y1, K[i], dirs, ws)
        for c in range(C):
            for lane in range(LANES):
                acc = 0.0
                for i in range(6):
                    acc += DP_B[i] * K[i, c, lane]
                y5[c, lane] = y[c, lane] + hv[lane] * acc
        for lane in range(LANES):
            ts[lane] = t[lane] + hv[lane]
        velocity(model, sde, ts, y5, K[6], dirs, ws)
        for lane in range(LANES):
            if done[lane]:
                continue
            nfe[lane] += 6
            h = hs[lane]
            sq = 0.0
            for c in range(C):
                acc = 0.0
                for i in range(7):
                    acc += DP_E[i] * K[i, c, lane]
                r = h * acc / (atol + rtol * max(abs(y[c, lane]), abs(y5[c, lane])))
                sq += r * r
            err = math.sqrt(sq / C)
            if err != err:  # a trial step that overflowed: reject it and shrink
                factor = RK45_MIN_FACTOR
            else:
                factor = RK45_MAX_FACTOR if err == 0.0 else min(RK45_MAX_FACTOR, max(RK45_MIN_FACTOR,
                                                                                      RK45_SAFETY * err**RK45_EXPONENT))
            if err <= 1.0:
                if h >= T - t[lane]:  # the step that reaches T lands exactly on T
                    t[lane] = T
                    done[lane] = True
                else:
                    t[lane] = t[lane] + h
                for c in range(C):
                    y[c, lane] = y5[c, lane]
                    K[0, c, lane] = K[6, c, lane]  # FSAL
            else:
                factor = min(factor, 1.0)
            hs[lane] = min(h * factor, T - t[lane])
            if not done[lane] and h * factor < RK45_MIN_STEP_FRACTION * (T - eps):
                done[lane] = True  # step-size underflow: not finite at any step; poison log p
                y[C - 1, lane] = np.nan
