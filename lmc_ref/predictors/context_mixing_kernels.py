"""One bit of the context-mixing model, compiled: the predict step, the update step and the coding loops.

The components' arithmetic lives in the ``cm_*`` modules (``cm_counters``,
``cm_contexts``, ``cm_match``, ``cm_runs``, ``cm_mixer``, ``cm_apm``), as small
functions of integers and arrays.  This module puts them together, once:

* ``predict_bit`` asks every model for its input, mixes and refines: P(bit = 1)
  and what the update needs.  It reads the model and changes nothing.
* ``update_bit`` makes every table that predicted learn the coded bit.

Three callers share them.  The fused loop ``code_block`` runs them compiled
and inlined, with the arithmetic coder and the byte-level steps, for a block
of bytes; ``byte_pdf`` runs ``predict_bit`` along the tree of a whole byte;
and ``ContextMixingPredictor.predict_bit`` / ``update_bit`` (the readable
path, ``context_mixing.py``) run their plain-Python originals (``py_func``)
one bit at a time.  So the two paths do the same integer arithmetic and emit
the same bytes (``tests/test_context_mixing.py`` checks it).

The model's arrays travel together as one ``Tables``.  Numba's cache watches
only a kernel's own file, and a kernel keeps the code it inlined from other
files: after editing a ``cm_*`` module, clear the caches
(``find lmc_ref -name '*.nb[ic]' -delete``).  A stale ``code_block`` then
usually shows as a readable != fused failure, since the readable path runs
this module's steps from source.

Part of the model: changing a kernel or a constant changes every ``cm`` file.
"""

from collections import namedtuple

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from ..coder import decode_bit, encode_bit
from .cm_apm import APM_ROWS, apm1_context, apm2_context, apm_rate, apm_refine, apm_update, final_p
from .cm_contexts import (BUCKET, LIMIT_HASHED, LIMIT_HISTORY, N_HASHED, bucket_index, context_hashes, history_index,
                          lookup_nibble, nibble_hash, one_sided, shape_step, slot_next, slot_value, word_step)
from .cm_counters import learn, squash, stretched
from .cm_match import LIMIT_MATCH, match_byte_update, match_context, match_strength
from .cm_mixer import (BIAS, N_INPUTS, X_BIAS, X_DIRECT, X_HISTORY, X_MATCH, X_MATCH_LENGTH, X_ONE_SIDED, X_ORDER0,
                       X_RUN, mixer_dots, mixer_rate, mixer_rows, mixer_update)
from .cm_runs import LIMIT_RUN, N_RUNS, run_context, run_lookup, run_store

LIMIT_ORDER0 = 1023   # count limit of the order-0 counters (stationary statistics)

#: The model's arrays.  Learned tables: ``order0`` (256 counters, by partial
#: byte), ``hashed`` (the context models' hash tables, ``N_HASHED`` x 2**mem),
#: ``histories`` (their indirect maps), ``match`` and ``runs`` (the match and
#: run models' counters), ``weights`` (the mixers' stacked weight sets),
#: ``apm1`` and ``apm2``.  The current byte's selections: ``hashes`` (its
#: contexts' hashes), ``slots`` (each model's bucket for the current nibble),
#: ``run_at``, ``run_byte``, ``run_count`` (each run's bucket, byte and length).
#: Then the match model's position tables ``match_table``, this input's
#: ``classes`` and ``letters`` (``byte_classes``, ``word_letters``), and the
#: table sizes as bit counts, ``bucket_bits`` and ``match_bits``.
Tables = namedtuple("Tables", ["order0", "hashed", "histories", "match", "runs", "weights", "apm1", "apm2",
                               "hashes", "slots", "run_at", "run_byte", "run_count",
                               "match_table", "classes", "letters", "bucket_bits", "match_bits"])

#: What ``predict_bit`` used, for ``update_bit``: the bit's node (partial byte
#: ``c0``, bit position, node ``j`` of the nibble tree), the match counter, the
#: four mixers' rows and outputs, and the two APMs' lower knots.
Used = namedtuple("Used", ["c0", "bitpos", "j", "match", "rows", "dots", "apm1", "apm2"])

#: Arrays ``predict_bit`` fills for ``update_bit``: the mixer's inputs ``x``,
#: per hashed model the ``indirect`` counter it read, per run model the ``run``
#: counter it read (-1: none).  The update could recompute the counters' indices,
#: but reading them back is faster.
Inputs = namedtuple("Inputs", ["x", "indirect", "run"])


@njit(cache=True)
def new_inputs():
    """A bit's ``Inputs``; x is int32 (the inputs fit in 16 bits), so the mixer loops multiply 32-bit integers."""
    return Inputs(np.zeros(N_INPUTS, np.int32), np.zeros(N_HASHED, np.int64), np.zeros(N_RUNS, np.int64))

# Scalar state carried by the fused loop between blocks: one int64 array, these indices.
S_C0, S_BITPOS, S_J, S_C4, S_C8, S_WORD, S_WORDPREV, S_POS, S_MMLEN, S_MMPTR, S_SHAPE, S_RUNLEN = range(12)
S_SIZE = 12


# --8<-- [start:step]
@njit(cache=True, inline="always")
def predict_bit(t, slots, inputs, c0, bitpos, j, byte_ctx):
    """P(next bit = 1) as a 16-bit integer, and what ``update_bit`` needs (a ``Used``).

    ``t`` holds the model (``Tables``); ``slots`` the buckets of the current
    nibble (-1: a bucket not claimed, which reads as fresh); ``inputs``
    receives the mixer's inputs and the counters read (``Inputs``).  The bit
    is node ``j`` (1..15) of the nibble's tree, after the bits of partial byte
    ``c0`` (a leading 1, then ``bitpos`` bits).  ``byte_ctx`` is what stays
    the same for a whole byte: (last 4 bytes, text shape, its last run's
    length, the byte the match predicts, match length).  Reads the model and
    changes nothing.
    """
    c4, shape, run_length, predicted, mm_len = byte_ctx
    x = inputs.x
    x[X_ORDER0] = stretched(t.order0[c0])
    known = 0
    for m in range(N_HASHED):
        v = slot_value(t.hashed, m, slots[m], j)
        inputs.indirect[m] = h = history_index(m, bitpos, v)
        x[X_DIRECT + m] = stretched(v)
        x[X_HISTORY + m] = stretched(t.histories[h])
        x[X_ONE_SIDED + m] = x[X_HISTORY + m] if one_sided(v) else 0
        known += (v & 255) != 0  # no branch: whether a slot is new is hard to guess
    for r in range(N_RUNS):  # a loop of its own: faster than inside the one above
        inputs.run[r] = rctx = run_context(r, t.run_byte[r], t.run_count[r], c0, bitpos)
        x[X_RUN + r] = stretched(t.runs[rctx]) if rctx >= 0 else 0
    mctx = match_context(predicted, mm_len, c0, bitpos, c4 & 255)
    x[X_MATCH] = stretched(t.match[mctx])
    x[X_BIAS] = BIAS
    x[X_MATCH_LENGTH] = match_strength(mctx, mm_len)
    rows = mixer_rows(known, shape, run_length, mctx, c0, c4, bitpos)
    dots = mixer_dots(t.weights, x, rows)
    pr = squash((dots[0] + dots[1] + dots[2] + dots[3]) >> 2)
    a1, i1 = apm_refine(t.apm1, pr, apm1_context(c0, c4))
    a2, i2 = apm_refine(t.apm2, pr, apm2_context(c0, c4))
    return final_p(a1, a2), Used(c0, bitpos, j, mctx, rows, dots, i1, i2)


@njit(cache=True, inline="always")
def update_bit(t, slots, inputs, used, bit, rates):
    """Every table that ``predict_bit`` read (``inputs``, ``used``) learns ``bit``.

    ``rates`` are the mixers' and the APMs' learning rates for this byte
    (``mixer_rate``, ``apm_rate``).
    """
    learn(t.order0, used.c0, bit, LIMIT_ORDER0)
    for m in range(N_HASHED):
        learn(t.histories, inputs.indirect[m], bit, LIMIT_HISTORY)
        q = slots[m] + used.j
        t.hashed[m, q] = slot_next(np.int64(t.hashed[m, q]), bit, LIMIT_HASHED[m])
    for r in range(N_RUNS):
        if inputs.run[r] >= 0:
            learn(t.runs, inputs.run[r], bit, LIMIT_RUN)
    learn(t.match, used.match, bit, LIMIT_MATCH)
    mixer_update(t.weights, inputs.x, used.rows, used.dots, bit, rates[0])
    apm_update(t.apm1, used.apm1, bit, rates[1])
    apm_update(t.apm2, used.apm2, bit, rates[1])
# --8<-- [end:step]


@njit(cache=True)
def byte_pdf(pdf, t, byte_ctx):
    """Distribution of the next byte: the product of bit probabilities along the 8-bit tree.

    Must be called at a byte boundary (``byte_ctx`` as for ``predict_bit``).
    Every bit's prediction uses its own counters, weights and APM knots
    (indexed by the partial byte or the bit position), so coding a bit never
    changes the prediction of a later bit of the same byte: this pdf is
    exactly the distribution the coder uses.  The buckets of the second
    nibble are looked up without claiming them (a missing bucket predicts
    like a freshly claimed one), so the model is left unchanged.
    """
    inputs = new_inputs()
    node = np.ones(512)
    nib_slots = np.empty(N_HASHED, np.int64)
    for hi in range(16):
        lookup_nibble(t.hashed, t.hashes, 16 + hi, t.bucket_bits, nib_slots, False)
        for c0 in range(1, 256):
            bitpos = 0
            while (c0 >> (bitpos + 1)) != 0:
                bitpos += 1
            if bitpos < 4:
                if hi > 0:
                    continue  # first nibble: done once, with the current buckets
                slots, j = t.slots, c0
            else:
                if (c0 >> (bitpos - 4)) != 16 + hi:
                    continue
                slots, j = nib_slots, (c0 & ((1 << (bitpos - 4)) - 1)) | (1 << (bitpos - 4))
            p = predict_bit(t, slots, inputs, c0, bitpos, j, byte_ctx)[0] / 65536.0
            node[2 * c0 + 1] = node[c0] * p
            node[2 * c0] = node[c0] * (1.0 - p)
    for b in range(256):
        pdf[b] = node[256 + b]


# llvm.prefetch's name carries its pointer type: opaque pointers (``p0``) from LLVM 17 on.
_PREFETCH = "llvm.prefetch.p0" if llvm_binding.llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"


@intrinsic
def prefetch(typingctx, arr, index):
    """Ask the CPU to start loading ``arr.flat[index]``'s cache line now (a hint: no effect on results).

    ``code_block`` knows at the start of a bit which APM rows, match counter
    and mixer rows it will read at the end of it, once the mixer has run; on
    1 MB of text those tables miss the cache, and loading them while the
    mixer computes hides much of the wait.  ``index`` is a flat element index
    of a C-contiguous array.  The readable path has no twin: a prefetch
    changes no value.
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


@njit(cache=True, inline="always")
def prefetch_buckets(tables, m, h, bucket_bits):
    """Start loading the three candidate buckets of nibble hash ``h`` in table ``m`` (a hint, see ``prefetch``)."""
    b = bucket_index(h, bucket_bits)
    prefetch(tables, m * tables.shape[1] + b * BUCKET)
    prefetch(tables, m * tables.shape[1] + (b ^ 1) * BUCKET)
    prefetch(tables, m * tables.shape[1] + (b ^ 2) * BUCKET)


@njit(cache=True, inline="always")
def prefetch_bit(t, c0, bitpos, byte_ctx):
    """Start loading what the end of ``predict_bit`` will read (arguments as there; a hint, see ``prefetch``)."""
    c4, shape, run_length, predicted, mm_len = byte_ctx
    cx1 = apm1_context(c0, c4)
    cx2 = apm2_context(c0, c4)
    prefetch(t.apm1, cx1 * APM_ROWS)
    prefetch(t.apm1, cx1 * APM_ROWS + 32)
    prefetch(t.apm2, cx2 * APM_ROWS)
    prefetch(t.apm2, cx2 * APM_ROWS + 32)
    mctx = match_context(predicted, mm_len, c0, bitpos, c4 & 255)
    prefetch(t.match, mctx)
    # mixer 1's row waits for the count of known contexts, which picks one of two rows: load both
    r1, r2, r3, r4 = mixer_rows(0, shape, run_length, mctx, c0, c4, bitpos)
    r1_known = mixer_rows(N_HASHED, shape, run_length, mctx, c0, c4, bitpos)[0]
    for r in (r1, r1_known, r2, r3, r4):
        prefetch(t.weights, r * N_INPUTS)
        prefetch(t.weights, r * N_INPUTS + N_INPUTS - 1)
    if bitpos == 3:
        # the second nibble's bucket is one of two per model, whichever this bit picks: load both
        for m in range(N_HASHED):
            prefetch_buckets(t.hashed, m, nibble_hash(t.hashes[m], 2 * c0), t.bucket_bits)
            prefetch_buckets(t.hashed, m, nibble_hash(t.hashes[m], 2 * c0 + 1), t.bucket_bits)


# --8<-- [start:code_block]
@njit(cache=True)
def code_block(t, s, hist, start, end, decode, coder, ideal):
    """Predict + (en|de)code + update, 8 bits per byte, for bytes [start, end) of ``hist``.

    ``t`` is the model (``Tables``), ``s`` the scalar state carried between
    blocks (``S_*``), ``coder`` the arithmetic coder's (state, output buffer,
    payload).  Decoding writes each byte into ``hist`` as it completes;
    encoding reads it.  If ``ideal`` has an element, ``ideal[0]`` accumulates
    -log2 of each coded bit's probability (the model's ideal code length; the
    model is integer, so there is no separate float model); if it has
    ``len(hist) + 1``, ``ideal[1 + i]`` also accumulates byte ``i``'s share
    (``byte_costs``).  The end of a byte spells out
    ``ContextMixingPredictor._end_of_byte`` with the same kernels.  The per-bit
    work is inlined here rather than called: a call would make Numba
    reference-count its arrays (atomic increments) on every bit, which once
    cost half the time.
    """
    st, buf, payload = coder
    # The byte-level steps call kernels: handed ``t.hashed`` rather than a local,
    # a call reference-counts the array (atomic operations) on every byte.
    hashed, hashes, slots, classes, letters = t.hashed, t.hashes, t.slots, t.classes, t.letters
    run_at, run_byte, run_count, match_table = t.run_at, t.run_byte, t.run_count, t.match_table
    bucket_bits = t.bucket_bits
    inputs = new_inputs()
    run_lookup(hashed, slots, run_at, run_byte, run_count)  # blocks start at byte boundaries
    c0, bitpos, j = s[S_C0], s[S_BITPOS], s[S_J]
    c4, c8, word, word_prev, pos = s[S_C4], s[S_C8], s[S_WORD], s[S_WORDPREV], s[S_POS]
    mm_len, mm_ptr = s[S_MMLEN], s[S_MMPTR]
    shape, run_length = s[S_SHAPE], s[S_RUNLEN]
    for i in range(start, end):
        byte = np.int64(hist[i])
        rates = (mixer_rate(pos), apm_rate(pos))  # they change once per byte: a division saved on every bit
        byte_ctx = (c4, shape, run_length, np.int64(hist[mm_ptr]) if mm_len > 0 else 0, mm_len)
        for k in range(7, -1, -1):
            prefetch_bit(t, c0, bitpos, byte_ctx)
            p, used = predict_bit(t, slots, inputs, c0, bitpos, j, byte_ctx)
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
            update_bit(t, slots, inputs, used, bit, rates)
            c0 = c0 * 2 + bit
            bitpos += 1
            j = j * 2 + bit
            if bitpos == 4:
                j = 1
                lookup_nibble(hashed, hashes, c0, bucket_bits, slots, True)
        # ---- end of byte
        byte = c0 & 255
        hist[pos] = byte
        pos += 1
        c8 = ((c8 << 8) | (c4 >> 24)) & 0xFFFFFFFF
        c4 = ((c4 << 8) | byte) & 0xFFFFFFFF
        word, word_prev = word_step(word, word_prev, byte, letters)
        shape, run_length = shape_step(shape, run_length, classes[byte])
        run_store(hashed, hashes, run_at, run_byte, run_count, byte)
        context_hashes(hashes, c4, c8, word, word_prev, shape, run_length, classes)
        for m in range(N_HASHED):  # the new contexts' buckets load while the match model works
            prefetch_buckets(hashed, m, nibble_hash(hashes[m], 1), bucket_bits)
        mm_len, mm_ptr = match_byte_update(hist, pos, match_table, t.match_bits, mm_len, mm_ptr)
        c0, bitpos, j = 1, 0, 1
        lookup_nibble(hashed, hashes, c0, bucket_bits, slots, True)
        run_lookup(hashed, slots, run_at, run_byte, run_count)
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
