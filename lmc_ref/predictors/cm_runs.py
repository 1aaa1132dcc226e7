"""The run model of the context-mixing predictor (the run part of PAQ8's RunContextMap).

Each context of orders 2, 3, 4, 5 and of the two word models remembers the
byte that followed it last and how many times in a row; while the bits of
the current byte agree with that byte, the run predicts its next bit.  A run
takes no memory of its own: it sits in the spare top half of the check word
of its context's first-nibble bucket (``run_lookup``).

Part of the model: changing a kernel or a constant changes every ``cm`` file.
"""

import numpy as np
from numba import njit

from .cm_contexts import bucket_check, nibble_hash
from .cm_counters import expected_bit_prior

RUN_MODEL0, N_RUNS = 1, 6  # the run model follows hashed models 1..6 (orders 2, 3, 4, 5, the word models)
RUN_COUNTERS = N_RUNS * 16 * 2 * 8   # run model: (run, run length 1..15+, expected bit, bit position)
LIMIT_RUN = 1023          # count limit of the run model's counters


# --8<-- [start:run]
@njit(cache=True)
def run_lookup(tables, slots, ridx, rb, rc):
    """New byte: each run model's context's run, the byte that followed it last and how often in a row.

    Run ``r`` belongs to hashed model ``RUN_MODEL0 + r``.  The run lives in
    the top 16 bits of the check word of the context's first-nibble bucket
    (just selected, so already in cache): the byte, then the run length (0:
    none yet).  ``ridx`` remembers where, for ``run_store``.
    """
    for r in range(N_RUNS):
        m = RUN_MODEL0 + r
        ridx[r] = slots[m]
        e = np.int64(tables[m, slots[m]]) >> 16
        rb[r] = e >> 8
        rc[r] = e & 255


@njit(cache=True)
def run_store(tables, hashes, ridx, rb, rc, byte):
    """End of byte: record ``byte`` in the run of each context it followed (grows if repeated, else 1).

    ``hashes`` are still those of the byte's contexts.  A bucket that the
    second nibble's lookup took over meanwhile (its check differs) is left alone.
    """
    for r in range(N_RUNS):
        m = RUN_MODEL0 + r
        chk = bucket_check(nibble_hash(hashes[m], 1))  # the bucket of partial byte 1
        if (np.int64(tables[m, ridx[r]]) & 0xFFFF) == chk:
            n = min(rc[r] + 1, 255) if rc[r] > 0 and rb[r] == byte else 1
            tables[m, ridx[r]] = (((byte << 8) | n) << 16) | chk


@njit(cache=True, inline="always")
def run_context(r, rb, rc, c0, bitpos):
    """Counter index of run ``r``'s prediction for this bit, or -1 if it has none.

    The run's byte predicts while the bits so far agree with it; how much to
    trust it is learned per (run model, run length up to 15, expected bit, bit position).
    """
    if rc > 0 and ((rb | 256) >> (8 - bitpos)) == c0:
        expected = (rb >> (7 - bitpos)) & 1
        return ((r * 16 + min(rc, 15)) * 2 + expected) * 8 + bitpos
    return -1


def run_prior():
    """``expected_bit_prior`` for every run counter (index layout of ``run_context``; run lengths 1..15)."""
    i = np.arange(RUN_COUNTERS)
    return expected_bit_prior((i >> 3) & 1, (i >> 4) & 15)
# --8<-- [end:run]
