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
from numba import njit

from .constants import CDF_BITS, CDF_TOTAL


@njit(cache=True, inline="always")
def _sum4(x):
    """Float sum in a fixed order: four interleaved running sums, combined pairwise.

    The order of float additions is part of the quantization rule (it decides
    the last bits of the total), so it is spelled out rather than left to a
    library: four independent chains also run about four times faster than one.
    """
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    m = x.shape[0] - (x.shape[0] & 3)
    for i in range(0, m, 4):
        a0 += x[i]
        a1 += x[i + 1]
        a2 += x[i + 2]
        a3 += x[i + 3]
    for i in range(m, x.shape[0]):
        a0 += x[i]
    return (a0 + a1) + (a2 + a3)


@njit(cache=True, inline="always")
def _min4(x):
    """Smallest entry, or NaN-free 0.0 lower bound: min(0, x...) (NaN entries are ignored here)."""
    low = 0.0
    for i in range(x.shape[0]):
        if x[i] < low:
            low = x[i]
    return low


# --8<-- [start:quantize]
@njit(cache=True)
def quantize_into(pdf, cdf):
    """Write the integer CDF of ``pdf`` into ``cdf`` (length ``len(pdf) + 1``).

    ``cdf[0] == 0``, ``cdf[-1] == 2**CDF_BITS`` and
    ``cdf[s + 1] - cdf[s] >= 1`` is the frequency of symbol ``s``.

    The rule: entries that are negative, NaN or infinite count as 0; ``total``
    is the left-to-right float64 sum of the rest.  Each symbol gets
    ``1 + floor(p * (2**CDF_BITS - n) / total)``; the few units lost to
    rounding go to the first symbol with the largest frequency, where they cost
    the least.  If ``total`` is 0 or not finite, every symbol gets the same
    share (uniform).
    """
    n = pdf.shape[0]
    spare = CDF_TOTAL - n  # units left after the guaranteed 1 per symbol
    total = _sum4(pdf)
    clean = _min4(pdf) >= 0.0 and total < np.inf  # a NaN or inf entry makes total NaN or inf
    if not clean:  # rare: sum only the usable entries
        total = 0.0
        for i in range(n):
            p = pdf[i]
            if p > 0.0 and p < np.inf:
                total += p
    cdf[0] = 0
    if not (total > 0.0 and total < np.inf):  # nothing usable: uniform
        for i in range(n):
            cdf[i + 1] = spare // n
    elif clean:  # the hot path: p * scale <= spare < 2**31, so the int32 conversion is exact
        scale = spare / total
        for i in range(n):
            cdf[i + 1] = np.int32(pdf[i] * scale)
    else:
        scale = spare / total
        for i in range(n):
            p = pdf[i]
            cdf[i + 1] = np.int32(p * scale) if (p > 0.0 and p < np.inf) else 0
    # cdf[1:] now holds floor(p * scale); the most probable symbol (first on ties) ...
    best = 0
    for i in range(1, n):
        if cdf[i + 1] > cdf[best + 1]:
            best = i
    # ... gets the rounding remainder (fewer than n units), every symbol gets +1,
    # and prefix sums turn frequencies into the cumulative distribution.
    remainder = spare
    for i in range(n):
        remainder -= cdf[i + 1]
    cdf[best + 1] += remainder
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
