"""Compiled arithmetic of the context-mixing predictor (see ``context_mixing.py`` for the model).

The model's arithmetic is a set of small functions of integers (``counter_next``,
``slot_next``, ``match_context``, ``mixer_step``, ``apm_next``, ...).  Two
callers share them: the readable component classes of ``context_mixing.py``
run their plain-Python originals one step at a time, and the fused loop
``code_block`` at the bottom of this file runs them compiled, inlined, in the
same order, fused with the arithmetic coder.  The two paths therefore do the
same integer arithmetic and emit the same bytes (``tests/test_context_mixing.py``
checks it).  Functions that touch the big tables once per nibble or byte
(``lookup_nibble``, ``context_hashes``, ``match_byte_update``) are compiled
only, and called by both paths.

Units used throughout:

* a *12-bit probability* ``p`` in [0, 4095] means P(bit = 1) = p / 4096;
* a *stretched* value ``d = stretch(p)`` in [-2047, 2047] is ln(p / (1 - p))
  in units of 1/256 (the logistic domain in which the mixer adds evidence);
* counters keep 22 bits of probability (see ``counter_next``), hashed slots
  and APM knots 16 bits, so slow learning does not stall on rounding.
"""

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from ..coder import decode_bit, encode_bit

HASH_MUL = 0x9E3779B97F4A7C15
MIX_MUL = 0xBF58476D1CE4E5B9
NIBBLE_MUL = 0x94D049BB133111EB
BUCKET = 16               # words per hash bucket: 1 check word + 15 counters (a nibble's bit tree)
N_HASHED = 8              # hashed context models: byte classes, orders 2, 3, 4, 5, two word models, the text shape
RUN_MODEL0, N_RUNS = 1, 6  # the run model follows hashed models 1..6 (orders 2, 3, 4, 5, the word models)
N_INPUTS = 3 * N_HASHED + N_RUNS + 4   # mixer inputs: order 0, 2 per hashed model, the match model, a bias,
#                                        a run per run model, a one-sided history per hashed model, the match length
BIAS = 256                # the constant input (stretch units)
APM_ROWS = 33             # APM interpolation knots per context
MATCH_COUNTERS = 56 * 8 * 256   # match model: (length bucket, expected bit), bit position, previous byte
MATCH_MIN = 6             # the match model's first candidate follows the last 6 bytes
MATCH_LONG = 10           # the match model's second candidate follows the last 10 bytes
MATCH_VERIFY = 32         # a candidate's match length is counted back this far at most
MATCH_SHORT = 16          # a match shorter than this may give way to the 10-byte candidate
RUN_COUNTERS = N_RUNS * 16 * 2 * 8   # run model: (run, run length 1..15+, expected bit, bit position)
X_MATCH = 2 * N_HASHED + 1    # the mixer input of the match model; X_MATCH + 1: the bias; then the runs
X_RUN = 2 * N_HASHED + 3
X_ONE_SIDED = X_RUN + N_RUNS  # the one-sided-history inputs (see ``one_sided``)
X_MATCH_LENGTH = X_ONE_SIDED + N_HASHED   # the match model's second input (see ``match_strength``)
assert X_MATCH_LENGTH + 1 == N_INPUTS

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
STRETCH16 = STRETCH.astype(np.int16)  # the same in 8 KB instead of 32, for the coding loop (L1 cache)

# Adaptation rate of a counter that has seen n bits: 1 / (n + 1.5), in units of 2**-16.
# int32 (4 KB) rather than int64: the tables read on every bit should fit the L1 cache together.
RATE = np.array([(2 << 16) // (2 * n + 3) for n in range(1024)], dtype=np.int32)


# llvm.prefetch's name carries its pointer type: opaque pointers (``p0``) from LLVM 17 on.
_PREFETCH = "llvm.prefetch.p0" if llvm_binding.llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"


@intrinsic
def prefetch(typingctx, arr, index):
    """Ask the CPU to start loading ``arr.flat[index]``'s cache line now (a hint: no effect on results).

    ``code_block`` knows at the start of a bit which APM rows, match counter
    and mixer row it will read at the end of it, once the mixer has run; on
    1 MB of text those tables miss the cache, and loading them while the mixer
    computes made coding about 12 % faster.  ``index`` is a flat element index
    of a C-contiguous array.  The readable path has no twin: a prefetch changes
    no value.
    """
    if not (isinstance(arr, types.Array) and arr.layout == "C" and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(arr)(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]), _PREFETCH)
        # read (0), keep in all cache levels (3), data cache (1)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, types.intp), codegen


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


# --8<-- [start:hashing]
@njit(cache=True, inline="always")
def finalize(h):
    """Mix the bits of a uint64 so that every output bit depends on every input bit."""
    h ^= h >> np.uint64(29)
    h *= np.uint64(MIX_MUL)
    h ^= h >> np.uint64(32)
    return h


@njit(cache=True, inline="always")
def context_hash(value, k):
    """Hash of context ``value`` (a non-negative int) for model number ``k``."""
    return finalize((np.uint64(value) + np.uint64(k + 1)) * np.uint64(HASH_MUL))


@njit(cache=True)
def context_hashes(hashes, c4, c8, word, word_prev, shape, run_length, classes):
    """The eight hashed contexts for the next byte: byte classes, orders 2, 3, 4, 5, two word contexts, the shape.

    ``c4`` holds the last 4 bytes (most recent lowest), ``c8`` the 4 before
    them; ``word`` hashes the letters of the current word (0 between words),
    ``word_prev`` the word before.  The word contexts are (current word,
    previous word) and (current word, previous byte): they skip over the
    spaces and punctuation that break byte contexts apart.

    Two contexts see the text through ``classes`` (see ``byte_classes``:
    lowercase, uppercase, digit, space, newline, a few kinds of punctuation
    and markup): the classes of the last three bytes, a context seen so
    often that its slots follow the recent bits (a fast order-0 model), and
    the *shape* of the text, the classes of its last six runs of same-class
    bytes with the length of the current run (``shape_step``): "a word of 4+
    lowercase letters after a comma and a space" or "the 2nd digit after
    '|'", whatever the words and digits are.  Orders 1 and 6 and a follower
    context held these places before; the shape gained more than any byte
    context did (see chapter 3b).
    """
    hashes[0] = context_hash(np.int64(classes[c4 & 0xFF]) | (np.int64(classes[(c4 >> 8) & 0xFF]) << 4)
                             | (np.int64(classes[(c4 >> 16) & 0xFF]) << 8), 0)
    hashes[1] = context_hash(c4 & 0xFFFF, 1)
    hashes[2] = context_hash(c4 & 0xFFFFFF, 2)
    hashes[3] = context_hash(c4, 3)
    hashes[4] = context_hash(c4 | ((c8 & 0xFF) << 32), 4)
    hashes[5] = context_hash(word | ((word_prev & 0x7FFFFFFF) << 32), 5)
    hashes[6] = context_hash(word | ((c4 & 0xFF) << 32), 6)
    hashes[7] = context_hash(shape | (min(run_length, 4) << 24), 7)


@njit(cache=True, inline="always")
def shape_step(shape, run_length, cls):
    """The text's shape after a byte of class ``cls``: (classes of the last 6 runs, length of the last run).

    ``shape`` holds one class per 4 bits, the current run's lowest.  A byte
    of the current run's class makes the run longer; any other starts a new
    run, and the oldest run's class drops out.
    """
    if run_length > 0 and (shape & 15) == cls:
        return shape, min(run_length + 1, 255)
    return ((shape << 4) | cls) & SHAPE_MASK, 1


@njit(cache=True, inline="always")
def bucket_check(h):
    """The 16-bit check of a bucket for hash ``h`` (odd, so an empty word never matches)."""
    return np.int64(h & np.uint64(0xFFFF)) | 1


@njit(cache=True, inline="always")
def bucket_index(h, bucket_bits):
    """The first candidate bucket for hash ``h`` (its top ``bucket_bits`` bits); the others are b ^ 1 and b ^ 2."""
    return np.int64(h >> np.uint64(64 - bucket_bits))


@njit(cache=True, inline="always")
def find_bucket(t, k, h, bucket_bits, write):
    """Offset of the bucket for hash ``h`` in table ``t[k]``, or -1 (only when not ``write``).

    Three candidate buckets (b, b ^ 1 and b ^ 2: within 256 bytes); the low
    16 bits of the first word, a check, tell whose bucket it is (the top 16
    bits hold the run model's entry in a first-nibble bucket).  On a miss
    with ``write``, the candidate whose first counter has seen fewest bits
    (the first on a tie) is wiped and taken over.  The third candidate cut
    collisions enough to gain 0.023 points on enwik8_head, for about 2 % of
    the speed.
    """
    b = bucket_index(h, bucket_bits)
    chk = bucket_check(h)
    p0 = b * BUCKET
    p1 = (b ^ 1) * BUCKET
    if (np.int64(t[k, p0]) & 0xFFFF) == chk:
        return p0
    if (np.int64(t[k, p1]) & 0xFFFF) == chk:
        return p1
    p2 = (b ^ 2) * BUCKET
    if (np.int64(t[k, p2]) & 0xFFFF) == chk:
        return p2
    if not write:
        return -1
    victim = p0 if (np.int64(t[k, p0 + 1]) & 255) <= (np.int64(t[k, p1 + 1]) & 255) else p1
    if (np.int64(t[k, p2 + 1]) & 255) < (np.int64(t[k, victim + 1]) & 255):
        victim = p2
    t[k, victim] = chk  # no run yet
    for j in range(1, BUCKET):
        t[k, victim + j] = 1 << 31  # p = 1/2, no history, count 0
    return victim
# --8<-- [end:hashing]


@njit(cache=True, inline="always")
def nibble_hash(h, c0):
    """Hash of the bucket for context hash ``h`` and the partial byte ``c0`` that starts a nibble."""
    return finalize(h + np.uint64(c0) * np.uint64(NIBBLE_MUL))


@njit(cache=True, inline="always")
def prefetch_buckets(tables, m, h, bucket_bits):
    """Start loading the three candidate buckets of nibble hash ``h`` in table ``m`` (a hint, see ``prefetch``)."""
    b = bucket_index(h, bucket_bits)
    prefetch(tables, m * tables.shape[1] + b * BUCKET)
    prefetch(tables, m * tables.shape[1] + (b ^ 1) * BUCKET)
    prefetch(tables, m * tables.shape[1] + (b ^ 2) * BUCKET)


@njit(cache=True)
def lookup_nibble(tables, hashes, c0, bucket_bits, slots, write):
    """Select every hashed model's bucket for the nibble that starts with partial byte ``c0``.

    Most of the model's time goes to the cache misses of these reads.
    """
    for k in range(N_HASHED):
        slots[k] = find_bucket(tables, k, nibble_hash(hashes[k], c0), bucket_bits, write)


# --8<-- [start:slot]
@njit(cache=True, inline="always")
def history_step(h, bit):
    """Bit history of a slot: counts of zeros and ones (4 bits each, n0 * 16 + n1; 0 = nothing yet).

    A bit increments its own count (up to 15) and, as in PAQ's state machines,
    discounts the opposite count when that one is above 2: recent bits weigh more.
    """
    n0 = h >> 4
    n1 = h & 15
    if bit:
        n1 = min(n1 + 1, 15)
        if n0 > 2:
            n0 = (n0 + 1) >> 1
    else:
        n0 = min(n0 + 1, 15)
        if n1 > 2:
            n1 = (n1 + 1) >> 1
    return (n0 << 4) | n1


def _history_table():
    """``history_step`` for every (history, bit), as a table: HISTORY_NEXT[2 * h + bit].

    The coding loop looks the next history up rather than computing it: the
    branches of ``history_step`` depend on the bit, which the CPU cannot
    guess, and the lookup made coding about 6 % faster.
    """
    table = np.empty(512, np.int64)
    for h in range(256):
        for bit in range(2):
            table[2 * h + bit] = history_step.py_func(h, bit)
    return table


HISTORY_NEXT = _history_table()


@njit(cache=True, inline="always")
def slot_next(v, bit, limit):
    """A hashed slot ``v`` (uint32: 16 bits of p, 8 bits of history, 8 bits of count) after ``bit``.

    The probability learns like ``counter_next``; the history takes a step
    (``history_step``, through its table).  Its 12-bit probability is
    ``v >> 20``, as for a counter.
    """
    n = v & 255
    p = v >> 16
    p += (((bit << 16) - p) * np.int64(RATE[n])) >> 16
    if n < limit:
        n += 1
    return (p << 16) | (HISTORY_NEXT[((v >> 7) & 510) | bit] << 8) | n


@njit(cache=True, inline="always")
def one_sided(v):
    """Whether slot ``v``'s bit history holds only zeros or only ones (and at least one bit).

    Such a context has been deterministic so far.  Its indirect prediction is
    given to the mixer a second time, on an input that is 0 for every other
    history, so that the mixer can learn a separate weight for "this context
    has never been wrong" (PAQ8's context maps do the same).
    """
    h = (v >> 8) & 255
    return ((h >> 4) == 0) != ((h & 15) == 0)


@njit(cache=True, inline="always")
def history_index(k, bitpos, v):
    """Counter of the indirect map for model ``k``, bit position and the history in slot value ``v``."""
    return ((k << 3) + bitpos) * 256 + ((v >> 8) & 255)
# --8<-- [end:slot]




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
    bytes occurred is often a worse guess than the last place where 10 did
    (0.02 points on enwik8_head).  Returns the new (length, pointer); length
    0 means no match.
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
# --8<-- [end:match]


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
# --8<-- [end:run]


# --8<-- [start:mixer]
@njit(cache=True, inline="always")
def mixer_rows(known, shape, run_length, mctx, c0, c4, bitpos):
    """The weight set each of the four mixers uses for this bit (rows of the stacked table).

    Mixer 1 is selected by the class of the last byte, the length of its run
    (1, 2, 3, 4+), whether at least 7 of the 8 hashed contexts are known, and
    the partial byte (it took the rate from 20.99 % to 20.93 %; it used to be
    the number of known contexts and the partial byte), mixer 2 by the match
    state and the partial byte, mixer 3 by the
    previous byte with the top 3 bits of the byte before it (for text: letter,
    digit, space or punctuation, upper or lower case), mixer 4 the other way
    round, both with the bit position: so the trust given to each input can
    differ by bit position, by familiarity, by match length and by what the
    text just said.  (The 3 bits took the rate from 21.72 % to 21.67 %.)
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
def mixer_rate(pos):
    """The mixers' learning rate after ``pos`` bytes: 38 at the start, 22 after 4 KB, 6 in the long run.

    A fresh weight set knows nothing, and on a short input (Table 1's 2 KB
    chunks) a slow mixer never catches up: this schedule took the 2 KB-chunk
    rate on enwik8 from 40.1 % to 38.9 %, and helped on the whole MiB too.
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
# --8<-- [end:mixer]


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
def apm_next(v, bit, rate):
    """A knot after ``bit``: it moves 1/2**rate of the way to 0 or 65535."""
    return v + ((((bit << 16) - bit) - v) >> rate)


@njit(cache=True, inline="always")
def apm_rate(pos):
    """The APMs' rate (a shift) after ``pos`` bytes: 1/16 of the way for the first 4 KB, 1/32 to 64 KB, 1/64 to
    256 KB, then 1/128 (the last step gained 0.012 points on enwik8_head)."""
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
def final_p(a1, a2):
    """The coder's 16-bit P(1): the average of the two APMs' refinements of the mixer's output, clamped."""
    p = (a1 + a2 + 1) >> 1
    return min(max(p, P_MIN), P_MAX)
# --8<-- [end:apm]


# --8<-- [start:priors]
def counter_init(p22, n):
    """Counters (uint32, see ``counter_next``) holding probabilities ``p22`` / 2**22, as if they had seen ``n`` bits."""
    return ((np.asarray(p22, np.int64) << 10) | n).astype(np.uint32)


def history_prior():
    """Initial indirect-map counters: what each bit history says on its own.

    A history of n0 zeros and n1 ones starts at P(1) = (n1 + 1/2) / (n0 + n1 + 1)
    (the Krichevsky-Trofimov estimate), worth ``PRIOR_HISTORY`` bits, instead
    of 1/2: the map then needs only to learn how the model's contexts differ
    from that guess.  It matters on short inputs, where many (model, bit
    position, history) counters are used only a few times: on Table 1's 2 KB
    chunks of enwik8 it gained 0.1 points.
    """
    h = np.arange(HISTORY_COUNTERS) & 255
    n0, n1 = h >> 4, h & 15
    return counter_init(((2 * n1 + 1) << 22) // (2 * (n0 + n1) + 2), PRIOR_HISTORY)


def expected_bit_prior(expected, length):
    """Initial match or run counters: the expected bit with probability (length + 1) / (length + 2).

    ``length`` 0 (no match) starts at 1/2.  A long match or run is trusted from
    its first use, as Laplace's rule of succession would after ``length``
    agreements; ``PRIOR_EXPECTED`` bits' worth, so the data soon take over.
    """
    q = ((np.asarray(length, np.int64) + 1) << 22) // (np.asarray(length, np.int64) + 2)
    p22 = np.where(length == 0, 1 << 21, np.where(expected == 1, q, (1 << 22) - q))
    return counter_init(p22, PRIOR_EXPECTED)


def match_prior():
    """``expected_bit_prior`` for every match counter (index layout of ``match_context``).

    Length buckets 1..15 are the match length; from 16 on a bucket holds lengths 4 (b - 12) .. 4 (b - 12) + 3.
    """
    i = np.arange(MATCH_COUNTERS)
    bucket = i >> 12
    return expected_bit_prior((i >> 11) & 1, np.where(bucket < 16, bucket, (bucket - 12) * 4))


def run_prior():
    """``expected_bit_prior`` for every run counter (index layout of ``run_context``; run lengths 1..15)."""
    i = np.arange(RUN_COUNTERS)
    return expected_bit_prior((i >> 3) & 1, (i >> 4) & 15)
# --8<-- [end:priors]


def apm_init(contexts):
    """APM table whose every context starts as the identity map (knot j -> squash of its centre)."""
    row = np.array([squash((j - 16) * 128) * 16 for j in range(APM_ROWS)], dtype=np.uint16)
    return np.tile(row, contexts)


# ------------------------------------------------------------------ tuning ----
# Part of the format: changing any of these changes every ``cm`` file.
LIMIT_ORDER0 = 1023   # count limit of the order-0 counters (stationary statistics)
# count limits of the hashed slots (byte classes, orders 2, 3, 4, 5, the word models, the shape): low, so they keep
# adapting; at most 255 (the count has 8 bits)
LIMIT_HASHED = np.array([60, 60, 60, 60, 60, 60, 60, 60], dtype=np.int64)
assert LIMIT_HASHED.shape == (N_HASHED,) and LIMIT_HASHED.max() <= 255
LIMIT_MATCH = 1023    # count limit of the match model's counters
LIMIT_RUN = 1023      # count limit of the run model's counters
LIMIT_HISTORY = 127  # count limit of the indirect (bit history -> probability) counters
HISTORY_COUNTERS = N_HASHED * 8 * 256   # indirect map: (model, bit position, history)
PRIOR_HISTORY = 6     # an indirect counter starts as if it had seen 6 bits (see ``history_prior``)
PRIOR_EXPECTED = 2    # match and run counters start as if they had seen 2 bits (see ``expected_bit_prior``)
MIX_RATE = 6         # mixer learning rate in the long run (weight step = rate * err * x / 2**14)
MIX_BOOST, MIX_BOOST_BYTES = 131072, 4096   # the extra rate early on: MIX_BOOST / (bytes seen + MIX_BOOST_BYTES)
MIX_INIT = 6144       # initial mixer weight (3/32)
APM_RATE = 7          # APM knots move 1/2**APM_RATE of the way to each bit in the long run (see apm_rate)
P_MIN, P_MAX = 16, 65520   # final 16-bit probability is clamped to this range

# Scalar state carried by the fused loop between blocks: one int64 array, these indices.
S_C0, S_BITPOS, S_J, S_C4, S_C8, S_WORD, S_WORDPREV, S_POS, S_MMLEN, S_MMPTR, S_SHAPE, S_RUNLEN = range(12)
S_SIZE = 12
# The four mixers' weight sets, stacked in one table (see ``mixer_rows``):
MIXER_SETS = (2 * 4 * 16 * 256,             # mixer 1: (7+ contexts known, run length, class, partial byte)
              (MATCH_COUNTERS >> 11) * 256,  # mixer 2: (match length bucket, expected bit, partial byte)
              256 * 8 * 8,                   # mixer 3: (previous byte, top 3 bits of the one before, bit position)
              256 * 8 * 8)                   # mixer 4: (the byte before it, top 3 bits of the previous, bit position)
MIXER_OFFSETS = tuple(int(v) for v in np.cumsum((0,) + MIXER_SETS[:-1]))
MIXER_ROWS = sum(MIXER_SETS)


# --8<-- [start:classes]
# The byte classes of ``byte_classes`` (the shape contexts and mixer 1), in class order; 15 = anything else.
CLASS_GROUPS = ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "\n\r", ".,;:!?",
                "'\"", "-()", "[]", "{}", "|", "<>", "=", "/", "&#*%")
SHAPE_MASK = (1 << 24) - 1   # the shape keeps 6 runs' classes (6 did better than 4, 5, 8 or 12)


def byte_classes(code_bytes=()):
    """Each byte's class (0..15, see ``CLASS_GROUPS``): the ``code_bytes`` that ``lmc_ref.word_codes`` gave
    to whole words count as lowercase letters, every byte not in a group as class 15."""
    table = np.full(256, 15, np.int64)
    for i, group in enumerate(CLASS_GROUPS):
        table[[ord(ch) for ch in group]] = i
    table[list(code_bytes)] = 0
    return table
# --8<-- [end:classes]


def word_letters(code_bytes=()):
    """Which bytes the word models treat as letters: ASCII letters, and the ``code_bytes`` that
    ``lmc_ref.word_codes`` gave to whole words in this input (a code byte is a word of its own)."""
    table = np.zeros(256, np.bool_)
    table[ord("A"):ord("Z") + 1] = table[ord("a"):ord("z") + 1] = True
    table[list(code_bytes)] = True
    return table


@njit(cache=True, inline="always")
def word_step(word, word_prev, byte, letters):
    """Word hashes after ``byte``: letters (case-folded) extend the word, anything else ends it.

    ``letters`` (see ``word_letters``) says which bytes are letters.
    """
    lower = byte | 32 if 65 <= byte <= 90 else byte
    if letters[byte]:
        return ((word + lower + 1) * 0x2F0F1) & 0xFFFFFFFF, word_prev
    if word != 0:
        return 0, word
    return 0, word_prev


@njit(cache=True)
def predict_p16(c0, bitpos, j, c4, shape, run_length, predicted, mm_len, t0, tables, hist_sm, slots, mm_sm,
                weights, apm1, apm2, rb, rc, run_sm, x):
    """P(next bit = 1) as a 16-bit integer; reads the model, changes nothing.

    The predict half of ``code_block``, step for step, for ``byte_pdf``.  A
    slot offset of -1 (a bucket not claimed yet) reads as a fresh slot.
    """
    c1 = c4 & 255
    x[0] = STRETCH[np.int64(t0[c0]) >> 20]
    known = 0
    for m in range(N_HASHED):
        v = np.int64(tables[m, slots[m] + j]) if slots[m] >= 0 else np.int64(1 << 31)
        x[1 + m] = STRETCH[v >> 20]
        x[1 + N_HASHED + m] = STRETCH[np.int64(hist_sm[history_index(m, bitpos, v)]) >> 20]
        x[X_ONE_SIDED + m] = x[1 + N_HASHED + m] if one_sided(v) else 0
        if (v & 255) > 0:
            known += 1
    for r in range(N_RUNS):
        rctx = run_context(r, rb[r], rc[r], c0, bitpos)
        x[X_RUN + r] = STRETCH[np.int64(run_sm[rctx]) >> 20] if rctx >= 0 else 0
    mctx = match_context(predicted, mm_len, c0, bitpos, c1)
    x[X_MATCH] = STRETCH[np.int64(mm_sm[mctx]) >> 20]
    x[X_MATCH + 1] = BIAS
    x[X_MATCH_LENGTH] = match_strength(mctx, mm_len)
    r1, r2, r3, r4 = mixer_rows(known, shape, run_length, mctx, c0, c4, bitpos)
    d1 = np.int64(0)
    d2 = np.int64(0)
    d3 = np.int64(0)
    d4 = np.int64(0)
    for m in range(N_INPUTS):
        d1 += x[m] * np.int64(weights[r1, m])
        d2 += x[m] * np.int64(weights[r2, m])
        d3 += x[m] * np.int64(weights[r3, m])
        d4 += x[m] * np.int64(weights[r4, m])
    pr = squash((clamp_dot(d1) + clamp_dot(d2) + clamp_dot(d3) + clamp_dot(d4)) >> 2)
    i1, w1 = apm_knot(pr, apm1_context(c0, c4))
    i2, w2 = apm_knot(pr, c0 | (c1 << 8))
    return final_p(apm_interp(apm1[i1], apm1[i1 + 1], w1), apm_interp(apm2[i2], apm2[i2 + 1], w2))


@njit(cache=True)
def byte_pdf(pdf, predicted, mm_len, c4, shape, run_length, t0, tables, hist_sm, hashes, slots, mm_sm, weights,
             apm1, apm2, bucket_bits, rb, rc, run_sm):
    """Distribution of the next byte: the product of bit probabilities along the 8-bit tree.

    Must be called at a byte boundary.  Every bit's prediction uses its own
    counters, weights and APM knots (indexed by the partial byte or the bit
    position), so coding a bit never changes the prediction of a later bit of
    the same byte: this pdf is exactly the distribution the coder uses.  The
    buckets of the second nibble are looked up without claiming them (a
    missing bucket predicts like a freshly claimed one), so the model is left
    unchanged.
    """
    x = np.zeros(N_INPUTS, np.int64)
    node = np.ones(512)
    nib_slots = np.empty(N_HASHED, np.int64)
    for hi in range(16):
        lookup_nibble(tables, hashes, 16 + hi, bucket_bits, nib_slots, False)
        for c0 in range(1, 256):
            bitpos = 0
            while (c0 >> (bitpos + 1)) != 0:
                bitpos += 1
            if bitpos < 4:
                if hi > 0:
                    continue  # first nibble: done once, with the current buckets
                p16 = predict_p16(c0, bitpos, c0, c4, shape, run_length, predicted, mm_len, t0, tables, hist_sm,
                                  slots, mm_sm, weights, apm1, apm2, rb, rc, run_sm, x)
            else:
                if (c0 >> (bitpos - 4)) != 16 + hi:
                    continue
                j = (c0 & ((1 << (bitpos - 4)) - 1)) | (1 << (bitpos - 4))
                p16 = predict_p16(c0, bitpos, j, c4, shape, run_length, predicted, mm_len, t0, tables, hist_sm,
                                  nib_slots, mm_sm, weights, apm1, apm2, rb, rc, run_sm, x)
            p = p16 / 65536.0
            node[2 * c0 + 1] = node[c0] * p
            node[2 * c0] = node[c0] * (1.0 - p)
    for b in range(256):
        pdf[b] = node[256 + b]


# --8<-- [start:code_block]
@njit(cache=True)
def code_block(hist, start, end, decode, s, t0, tables, hist_sm, hashes, slots, mm_table, mm_sm, weights,
               apm1, apm2, run_sm, classes, letters, bucket_bits, mm_bits, st, buf, payload, ideal):
    """Predict + (en|de)code + update, 8 bits per byte, for bytes [start, end) of ``hist``.

    Decoding writes each byte into ``hist`` as it completes; encoding reads it.
    If ``ideal`` has an element, ``ideal[0]`` accumulates -log2 of each coded
    bit's probability (the model's ideal code length; the model is integer, so
    there is no separate float model); if it has ``len(hist) + 1``,
    ``ideal[1 + i]`` also accumulates byte ``i``'s share (``byte_costs``).
    The body spells out ``ContextMixingPredictor.predict_bit`` / ``update_bit``
    step by step, with the same scalar kernels.  The per-bit arrays are touched
    here and not passed to helper functions, which keeps Numba from
    reference-counting them (atomic increments) on every bit: that alone cost
    half the time.
    """
    x = np.zeros(N_INPUTS, np.int32)  # inputs fit in 16 bits; int32 lets the mixer loops use 32-bit multiplies
    hidx = np.zeros(N_HASHED, np.int64)
    ridx = np.zeros(N_RUNS, np.int64)  # run entries of the current byte's contexts
    rb = np.zeros(N_RUNS, np.int64)
    rc = np.zeros(N_RUNS, np.int64)
    rci = np.zeros(N_RUNS, np.int64)  # run counters used by the current bit (-1: none)
    run_lookup(tables, slots, ridx, rb, rc)  # blocks start at byte boundaries
    c0, bitpos, j = s[S_C0], s[S_BITPOS], s[S_J]
    c4, c8, word, word_prev, pos = s[S_C4], s[S_C8], s[S_WORD], s[S_WORDPREV], s[S_POS]
    mm_len, mm_ptr = s[S_MMLEN], s[S_MMPTR]
    shape, run_length = s[S_SHAPE], s[S_RUNLEN]
    for i in range(start, end):
        byte = np.int64(hist[i])
        rate = mixer_rate(pos)  # the learning rates change once per byte: a division saved on every bit
        ar = apm_rate(pos)
        for k in range(7, -1, -1):
            # ---- predict (the same steps as predict_bit and predict_p16)
            c1 = c4 & 255
            # the rows read last (APMs, match counter, mixers 2-4) start loading now
            cx1 = apm1_context(c0, c4)
            cx2 = c0 | (c1 << 8)
            prefetch(apm1, cx1 * APM_ROWS)
            prefetch(apm1, cx1 * APM_ROWS + 32)
            prefetch(apm2, cx2 * APM_ROWS)
            prefetch(apm2, cx2 * APM_ROWS + 32)
            predicted = np.int64(hist[mm_ptr]) if mm_len > 0 else 0
            mctx = match_context(predicted, mm_len, c0, bitpos, c1)
            prefetch(mm_sm, mctx)
            # mixer 1's row waits for ``known``, which picks one of two rows: load both
            r1, r2, r3, r4 = mixer_rows(0, shape, run_length, mctx, c0, c4, bitpos)
            r1_known = mixer_rows(N_HASHED, shape, run_length, mctx, c0, c4, bitpos)[0]
            for r in (r1, r1_known, r2, r3, r4):
                prefetch(weights, r * N_INPUTS)
                prefetch(weights, r * N_INPUTS + N_INPUTS - 1)
            if bitpos == 3:
                # the second nibble's bucket is one of two per model, whichever this bit picks: load both
                for m in range(N_HASHED):
                    prefetch_buckets(tables, m, nibble_hash(hashes[m], 2 * c0), bucket_bits)
                    prefetch_buckets(tables, m, nibble_hash(hashes[m], 2 * c0 + 1), bucket_bits)
            x[0] = STRETCH16[np.int64(t0[c0]) >> 20]
            known = 0
            for m in range(N_HASHED):
                v = np.int64(tables[m, slots[m] + j])
                x[1 + m] = STRETCH16[v >> 20]
                hidx[m] = history_index(m, bitpos, v)
                x[1 + N_HASHED + m] = STRETCH16[np.int64(hist_sm[hidx[m]]) >> 20]
                x[X_ONE_SIDED + m] = x[1 + N_HASHED + m] if one_sided(v) else 0
                known += (v & 255) != 0  # no branch: whether a slot is new is hard to guess
            for r in range(N_RUNS):  # a loop of its own: about 5 % faster than inside the one above
                rci[r] = run_context(r, rb[r], rc[r], c0, bitpos)
                x[X_RUN + r] = STRETCH16[np.int64(run_sm[rci[r]]) >> 20] if rci[r] >= 0 else 0
            x[X_MATCH] = STRETCH16[np.int64(mm_sm[mctx]) >> 20]
            x[X_MATCH + 1] = BIAS
            x[X_MATCH_LENGTH] = match_strength(mctx, mm_len)
            r1, r2, r3, r4 = mixer_rows(known, shape, run_length, mctx, c0, c4, bitpos)
            d1 = np.int64(0)
            d2 = np.int64(0)
            d3 = np.int64(0)
            d4 = np.int64(0)
            for m in range(N_INPUTS):
                d1 += x[m] * np.int64(weights[r1, m])
                d2 += x[m] * np.int64(weights[r2, m])
                d3 += x[m] * np.int64(weights[r3, m])
                d4 += x[m] * np.int64(weights[r4, m])
            d1 = clamp_dot(d1)
            d2 = clamp_dot(d2)
            d3 = clamp_dot(d3)
            d4 = clamp_dot(d4)
            pr = squash((d1 + d2 + d3 + d4) >> 2)
            i1, w1 = apm_knot(pr, cx1)
            i2, w2 = apm_knot(pr, cx2)
            p = final_p(apm_interp(apm1[i1], apm1[i1 + 1], w1), apm_interp(apm2[i2], apm2[i2 + 1], w2))
            # ---- code
            if decode:
                bit = np.int64(decode_bit(st, payload, p))
            else:
                bit = (byte >> k) & 1
                encode_bit(st, buf, bit, p)
            if ideal.shape[0] > 0:
                cost = -np.log2((p if bit else 65536 - p) / 65536.0)
                ideal[0] += cost
                if ideal.shape[0] > 1:
                    ideal[1 + i] += cost
            # ---- update (the same steps as update_bit)
            t0[c0] = counter_next(np.int64(t0[c0]), bit, LIMIT_ORDER0)
            for m in range(N_HASHED):
                hist_sm[hidx[m]] = counter_next(np.int64(hist_sm[hidx[m]]), bit, LIMIT_HISTORY)
                q = slots[m] + j
                tables[m, q] = slot_next(np.int64(tables[m, q]), bit, LIMIT_HASHED[m])
            for r in range(N_RUNS):
                if rci[r] >= 0:
                    run_sm[rci[r]] = counter_next(np.int64(run_sm[rci[r]]), bit, LIMIT_RUN)
            mm_sm[mctx] = counter_next(np.int64(mm_sm[mctx]), bit, LIMIT_MATCH)
            # the errors fit in 16 bits: as int32, the updates below multiply 32 by 32 bits
            e1 = np.int32(mixer_error(squash(d1), bit, rate))
            e2 = np.int32(mixer_error(squash(d2), bit, rate))
            e3 = np.int32(mixer_error(squash(d3), bit, rate))
            e4 = np.int32(mixer_error(squash(d4), bit, rate))
            # one loop per mixer: the compiler cannot tell that the rows differ, and
            # vectorizes each row's update only alone (about 6 % faster than one loop)
            for m in range(N_INPUTS):
                weights[r1, m] += mixer_step(x[m], e1)
            for m in range(N_INPUTS):
                weights[r2, m] += mixer_step(x[m], e2)
            for m in range(N_INPUTS):
                weights[r3, m] += mixer_step(x[m], e3)
            for m in range(N_INPUTS):
                weights[r4, m] += mixer_step(x[m], e4)
            apm1[i1] = apm_next(np.int64(apm1[i1]), bit, ar)
            apm1[i1 + 1] = apm_next(np.int64(apm1[i1 + 1]), bit, ar)
            apm2[i2] = apm_next(np.int64(apm2[i2]), bit, ar)
            apm2[i2 + 1] = apm_next(np.int64(apm2[i2 + 1]), bit, ar)
            c0 = c0 * 2 + bit
            bitpos += 1
            j = j * 2 + bit
            if bitpos == 4:
                j = 1
                lookup_nibble(tables, hashes, c0, bucket_bits, slots, True)
        # ---- end of byte
        byte = c0 & 255
        hist[pos] = byte
        pos += 1
        c8 = ((c8 << 8) | (c4 >> 24)) & 0xFFFFFFFF
        c4 = ((c4 << 8) | byte) & 0xFFFFFFFF
        word, word_prev = word_step(word, word_prev, byte, letters)
        shape, run_length = shape_step(shape, run_length, classes[byte])
        run_store(tables, hashes, ridx, rb, rc, byte)
        context_hashes(hashes, c4, c8, word, word_prev, shape, run_length, classes)
        for m in range(N_HASHED):  # the new contexts' buckets load while the match model works
            prefetch_buckets(tables, m, nibble_hash(hashes[m], 1), bucket_bits)
        mm_len, mm_ptr = match_byte_update(hist, pos, mm_table, mm_bits, mm_len, mm_ptr)
        c0, bitpos, j = 1, 0, 1
        lookup_nibble(tables, hashes, c0, bucket_bits, slots, True)
        run_lookup(tables, slots, ridx, rb, rc)
    s[S_C0] = c0
    s[S_BITPOS] = bitpos
    s[S_J] = j
    s[S_C4] = c4
    s[S_C8] = c8
    s[S_WORD] = word
    s[S_WORDPREV] = word_prev
    s[S_POS] = pos
    s[S_MMLEN] = mm_len
    s[S_MMPTR] = mm_ptr
    s[S_SHAPE] = shape
    s[S_RUNLEN] = run_length
# --8<-- [end:code_block]
