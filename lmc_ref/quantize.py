"""Quantization: the ONLY place where floating-point probabilities become integers.

An arithmetic coder needs integer frequencies that the encoder and the decoder
agree on *exactly*.  A model produces floats; if the encoder and the decoder
turned those floats into integers in different ways (or in a different order of
operations) a single differing frequency would desynchronise the decoder and
every later byte would be garbage.  So every predictor in lmc_ref goes through
this one pure function.

Rules (tested in ``tests/test_quantize.py``):

* every symbol gets a frequency >= 1 (nothing the model calls "impossible" can
  make the data uncodable);
* the frequencies sum to exactly ``2**CDF_BITS``;
* the result is a deterministic function of the float input: a sequential
  left-to-right loop, float64 arithmetic, no fastmath, no parallel reduction.
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
def _sum4(x, clean):
    """Float sum in a fixed order: four interleaved running sums, combined pairwise.

    The order of float additions is part of the quantization rule (it decides
    the last bits of the total), so it is spelled out rather than left to a
    library; four independent chains also run about four times faster than one.
    With ``clean`` false, unusable entries are replaced by 0 first.
    """
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    m = x.shape[0] - (x.shape[0] & 3)
    for i in range(0, m, 4):
        if clean:
            a0 += x[i]
            a1 += x[i + 1]
            a2 += x[i + 2]
            a3 += x[i + 3]
        else:
            a0 += _usable(x[i])
            a1 += _usable(x[i + 1])
            a2 += _usable(x[i + 2])
            a3 += _usable(x[i + 3])
    for i in range(m, x.shape[0]):
        a0 += x[i] if clean else _usable(x[i])
    return (a0 + a1) + (a2 + a3)


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


# --8<-- [start:quantize]
@njit(cache=True)
def quantize_into(pdf, cdf):
    """Write the integer CDF of ``pdf`` into ``cdf`` (length ``len(pdf) + 1``).

    ``cdf[0] == 0``, ``cdf[-1] == 2**CDF_BITS`` and
    ``cdf[s + 1] - cdf[s] >= 1`` is the frequency of symbol ``s``.

    The rule: entries that are negative, NaN or infinite count as 0; ``total``
    is their float64 sum in the fixed order of ``_sum4``.  Each symbol gets
    ``1 + floor(p * ((2**CDF_BITS - n) / total))`` (``floor(p / total * (2**CDF_BITS - n))``
    if that scale overflows); the few units lost to
    rounding go to the first symbol with the largest frequency, where they cost
    the least.  If ``total`` is 0 or not finite, every symbol gets the same
    share (uniform).
    """
    n = pdf.shape[0]
    spare = CDF_TOTAL - n  # units left after the guaranteed 1 per symbol
    # Fast check that every entry is usable: no sign bit set (negatives, -0.0,
    # -inf, some NaNs) and a finite sum (any NaN or +inf makes the sum NaN/inf).
    total = _sum4(pdf, True)
    clean = total < np.inf and not _any_sign_bit(pdf)
    if not clean:  # rare: the same sum over the usable entries only
        total = _sum4(pdf, False)
    cdf[0] = 0
    if not (total > 0.0 and total < np.inf):  # nothing usable: uniform
        for i in range(n):
            cdf[i + 1] = spare // n
    else:
        # p * scale <= spare < 2**31 for usable p, so the int32 conversion is exact (and fast)
        scale = spare / total
        if clean and scale < np.inf:
            for i in range(n):
                cdf[i + 1] = np.int32(pdf[i] * scale)
        elif scale < np.inf:
            for i in range(n):
                cdf[i + 1] = np.int32(_usable(pdf[i]) * scale)
        else:  # total is subnormal: spare / total overflows, so divide first
            for i in range(n):
                cdf[i + 1] = np.int32(_usable(pdf[i]) / total * spare)
    # cdf[1:] now holds floor(p * scale).  The rounding remainder (fewer than n
    # units) goes to the first most probable symbol ...
    largest = 0
    remainder = spare
    for i in range(n):
        largest = max(largest, cdf[i + 1])
        remainder -= cdf[i + 1]
    best = 0
    while cdf[best + 1] != largest:
        best += 1
    cdf[best + 1] += remainder
    # ... every symbol gets its guaranteed 1, and prefix sums make the CDF.
    for i in range(n):
        cdf[i + 1] += cdf[i] + 1
# --8<-- [end:quantize]


def quantize(pdf):
    """Return the integer CDF (``int64``, length ``len(pdf) + 1``) of a float pdf.

    Args:
        pdf: 1-D array of non-negative floats (need not sum to 1).  At most
            ``2**CDF_BITS`` symbols.

    Raises:
        ValueError: if ``pdf`` is not 1-D, is empty or has too many symbols.
    """
    pdf = np.ascontiguousarray(pdf, dtype=np.float64)
    if pdf.ndim != 1 or pdf.shape[0] == 0:
        raise ValueError("pdf must be a non-empty 1-D array")
    if pdf.shape[0] > CDF_TOTAL // 2:
        raise ValueError(f"alphabet of {pdf.shape[0]} symbols is too large for CDF_BITS={CDF_BITS}")
    cdf = np.empty(pdf.shape[0] + 1, dtype=np.int64)
    quantize_into(pdf, cdf)
    return cdf
