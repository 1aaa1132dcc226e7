"""Quantization: the ONLY place where floating-point probabilities become integers.

An arithmetic coder needs integer frequencies that the encoder and the decoder
agree on *exactly*.  A model produces floats; if the encoder and the decoder
turned those floats into integers in different ways (or in a different order of
operations) a single differing frequency would desynchronise the decoder and
every later byte would be garbage.  So every predictor in lmc_ref goes through
the one rule defined here.

The rule, for a pdf of ``n`` entries and ``T = 2**CDF_BITS``:

1. entries that are negative, NaN or infinite count as 0 ("usable" entries);
2. ``total`` is the float64 sum of the usable entries in the fixed order of
   ``_sum8`` (eight interleaved running sums, combined pairwise; -0.0 and 0.0
   count alike);
3. ``floor_i = floor(p_i * ((T - n) / total))`` (``floor(p_i / total * (T - n))``
   if that scale overflows; ``(T - n) // n`` for all if ``total`` is 0 or not finite);
4. the ``rem = (T - n) - sum(floor)`` units lost to rounding (``0 <= rem <= n``)
   go one each to the first ``rem`` symbols: ``freq_i = 1 + floor_i + [i < rem]``;
5. ``cdf[i] = i + sum(floor[:i]) + min(i, rem)``.

Properties (tested in ``tests/test_quantize.py``): every frequency >= 1, so
nothing the model calls impossible can make the data uncodable; the total is
exactly ``T``; the result is a pure function of the float input, computed with
no fast-math compilation and no library reduction whose order could change; and
``freq_i >= p_i / total * (T - n)``, so quantization costs less than
``-log2(1 - n / T)`` bits per symbol (about 2.2e-5 for bytes at T = 2**24).

Three kernels apply the rule: ``quantize_into`` writes the whole CDF;
``quantize_interval`` gives just one symbol's ``(cdf[s], cdf[s+1])`` and
``quantize_search`` finds the symbol of a decoder's target.  The last two never
build the prefix sums, which is what makes a fused predict-and-code loop fast;
the tests check that all three agree exactly.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .constants import CDF_BITS, CDF_TOTAL


@njit(cache=True, inline="always")
def _usable(p):
    """Entries that are negative, NaN or infinite count as probability 0."""
    return p if (p > 0.0 and p < np.inf) else 0.0


@njit(cache=True, inline="always")
def _sum8(x, clean):
    """Float64 sum in a fixed order: eight interleaved running sums, combined pairwise.

    The order of float additions is part of the quantization rule (it decides
    the last bits of the total), so it is spelled out rather than left to a
    library; independent chains also let the CPU add several entries at once.
    With ``clean`` false, unusable entries are replaced by 0 first.
    """
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    m = x.shape[0] - (x.shape[0] & 7)
    for i in range(0, m, 8):
        if clean:
            a0 += x[i]
            a1 += x[i + 1]
            a2 += x[i + 2]
            a3 += x[i + 3]
            a4 += x[i + 4]
            a5 += x[i + 5]
            a6 += x[i + 6]
            a7 += x[i + 7]
        else:
            a0 += _usable(x[i])
            a1 += _usable(x[i + 1])
            a2 += _usable(x[i + 2])
            a3 += _usable(x[i + 3])
            a4 += _usable(x[i + 4])
            a5 += _usable(x[i + 5])
            a6 += _usable(x[i + 6])
            a7 += _usable(x[i + 7])
    for i in range(m, x.shape[0]):
        a0 += x[i] if clean else _usable(x[i])
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


def _any_sign_bit(x):
    """True if any entry of the float array ``x`` has its sign bit set (negative, -0.0, -inf)."""
    return bool(np.signbit(x).any())


@overload(_any_sign_bit)
def _any_sign_bit_kernel(x):
    """Compiled version: OR the entries' bit patterns (vectorises, unlike a float compare)."""
    int_type = np.int32 if x.dtype == types.float32 else np.int64

    def impl(x):
        bits = x.view(int_type)
        acc = int_type(0)
        for i in range(bits.shape[0]):
            acc |= bits[i]
        return acc < 0

    return impl


# --8<-- [start:scale]
@njit(cache=True, inline="always")
def _scale(pdf, units):
    """Steps 1-2 of the rule: returns ``(fast, factor)``.

    ``fast``: every entry is usable as it is and ``floor_i = floor(p_i * factor)``
    (the usual case; a NaN or inf entry makes the plain sum NaN or inf, a
    negative one sets a sign bit).  Otherwise ``_exact_floors`` handles it.
    """
    spare = units - pdf.shape[0]
    total = _sum8(pdf, True)
    if total > 0.0 and total < np.inf and not _any_sign_bit(pdf):
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
    total = _sum8(pdf, False)
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
def _floor_sum(x, factor, start, stop):
    """sum(floor(x[i] * factor)) over [start, stop).  Here every x is usable and
    x * factor <= 2**CDF_BITS < 2**31, so the int32 conversion is exact (and it
    vectorises, unlike int64)."""
    total = 0
    for i in range(start, stop):
        total += np.int32(x[i] * factor)
    return total
# --8<-- [end:scale]


# --8<-- [start:quantize]
@njit(cache=True, inline="always")
def _cdf_from(x, factor, cdf, units):
    n = x.shape[0]
    remainder = units - n - _floor_sum(x, factor, 0, n)
    acc = 0
    cdf[0] = 0
    for i in range(n):  # floor + one guaranteed unit + one more for the first `remainder` symbols
        acc += np.int64(np.int32(x[i] * factor)) + 1 + (1 if i < remainder else 0)
        cdf[i + 1] = acc


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
    n = x.shape[0]
    below = _floor_sum(x, factor, 0, symbol)
    remainder = CDF_TOTAL - n - below - _floor_sum(x, factor, symbol, n)
    lo = symbol + below + min(symbol, remainder)
    return lo, lo + 1 + np.int64(np.int32(x[symbol] * factor)) + (1 if symbol < remainder else 0)


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
    remainder = CDF_TOTAL - n - _floor_sum(x, factor, 0, n)
    lo = 0
    for s in range(n - 1):
        hi = lo + 1 + np.int64(np.int32(x[s] * factor)) + (1 if s < remainder else 0)
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
