"""The logistic domain and adaptive counters of the context-mixing model (lpaq's squash/stretch and StateMap).

Units used by every ``cm_*`` module:

* a *12-bit probability* ``p`` in [0, 4095] means P(bit = 1) = p / 4096;
* a *stretched* value ``d = stretch(p)`` in [-2047, 2047] is ln(p / (1 - p))
  in units of 1/256 (the logistic domain in which the mixer adds evidence);
* counters keep 22 bits of probability (see ``counter_next``), so slow
  learning does not stall on rounding.

Like every ``cm_*`` module, this one is part of the model: changing a kernel
or a constant changes every ``cm`` file (``ContextMixingPredictor.model_version``).
"""

import numpy as np
from numba import njit

# --8<-- [start:squash]
# squash(d) = 4096 / (1 + e^(-d/256)) sampled every 128 stretch units (rounded),
# and interpolated linearly in between: integers only, identical everywhere.
SQUASH_KNOTS = np.array([1, 2, 4, 6, 10, 17, 27, 45, 74, 120, 194, 311, 488, 747, 1102, 1546, 2048,
                         2550, 2994, 3349, 3608, 3785, 3902, 3976, 4022, 4051, 4069, 4079, 4086, 4090,
                         4092, 4094, 4095], dtype=np.int64)


@njit(cache=True, inline="always")
def squash(d):
    """Logistic function: stretch units -> 12-bit probability in [1, 4095]."""
    if d > 2047:
        return 4095
    if d < -2047:
        return 1
    w = d & 127
    i = (d >> 7) + 16
    p = (SQUASH_KNOTS[i] * (128 - w) + SQUASH_KNOTS[i + 1] * w + 64) >> 7
    return min(max(p, 1), 4095)
# --8<-- [end:squash]


def _stretch_table():
    """stretch = inverse of squash: the smallest d with squash(d) >= p, for every 12-bit p."""
    table = np.empty(4096, np.int64)
    pi = 0
    for d in range(-2047, 2048):
        v = squash(d)
        table[pi : v + 1] = d
        pi = max(pi, v + 1)
    table[pi:] = 2047
    return table


STRETCH = _stretch_table()
STRETCH16 = STRETCH.astype(np.int16)  # the same in 8 KB instead of 32: the tables read on every bit share the L1 cache

# Adaptation rate of a counter that has seen n bits: 1 / (n + 1.5), in units of 2**-16.
# int32 (4 KB) rather than int64, for the same reason as STRETCH16.
RATE = np.array([(2 << 16) // (2 * n + 3) for n in range(1024)], dtype=np.int32)


@njit(cache=True, inline="always")
def stretched(v):
    """stretch(p) of a counter or hashed slot ``v``: both keep their 12-bit probability in bits 20-31."""
    return STRETCH16[np.int64(v) >> 20]


# --8<-- [start:counter]
@njit(cache=True, inline="always")
def counter_next(v, bit, limit):
    """A counter ``v`` (uint32: 22 bits of p, 10 bits of count n) after seeing ``bit``.

    p += (bit - p) / (n + 1.5), then n += 1 up to ``limit``.  The first
    observations move p a lot (the counter is a frequency count), later ones
    less and less, until n reaches ``limit``: from then on the rate stays
    1 / (limit + 1.5) and the counter tracks recent statistics.  Its 12-bit
    probability is ``v >> 20``.
    """
    n = v & 1023
    p = v >> 10
    p += (((bit << 22) - p) * np.int64(RATE[n])) >> 16
    if n < limit:
        n += 1
    return (p << 10) | n
# --8<-- [end:counter]


@njit(cache=True, inline="always")
def learn(counters, i, bit, limit):
    """Counter ``i`` of array ``counters`` learns ``bit`` (``counter_next`` in place)."""
    counters[i] = counter_next(np.int64(counters[i]), bit, limit)


# --8<-- [start:priors]
PRIOR_EXPECTED = 2    # match and run counters start as if they had seen 2 bits: the data soon take over


def counter_init(p22, n):
    """Counters (uint32, see ``counter_next``) holding probabilities ``p22`` / 2**22, as if they had seen ``n`` bits."""
    return ((np.asarray(p22, np.int64) << 10) | n).astype(np.uint32)


def expected_bit_prior(expected, length):
    """Initial match or run counters: the expected bit with probability (length + 1) / (length + 2).

    ``length`` 0 (no match) starts at 1/2.  A long match or run is trusted from
    its first use, as Laplace's rule of succession would after ``length``
    agreements; ``PRIOR_EXPECTED`` bits' worth, so the data soon take over.
    """
    q = ((np.asarray(length, np.int64) + 1) << 22) // (np.asarray(length, np.int64) + 2)
    p22 = np.where(length == 0, 1 << 21, np.where(expected == 1, q, (1 << 22) - q))
    return counter_init(p22, PRIOR_EXPECTED)
# --8<-- [end:priors]
