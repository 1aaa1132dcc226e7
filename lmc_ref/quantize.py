"""Quantization: the ONLY place where floating-point probabilities become integers.

An arithmetic coder needs integer frequencies that the encoder and the decoder
agree on *exactly*.  A model produces floats; if the encoder and the decoder
turned those floats into integers in different ways (or in a different order of
operations) a single differing frequency would desynchronise the decoder and
every later byte would be garbage.  So every predictor in lmc_ref goes through
the one rule defined here.

The rule, for a pdf of ``n`` entries and ``T = 2**CDF_BITS``:

1. entries that are negative, NaN or infinite count as 0 ("usable" entries);
2. ``total`` is the float64 sum of the usable entries in a fixed order:
   sixteen running sums ("lanes"; lane ``j`` adds entries ``j, j+16, j+32, ...``
   of the first ``16 * (n // 16)``), folded in half four times (lane ``j``
   plus lane ``j + 8``, then ``j + 4``, ``j + 2``, ``j + 1``), then the
   ``n % 16`` leftover entries added one by one (-0.0 and 0.0 count alike);
3. ``floor_i = floor(p_i * ((T - n) / total))`` (``floor(p_i / total * (T - n))``
   if that scale overflows; ``(T - n) // n`` for all if ``total`` is 0 or not finite);
4. ``freq_i = 1 + floor_i`` for every symbol but the last, which takes what is
   left: ``freq_{n-1} = T - (n - 1) - sum(floor[:n-1])`` (at least ``1 + floor_{n-1}``:
   the floors never sum to more than ``T - n``);
5. so ``cdf[i] = i + sum(floor[:i])`` for ``i < n`` and ``cdf[n] = T``.

Properties (tested in ``tests/test_quantize.py``): every frequency >= 1, so
nothing the model calls impossible can make the data uncodable; the total is
exactly ``T``; the result is a pure function of the float input, computed with
no fast-math compilation and no library reduction whose order could change; and
``freq_i >= p_i / total * (T - n)``, so quantization costs less than
``-log2(1 - n / T)`` bits per symbol (about 2.2e-5 for bytes at T = 2**24).

Why this shape: it is what makes a fused predict-and-code loop fast.  The
sixteen lanes let the CPU add sixteen entries at a time (the order of float
additions decides the last bits of the total, so it must be spelled out, and a
compiler may not reorder it by itself); giving the rounding remainder to the
last symbol means the encoder needs the floors of the symbols *below* the one
it codes and nothing after it, and the decoder can stop as soon as it has
passed its target.  Every floor sum is an integer sum, which any order gets
right, so those loops are free to run vectorised.

Three kernels apply the rule: ``quantize_into`` writes the whole CDF;
``quantize_interval`` gives just one symbol's ``(cdf[s], cdf[s+1])`` and
``quantize_search`` finds the symbol of a decoder's target.  The last two never
build the prefix sums; the tests check that all three agree exactly.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .constants import CDF_BITS, CDF_TOTAL

LANES = 16  # running sums in the total of step 2 (part of the rule)
BLOCK = 16  # entries per vectorised floor sum in the decoder's search (not part of the rule)


@njit(cache=True, inline="always")
def _usable(p):
    """Entries that are negative, NaN or infinite count as probability 0."""
    return p if (p > 0.0 and p < np.inf) else 0.0


# --8<-- [start:scale]
def _lane_total(x, clean=True):
    """Step 2 of the rule: ``(total, negative)``.

    ``total`` is the float64 sum in the rule's order (sixteen lanes folded in
    half, then the leftover entries); ``negative`` says whether any entry has
    its sign bit set (negative, -0.0, -inf or a negative NaN).  With ``clean``
    false, unusable entries are replaced by 0 first.  This plain-Python body is
    the reference; compiled code uses the version below, which does the same
    additions sixteen at a time.
    """
    m = x.shape[0] - x.shape[0] % LANES
    lanes = [0.0] * LANES
    for i in range(m):
        lanes[i % LANES] += float(x[i]) if clean else _usable(float(x[i]))
    while len(lanes) > 1:
        half = len(lanes) // 2
        lanes = [lanes[j] + lanes[j + half] for j in range(half)]
    total = lanes[0]
    for i in range(m, x.shape[0]):
        total += float(x[i]) if clean else _usable(float(x[i]))
    return total, bool(np.signbit(x).any())


def _vector_input(x):
    """Typing-time test: a 1-D C-contiguous float32/float64 array, which the vector kernels can load."""
    return (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"
            and x.dtype in (types.float32, types.float64))


@intrinsic
def _lane_sums(typingctx, x):
    """``(folded lane sum, any sign bit)`` over the first ``16 * (n // 16)`` entries
    of a contiguous float32/float64 array, as explicit 16-wide vector operations.

    Written in LLVM IR because that is the one way to say "these sixteen float
    additions are independent" to a compiler that must not reorder float
    arithmetic on its own.  Vector adds are lane-wise IEEE additions, so the
    result is the same on every CPU (a machine without wide vectors splits them).
    """
    if not _vector_input(x):
        return None
    width = x.dtype.bitwidth

    def codegen(context, builder, signature, args):
        ary = context.make_array(x)(context, builder, args[0])
        n = builder.extract_value(ary.shape, 0)
        m = builder.sub(n, builder.srem(n, n.type(LANES)))
        f64s = ir.VectorType(ir.DoubleType(), LANES)
        loaded = ir.VectorType(context.get_value_type(x.dtype), LANES)
        ints = ir.VectorType(ir.IntType(width), LANES)
        acc = cgutils.alloca_once_value(builder, ir.Constant(f64s, [0.0] * LANES))
        bits = cgutils.alloca_once_value(builder, ir.Constant(ints, [0] * LANES))
        with cgutils.for_range_slice(builder, n.type(0), m, n.type(LANES)) as (i, _):
            v = builder.load(builder.bitcast(builder.gep(ary.data, [i]), loaded.as_pointer()), align=width // 8)
            builder.store(builder.or_(builder.load(bits), builder.bitcast(v, ints)), bits)
            if width == 32:
                v = builder.fpext(v, f64s)
            builder.store(builder.fadd(builder.load(acc), v), acc)
        # Fold in half: lane j + lane j + half, until one lane is left.
        vec, orv, size = builder.load(acc), builder.load(bits), LANES
        while size > 1:
            half = size // 2
            lo = ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half)))
            hi = ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half, size)))
            vec = builder.fadd(builder.shuffle_vector(vec, vec, lo), builder.shuffle_vector(vec, vec, hi))
            orv = builder.or_(builder.shuffle_vector(orv, orv, lo), builder.shuffle_vector(orv, orv, hi))
            size = half
        zero = ir.Constant(ir.IntType(32), 0)
        total = builder.extract_element(vec, zero)
        negative = builder.icmp_signed("<", builder.extract_element(orv, zero), ir.Constant(ir.IntType(width), 0))
        return context.make_tuple(builder, signature.return_type, [total, negative])

    return types.Tuple([types.float64, types.boolean])(x), codegen


@overload(_lane_total)
def _lane_total_kernel(x, clean=True):
    vector = _vector_input(x)

    def impl(x, clean=True):
        n = x.shape[0]
        m = n - n % LANES
        if vector and clean:
            total, negative = _lane_sums(x)
        else:  # the same additions one at a time
            lanes = np.zeros(LANES)
            negative = False
            for i in range(m):
                lanes[i % LANES] += x[i] if clean else _usable(x[i])
                negative |= np.signbit(x[i])
            half = LANES // 2
            while half > 0:
                for j in range(half):
                    lanes[j] += lanes[j + half]
                half //= 2
            total = lanes[0]
        for i in range(m, n):
            total += x[i] if clean else _usable(x[i])
            negative |= np.signbit(x[i])
        return total, negative

    return impl


@njit(cache=True, inline="always")
def _scale(pdf, units):
    """Steps 1-2 of the rule: returns ``(fast, factor)``.

    ``fast``: every entry is usable as it is and ``floor_i = floor(p_i * factor)``
    (the usual case; a NaN or inf entry makes the plain sum NaN or inf, a
    negative one sets a sign bit).  Otherwise ``_exact_floors`` handles it.
    """
    spare = units - pdf.shape[0]
    total, negative = _lane_total(pdf)
    if total > 0.0 and total < np.inf and not negative:
        factor = spare / total
        if factor < np.inf:
            return True, factor
    return False, 0.0


@njit(cache=True)
def _exact_floors(pdf, units):
    """Step 3 for the rare cases (unusable entries, subnormal or zero total), as
    exact integers in a float64 array, so the loops below can use them with a
    factor of 1."""
    n = pdf.shape[0]
    spare = units - n
    total, _ = _lane_total(pdf, False)
    out = np.empty(n)
    for i in range(n):
        if not (total > 0.0 and total < np.inf):
            out[i] = spare // n  # nothing usable: uniform
        elif spare / total < np.inf:
            out[i] = np.int32(_usable(pdf[i]) * (spare / total))
        else:  # subnormal total: spare / total overflows, divide first
            out[i] = np.int32(_usable(pdf[i]) / total * spare)
    return out


@njit(cache=True, inline="always")
def _floor(p, factor):
    """floor(p * factor).  In the fast path every p is usable and p * factor <= T
    < 2**31, so the int32 conversion is exact (and it vectorises, unlike int64)."""
    return np.int32(p * factor)


@njit(cache=True, inline="always")
def _floor_sum_below(x, factor, stop):
    """sum(floor[:stop]): an integer sum, so the compiler may vectorise it freely."""
    total = np.int32(0)  # <= T - n < 2**31
    for i in range(stop):
        total = np.int32(total + _floor(x[i], factor))
    return np.int64(total)
# --8<-- [end:scale]


# --8<-- [start:quantize]
@njit(cache=True, inline="always")
def _cdf_from(x, factor, cdf, units):
    n = x.shape[0]
    cdf[0] = 0
    acc = 0
    for i in range(n - 1):  # floor + one guaranteed unit; the last symbol takes the rest
        acc += np.int64(_floor(x[i], factor)) + 1
        cdf[i + 1] = acc
    cdf[n] = units


@njit(cache=True, inline="always")
def quantize_units(pdf, cdf, units):
    """``quantize_into`` with a total of ``units`` (a power of two <= 2**30) instead
    of ``2**CDF_BITS``; used by ``bench/quantization.py`` to measure other widths."""
    fast, factor = _scale(pdf, units)
    if fast:  # the usual case
        _cdf_from(pdf, factor, cdf, units)
    else:
        _cdf_from(_exact_floors(pdf, units), 1.0, cdf, units)


@njit(cache=True, inline="always")
def quantize_into(pdf, cdf):
    """Write the integer CDF of ``pdf`` into ``cdf`` (length ``len(pdf) + 1``).

    ``cdf[0] == 0``, ``cdf[-1] == 2**CDF_BITS`` and ``cdf[s + 1] - cdf[s] >= 1``
    is the frequency of symbol ``s`` (the rule is in the module docstring).
    """
    quantize_units(pdf, cdf, CDF_TOTAL)
# --8<-- [end:quantize]


# --8<-- [start:lazy]
@njit(cache=True, inline="always")
def _interval_from(x, factor, symbol):
    lo = symbol + _floor_sum_below(x, factor, symbol)
    if symbol == x.shape[0] - 1:  # the last symbol takes the rest
        return lo, np.int64(CDF_TOTAL)
    return lo, lo + 1 + np.int64(_floor(x[symbol], factor))


@njit(cache=True, inline="always")
def quantize_interval(pdf, symbol):
    """``(cdf[symbol], cdf[symbol + 1])`` of ``quantize_into``, without building the CDF."""
    fast, factor = _scale(pdf, CDF_TOTAL)
    if fast:
        return _interval_from(pdf, factor, symbol)
    return _interval_from(_exact_floors(pdf, CDF_TOTAL), 1.0, symbol)


@njit(cache=True, inline="always")
def _search_from(x, factor, target):
    n = x.shape[0]
    lo = np.int64(0)
    start = 0
    for b in range((n - 1) // BLOCK):  # skip whole blocks that end at or below the target
        step = BLOCK + _block_floor_sum(x, b * BLOCK, factor)
        if target < lo + step:
            break
        lo += step
        start += BLOCK
    for s in range(start, n - 1):
        hi = lo + 1 + np.int64(_floor(x[s], factor))
        if target < hi:
            return s, lo, hi
        lo = hi
    return n - 1, lo, np.int64(CDF_TOTAL)


@njit(cache=True, inline="always")
def quantize_search(pdf, target):
    """The symbol s with ``cdf[s] <= target < cdf[s + 1]``, and those two bounds.

    ``target`` must lie in [0, 2**CDF_BITS) (a decoder's target always does).
    """
    fast, factor = _scale(pdf, CDF_TOTAL)
    if fast:
        return _search_from(pdf, factor, target)
    return _search_from(_exact_floors(pdf, CDF_TOTAL), 1.0, target)
# --8<-- [end:lazy]


def _block_floor_sum(x, start, factor):
    """sum(floor(x[i] * factor) for i in [start, start + 16)); plain-Python reference."""
    return sum(int(np.int32(float(x[i]) * factor)) for i in range(start, start + BLOCK))


@intrinsic
def _block_floors(typingctx, x, start, factor):
    """The 16 floors of ``_block_floor_sum`` as one vector load, multiply and
    conversion, summed as integers (exact in any order)."""
    if not _vector_input(x):
        return None
    width = x.dtype.bitwidth

    def codegen(context, builder, signature, args):
        ary = context.make_array(x)(context, builder, args[0])
        loaded = ir.VectorType(context.get_value_type(x.dtype), BLOCK)
        f64s = ir.VectorType(ir.DoubleType(), BLOCK)
        i32s = ir.VectorType(ir.IntType(32), BLOCK)
        v = builder.load(builder.bitcast(builder.gep(ary.data, [args[1]]), loaded.as_pointer()), align=width // 8)
        if width == 32:
            v = builder.fpext(v, f64s)
        scale = builder.insert_element(ir.Constant(f64s, ir.Undefined), args[2], ir.Constant(ir.IntType(32), 0))
        scale = builder.shuffle_vector(scale, scale, ir.Constant(i32s, [0] * BLOCK))
        floors = builder.fptosi(builder.fmul(v, scale), i32s)
        reduce_add = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [i32s]), "llvm.vector.reduce.add.v16i32")
        return builder.sext(builder.call(reduce_add, [floors]), ir.IntType(64))

    return types.int64(x, types.intp, types.float64), codegen


@overload(_block_floor_sum)
def _block_floor_sum_kernel(x, start, factor):
    if _vector_input(x):
        return lambda x, start, factor: _block_floors(x, start, factor)

    def impl(x, start, factor):
        total = np.int32(0)
        for i in range(start, start + BLOCK):
            total = np.int32(total + _floor(x[i], factor))
        return np.int64(total)

    return impl


def _checked(pdf):
    pdf = np.ascontiguousarray(pdf, dtype=np.float64)
    if pdf.ndim != 1 or pdf.shape[0] == 0:
        raise ValueError("pdf must be a non-empty 1-D array")
    if pdf.shape[0] > CDF_TOTAL // 2:
        raise ValueError(f"alphabet of {pdf.shape[0]} symbols is too large for CDF_BITS={CDF_BITS}")
    return pdf


@njit(cache=True)
def _quantize_into(pdf, cdf):
    quantize_into(pdf, cdf)


def quantize(pdf):
    """Return the integer CDF (``int64``, length ``len(pdf) + 1``) of a float pdf.

    Args:
        pdf: 1-D array of floats (need not sum to 1; unusable entries count as
            0).  At most ``2**(CDF_BITS - 1)`` symbols.

    Raises:
        ValueError: if ``pdf`` is not 1-D, is empty or has too many symbols.
    """
    pdf = _checked(pdf)
    cdf = np.empty(pdf.shape[0] + 1, dtype=np.int64)
    _quantize_into(pdf, cdf)
    return cdf
