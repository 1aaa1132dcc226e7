"""The match model of the context-mixing predictor (lpaq's MatchModel).

The most recent earlier occurrence of the last bytes predicts the byte that
followed it: while the bytes since then keep agreeing, each bit of that byte
is a strong guess.  Two hash tables remember where the last 6 and the last
10 bytes occurred last (``match_byte_update``); counters indexed by the match
length and the expected bit learn how far to trust the guess (``match_context``).

Part of the model: changing a kernel or a constant changes every ``cm`` file.
"""

import numpy as np
from numba import njit

from .cm_contexts import HASH_MUL, finalize
from .cm_counters import expected_bit_prior

MATCH_COUNTERS = 56 * 8 * 256   # match model: (length bucket, expected bit), bit position, previous byte
MATCH_MIN = 6             # the match model's first candidate follows the last 6 bytes
MATCH_LONG = 10           # the match model's second candidate follows the last 10 bytes
MATCH_VERIFY = 32         # a candidate's match length is counted back this far at most
MATCH_SHORT = 16          # a match shorter than this may give way to the 10-byte candidate
LIMIT_MATCH = 1023        # count limit of the match model's counters


# --8<-- [start:match]
@njit(cache=True, inline="always")
def match_context(predicted, mm_len, c0, bitpos, c1):
    """Counter index of the match model: (length bucket, expected bit, bit position, previous byte).

    ``predicted`` is the byte that followed the match (when ``mm_len > 0``).
    Length bucket 0 means "no match, or the match already failed in this byte".
    Every bit of a byte has its own counters, so that a byte's bits are
    predicted from the state at the start of the byte (see ``byte_pdf``).
    """
    if mm_len > 0 and ((predicted | 256) >> (8 - bitpos)) == c0:
        expected = (predicted >> (7 - bitpos)) & 1
        lc = mm_len if mm_len < 16 else 12 + min(mm_len >> 2, 15)
        return (((lc * 2 + expected) << 3) + bitpos) * 256 + c1
    return bitpos * 256 + c1


@njit(cache=True, inline="always")
def match_strength(mctx, mm_len):
    """The match model's second input: the match length, signed by the expected bit.

    +-64 stretch units per byte of match, up to 32 bytes, toward the bit the
    match expects; 0 with no match (or one the byte has left).  It needs no
    counter: the mixer learns how much a long match is worth per weight set,
    which is quicker than a counter per length bucket learns it on its own.
    ``mctx`` is ``match_context``'s index: from bit 11 up, 2 * length bucket + expected bit.
    """
    if (mctx >> 11) == 0:
        return 0
    return (((mctx >> 11) & 1) * 2 - 1) * min(mm_len, 32) * 64


@njit(cache=True, inline="always")
def history_hash(hist, pos, n):
    """Hash of the ``n`` bytes before position ``pos`` of ``hist``."""
    h = np.uint64(0)
    for q in range(pos - n, pos):
        h = (h + np.uint64(hist[q]) + np.uint64(1)) * np.uint64(HASH_MUL)
    return finalize(h)


@njit(cache=True, inline="always")
def match_length_at(hist, pos, cand):
    """How many bytes before ``cand`` equal those before ``pos`` (up to ``MATCH_VERIFY``)."""
    n = 0
    while n < MATCH_VERIFY and cand - n - 1 >= 0 and hist[cand - n - 1] == hist[pos - n - 1]:
        n += 1
    return n


@njit(cache=True)
def match_byte_update(hist, pos, mm_table, mm_bits, mm_len, mm_ptr):
    """After byte ``hist[pos - 1]``: extend or drop the match, look for a new or longer one, index ``pos``.

    Row 0 of ``mm_table`` maps the hash of the last ``MATCH_MIN`` (6) bytes
    to the position that followed them last time, row 1 the hash of the last
    ``MATCH_LONG`` bytes.  Without a match the 6-byte candidate is tried;
    then, while the match is shorter than ``MATCH_SHORT`` bytes, the longer context's
    candidate replaces it if it agrees further back: the last place where 6
    bytes occurred is often a worse guess than the last place where 10 did.
    Returns the new (length, pointer); length 0 means no match.
    """
    if mm_len > 0 and hist[mm_ptr] == hist[pos - 1]:
        mm_len = min(mm_len + 1, 65535)
        mm_ptr += 1
    else:
        mm_len = 0
    if pos >= MATCH_MIN:
        idx = np.int64(history_hash(hist, pos, MATCH_MIN) >> np.uint64(64 - mm_bits))
        if mm_len == 0:
            cand = np.int64(mm_table[0, idx])
            if cand > 0:
                n = match_length_at(hist, pos, cand)
                if n > 0:
                    mm_len = n
                    mm_ptr = cand
        mm_table[0, idx] = pos
    if pos >= MATCH_LONG:
        idx = np.int64(history_hash(hist, pos, MATCH_LONG) >> np.uint64(64 - mm_bits))
        if mm_len < MATCH_SHORT:
            cand = np.int64(mm_table[1, idx])
            if cand > 0 and cand != mm_ptr:
                n = match_length_at(hist, pos, cand)
                if n > mm_len:
                    mm_len = n
                    mm_ptr = cand
        mm_table[1, idx] = pos
    return mm_len, mm_ptr


def match_prior():
    """``expected_bit_prior`` for every match counter (index layout of ``match_context``).

    Length buckets 1..15 are the match length; from 16 on a bucket holds lengths 4 (b - 12) .. 4 (b - 12) + 3.
    """
    i = np.arange(MATCH_COUNTERS)
    bucket = i >> 12
    return expected_bit_prior((i >> 11) & 1, np.where(bucket < 16, bucket, (bucket - 12) * 4))
# --8<-- [end:match]
