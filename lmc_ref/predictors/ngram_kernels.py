"""Compiled kernels of the n-gram predictor (see ``ngram.py`` for the model).

Each function here has a plain-Python twin in ``NGramPredictor`` (``_slots``,
``predict``, ``_count``, ``update``); the tests check that both produce the same
bytes.  The model state is one flat ``uint32`` array, ``pool``, holding every
order's table of context slots::

    slot = [check, n (total count), u (distinct bytes), n1 | n2 << 16, entry 0, entry 1, ...]
    entry = count << 8 | byte          (entries 0..u-1 are live, in insertion order)

plus ``dense``, a float mirror of the discounted counts of order 0 and of each
order-1 context (see ``_predict``).
"""

import numpy as np
from numba import njit

from ..coder import decode_interval, decoder_target, encode_interval
from ..quantize import quantize_interval, quantize_search

HEADER = 4                # slot words: check, total n, distinct u, n1 | n2 << 16
HASH_MUL = 0x9E3779B97F4A7C15
MIX_MUL = 0xBF58476D1CE4E5B9


@njit(cache=True, inline="always")
def _locate(hist, i, order, mem, offsets, widths, slot_pos, checks):
    """Slot position and check value of every order's context at position ``i``.

    Returns the highest usable order (limited by how many bytes precede ``i``).
    """
    kmax = min(order, i)
    h = np.uint64(0)
    slot_pos[0] = offsets[0]
    checks[0] = 1
    for k in range(1, kmax + 1):
        b = np.uint64(hist[i - k])
        h = (h ^ (b + np.uint64(1))) * np.uint64(HASH_MUL)
        if k == 1:
            slot = np.int64(b)
            checks[k] = 1
        elif k == 2:
            slot = np.int64(hist[i - 2]) * 256 + np.int64(hist[i - 1])
            checks[k] = 1
        else:
            f = (h ^ (h >> np.uint64(31))) * np.uint64(MIX_MUL)
            slot = np.int64(f >> np.uint64(64 - mem))
            checks[k] = np.uint32((f >> np.uint64(8)) & np.uint64(0xFFFFFFFF)) | np.uint32(1)
        slot_pos[k] = offsets[k] + slot * widths[k]
    return kmax


# --8<-- [start:predict]
@njit(cache=True, inline="always")
def _predict(pool, dense, prev, kmax, slot_pos, checks, disc, bonus, weights, pdf):
    """Write the blended next-byte distribution into ``pdf`` (see module docstring).

    ``dense`` mirrors the discounted counts ``c - d(c)`` of order 0 (row 0) and
    of every order-1 context (row 1 + previous byte) as floats, kept up to date
    by ``_refresh_dense``: the terms that touch many bytes then take one
    vectorisable pass, and only orders >= 2 walk their (short) lists of entries.
    ``prev`` is the previous byte (ignored when ``kmax == 0``).
    """
    lam = 1.0
    for k in range(kmax, -1, -1):  # weights, highest order first
        weights[k] = 0.0
        p = slot_pos[k]
        n = np.int64(pool[p + 1])
        if pool[p] != checks[k] or n == 0:
            continue
        u = np.int64(pool[p + 2])
        n1 = np.int64(pool[p + 3]) & 0xFFFF
        n2 = np.int64(pool[p + 3]) >> 16
        den = n + bonus
        weights[k] = lam / den
        esc = disc[0] * n1 + disc[1] * n2 + disc[2] * (u - n1 - n2) + bonus
        lam = lam * esc / den
    floor = lam / 256.0
    w0 = weights[0]
    w1 = weights[1] if kmax >= 1 else 0.0
    row0 = dense[0]
    row1 = dense[1 + prev] if kmax >= 1 else dense[0]  # with w1 == 0 the row does not matter
    for j in range(256):
        pdf[j] = floor + w0 * row0[j] + w1 * row1[j]
    for k in range(kmax, 1, -1):  # orders >= 2: only the bytes each context has seen
        w = weights[k]
        if w == 0.0:
            continue
        p = slot_pos[k]
        for e in range(np.int64(pool[p + 2])):
            v = np.int64(pool[p + HEADER + e])
            c = v >> 8
            pdf[v & 255] += w * (c - disc[min(c, 3) - 1])
# --8<-- [end:predict]


@njit(cache=True, inline="always")
def _refresh_dense(pool, p, row, disc, s, where):
    """Bring a dense row up to date after ``_count`` changed byte ``s`` of the slot at ``p``.

    ``where`` is the entry index of ``s`` returned by ``_count``, or -1 when the
    slot was halved (every entry changed: rebuild the whole row).
    """
    if where >= 0:
        c = np.int64(pool[p + HEADER + where]) >> 8
        row[s] = c - disc[min(c, 3) - 1]
        return
    for j in range(256):
        row[j] = 0.0
    for e in range(np.int64(pool[p + 2])):
        v = np.int64(pool[p + HEADER + e])
        c = v >> 8
        row[v & 255] = c - disc[min(c, 3) - 1]


@njit(cache=True, inline="always")
def _count(pool, p, width, s, limit):
    """Add one occurrence of byte ``s`` to the slot at ``p``.

    Returns ``(seen, where)``: whether ``s`` was already there, and the entry
    index that now holds it (-1 if the counts were halved).
    """
    u = np.int64(pool[p + 2])
    n1 = np.int64(pool[p + 3]) & 0xFFFF
    n2 = np.int64(pool[p + 3]) >> 16
    seen = False
    where = u
    for e in range(u):
        v = np.int64(pool[p + HEADER + e])
        if (v & 255) == s:
            where = e
            c = v >> 8
            pool[p + HEADER + e] = v + 256
            if c == 1:
                n1 -= 1
                n2 += 1
            elif c == 2:
                n2 -= 1
            seen = True
            break
    if not seen:
        if HEADER + u < width:  # room for a new byte
            pool[p + HEADER + u] = 256 | s
            pool[p + 2] = u + 1
        else:  # full: the least frequent byte (first on ties) makes room
            emin = 0
            for e in range(1, u):
                if (pool[p + HEADER + e] >> 8) < (pool[p + HEADER + emin] >> 8):
                    emin = e
            c = np.int64(pool[p + HEADER + emin]) >> 8
            pool[p + 1] -= c
            if c == 1:
                n1 -= 1
            elif c == 2:
                n2 -= 1
            pool[p + HEADER + emin] = 256 | s
            where = emin
        n1 += 1
    pool[p + 1] += 1
    if pool[p + 1] > limit:  # halve all counts, dropping bytes whose count reaches 0
        total = 0
        kept = 0
        n1 = 0
        n2 = 0
        for e in range(np.int64(pool[p + 2])):
            v = np.int64(pool[p + HEADER + e])
            c = (v >> 8) >> 1
            if c > 0:
                pool[p + HEADER + kept] = (c << 8) | (v & 255)
                kept += 1
                total += c
                if c == 1:
                    n1 += 1
                elif c == 2:
                    n2 += 1
        pool[p + 1] = total
        pool[p + 2] = kept
        where = -1
    pool[p + 3] = n1 | (n2 << 16)
    return seen, where


# --8<-- [start:update]
@njit(cache=True, inline="always")
def _update(pool, dense, prev, kmax, slot_pos, checks, widths, disc, s, limit):
    """Count byte ``s`` from the highest order down to the first that already knew it."""
    for k in range(kmax, -1, -1):
        p = slot_pos[k]
        if pool[p] != checks[k]:  # a new context (or a hash collision): start the slot afresh
            pool[p] = checks[k]
            pool[p + 1] = 0
            pool[p + 2] = 0
            pool[p + 3] = 0
        seen, where = _count(pool, p, widths[k], s, limit)
        if k <= 1:  # orders 0 and 1 are mirrored as dense float rows
            _refresh_dense(pool, p, dense[0] if k == 0 else dense[1 + prev], disc, s, where)
        if seen:
            break
# --8<-- [end:update]


# --8<-- [start:code_block]
@njit(cache=True)
def _code_block(hist, start, end, decode, order, mem, pool, dense, offsets, widths, disc, bonus, limit,
                st, buf, payload):
    """Predict + quantize + (en|de)code + update for positions [start, end).

    ``decode`` selects the direction; the model arithmetic is literally the
    same code either way, which is what keeps encoder and decoder in step.
    """
    pdf = np.empty(256)
    slot_pos = np.zeros(order + 1, np.int64)
    checks = np.zeros(order + 1, np.uint32)
    weights = np.zeros(order + 1)
    for i in range(start, end):
        kmax = _locate(hist, i, order, mem, offsets, widths, slot_pos, checks)
        prev = np.int64(hist[i - 1]) if i > 0 else 0
        _predict(pool, dense, prev, kmax, slot_pos, checks, disc, bonus, weights, pdf)
        # Quantize lazily: only the coded symbol's bounds, never the whole CDF.
        if decode:
            s, lo, hi = quantize_search(pdf, decoder_target(st))
            decode_interval(st, payload, lo, hi)
            hist[i] = s
        else:
            s = np.int64(hist[i])
            lo, hi = quantize_interval(pdf, s)
            encode_interval(st, buf, lo, hi)
        _update(pool, dense, prev, kmax, slot_pos, checks, widths, disc, s, limit)
# --8<-- [end:code_block]


@njit(cache=True)
def _ideal_bits(hist, order, mem, pool, dense, offsets, widths, disc, bonus, limit):
    """Sum of -log2 p(x_i | x_<i) under the float model (no coding): the ideal length
    that evaluation reports beside the real one."""
    pdf = np.empty(256)
    slot_pos = np.zeros(order + 1, np.int64)
    checks = np.zeros(order + 1, np.uint32)
    weights = np.zeros(order + 1)
    bits = 0.0
    for i in range(hist.shape[0]):
        kmax = _locate(hist, i, order, mem, offsets, widths, slot_pos, checks)
        prev = np.int64(hist[i - 1]) if i > 0 else 0
        _predict(pool, dense, prev, kmax, slot_pos, checks, disc, bonus, weights, pdf)
        s = np.int64(hist[i])
        bits -= np.log2(pdf[s] / pdf.sum())
        _update(pool, dense, prev, kmax, slot_pos, checks, widths, disc, s, limit)
    return bits
