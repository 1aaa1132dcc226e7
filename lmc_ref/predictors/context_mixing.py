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
holds a component's tables and says what it predicts and how it learns; its
arithmetic is in the module named after it):

1. ``squash`` / ``stretch``: the logistic function and its inverse, in integers (``cm_counters``);
2. ``Counters``: adaptive probabilities, one per context slot (``cm_counters``);
3. ``ContextModels``: byte classes, orders 2, 3, 4, 5, two word models and the text's shape, hashed into
   tables (``cm_contexts``);
4. ``MatchModel``: the longest earlier occurrence of the recent bytes predicts the next bit (``cm_match``);
5. ``RunModel``: the byte that last followed each hashed context predicts it again (``cm_runs``);
6. ``Mixer``: four gated logistic mixers (weight sets chosen by small contexts), averaged (``cm_mixer``);
7. ``APM``: adaptive probability maps that refine the mixer's output (``cm_apm``);
8. ``ContextMixingPredictor``: the whole model, behind the ``Predictor`` protocol.

All arithmetic is integer, so the output is identical on every machine.  One
bit's prediction and update are written once, in ``context_mixing_kernels``
(``predict_bit``, ``update_bit``).  ``ContextMixingPredictor.predict_bit`` /
``update_bit`` (the *readable path*) run their plain-Python source one bit at
a time; ``fused_encode`` / ``fused_decode`` run them compiled, in one loop
with the coder (``code_block``), and emit the same bytes.
"""

import numpy as np

from .. import memory
from . import context_mixing_kernels as K
from . import fused
from .base import Predictor, int_param, register, reject_unknown
from .cm_apm import APM_ROWS, apm_init, apm_rate
from .cm_contexts import (HISTORY_COUNTERS, LIMIT_HISTORY, N_HASHED, byte_classes, context_hashes, history_prior,
                          lookup_nibble, shape_step, word_letters, word_step)
from .cm_match import LIMIT_MATCH, MATCH_COUNTERS, match_byte_update, match_prior
from .cm_mixer import MIX_INIT, MIXER_ROWS, N_INPUTS, X_RUN, mixer_rate
from .cm_runs import LIMIT_RUN, N_RUNS, RUN_COUNTERS, run_lookup, run_prior, run_store

MIN_MEM, MAX_MEM, DEFAULT_MEM = 10, 25, 22
# Tables sized to the input (``sized_for``): a byte claims two 16-word buckets
# (one per nibble) in each hashed table; 16x that many buckets moved the rate by
# 0.000 % on 2048- and 16384-byte chunks of enwik8 (1x: 0.05 %, 4x: 0.006 %).
BUCKETS_PER_BYTE = 2 * 16
BLOCK = 1 << 16           # fused path: bytes per compiled call (progress + buffer growth)

# The readable path runs the one bit step's plain-Python source: the same code
# as the fused loop's, one bit at a time (the components it calls run compiled).
predict_step, update_step = K.predict_bit.py_func, K.update_bit.py_func


def memory_bytes(mem):
    """Bytes the model allocates for ``cm:mem=N`` (tables; the history of the input comes on top)."""
    hashed = N_HASHED * 4 << mem                  # uint32 counters
    match = 8 << (mem - 2)                          # int32 positions, two tables
    apms = 2 * APM_ROWS * (65536 + 65536)       # uint16 knots
    mixers = 4 * MIXER_ROWS * N_INPUTS
    fixed = apms + mixers + 4 * (256 + MATCH_COUNTERS + HISTORY_COUNTERS + RUN_COUNTERS) + 2 * 256
    return hashed + match + fixed


# --8<-- [start:counters]
class Counters:
    """An array of adaptive bit probabilities (what lpaq calls a StateMap).

    Predicts: P(bit = 1) in the context that selects counter ``i``
    (``t[i] >> 20``, a 12-bit probability).
    Learns: p += (bit - p) / (n + 1.5), where n counts the bits seen so far in
    that context, up to a limit (``counter_next``).  A young counter is thus
    the frequency of ones so far; an old one an exponential moving average (it
    keeps adapting).  Each counter is one uint32: 22 bits of probability, 10
    bits of count.  They start at p = 1/2, n = 0, or at ``prior`` (initial
    uint32 values, see ``history_prior`` and ``expected_bit_prior``).
    """

    def __init__(self, size, limit, prior=None):
        self.t = np.full(size, 1 << 31, dtype=np.uint32) if prior is None else prior.astype(np.uint32)
        assert self.t.shape == (size,)
        self.limit = limit
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
    Learns: the slot's probability (like ``Counters``) and history
    (``slot_next``), and the indirect counter that was used.

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
        self.tables = memory.zeros((N_HASHED, 1 << mem), np.uint32)  # huge pages, mapped lazily
        self.bucket_bits = mem - 4
        self.hashes = np.zeros(N_HASHED, dtype=np.uint64)
        self.slots = np.zeros(N_HASHED, dtype=np.int64)
        # (model, bit position, history) -> p
        self.histories = Counters(HISTORY_COUNTERS, LIMIT_HISTORY, history_prior())

    def set_contexts(self, c4, c8, word, word_prev, shape, run_length, classes):
        """New byte: hash the eight contexts (from the last 8 bytes, the word hashes and the text's shape)."""
        context_hashes(self.hashes, c4, c8, word, word_prev, shape, run_length, classes)

    def select_nibble(self, c0):
        """New nibble: claim the bucket of (context, partial byte ``c0``) in every table."""
        lookup_nibble(self.tables, self.hashes, c0, self.bucket_bits, self.slots, True)
# --8<-- [end:context_models]


# --8<-- [start:match_model]
class MatchModel:
    """The most recent earlier occurrence of the last 6 bytes predicts the byte after it.

    Predicts: while the bytes since the match keep agreeing, the next bit is
    probably the bit of the byte that followed the earlier occurrence.  How
    probable is learned by counters indexed by (match length bucket, that
    expected bit, bit position, previous byte; ``match_context``); with no
    match the counters of the previous byte and bit position alone answer.  A
    second input gives the match length itself, signed by the expected bit
    (``match_strength``).
    Learns: the counter that predicted; at every byte boundary the match is
    extended (or dropped if the byte differed), a lost match is looked up
    again by hashing the last 6 bytes, a short one is replaced by a longer one
    found by hashing the last 10 (``match_byte_update``), and two tables
    record where these 6 and 10 bytes occurred last.
    """

    def __init__(self, mem):
        self.table = memory.zeros((2, 1 << (mem - 2)), np.int32)  # where 6 / 10 bytes occurred last
        self.bits = mem - 2
        self.counters = Counters(MATCH_COUNTERS, LIMIT_MATCH, match_prior())
        self.length = 0
        self.ptr = 0

    def predicted(self, hist):
        """The byte the match predicts (0 without a match)."""
        return int(hist[self.ptr]) if self.length > 0 else 0

    def end_of_byte(self, hist, pos):
        self.length, self.ptr = (int(v) for v in
                                 match_byte_update(hist, pos, self.table, self.bits, self.length, self.ptr))
# --8<-- [end:match_model]


# --8<-- [start:run_model]
class RunModel:
    """Each context of orders 2, 3, 4, 5 and of the word models remembers the byte that followed it
    last, and how many times in a row.

    Predicts: while the bits of the current byte agree with that byte, the
    next bit is probably its next bit; how probable is learned by counters
    indexed by (model, run length up to 15, expected bit, bit position;
    ``run_context``), so a context that was followed by the same byte five
    times in a row earns more trust than one seen once.  One mixer input per
    run model; 0 when the context has no run or the byte has already left it.
    The class and shape contexts have none: there a run gains too little for
    its time (chapter 3b).
    Learns: the counters that predicted, and at each byte boundary every
    context's run (it grows if the byte repeats it, else restarts at 1).
    A run takes no memory of its own: it is kept in the spare top half of the
    check word of its context's first-nibble bucket (see ``run_lookup``), and
    is lost with the bucket.
    """

    def __init__(self):
        self.counters = Counters(RUN_COUNTERS, LIMIT_RUN, run_prior())
        # run r belongs to hashed model RUN_MODEL0 + r
        self.idx = np.zeros(N_RUNS, dtype=np.int64)    # bucket of each current context
        self.byte = np.zeros(N_RUNS, dtype=np.int64)   # the byte each context predicts
        self.count = np.zeros(N_RUNS, dtype=np.int64)  # its run length (0: no prediction)

    def set_contexts(self, contexts):
        """New byte (after ``contexts.select_nibble(1)``): read the new contexts' runs."""
        run_lookup(contexts.tables, contexts.slots, self.idx, self.byte, self.count)

    def end_of_byte(self, contexts, byte):
        """Record ``byte`` in the runs of the contexts it followed (before they are re-hashed)."""
        run_store(contexts.tables, contexts.hashes, self.idx, self.byte, self.count, byte)
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
    length of the current match and with what the text just said.  The four
    outputs (``mixer_dots``) are averaged in the logistic domain (a learned
    second-layer mixer did no better here).
    Learns: online logistic regression, w_i += rate * (bit - p_k) * stretch(p_i)
    for each mixer k: the gradient of the coding cost -log2 P(bit) with
    respect to w_i, each mixer from its own error (``mixer_update``).  The
    rate starts high and falls as the input goes on (``mixer_rate``).
    """

    def __init__(self):
        # one table: the four mixers' weight sets stacked (rows from ``mixer_rows``)
        self.weights = memory.full((MIXER_ROWS, N_INPUTS), MIX_INIT, np.int32)
        # The run, one-sided and match-length inputs start ignored and earn their
        # weight: young runs mislead, most of all on short inputs.
        self.weights[:, X_RUN:] = 0
# --8<-- [end:mixer_class]


# --8<-- [start:apm_class]
class APM:
    """Adaptive probability map (secondary estimation): refines a probability in a context.

    Predicts: a corrected P(bit = 1) given the mixer's output and a small
    context: the input is stretched and placed between two of 33 knots, the
    output interpolated between their values (``apm_refine``).  Each context
    starts as the identity map, so an untrained APM changes nothing.
    Learns: both knots around the input move part of the way toward the
    bit (``apm_update``): 1/16 in the first 4 KB of input, 1/32 up to 64 KB,
    1/64 up to 256 KB, then 1/128 (``apm_rate``), so a young map catches up
    quickly and an old one is steady.
    """

    def __init__(self, contexts):
        self.t = memory.zeros(contexts * APM_ROWS, np.uint16)
        self.t[:] = apm_init(contexts)
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
        self.letters = word_letters()  # kept by reset(): they belong to the input, not to the model's state
        self.classes = byte_classes()
        self.reset()

    def use_word_codes(self, code_bytes):
        """The input's frequent words are coded as ``code_bytes`` (``lmc_ref.word_codes``): the word
        models treat those bytes as letters, and the byte classes as lowercase letters.  Called by the
        compressor before coding, on both sides."""
        self.letters = word_letters(code_bytes)
        self.classes = byte_classes(code_bytes)
        self.tables = self._tables()

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

    def sized_for(self, length):
        """This model with tables sized to an input of ``length`` bytes: the next power of two above
        ``BUCKETS_PER_BYTE * length`` buckets of 16 counters, never more than ``mem`` asked for nor
        fewer than ``2**MIN_MEM`` counters.  The spec records the result, so the decoder allocates the same."""
        mem = max(MIN_MEM, min(self.mem, (BUCKETS_PER_BYTE * max(length, 1) - 1).bit_length() + 4))
        return self if mem == self.mem else type(self)(mem=mem)

    # --8<-- [start:reset]
    def reset(self):
        self.order0 = Counters(256, K.LIMIT_ORDER0)  # context: the partial byte only
        self.contexts = ContextModels(self.mem)
        self.match = MatchModel(self.mem)
        self.run = RunModel()
        self.mixer = Mixer()
        self.apm1 = APM(65536)          # context: partial byte and a hash of the last 3 bytes
        self.apm2 = APM(65536)          # context: partial byte and previous byte
        self.tables = self._tables()    # all of the above, as the bit step takes them
        self.inputs = K.new_inputs()   # the mixer's inputs for the current bit, and the counters they came from
        self.used = None     # what the current bit's prediction used, until it is learned
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

    def _tables(self):
        """The components' arrays as one ``context_mixing_kernels.Tables`` (the same arrays, not copies)."""
        return K.Tables(order0=self.order0.t, hashed=self.contexts.tables, histories=self.contexts.histories.t,
                        match=self.match.counters.t, runs=self.run.counters.t, weights=self.mixer.weights,
                        apm1=self.apm1.t, apm2=self.apm2.t, hashes=self.contexts.hashes, slots=self.contexts.slots,
                        run_at=self.run.idx, run_byte=self.run.byte, run_count=self.run.count,
                        match_table=self.match.table, classes=self.classes, letters=self.letters,
                        bucket_bits=self.contexts.bucket_bits, match_bits=self.match.bits)

    def _byte_context(self):
        """What ``predict_bit`` needs to know of the current byte (see ``context_mixing_kernels.predict_bit``)."""
        return self.c4, self.shape, self.run_length, self.match.predicted(self.hist), self.match.length

    # --8<-- [start:predict_bit]
    def predict_bit(self):
        p, self.used = predict_step(self.tables, self.contexts.slots, self.inputs, self.c0, self.bitpos, self.j,
                                    self._byte_context())
        return int(p)

    def update_bit(self, bit):
        if self.used is None:  # the update learns from this bit's prediction: make it if nobody asked
            self.predict_bit()
        rates = (mixer_rate(self.pos), apm_rate(self.pos))
        update_step(self.tables, self.contexts.slots, self.inputs, self.used, bit, rates)
        self.used = None
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
        self.word, self.word_prev = (int(v) for v in word_step(self.word, self.word_prev, byte, self.letters))
        self.shape, self.run_length = (int(v) for v in shape_step(self.shape, self.run_length, self.classes[byte]))
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
        K.byte_pdf(pdf, self.tables, self._byte_context())
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
        """A fresh model's compiled loop with its tables bound in (see ``fused``).  If ``ideal``
        is given, it accumulates ideal code lengths in bits (see ``code_block``)."""
        ideal = np.zeros(0) if ideal is None else ideal
        self.reset()
        tables, s = self.tables, self._state_vector()

        def code_block(hist, start, end, decode, st, buf, payload):
            K.code_block(tables, s, hist, start, end, decode, (st, buf, payload), ideal)

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

    def fused_encode(self, data, progress=None, block=None):
        """Encode ``data`` in the compiled loop, ``block`` bytes (default ``BLOCK``) per call, with
        ``progress(n)`` after each; the model is left fresh."""
        payload = fused.encode(data, self._block_coder(), block or BLOCK, 8 * 18, progress)
        self.reset()
        return payload

    def fused_decode(self, payload, length, progress=None):
        out = fused.decode(payload, length, self._block_coder(), BLOCK, progress)
        self.reset()
        return out
