"""Adaptive order-k n-gram predictor: PPM-style blending with absolute discounting.

The model learns while it codes: no training data, nothing stored in the file
but the spec string.  For every order k = 0..K it keeps, for each context (the
k bytes before the current position), how often each byte followed it.  The
next-byte distribution blends all orders, highest first, the way PPM and
Kneser–Ney smoothing do::

    p(s) = sum_k  w_k * (c_k(s) - d_k(c_k(s)))  +  lam_final / 256

Each order keeps the probability mass it *discounts* from its counts (d per
count: one value for counts of 1, one for 2, one for 3+), plus a constant B_k,
and passes it down as the weight of the lower orders (the "escape"):

    w_k   = lam_k / (n_k + B_k)
    lam_{k-1} = lam_k * (D1*n1 + D2*n2 + D3*n3plus + B_k) / (n_k + B_k)

where n_k is the context's total count and n1, n2, n3plus how many distinct
bytes it saw once, twice, three or more times.  Orders whose context was never
seen are skipped; the last escape mass is spread uniformly, so every byte keeps
a non-zero probability.

Updates use PPM's *update exclusion*: counts are incremented from the highest
order down to the first order that had already seen the byte.  Lower orders
then count how many *different* contexts a byte followed, which is what makes
Kneser–Ney's lower-order distributions good (on text the difference is large:
several points of compression rate).

Memory is bounded: each order is a table of context slots (orders 1 and 2
directly indexed, orders >= 3 hashed into ``2**mem`` slots with a 32-bit check
value), each slot holding at most a fixed number of (byte, count) entries; a
new byte in a full slot replaces the least frequent one, and counts are halved
when a context's total passes a limit (so the model keeps adapting).

Two implementations produce identical bytes (tested):

* ``NGramPredictor.predict`` / ``update``: readable Python, used by the generic
  coding loop in ``lmc_ref.codec``;
* ``ngram_kernels._code_block``: the same arithmetic in one ``@njit`` loop
  fused with the arithmetic coder, used by ``fused_encode`` / ``fused_decode``.
"""

import numpy as np

from ..constants import CDF_BITS
from . import fused
from .base import Predictor, int_param, register, reject_unknown
from .ngram_kernels import HASH_MUL, HEADER, MIX_MUL, _code_block, _ideal_bits

MAX_ORDER = 8
DEFAULT_ORDER = 6
MIN_MEM, MAX_MEM, DEFAULT_MEM = 10, 24, 20

# Chosen by a small grid on enwik8_head (chapter 3 of the docs); they are part
# of the model: changing one changes every n-gram file, so it needs a new model
# version (``model_version``).
# Discounts for counts of 1, 2 and >= 3 (absolute discounting; the same for every order).
DISCOUNTS = (0.75, 1.1, 1.4)
ESCAPE_BONUS = 0.3        # B_k: extra escape mass, lets sparse contexts defer to lower orders
COUNT_LIMIT = 60000       # halve a context's counts when its total exceeds this

MASK64 = (1 << 64) - 1
# Tables sized to the input (``sized_for``): hashed slots per input byte.  An
# input of n bytes fills at most n slots of each order; 64x that keeps hash
# collisions rare enough that the rate moves by less than 0.01 % (measured on
# 2048- and 16384-byte chunks of enwik8: 1x costs 0.44 %, 4x 0.09 %, 16x 0.04 %,
# 64x 0.009 % and 0.000 %), while a 6-byte input gets the smallest tables (2**10).
SLOTS_PER_BYTE = 64
BLOCK = 1 << 16           # fused path: symbols per compiled call (progress + buffer growth)


def _entries_per_slot(k):
    """Distinct next bytes a context of order k may hold (low orders see many)."""
    return (256, 256, 124, 28)[k] if k < 4 else 28 if k == 4 else 12


def table_layout(order, mem):
    """Offsets, widths and slot counts (log2) of every order's table in one flat pool."""
    offsets, widths, slot_bits = [], [], []
    pos = 0
    for k in range(order + 1):
        bits = (0, 8, 16)[k] if k < 3 else mem
        width = HEADER + _entries_per_slot(k)
        offsets.append(pos)
        widths.append(width)
        slot_bits.append(bits)
        pos += width << bits
    return (np.array(offsets, np.int64), np.array(widths, np.int64), np.array(slot_bits, np.int64), pos)


def memory_bytes(order, mem):
    """Bytes of table memory the model with these parameters allocates."""
    return 4 * table_layout(order, mem)[3]


# ------------------------------------------------------------ predictor ----

@register("ngram")
class NGramPredictor(Predictor):
    """Adaptive order-k byte model (``ngram:order=6,mem=20``)."""

    def __init__(self, order=DEFAULT_ORDER, mem=DEFAULT_MEM):
        if not 0 <= order <= MAX_ORDER:
            raise ValueError(f"ngram order must be in 0..{MAX_ORDER}, got {order}")
        if not MIN_MEM <= mem <= MAX_MEM:
            raise ValueError(f"ngram mem must be in {MIN_MEM}..{MAX_MEM}, got {mem}")
        self.order = order
        self.mem = mem
        self._offsets, self._widths, self._slot_bits, self._pool_size = table_layout(order, mem)
        self._disc = np.array(DISCOUNTS, np.float64)
        self.reset()

    @classmethod
    def from_params(cls, **params):
        order = int_param(params, "order", DEFAULT_ORDER, 0, MAX_ORDER)
        mem = int_param(params, "mem", DEFAULT_MEM, MIN_MEM, MAX_MEM)
        reject_unknown("ngram", params)
        return cls(order=order, mem=mem)

    @classmethod
    def help_text(cls):
        return (
            f"ngram:order=K,mem=M  adaptive order-K byte contexts (K 0..{MAX_ORDER}, default {DEFAULT_ORDER}), "
            f"2**M slots per hashed order (M {MIN_MEM}..{MAX_MEM}, default {DEFAULT_MEM}: "
            f"{memory_bytes(DEFAULT_ORDER, DEFAULT_MEM) / 2**20:.0f} MiB of tables, "
            "allocated lazily as contexts are touched)"
        )

    @property
    def spec(self):
        return self.versioned_spec(f"order={self.order},mem={self.mem}")

    def sized_for(self, length):
        """This model with hashed tables sized to an input of ``length`` bytes: the next power of two
        above ``SLOTS_PER_BYTE * length`` slots, never more than ``mem`` asked for nor fewer than
        ``2**MIN_MEM``.  The spec records the result, so the decoder allocates the same."""
        mem = max(MIN_MEM, min(self.mem, (SLOTS_PER_BYTE * max(length, 1) - 1).bit_length()))
        return self if mem == self.mem else type(self)(order=self.order, mem=mem)

    def reset(self):
        # np.zeros maps fresh pages lazily: only touched slots cost memory.
        self._pool = np.zeros(self._pool_size, dtype=np.uint32)
        # fused path: orders 0 and 1 mirrored as dense float rows (see _predict)
        self._dense = np.zeros((257, 256))
        self._history = bytearray()

    # --- readable path -------------------------------------------------------

    def _slots(self):
        """(position, check) of each usable order's slot, in plain Python."""
        hist, i = self._history, len(self._history)
        kmax = min(self.order, i)
        slots = [(int(self._offsets[0]), 1)]
        h = 0
        for k in range(1, kmax + 1):
            h = ((h ^ (hist[i - k] + 1)) * HASH_MUL) & MASK64
            if k == 1:
                slot, check = hist[i - 1], 1
            elif k == 2:
                slot, check = hist[i - 2] * 256 + hist[i - 1], 1
            else:
                f = ((h ^ (h >> 31)) * MIX_MUL) & MASK64
                slot, check = f >> (64 - self.mem), ((f >> 8) & 0xFFFFFFFF) | 1
            slots.append((int(self._offsets[k]) + slot * int(self._widths[k]), check))
        return slots

    # --8<-- [start:readable_predict]
    def predict(self):
        pool = self._pool
        d1, d2, d3 = DISCOUNTS
        slots = self._slots()
        # Weights, highest order first: each order passes its escape mass down.
        lam, weights = 1.0, {}
        for k in range(len(slots) - 1, -1, -1):
            p, check = slots[k]
            n = int(pool[p + 1])
            if int(pool[p]) != check or n == 0:
                continue
            u, n1, n2 = int(pool[p + 2]), int(pool[p + 3]) & 0xFFFF, int(pool[p + 3]) >> 16
            den = n + ESCAPE_BONUS
            weights[k] = lam / den
            esc = d1 * n1 + d2 * n2 + d3 * (u - n1 - n2) + ESCAPE_BONUS
            lam = lam * esc / den
        # The uniform floor, order 0 and order 1 (if any) touch many bytes:
        # floor + w0 * (c0 - d) + w1 * (c1 - d), in this order.
        order0 = self._discounted_counts(slots[0][0])
        order1 = self._discounted_counts(slots[1][0]) if len(slots) > 1 else {}
        w0, w1 = weights.get(0, 0.0), weights.get(1, 0.0)
        pdf = [lam / 256.0 + w0 * order0.get(j, 0.0) + w1 * order1.get(j, 0.0) for j in range(256)]
        # Orders >= 2, highest first: only the bytes each context has seen.
        for k in range(len(slots) - 1, 1, -1):
            if k in weights:
                for byte, value in self._discounted_counts(slots[k][0]).items():
                    pdf[byte] += weights[k] * value
        return np.array(pdf)
    # --8<-- [end:readable_predict]

    def _discounted_counts(self, p):
        """{byte: c - d(c)} for the entries of the slot at ``p``, in stored order."""
        out = {}
        for v in self._pool[p + HEADER : p + HEADER + int(self._pool[p + 2])]:
            c = int(v) >> 8
            out[int(v) & 255] = c - DISCOUNTS[min(c, 3) - 1]
        return out

    def update(self, symbol):
        pool = self._pool
        slots = self._slots()
        for k in range(len(slots) - 1, -1, -1):
            p, check = slots[k]
            if int(pool[p]) != check:
                pool[p : p + HEADER] = (check, 0, 0, 0)
            if self._count(p, int(self._widths[k]), symbol):
                break  # update exclusion
        self._history.append(symbol)

    def _count(self, p, width, s):
        """Python twin of the compiled ``_count``: one more occurrence of ``s`` in slot ``p``."""
        pool = self._pool
        u = int(pool[p + 2])
        n1, n2 = int(pool[p + 3]) & 0xFFFF, int(pool[p + 3]) >> 16
        entries = [int(v) for v in pool[p + HEADER : p + HEADER + u]]
        found = next((e for e in range(u) if entries[e] & 255 == s), None)
        if found is not None:
            c = entries[found] >> 8
            entries[found] += 256
            n1, n2 = (n1 - 1, n2 + 1) if c == 1 else (n1, n2 - 1) if c == 2 else (n1, n2)
        else:
            if HEADER + u < width:
                entries.append(256 | s)
            else:
                emin = min(range(u), key=lambda e: (entries[e] >> 8, e))
                c = entries[emin] >> 8
                pool[p + 1] -= c
                n1, n2 = (n1 - 1, n2) if c == 1 else (n1, n2 - 1) if c == 2 else (n1, n2)
                entries[emin] = 256 | s
            n1 += 1
        pool[p + 1] += 1
        if pool[p + 1] > COUNT_LIMIT:
            entries = [((v >> 8) >> 1) << 8 | (v & 255) for v in entries if (v >> 8) >> 1 > 0]
            pool[p + 1] = sum(v >> 8 for v in entries)
            n1 = sum(1 for v in entries if v >> 8 == 1)
            n2 = sum(1 for v in entries if v >> 8 == 2)
        pool[p + 2] = len(entries)
        pool[p + HEADER : p + HEADER + len(entries)] = entries
        pool[p + 3] = n1 | (n2 << 16)
        return found is not None

    # --- fused path ----------------------------------------------------------

    def _block_coder(self):
        """The compiled loop with this model's tables bound in (see ``fused``)."""
        self.reset()

        def code_block(hist, start, end, decode, st, buf, payload):
            _code_block(hist, start, end, decode, self.order, self.mem, self._pool, self._dense, self._offsets,
                        self._widths, self._disc, ESCAPE_BONUS, COUNT_LIMIT, st, buf, payload)

        return code_block

    def ideal_bits(self, data):
        """-log2 of the model's probability of ``data`` (uint8 array), from an empty context."""
        self.reset()
        hist = np.array(data, dtype=np.uint8)
        return float(_ideal_bits(hist, self.order, self.mem, self._pool, self._dense, self._offsets,
                                 self._widths, self._disc, ESCAPE_BONUS, COUNT_LIMIT))

    def fused_encode(self, data, progress=None):
        return fused.encode(data, self._block_coder(), BLOCK, CDF_BITS + 2, progress)

    def fused_decode(self, payload, length, progress=None):
        return fused.decode(payload, length, self._block_coder(), BLOCK, progress)
