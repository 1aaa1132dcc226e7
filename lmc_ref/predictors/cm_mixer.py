"""The mixer of the context-mixing predictor: four gated logistic mixers (lpaq's Mixer), averaged.

Each mixer is online logistic regression over the same inputs (the stretched
predictions of every model, laid out below), with one weight set per value
of its own small context (``mixer_rows``); the four outputs are averaged in
the logistic domain.

Part of the model: changing a kernel or a constant changes every ``cm`` file.
"""

import numpy as np
from numba import njit

from .cm_contexts import N_HASHED
from .cm_counters import squash
from .cm_match import MATCH_COUNTERS
from .cm_runs import N_RUNS

# The mixer's inputs, in order (stretch units):
X_ORDER0 = 0                        # the order-0 counter
X_DIRECT = X_ORDER0 + 1             # per hashed model, its slot's probability
X_HISTORY = X_DIRECT + N_HASHED     # per hashed model, what its slot's bit history predicts (the indirect map)
X_MATCH = X_HISTORY + N_HASHED      # the match model's counter
X_BIAS = X_MATCH + 1                # a constant, BIAS
X_RUN = X_BIAS + 1                  # per run model, its counter (0 without a run)
X_ONE_SIDED = X_RUN + N_RUNS        # per hashed model, the indirect prediction again if its history is one-sided
X_MATCH_LENGTH = X_ONE_SIDED + N_HASHED   # the match length, signed by the expected bit (``match_strength``)
N_INPUTS = X_MATCH_LENGTH + 1
BIAS = 256                # the constant input

MIX_RATE = 6         # mixer learning rate in the long run (weight step = rate * err * x / 2**14)
MIX_BOOST, MIX_BOOST_BYTES = 131072, 4096   # the extra rate early on: MIX_BOOST / (bytes seen + MIX_BOOST_BYTES)
MIX_INIT = 6144       # initial mixer weight (3/32)

# The four mixers' weight sets, stacked in one table (see ``mixer_rows``):
MIXER_SETS = (2 * 4 * 16 * 256,             # mixer 1: (7+ contexts known, run length, class, partial byte)
              (MATCH_COUNTERS >> 11) * 256,  # mixer 2: (match length bucket, expected bit, partial byte)
              256 * 8 * 8,                   # mixer 3: (previous byte, top 3 bits of the one before, bit position)
              256 * 8 * 8)                   # mixer 4: (the byte before it, top 3 bits of the previous, bit position)
MIXER_OFFSETS = tuple(int(v) for v in np.cumsum((0,) + MIXER_SETS[:-1]))
MIXER_ROWS = sum(MIXER_SETS)


# --8<-- [start:mixer]
@njit(cache=True, inline="always")
def mixer_rows(known, shape, run_length, mctx, c0, c4, bitpos):
    """The weight set each of the four mixers uses for this bit (rows of the stacked table).

    Mixer 1 is selected by the class of the last byte, the length of its run
    (1, 2, 3, 4+), whether at least 7 of the 8 hashed contexts are known, and
    the partial byte; mixer 2 by the match state and the partial byte; mixer
    3 by the previous byte with the top 3 bits of the byte before it (for
    text: letter, digit, space or punctuation, upper or lower case), mixer 4
    the other way round, both with the bit position.  So the trust given to
    each input can differ by bit position, by familiarity, by match length and
    by what the text just said: the first letters of a word need other
    weights than its later ones, a digit than a letter.
    """
    c1, c2 = c4 & 255, (c4 >> 8) & 255
    run_bucket = min(max(run_length, 1), 4) - 1
    return ((((known >= 7) * 4 + run_bucket) * 16 + (shape & 15)) * 256 + c0,
            MIXER_OFFSETS[1] + (mctx >> 11) * 256 + c0,
            MIXER_OFFSETS[2] + ((c1 * 8 + (c2 >> 5)) << 3) + bitpos,
            MIXER_OFFSETS[3] + ((c2 * 8 + (c1 >> 5)) << 3) + bitpos)


@njit(cache=True, inline="always")
def clamp_dot(dot):
    """sum_i w_i * x_i (weights in units of 2**-16) -> stretch units, clamped to +-2047."""
    return min(max(dot >> 16, -2047), 2047)


@njit(cache=True, inline="always")
def mixer_dots(weights, x, rows):
    """The four mixers' outputs for inputs ``x``, in their weight sets ``rows``: clamped dot products."""
    r1, r2, r3, r4 = rows
    d1 = np.int64(0)
    d2 = np.int64(0)
    d3 = np.int64(0)
    d4 = np.int64(0)
    for m in range(N_INPUTS):
        d1 += x[m] * np.int64(weights[r1, m])
        d2 += x[m] * np.int64(weights[r2, m])
        d3 += x[m] * np.int64(weights[r3, m])
        d4 += x[m] * np.int64(weights[r4, m])
    return clamp_dot(d1), clamp_dot(d2), clamp_dot(d3), clamp_dot(d4)


@njit(cache=True, inline="always")
def mixer_rate(pos):
    """The mixers' learning rate after ``pos`` bytes: 38 at the start, 22 after 4 KB, 6 in the long run.

    A fresh weight set knows nothing, and on a short input (Table 1's 2 KB
    chunks) a slow mixer never catches up; a fast one would keep chasing
    noise on a long input.
    """
    return MIX_RATE + MIX_BOOST // (pos + MIX_BOOST_BYTES)


@njit(cache=True, inline="always")
def mixer_error(pr, bit, rate):
    """Scaled prediction error (bit - p) of a mixer whose output was ``pr``."""
    return ((bit << 12) - pr) * rate


@njit(cache=True, inline="always")
def mixer_step(x, err):
    """Weight change for input ``x``: rate * (bit - p) * x, the gradient of the coding cost."""
    return (x * err + (1 << 13)) >> 14


@njit(cache=True, inline="always")
def mixer_update(weights, x, rows, dots, bit, rate):
    """Each mixer's weight set ``rows[k]`` learns from its own output ``dots[k]`` and the coded ``bit``."""
    r1, r2, r3, r4 = rows
    # the errors fit in 16 bits: as int32, the updates below multiply 32 by 32 bits
    e1 = np.int32(mixer_error(squash(dots[0]), bit, rate))
    e2 = np.int32(mixer_error(squash(dots[1]), bit, rate))
    e3 = np.int32(mixer_error(squash(dots[2]), bit, rate))
    e4 = np.int32(mixer_error(squash(dots[3]), bit, rate))
    # one loop per mixer: the compiler cannot tell that the rows differ, and
    # vectorizes a row's update only on its own
    for m in range(N_INPUTS):
        weights[r1, m] += mixer_step(x[m], e1)
    for m in range(N_INPUTS):
        weights[r2, m] += mixer_step(x[m], e2)
    for m in range(N_INPUTS):
        weights[r3, m] += mixer_step(x[m], e3)
    for m in range(N_INPUTS):
        weights[r4, m] += mixer_step(x[m], e4)
# --8<-- [end:mixer]
