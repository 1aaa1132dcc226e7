"""The adaptive probability maps of the context-mixing predictor (lpaq's APM, secondary estimation).

An APM refines a probability in a small context: the input is stretched and
placed between two of 33 knots, the output interpolated between their values;
the two knots learn toward each coded bit.  The model uses two, and the coder
the average of their outputs (``final_p``).

Part of the model: changing a kernel or a constant changes every ``cm`` file.
"""

import numpy as np
from numba import njit

from .cm_counters import STRETCH16, squash

APM_ROWS = 33             # APM interpolation knots per context
APM_RATE = 7              # APM knots move 1/2**APM_RATE of the way to each bit in the long run (see apm_rate)
P_MIN, P_MAX = 16, 65520   # final 16-bit probability is clamped to this range


# --8<-- [start:apm]
@njit(cache=True, inline="always")
def apm_knot(pr, cx):
    """Where 12-bit ``pr`` falls in context ``cx``: (index of the lower knot, weight of the upper, /128)."""
    s = np.int64(STRETCH16[pr]) + 2048  # 1 .. 4095
    return (s >> 7) + cx * APM_ROWS, s & 127


@njit(cache=True, inline="always")
def apm_interp(lo, hi, w):
    """16-bit output: linear interpolation between the two knots."""
    return (np.int64(lo) * (128 - w) + np.int64(hi) * w) >> 7


@njit(cache=True, inline="always")
def apm_refine(apm, pr, cx):
    """APM table ``apm``'s 16-bit refinement of 12-bit ``pr`` in context ``cx``, and its lower knot (to learn)."""
    i, w = apm_knot(pr, cx)
    return apm_interp(apm[i], apm[i + 1], w), i


@njit(cache=True, inline="always")
def apm_next(v, bit, rate):
    """A knot after ``bit``: it moves 1/2**rate of the way to 0 or 65535."""
    return v + ((((bit << 16) - bit) - v) >> rate)


@njit(cache=True, inline="always")
def apm_update(apm, i, bit, rate):
    """The two knots ``i``, ``i + 1`` that refined the last probability learn ``bit``."""
    apm[i] = apm_next(np.int64(apm[i]), bit, rate)
    apm[i + 1] = apm_next(np.int64(apm[i + 1]), bit, rate)


@njit(cache=True, inline="always")
def apm_rate(pos):
    """The APMs' rate (a shift) after ``pos`` bytes: 1/16 of the way for the first 4 KB, 1/32 to 64 KB, 1/64 to
    256 KB, then 1/128: a young map catches up quickly, an old one is steady."""
    if pos < 4096:
        return APM_RATE - 3
    if pos < 65536:
        return APM_RATE - 2
    return APM_RATE - 1 if pos < 262144 else APM_RATE


@njit(cache=True, inline="always")
def apm1_context(c0, c4):
    """APM 1 context: the partial byte and a 16-bit hash of the last 3 bytes."""
    return (c0 ^ (((c4 & 0xFFFFFF) * 0x9E3779B1) >> 16)) & 0xFFFF


@njit(cache=True, inline="always")
def apm2_context(c0, c4):
    """APM 2 context: the partial byte and the previous byte."""
    return c0 | ((c4 & 255) << 8)


@njit(cache=True, inline="always")
def final_p(a1, a2):
    """The coder's 16-bit P(1): the average of the two APMs' refinements of the mixer's output, clamped."""
    p = (a1 + a2 + 1) >> 1
    return min(max(p, P_MIN), P_MAX)
# --8<-- [end:apm]


def apm_init(contexts):
    """APM table whose every context starts as the identity map (knot j -> squash of its centre)."""
    row = np.array([squash((j - 16) * 128) * 16 for j in range(APM_ROWS)], dtype=np.uint16)
    return np.tile(row, contexts)
