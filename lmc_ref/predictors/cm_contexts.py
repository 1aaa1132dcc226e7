"""The context models of the context-mixing predictor: what they see, and the hash tables they learn in.

Eight models (``N_HASHED``) each hash a context of the recent text: the byte
classes of the last three bytes, orders 2, 3, 4 and 5, two word contexts and
the text's *shape* (``context_hashes``).  Each has a hash table of buckets
(lpaq's HashTable): at every nibble boundary a model selects the bucket of
(context, bits of the byte so far), and the next four bits use its slots.  A
slot holds a probability that learns like a counter and a small *bit history*
(lpaq's state, here two counts), which a shared counter table per model (the
*indirect* map) turns into a second prediction.

Part of the model: changing a kernel or a constant changes every ``cm`` file.
"""

import numpy as np
from numba import njit

from .cm_counters import RATE, counter_init

HASH_MUL = 0x9E3779B97F4A7C15
MIX_MUL = 0xBF58476D1CE4E5B9
NIBBLE_MUL = 0x94D049BB133111EB
N_HASHED = 8              # hashed context models: byte classes, orders 2, 3, 4, 5, two word models, the text shape
BUCKET = 16               # words per hash bucket: 1 check word + 15 slots (a nibble's bit tree)
FRESH_SLOT = 1 << 31      # a slot that has seen nothing: p = 1/2, no history, count 0
# count limits of the hashed slots (byte classes, orders 2, 3, 4, 5, the word models, the shape): low, so they keep
# adapting; at most 255 (the count has 8 bits)
LIMIT_HASHED = np.array([60, 60, 60, 60, 60, 60, 60, 60], dtype=np.int64)
assert LIMIT_HASHED.shape == (N_HASHED,) and LIMIT_HASHED.max() <= 255
LIMIT_HISTORY = 127       # count limit of the indirect (bit history -> probability) counters
HISTORY_COUNTERS = N_HASHED * 8 * 256   # indirect map: (model, bit position, history)
PRIOR_HISTORY = 6         # an indirect counter starts as if it had seen 6 bits (see ``history_prior``)


# --8<-- [start:classes]
# The byte classes of ``byte_classes`` (the shape contexts and mixer 1), in class order; 15 = anything else.
CLASS_GROUPS = ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "\n\r", ".,;:!?",
                "'\"", "-()", "[]", "{}", "|", "<>", "=", "/", "&#*%")
SHAPE_MASK = (1 << 24) - 1   # the shape keeps 6 runs' classes: on enwik8_head 6 did better than 4, 5, 8 or 12


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
    '|'", whatever the words and digits are.  What the model learns in one
    such context applies wherever the text has that form, which no byte
    context can do (chapter 3b measures what each context is worth).
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
    (the first on a tie) is wiped and taken over.  A third candidate, beyond
    lpaq's two, loses fewer contexts to collisions and costs little time, the
    candidates being neighbours in memory.
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
        t[k, victim + j] = FRESH_SLOT
    return victim
# --8<-- [end:hashing]


@njit(cache=True, inline="always")
def nibble_hash(h, c0):
    """Hash of the bucket for context hash ``h`` and the partial byte ``c0`` that starts a nibble."""
    return finalize(h + np.uint64(c0) * np.uint64(NIBBLE_MUL))


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
    guess, and a lookup has none.
    """
    table = np.empty(512, np.int64)
    for h in range(256):
        for bit in range(2):
            table[2 * h + bit] = history_step.py_func(h, bit)
    return table


HISTORY_NEXT = _history_table()


@njit(cache=True, inline="always")
def slot_value(tables, k, slot, j):
    """Slot ``j`` (1..15) of model ``k``'s bucket at offset ``slot``; a bucket not claimed (-1) reads as fresh.

    The word is read either way (``slot + j`` >= 0) and then selected, rather
    than read only for a claimed bucket: a select needs no branch, and the
    coding loop, whose buckets are always claimed, pays nothing for it.
    """
    v = np.int64(tables[k, slot + j])
    return v if slot >= 0 else np.int64(FRESH_SLOT)


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


def history_prior():
    """Initial indirect-map counters: what each bit history says on its own.

    A history of n0 zeros and n1 ones starts at P(1) = (n1 + 1/2) / (n0 + n1 + 1)
    (the Krichevsky-Trofimov estimate), worth ``PRIOR_HISTORY`` bits, instead
    of 1/2: the map then needs only to learn how the model's contexts differ
    from that guess.  It matters on short inputs (Table 1's 2 KB chunks),
    where many (model, bit position, history) counters are used only a few times.
    """
    h = np.arange(HISTORY_COUNTERS) & 255
    n0, n1 = h >> 4, h & 15
    return counter_init(((2 * n1 + 1) << 22) // (2 * (n0 + n1) + 2), PRIOR_HISTORY)
# --8<-- [end:slot]
