"""Lane rows: LLVM vector intrinsics for the Numba kernels' tiles.

A work array is [rows, LANES] float32, C-contiguous; row j holds unit j for every sample of
the tile. These intrinsics load and store whole rows as <LANES x float> vectors. Written as
plain loops, LLVM would keep them scalar: it cannot prove that two numba arrays do not
overlap, and the lane loop is unrolled before the vectoriser could add a runtime check.
The vector ops are the lane-by-lane IEEE operations in the same order (fmul, fadd: no
fusion, no reassociation), so each lane computes exactly what scalar code would.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16  # samples per tile: one AVX-512 register of float32 (two AVX2 ones)

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


def _row_map(fn, doc):
    """An intrinsic z[j, :] = fn(src[i, :]) for fn a map of one <LANES x float> vector."""

    def impl(typingctx, z, j, src, i):
        if not (_is_rows(z) and _is_rows(src) and isinstance(j, types.Integer) and isinstance(i, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            v = _vload(builder, _row_ptr(context, builder, sig.args[2], args[2], sig.args[3], args[3]))
            _vstore(builder, fn(builder, v), _row_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1]))
            return context.get_dummy_value()

        return types.void(z, j, src, i), codegen

    impl.__doc__ = doc
    return intrinsic(impl)


_ZERO = ir.Constant(_VEC, [0.0] * LANES)
row_copy = _row_map(lambda builder, v: v, "z[j, :] = src[i, :].")
row_relu = _row_map(lambda builder, v: builder.select(builder.fcmp_ordered(">", v, _ZERO), v, _ZERO),
                    "z[j, :] = max(src[i, :], 0) (z > 0 ? z : 0, lane by lane).")


@intrinsic
def accumulate(typingctx, P, w, x, s0, n_in, z, d0, n_out):
    """z[d0 + j] += sum_k W[j, k] x[s0 + k] for j < n_out, k < n_in, rows of LANES float32; W^T
    k-major in the 1-D float32 P from offset w (W[j, k] at P[w + k n_out + j]). Lane by lane
    z[j] = (...((z[j] + W[j, 0] x[0]) + W[j, 1] x[1]) ...) + W[j, n_in-1] x[n_in-1], net.h's
    order. Emitted as loops over input quads (x rows loaded once per quad, kept in registers)
    and output rows (z row loaded, four multiply-adds, stored); indices, not array views, so
    a network row costs no allocation."""
    ints = (w, s0, n_in, d0, n_out)
    if not (isinstance(P, types.Array) and P.ndim == 1 and P.dtype == types.float32 and P.layout == "C"
            and _is_rows(x) and _is_rows(z) and all(isinstance(i, types.Integer) for i in ints)):
        return None

    def codegen(context, builder, sig, args):
        pty, _, xty, _, _, zty, _, _ = sig.args
        intp = context.get_value_type(types.intp)
        cast = lambda i: context.cast(builder, args[i], sig.args[i], types.intp)  # noqa: E731
        w0, s0_, n_in_, d0_, n_out_ = (cast(i) for i in (1, 3, 4, 6, 7))
        Parr = context.make_array(pty)(context, builder, args[0])
        pdata = Parr.data

        def const(v):
            return ir.Constant(intp, v)

        def pass_over_z(k0, n_terms):
            xs = [_vload(builder, _row_ptr(context, builder, xty, args[2], types.intp,
                                           builder.add(s0_, builder.add(k0, const(q))))) for q in range(n_terms)]
            with cgutils.for_range(builder, n_out_) as loop:
                j = loop.index
                zp = _row_ptr(context, builder, zty, args[5], types.intp, builder.add(d0_, j))
                acc = _vload(builder, zp)
                for q in range(n_terms):
                    idx = builder.add(w0, builder.add(builder.mul(builder.add(k0, const(q)), n_out_), j))
                    wp = builder.gep(pdata, [idx])
                    acc = builder.fadd(acc, builder.fmul(_splat(builder, builder.load(wp)), xs[q]))
                _vstore(builder, acc, zp)

        n_quads = builder.sdiv(n_in_, const(4))
        with cgutils.for_range(builder, n_quads) as loop:
            pass_over_z(builder.mul(loop.index, const(4)), 4)
        with cgutils.for_range_slice(builder, builder.mul(n_quads, const(4)), n_in_, const(1), inc=True) as (k, _):
            pass_over_z(k, 1)
        return context.get_dummy_value()

    return types.void(P, w, x, s0, n_in, z, d0, n_out), codegen
