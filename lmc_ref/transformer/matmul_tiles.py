"""Fixed-order float32 matrix products on the CPU, register-tiled, for the coding kernels.

The coder needs products whose every output is one sum taken in one fixed
order, ``y[r, o] = (((0 + x[r, 0] w[0, o]) + x[r, 1] w[1, o]) + ...)``: a
separate multiply and add per term, ascending input index, no fused
multiply-add and no reassociation.  Then an output's bits depend on its row and
column alone, never on how the work is tiled, which rows share a call or which
thread computes it -- what lets the encoder's prefill and the decoder's
lockstep see the same probabilities.

A compiler may not reorder float additions on its own, so to use the CPU's
wide registers the order has to be spelled out: ``_tile`` is a microkernel in
LLVM IR that keeps a block of up to ``ROWS`` rows by ``TILE`` outputs in vector
registers (``TILE / 16`` sixteen-lane vectors per row) and, for each input
index in turn, multiplies a broadcast ``x[r, i]`` by the ``TILE`` weights of
row ``i`` and adds the products lane by lane.  Vector multiplies and adds are
lane-wise IEEE operations, so a machine without 512-bit registers splits them
and gets the same bits.

Weight matrices are packed as ``[tiles, n_in, TILE]`` (``pack``): the slice
that one microkernel call streams is contiguous, so the hardware prefetcher
follows it and one page serves many rows of it.  The last tile is padded with
zero columns, which only produce outputs that are never stored.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

LANE = 16  # floats in one vector of the microkernel
VECTORS = 4  # vectors per row of a tile
TILE = LANE * VECTORS  # outputs of one tile
ROWS = 4  # rows of one tile: ROWS * VECTORS = 16 accumulators, half the vector registers


def _tile_kernel(rows):
    """The microkernel for ``rows`` rows (``1 <= rows <= ROWS``), as a Numba intrinsic.

    ``kernel(x, r0, w, col0, out, out_col0)``: for ``r < rows`` and ``o < TILE``,
    ``out[r, out_col0 + o] = sum_i x[r0 + r, i] * w[i, col0 + o]`` over
    ascending ``i < x.shape[1]``.  ``x`` ``[*, n_in]``, ``w`` ``[n_in, *]`` and
    ``out`` are C-contiguous float32 arrays; ``block`` checks that the rows and
    columns exist before it calls a kernel.
    """

    @intrinsic
    def kernel(typingctx, x, r0, w, col0, out, out_col0):
        f32 = ir.FloatType()
        vec = ir.VectorType(f32, LANE)
        broadcast = ir.Constant(ir.VectorType(ir.IntType(32), LANE), [0] * LANE)

        def codegen(context, builder, signature, args):
            xa = context.make_array(signature.args[0])(context, builder, args[0])
            wa = context.make_array(signature.args[2])(context, builder, args[2])
            oa = context.make_array(signature.args[4])(context, builder, args[4])
            n_in = builder.extract_value(xa.shape, 1)
            w_stride = builder.extract_value(wa.shape, 1)
            out_stride = builder.extract_value(oa.shape, 1)
            idx = n_in.type
            # The accumulators live in allocas of the entry block, which LLVM keeps in registers.
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * LANE)) for _ in range(VECTORS)]
                   for _ in range(rows)]
            x_rows = [builder.gep(xa.data, [builder.mul(builder.add(args[1], idx(r)), n_in)]) for r in range(rows)]
            w_col = builder.gep(wa.data, [args[3]])
            with cgutils.for_range(builder, n_in) as loop:
                i = loop.index
                w_row = builder.gep(w_col, [builder.mul(i, w_stride)])
                ws = [builder.load(builder.bitcast(builder.gep(w_row, [idx(LANE * v)]), vec.as_pointer()), align=4)
                      for v in range(VECTORS)]
                for r in range(rows):
                    xi = builder.load(builder.gep(x_rows[r], [i]))
                    xb = builder.insert_element(ir.Constant(vec, ir.Undefined), xi, ir.Constant(ir.IntType(32), 0))
                    xb = builder.shuffle_vector(xb, xb, broadcast)
                    for v in range(VECTORS):
                        builder.store(builder.fadd(builder.load(acc[r][v]), builder.fmul(xb, ws[v])), acc[r][v])
            for r in range(rows):
                out_row = builder.gep(oa.data, [builder.add(builder.mul(idx(r), out_stride), args[5])])
                for v in range(VECTORS):
                    p = builder.gep(out_row, [idx(v * LANE)])
                    builder.store(builder.load(acc[r][v]), builder.bitcast(p, vec.as_pointer()), align=4)
            return context.get_dummy_value()

        return types.void(x, types.intp, w, types.intp, out, types.intp), codegen

    return kernel


_tile1, _tile2, _tile3, _tile4 = (_tile_kernel(r) for r in range(1, ROWS + 1))


@njit(cache=True, inline="always")
def block(x, r0, rows, w, col0, width, out, out_col0):
    """``out[r, out_col0 + o] = sum_i x[r0 + r, i] * w[i, col0 + o]`` for ``r < rows <= ROWS``
    and ``o < width <= TILE``, each sum over ascending ``i < x.shape[1]``.

    ``x``, ``w`` and ``out`` are 2-D C-contiguous float32 arrays.  A whole tile
    of ``w`` goes to the microkernel; a tile cut short by the edge of ``w`` or
    ``out`` is summed by the plain loop below, in the same order, so it gives
    the same bits.
    """
    if col0 + TILE <= w.shape[1] and out_col0 + TILE <= out.shape[1]:
        if rows == 4:
            _tile4(x, r0, w, col0, out, out_col0)
        elif rows == 3:
            _tile3(x, r0, w, col0, out, out_col0)
        elif rows == 2:
            _tile2(x, r0, w, col0, out, out_col0)
        else:
            _tile1(x, r0, w, col0, out, out_col0)
        return
    for r in range(rows):
        for o in range(width):
            acc = np.float32(0.0)
            for i in range(x.shape[1]):
                acc += x[r0 + r, i] * w[i, col0 + o]
            out[r, out_col0 + o] = acc


def pack(wt):
    """``wt`` ``[n_in, n_out]`` as ``[tiles, n_in, TILE]`` float32, the last tile padded with zeros."""
    n_in, n_out = wt.shape
    packed = np.zeros(((n_out + TILE - 1) // TILE, n_in, TILE), np.float32)
    for t in range(packed.shape[0]):
        part = wt[:, t * TILE:(t + 1) * TILE]
        packed[t, :, :part.shape[1]] = part
    return packed


@njit(cache=True, inline="always")
def packed_item(wp, i, o):
    """Entry ``wt[i, o]`` of the matrix that ``pack`` packed into ``wp``."""
    return wp[o // TILE, i, o % TILE]


# --8<-- [start:matmul]
@njit(parallel=True, cache=True)
def matmul(x, wp, y):
    """``y = x @ wt`` for ``wp = pack(wt)``: ``y[r, o] = sum_i x[r, i] * wt[i, o]`` over ascending ``i``.

    Each (tile, row block) job is one thread's; the jobs of one tile are
    consecutive, so a thread streams a tile's weights once from memory and
    reuses them from its cache for the tile's other row blocks.
    """
    R, n_out = y.shape
    blocks = (R + ROWS - 1) // ROWS
    tiles = (n_out + TILE - 1) // TILE
    for job in prange(tiles * blocks):
        t, r0 = job // blocks, (job % blocks) * ROWS
        rows = min(R, r0 + ROWS) - r0
        o0 = t * TILE
        width = min(n_out, o0 + TILE) - o0
        out = np.empty((ROWS, TILE), np.float32)
        block(x, r0, rows, wp[t], 0, width, out, 0)
        for r in range(rows):
            for o in range(width):
                y[r0 + r, o0 + o] = out[r, o]
# --8<-- [end:matmul]
