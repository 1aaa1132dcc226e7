"""Context mixing (CM): many small bit predictors, mixed by a learned logistic mixer.

This is a bitwise model in the lpaq tradition.  Each byte is coded as 8
binary decisions, most significant bit first; before each bit, every
component below gives its own estimate of P(bit = 1), a *mixer* combines the
estimates in the logistic domain with weights it learns online, and two
*APM* stages correct what systematic error is left.  After the bit is known,
every component learns from it.  Nothing is trained in advance: the model
starts knowing nothing and adapts while it codes, exactly the same way in the
encoder and in the decoder.

The components, in the order they depend on each other (each class below
says what it predicts and how it learns):

1. ``squash`` / ``stretch``: the logistic function and its inverse, in integers;
2. ``Counters``: adaptive probabilities, one per context slot;
3. ``ContextModels``: byte classes, orders 2, 3, 4, 5, two word models and the text's shape, hashed into tables;
4. ``MatchModel``: the longest earlier occurrence of the recent bytes predicts the next bit;
5. ``RunModel``: the byte that last followed each hashed context predicts it again;
6. ``Mixer``: four gated logistic mixers (weight sets chosen by small contexts), averaged;
7. ``APM``: adaptive probability maps that refine the mixer's output;
8. ``ContextMixingPredictor``: the whole model, behind the ``Predictor`` protocol.

All arithmetic is integer (see ``context_mixing_kernels.py``), so the output is
identical on every machine.  The classes here are the *readable path*: they
call the kernels one step at a time.  ``fused_encode`` / ``fused_decode`` run
the same kernels in one compiled loop (``code_block``) and emit the same bytes.
"""

import numpy as np

from .. import memory
from . import fused
from . import context_mixing_kernels as K
from .base import Predictor, int_param, register, reject_unknown

MIN_MEM, MAX_MEM, DEFAULT_MEM = 10, 25, 22

# The readable path runs the kernels' plain-Python originals (``py_func``): the
# same source, and on Python integers the same results, without the cost of a
# compiled call for every small step.
(counter_next, slot_next, history_index, one_sided, match_context, match_strength, run_context, mixer_rows,
 clamp_dot, mixer_rate, mixer_error, mixer_step, apm_knot, apm_interp, apm_next, apm_rate, final_p, squash,
 apm1_context) = (f.py_func for f in (
    K.counter_next, K.slot_next, K.history_index, K.one_sided, K.match_context, K.match_strength, K.run_context,
    K.mixer_rows, K.clamp_dot, K.mixer_rate, K.mixer_error, K.mixer_step, K.apm_knot, K.apm_interp, K.apm_next,
    K.apm_rate, K.final_p, K.squash, K.apm1_context))
BLOCK = 1 << 16           # fused path: bytes per compiled call (progress + buffer growth)


def memory_bytes(mem):
    """Bytes the model allocates for ``cm:mem=N`` (tables; the history of the input comes on top)."""
    hashed = K.N_HASHED * 4 << mem                  # uint32 counters
    match = 8 << (mem - 2)                          # int32 positions, two tables
    apms = 2 * K.APM_ROWS * (65536 + 65536)       # uint16 knots
    mixers = 4 * K.MIXER_ROWS * K.N_INPUTS
    fixed = apms + mixers + 4 * (256 + K.MATCH_COUNTERS + K.HISTORY_COUNTERS + K.RUN_COUNTERS) + 2 * 256
    return hashed + match + fixed


# --8<-- [start:counters]
class Counters:
    """An array of adaptive bit probabilities (what lpaq calls a StateMap).

    Predicts: P(bit = 1) in the context that selects counter ``i``.
    Learns: p += (bit - p) / (n + 1.5), where n counts the bits seen so far in
    that context, up to a limit.  A young counter is thus the frequency of ones
    so far; an old one an exponential moving average (it keeps adapting).
    Each counter is one uint32: 22 bits of probability, 10 bits of count.
    They start at p = 1/2, n = 0, or at ``prior`` (initial uint32 values,
    see ``history_prior`` and ``expected_bit_prior``).
    """

    def __init__(self, size, limit, prior=None):
        self.t = np.full(size, 1 << 31, dtype=np.uint32) if prior is None else prior.astype(np.uint32)
        assert self.t.shape == (size,)
        self.limit = limit

    def p(self, i):
        """12-bit probability of counter ``i``."""
        return int(self.t[i]) >> 20

    def update(self, i, bit):
        self.t[i] = counter_next(int(self.t[i]), bit, self.limit)
# --8<-- [end:counters]


# --8<-- [start:context_models]
class ContextModels:
    """Byte classes, orders 2, 3, 4, 5, two word contexts and the text's shape, each hashed into its own table.

    Predicts: for each model, P(bit = 1) given its context (the classes of
    the last three bytes; the last k bytes; the current word with the
    previous word or with the previous byte, letters case-folded; the
    classes of the last six runs of same-class bytes with the length of the
    last one; see ``context_hashes``) and the bits of the current
    byte seen so far, twice: *directly*, from the probability the slot has
    learned, and *indirectly*, from the slot's bit history (how many zeros
    and ones it saw, recent ones weighing more; see ``history_step``) through
    a shared ``Counters`` map that learns what such a history predicts in all
    of this model's contexts.  A context seen once or twice says little by its
    own count, but "three ones and no zero" is a pattern the indirect map has
    seen many times.  A history of only zeros or only ones (a context never
    wrong so far) feeds its indirect prediction to the mixer a second time,
    on an input of its own (``one_sided``).
    Learns: the slot's probability (like ``Counters``) and history, and the
    indirect counter that was used.

    A table is ``2**mem`` uint32 words, grouped in buckets of 16: a check word
    (16 bits of check; in a byte's first-nibble bucket the top 16 bits hold
    ``RunModel``'s entry) and 15 slots, one per node of a nibble's bit tree (a
    slot: 16 bits of probability, 8 of history, 8 of count).  At the start of each
    nibble a bucket is chosen per model from the hash of (context, bits so far);
    the next 4 bits then use counters in that one cache line.  A bucket found
    with a different check belongs to another context: it is reset (see
    ``find_bucket``), so collisions cost statistics but never correctness.
    """

    def __init__(self, mem):
        self.tables = memory.zeros((K.N_HASHED, 1 << mem), np.uint32)  # huge pages, mapped lazily
        self.bucket_bits = mem - 4
        self.hashes = np.zeros(K.N_HASHED, dtype=np.uint64)
        self.slots = np.zeros(K.N_HASHED, dtype=np.int64)
        # (model, bit position, history) -> p
        self.histories = Counters(K.HISTORY_COUNTERS, K.LIMIT_HISTORY, K.history_prior())

    def set_contexts(self, c4, c8, word, word_prev, shape, run_length, classes):
        """New byte: hash the eight contexts (from the last 8 bytes, the word hashes and the text's shape)."""
        K.context_hashes(self.hashes, c4, c8, word, word_prev, shape, run_length, classes)

    def select_nibble(self, c0):
        """New nibble: claim the bucket of (context, partial byte ``c0``) in every table."""
        K.lookup_nibble(self.tables, self.hashes, c0, self.bucket_bits, self.slots, True)

    def add_inputs(self, j, bitpos, x):
        """Direct predictions into ``x[1:9]``, indirect ones into ``x[9:17]`` and, for one-sided
        histories, again into ``x[X_ONE_SIDED:]``; ``j`` is the node of the nibble tree (1..15).
        Returns how many models have seen their context (0..8).
        """
        known = 0
        for k in range(K.N_HASHED):
            v = int(self.tables[k, self.slots[k] + j])
            x[1 + k] = K.STRETCH[v >> 20]
            x[1 + K.N_HASHED + k] = K.STRETCH[self.histories.p(history_index(k, bitpos, v))]
            x[K.X_ONE_SIDED + k] = x[1 + K.N_HASHED + k] if one_sided(v) else 0
            known += (v & 255) > 0
        return known

    def update(self, j, bitpos, bit):
        for k in range(K.N_HASHED):
            i = self.slots[k] + j
            v = int(self.tables[k, i])
            self.histories.update(history_index(k, bitpos, v), bit)
            self.tables[k, i] = slot_next(v, bit, K.LIMIT_HASHED[k])
# --8<-- [end:context_models]


# --8<-- [start:match_model]
class MatchModel:
    """The most recent earlier occurrence of the last 6 bytes predicts the byte after it.

    Predicts: while the bytes since the match keep agreeing, the next bit is
    probably the bit of the byte that followed the earlier occurrence.  How
    probable is learned by counters indexed by (match length bucket, that
    expected bit, bit position, previous byte); with no match the counters of
    the previous byte and bit position alone answer.  A second input gives
    the match length itself, signed by the expected bit (``match_strength``).
    Learns: at every byte boundary the match is extended (or dropped if the
    byte differed), a lost match is looked up again by hashing the last 6
    bytes, a short one is replaced by a longer one found by hashing the last
    10 (``match_byte_update``), and two tables record where these 6 and 10
    bytes occurred last.
    """

    def __init__(self, mem):
        self.table = memory.zeros((2, 1 << (mem - 2)), np.int32)  # where 6 / 10 bytes occurred last
        self.bits = mem - 2
        self.counters = Counters(K.MATCH_COUNTERS, K.LIMIT_MATCH, K.match_prior())
        self.length = 0
        self.ptr = 0
        self.ctx = 0

    def add_inputs(self, hist, c0, bitpos, c1, x):
        """The counter's stretched prediction of the next bit and the signed match length;
        remembers which counter predicted."""
        predicted = int(hist[self.ptr]) if self.length > 0 else 0
        self.ctx = int(match_context(predicted, self.length, c0, bitpos, c1))
        x[K.X_MATCH] = K.STRETCH[self.counters.p(self.ctx)]
        x[K.X_MATCH_LENGTH] = match_strength(self.ctx, self.length)

    def update(self, bit):
        self.counters.update(self.ctx, bit)

    def end_of_byte(self, hist, pos):
        self.length, self.ptr = (int(v) for v in
                                 K.match_byte_update(hist, pos, self.table, self.bits, self.length, self.ptr))
# --8<-- [end:match_model]


# --8<-- [start:run_model]
class RunModel:
    """Each context of orders 2, 3, 4, 5 and of the word models remembers the byte that followed it
    last, and how many times in a row.

    Predicts: while the bits of the current byte agree with that byte, the
    next bit is probably its next bit; how probable is learned by counters
    indexed by (model, run length up to 15, expected bit, bit position), so a
    context that was followed by the same byte five times in a row earns more
    trust than one seen once.  One mixer input per run model; 0 when the
    context has no run or the byte has already left it.  (Runs of the order-1
    and follower contexts gained 0.007 points on enwik8_head for 6 % of the
    speed, so they had none; nor have the two class contexts that later took
    their places.  A run for the shape context gained 0.013 for 5 %.)
    Learns: the counters that predicted, and at each byte boundary every
    context's run (it grows if the byte repeats it, else restarts at 1).
    A run takes no memory of its own: it is kept in the spare top half of the
    check word of its context's first-nibble bucket (see ``run_lookup``), and
    is lost with the bucket.
    """

    def __init__(self):
        self.counters = Counters(K.RUN_COUNTERS, K.LIMIT_RUN, K.run_prior())
        # run r belongs to hashed model K.RUN_MODEL0 + r
        self.idx = np.zeros(K.N_RUNS, dtype=np.int64)    # bucket of each current context
        self.byte = np.zeros(K.N_RUNS, dtype=np.int64)   # the byte each context predicts
        self.count = np.zeros(K.N_RUNS, dtype=np.int64)  # its run length (0: no prediction)
        self.ctx = [-1] * K.N_RUNS                       # counters used by the current bit

    def set_contexts(self, contexts):
        """New byte (after ``contexts.select_nibble(1)``): read the new contexts' runs."""
        K.run_lookup(contexts.tables, contexts.slots, self.idx, self.byte, self.count)

    def add_inputs(self, c0, bitpos, x):
        for r in range(K.N_RUNS):
            self.ctx[r] = ctx = run_context(r, int(self.byte[r]), int(self.count[r]), c0, bitpos)
            x[K.X_RUN + r] = K.STRETCH[self.counters.p(ctx)] if ctx >= 0 else 0

    def update(self, bit):
        for ctx in self.ctx:
            if ctx >= 0:
                self.counters.update(ctx, bit)

    def end_of_byte(self, contexts, byte):
        """Record ``byte`` in the runs of the contexts it followed (before they are re-hashed)."""
        K.run_store(contexts.tables, contexts.hashes, self.idx, self.byte, self.count, byte)
# --8<-- [end:run_model]


# --8<-- [start:mixer_class]
class Mixer:
    """Four gated logistic mixers: p_k = squash(sum_i w_i * stretch(p_i)), averaged.

    Predicts: the combination of all inputs (order 0, two per context model,
    the match model, a constant bias, the runs, per context model its
    one-sided history, and the match length), weighted by how much each has
    deserved trust.  Each mixer has its own weight sets, and uses for each bit
    the set its small context selects (``mixer_rows``): the partial byte with
    the last byte's class, the length of its run and whether 7+ context models
    have seen their context before (2 x 4 x 16 x 256 sets),
    the partial byte with the match model's state (56 x 256), the previous
    byte with the top 3 bits of the byte before it and the bit position
    (256 x 8 x 8), the byte before it with the top 3 bits of the previous one
    and the bit position (256 x 8 x 8).  So trust can differ by bit position,
    by the bits already seen, between familiar and novel contexts, with the
    length of the current match and with what the text just said.  The four outputs are
    averaged in the logistic domain (a learned second-layer mixer did no
    better here).
    Learns: online logistic regression, w_i += rate * (bit - p_k) * stretch(p_i)
    for each mixer k: the gradient of the coding cost -log2 P(bit) with
    respect to w_i, each mixer from its own error.  The rate starts high and
    falls as the input goes on (``mixer_rate``).
    """

    def __init__(self):
        # one table: the four mixers' weight sets stacked (rows from ``mixer_rows``)
        self.weights = memory.full((K.MIXER_ROWS, K.N_INPUTS), K.MIX_INIT, np.int32)
        # The run, one-sided and match-length inputs start ignored and earn their
        # weight: young runs mislead, and on 2 KB chunks starting the runs at 1/8
        # like the others cost 0.4 points.
        self.weights[:, K.X_RUN:] = 0
        self.rows = (0, 0, 0, 0)
        self.prs = (2048, 2048, 2048, 2048)

    def p(self, x, rows):
        """The four mixers' dot products, in the weight sets ``rows``, averaged in the logistic domain."""
        self.rows = rows
        ds = [clamp_dot(int(np.dot(x, self.weights[r].astype(np.int64)))) for r in rows]  # exact integer dots
        self.prs = tuple(squash(d) for d in ds)
        return squash(sum(ds) >> 2)

    def update(self, x, bit, pos):
        """Each mixer learns from its own error, faster while few bytes (``pos``) have been seen."""
        rate = mixer_rate(pos)
        for row, pr in zip(self.rows, self.prs):
            self.weights[row] += mixer_step(x, mixer_error(pr, bit, rate)).astype(np.int32)  # every input at once
# --8<-- [end:mixer_class]


# --8<-- [start:apm_class]
class APM:
    """Adaptive probability map (secondary estimation): refines a probability in a context.

    Predicts: a corrected P(bit = 1) given the mixer's output and a small
    context: the input is stretched and placed between two of 33 knots, the
    output interpolated between their values.  Each context starts as the
    identity map, so an untrained APM changes nothing.
    Learns: both knots around the input move part of the way toward the
    bit: 1/16 in the first 4 KB of input, 1/32 up to 64 KB, 1/64 up to 256 KB,
    then 1/128 (``apm_rate``), so a young map catches up quickly and an old one
    is steady.
    """

    def __init__(self, contexts):
        self.t = memory.zeros(contexts * K.APM_ROWS, np.uint16)
        self.t[:] = K.apm_init(contexts)
        self.idx = 0

    def p(self, pr, cx):
        self.idx, w = (int(v) for v in apm_knot(pr, cx))
        return int(apm_interp(self.t[self.idx], self.t[self.idx + 1], w))

    def update(self, bit, pos):
        for i in (self.idx, self.idx + 1):
            self.t[i] = apm_next(int(self.t[i]), bit, apm_rate(pos))
# --8<-- [end:apm_class]


@register("cm")
class ContextMixingPredictor(Predictor):
    """Bitwise context-mixing model (``cm:v=7,mem=22``); see the module docstring."""

    # Version 7: the model of file format 7 (byte classes, text shape, class-selected
    # mixer 1, order 5); formats 3-7 each changed the model, so the count goes on from there.
    model_version = 7
    unversioned = 7
    bitwise = True
    word_codes = True  # the compressor codes frequent words as single bytes (lmc_ref.word_codes)

    def __init__(self, mem=DEFAULT_MEM):
        if not MIN_MEM <= mem <= MAX_MEM:
            raise ValueError(f"cm mem must be in {MIN_MEM}..{MAX_MEM}, got {mem}")
        self.mem = mem
        self.letters = K.word_letters()  # kept by reset(): they belong to the input, not to the model's state
        self.classes = K.byte_classes()
        self.reset()

    def use_word_codes(self, code_bytes):
        """The input's frequent words are coded as ``code_bytes`` (``lmc_ref.word_codes``): the word
        models treat those bytes as letters, and the byte classes as lowercase letters.  Called by the
        compressor before coding, on both sides."""
        self.letters = K.word_letters(code_bytes)
        self.classes = K.byte_classes(code_bytes)

    @classmethod
    def from_params(cls, **params):
        mem = int_param(params, "mem", DEFAULT_MEM, MIN_MEM, MAX_MEM)
        reject_unknown("cm", params)
        return cls(mem=mem)

    @classmethod
    def help_text(cls):
        return (
            f"cm:mem=N  bitwise context mixing (orders 0, 2-5, byte classes, text shape, 2 word models, runs, match; "
            f"4 mixers, 2 APMs; the compressor codes words seen 256+ times as single bytes), "
            f"2**N counters per context model (N {MIN_MEM}..{MAX_MEM}, default {DEFAULT_MEM}: "
            f"{memory_bytes(DEFAULT_MEM) / 2**20:.0f} MiB of tables; N={MAX_MEM}: "
            f"{memory_bytes(MAX_MEM) / 2**20:.0f} MiB)"
        )

    @property
    def spec(self):
        return self.versioned_spec(f"mem={self.mem}")

    # --8<-- [start:reset]
    def reset(self):
        self.order0 = Counters(256, K.LIMIT_ORDER0)  # context: the partial byte only
        self.contexts = ContextModels(self.mem)
        self.match = MatchModel(self.mem)
        self.run = RunModel()
        self.mixer = Mixer()
        self.apm1 = APM(65536)          # context: partial byte and a hash of the last 3 bytes
        self.apm2 = APM(65536)          # context: partial byte and previous byte
        self.x = np.zeros(K.N_INPUTS, dtype=np.int64)   # the mixer's inputs for the current bit
        self.hist = np.zeros(1024, dtype=np.uint8)      # every byte seen (the match model reads it)
        self.pos = 0
        self.c0 = 1          # partial byte: a leading 1, then the bits seen so far
        self.bitpos = 0
        self.j = 1           # node of the current nibble's bit tree
        self.c4 = 0          # last 4 bytes, most recent in the low byte
        self.c8 = 0          # the 4 bytes before those
        self.word = 0        # hash of the current word's letters (0 between words)
        self.word_prev = 0   # hash of the previous word
        self.shape = 0       # classes of the last runs of same-class bytes (see ``shape_step``)
        self.run_length = 0  # length of the last of those runs (0: no byte yet)
        self.contexts.set_contexts(self.c4, self.c8, self.word, self.word_prev, self.shape, self.run_length,
                                   self.classes)
        self.contexts.select_nibble(self.c0)
        self.run.set_contexts(self.contexts)
    # --8<-- [end:reset]

    # --8<-- [start:predict_bit]
    def predict_bit(self):
        x, c0, c1 = self.x, self.c0, self.c4 & 255
        x[0] = K.STRETCH[self.order0.p(c0)]
        known = self.contexts.add_inputs(self.j, self.bitpos, x)
        self.run.add_inputs(c0, self.bitpos, x)
        self.match.add_inputs(self.hist, c0, self.bitpos, c1, x)
        x[K.X_MATCH + 1] = K.BIAS
        pr = self.mixer.p(x, mixer_rows(known, self.shape, self.run_length, self.match.ctx, c0, self.c4, self.bitpos))
        return int(final_p(self.apm1.p(pr, apm1_context(c0, self.c4)), self.apm2.p(pr, c0 | (c1 << 8))))

    def update_bit(self, bit):
        self.order0.update(self.c0, bit)
        self.contexts.update(self.j, self.bitpos, bit)
        self.match.update(bit)
        self.run.update(bit)
        self.mixer.update(self.x, bit, self.pos)
        self.apm1.update(bit, self.pos)
        self.apm2.update(bit, self.pos)
        self.c0 = self.c0 * 2 + bit
        self.bitpos += 1
        self.j = self.j * 2 + bit
        if self.bitpos == 4:
            self.j = 1
            self.contexts.select_nibble(self.c0)
        elif self.bitpos == 8:
            self._end_of_byte(self.c0 & 255)
    # --8<-- [end:predict_bit]

    def _end_of_byte(self, byte):
        if self.pos == self.hist.shape[0]:
            self.hist = np.concatenate([self.hist, np.zeros_like(self.hist)])
        self.hist[self.pos] = byte
        self.pos += 1
        self.c8 = ((self.c8 << 8) | (self.c4 >> 24)) & 0xFFFFFFFF
        self.c4 = ((self.c4 << 8) | byte) & 0xFFFFFFFF
        self.word, self.word_prev = (int(v) for v in K.word_step(self.word, self.word_prev, byte, self.letters))
        self.shape, self.run_length = (int(v) for v in K.shape_step(self.shape, self.run_length, self.classes[byte]))
        self.run.end_of_byte(self.contexts, byte)
        self.contexts.set_contexts(self.c4, self.c8, self.word, self.word_prev, self.shape, self.run_length,
                                   self.classes)
        self.match.end_of_byte(self.hist, self.pos)
        self.c0, self.bitpos, self.j = 1, 0, 1
        self.contexts.select_nibble(self.c0)
        self.run.set_contexts(self.contexts)

    # --- byte interface --------------------------------------------------------

    def predict(self):
        """Next-byte pdf: product of bit probabilities along the 8-bit tree; the model is unchanged."""
        if self.bitpos != 0:
            raise RuntimeError("predict() is only defined at a byte boundary")
        pdf = np.empty(256)
        predicted = int(self.hist[self.match.ptr]) if self.match.length > 0 else 0
        K.byte_pdf(pdf, predicted, self.match.length, self.c4, self.shape, self.run_length, self.order0.t,
                   self.contexts.tables,
                   self.contexts.histories.t, self.contexts.hashes, self.contexts.slots, self.match.counters.t,
                   self.mixer.weights, self.apm1.t, self.apm2.t, self.contexts.bucket_bits,
                   self.run.byte, self.run.count, self.run.counters.t)
        return pdf

    def update(self, symbol):
        """Learn a whole byte: each bit's update needs the state its prediction set up."""
        for k in range(7, -1, -1):
            self.predict_bit()
            self.update_bit((int(symbol) >> k) & 1)

    # --- fused path ----------------------------------------------------------

    def _state_vector(self):
        s = np.zeros(K.S_SIZE, dtype=np.int64)
        s[K.S_C0], s[K.S_BITPOS], s[K.S_J], s[K.S_C4], s[K.S_C8] = self.c0, self.bitpos, self.j, self.c4, self.c8
        s[K.S_WORD], s[K.S_WORDPREV], s[K.S_POS] = self.word, self.word_prev, self.pos
        s[K.S_MMLEN], s[K.S_MMPTR] = self.match.length, self.match.ptr
        s[K.S_SHAPE], s[K.S_RUNLEN] = self.shape, self.run_length
        return s

    def _block_coder(self, ideal=None):
        """The compiled loop with this model's tables bound in (see ``fused``).  If
        ``ideal`` is a 1-element array, it accumulates the ideal code length in bits."""
        ideal = np.zeros(0) if ideal is None else ideal
        self.reset()
        s = self._state_vector()

        def code_block(hist, start, end, decode, st, buf, payload):
            K.code_block(hist, start, end, decode, s, self.order0.t, self.contexts.tables, self.contexts.histories.t,
                         self.contexts.hashes, self.contexts.slots, self.match.table, self.match.counters.t,
                         self.mixer.weights, self.apm1.t, self.apm2.t, self.run.counters.t,
                         self.classes, self.letters, self.contexts.bucket_bits, self.match.bits,
                         st, buf, payload, ideal)

        return code_block

    def ideal_bits(self, data):
        """-log2 of the model's probability of ``data`` (uint8 array), from an empty state:
        the sum over all coded bits of -log2 P(bit), computed in the fused loop."""
        ideal = np.zeros(1)
        fused.encode(data, self._block_coder(ideal), BLOCK, 8 * 18)
        self.reset()  # the fused loop leaves the readable state behind; start clean
        return float(ideal[0])

    def byte_costs(self, data):
        """The ideal code length of each byte of ``data`` (uint8 array) in bits, from an empty state:
        where the model spends its bits (``lmc_ref.experiments.costs``).  Sums to ``ideal_bits(data)``."""
        ideal = np.zeros(len(data) + 1)
        fused.encode(data, self._block_coder(ideal), BLOCK, 8 * 18)
        self.reset()
        return ideal[1:]

    def fused_encode(self, data, progress=None):
        payload = fused.encode(data, self._block_coder(), BLOCK, 8 * 18, progress)
        self.reset()
        return payload

    def fused_decode(self, payload, length, progress=None):
        out = fused.decode(payload, length, self._block_coder(), BLOCK, progress)
        self.reset()
        return out
