"""The Llama family's coding kernels on the CPU: Numba, explicit loops, KV cache, rows in a batch.

``forward_rows`` runs the model (``llama.forward``, the readable reference) for
a batch of *rows*.  A row is one position of one sequence: its input token,
its position and the *slot* of the KV cache that holds its sequence.  The
kernel appends each row's key and value to its slot, attends over positions
``0..pos`` of that slot and writes the row's logits.  Both directions of the
coder use it:

* the **encoder** knows every token of a chunk, so it sends all positions of
  the chunk as the rows of one call (a prefill, like a framework's forward over
  a whole sequence): every weight matrix is read once for hundreds of rows;
* the **decoder** learns a token only by decoding it, so it runs many chunks
  in lockstep, one row per chunk and step, every chunk in its own slot: every
  weight matrix is read once per step for all the chunks of the group
  (``LOCKSTEP_CHUNKS`` says how many to put in a group).

A row's logits depend only on its token, its position and its slot's cache,
never on the other rows of the call or on how many there are: every sum is
taken in one fixed order (``matmul_tiles``: ascending input index, one
accumulator per output, a multiply and an add per term), with no BLAS and no
fast-math flags, and the threads split the *outputs* among them, never a sum.
So the encoder's prefill and the decoder's lockstep give bit-identical
probabilities, which the tests check.

Layouts: weight matrices are transposed to ``[in, out]`` and packed into
tiles of ``TILE`` outputs (``matmul_tiles.pack``), so that the microkernel
streams each tile's weights contiguously; the token embedding is packed that
way too (``[d, V]``) and serves as the output layer when it is tied.  Key
cache ``[slots, L, KV, hd, T]`` (the scores are ``q @ keys``), value cache
``[slots, L, KV, T, hd]`` (the output is ``probs @ values``), ``T`` a whole
number of tiles.  RMSNorm statistics and the attention normaliser are
float64; everything else is float32.
"""

import numpy as np
from numba import njit, prange

from ..coder import (decode_interval, decoder_init, decoder_target, encode_interval, encoder_finish,
                     encoder_init, max_stream_bytes)
from ..quantize import quantize_interval, quantize_search
from .infer_cpu import exp_shifted, max8, sum4
from .llama import head_dim, rope_angles
from .matmul_tiles import ROWS, TILE, block, matmul, pack, packed_item

#: Chunks to decode side by side in one lockstep group (one stream), a default
#: for the predictor that groups them.  The decoder reads every weight once per
#: step for all the live chunks of the group (SmolLM2-135M: 538 MB of float32
#: weights per step), so more chunks share each read; the cost is the KV cache,
#: ``slots * L * KV * hd * T * 8`` bytes (SmolLM2, 8 slots of 1024 positions:
#: 377 MB), and a group is decoded as a whole.  Chunks of a group end at
#: different steps, so a step carries fewer rows than the group has chunks.
LOCKSTEP_CHUNKS = 8
#: SiLU's exponent is clamped here: exp(80) still fits float32, and silu(x) for
#: x < -80 is below 1e-33 either way.
_SILU_CLAMP = np.float32(80.0)


def pack_weights(tensors, config):
    """The kernel's weight tuple from ``tensors`` (GGUF names, ``(out, in)`` float32 arrays).

    Matrices are transposed to ``[in, out]``, packed into tiles
    (``matmul_tiles.pack``) and stacked per layer; the query, key and value
    projections form one matrix, and so do the gate and up projections, so
    that each pair or triple is one product of the same rows.  Entries of ``tensors`` are
    removed as they are packed, so that the float32 model is held about once,
    not twice (pass a copy of the dict to keep it).
    """
    L, d = config["n_layers"], config["d_model"]

    def take(name):
        return tensors.pop(name)

    def stack(names, rows, cols):
        """Per layer, the matrices ``names`` side by side (outputs concatenated), packed."""
        out = np.empty((L, (cols + TILE - 1) // TILE, rows, TILE), np.float32)
        for i in range(L):
            out[i] = pack(np.concatenate([take(f"blk.{i}.{n}.weight") for n in names]).T)
        return out

    def vectors(name):
        return np.stack([take(f"blk.{i}.{name}.weight") for i in range(L)]).astype(np.float32)  # [L, d]

    kv, f = config["n_kv_heads"] * head_dim(config), config["d_ff"]
    embed = pack(take("token_embd.weight").T)  # [d, V] packed
    out = embed if config["tied"] else pack(take("output.weight").T)
    return (embed, out,
            vectors("attn_norm"),  # [L, d]
            stack(("attn_q", "attn_k", "attn_v"), d, d + 2 * kv),  # [L, d, q | k | v] packed
            stack(("attn_output",), d, d),  # [L, d, d] packed
            vectors("ffn_norm"),  # [L, d]
            stack(("ffn_gate", "ffn_up"), d, 2 * f),  # [L, d, gate | up] packed
            stack(("ffn_down",), f, d),  # [L, f, d] packed
            np.array(take("output_norm.weight"), dtype=np.float32))  # [d], a writable copy like the rest


def _round_up(capacity):
    """Capacities are whole tiles, so that the attention scores of the last tile use the microkernel."""
    return -(-max(1, capacity) // TILE) * TILE


def new_cache(config, slots, capacity):
    """Empty key and value caches for ``slots`` sequences of at least ``capacity`` positions
    (rounded up to a whole number of tiles)."""
    L, KV, hd = config["n_layers"], config["n_kv_heads"], head_dim(config)
    capacity = _round_up(capacity)
    return (np.zeros((slots, L, KV, hd, capacity), np.float32),  # keys [S, L, KV, hd, T]
            np.zeros((slots, L, KV, capacity, hd), np.float32))  # values [S, L, KV, T, hd]


def grow_cache(kc, vc, capacity):
    """The caches with room for at least ``capacity`` positions, the positions so far copied."""
    capacity = _round_up(capacity)
    k2 = np.zeros(kc.shape[:4] + (capacity,), np.float32)
    v2 = np.zeros(vc.shape[:3] + (capacity, vc.shape[4]), np.float32)
    k2[..., :kc.shape[4]] = kc
    v2[:, :, :, :vc.shape[3]] = vc
    return k2, v2


def angles(config, capacity):
    """RoPE tables ``(cos, sin)`` ``[capacity, rope_dim / 2]`` for the kernel."""
    return rope_angles(config, capacity)




@njit(cache=True)
def _rms_norm_rows(x, w, eps, out):
    """``out[r] = x[r] / sqrt(mean(x[r]**2) + eps) * w`` (the mean in float64)."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        s = 0.0
        for j in range(n):
            s += np.float64(x[r, j]) * np.float64(x[r, j])
        inv = 1.0 / np.sqrt(s / n + eps)
        for j in range(n):
            out[r, j] = np.float32(x[r, j] * inv) * w[j]


@njit(cache=True)
def _rotate_rows(x, pos, cos, sin, hd):
    """RoPE in place on ``x[r]`` (heads of ``hd`` channels): pairs ``(2i, 2i+1)`` rotate by ``pos[r]``."""
    half = cos.shape[1]
    for r in range(x.shape[0]):
        t = pos[r]
        for h0 in range(0, x.shape[1], hd):
            for i in range(half):
                c, s = cos[t, i], sin[t, i]
                a, b = x[r, h0 + 2 * i], x[r, h0 + 2 * i + 1]
                x[r, h0 + 2 * i] = a * c - b * s
                x[r, h0 + 2 * i + 1] = a * s + b * c


@njit(parallel=True, cache=True)
def _attention_rows(q, kc, vc, layer, pos, slots, n_kv, out):
    """Causal attention of each row over its slot's positions ``0..pos[r]``, per query head.

    One job is a row and a KV head with the query heads that share it, up to
    ``ROWS`` of them per microkernel call: the scores are ``q @ keys``
    (``keys`` ``[hd, T]``, the sum over ascending channels), the output is
    ``softmax(scores) @ values`` (``values`` ``[T, hd]``, over ascending
    positions).  Scores past ``pos[r]`` of a whole tile are computed and
    never read, so a row's bits do not depend on the cache beyond its position.
    Jobs alternate between the first and the last rows, so that the two halves
    of the job list (one per thread) hold equal work in a causal prefill.
    """
    R, d = q.shape
    hd, T = kc.shape[3], kc.shape[4]
    n_heads = d // hd
    group = n_heads // n_kv
    scale = np.float32(1.0 / np.sqrt(hd))
    for job in prange(R * n_kv):
        k = job // n_kv
        r, kvh = (k // 2 if k % 2 == 0 else R - 1 - k // 2), job % n_kv
        s_, n = slots[r], pos[r] + 1
        keys, values = kc[s_, layer, kvh], vc[s_, layer, kvh]  # [hd, T], [T, hd]
        heads = q[r].reshape((n_heads, hd))
        width = -(-n // TILE) * TILE
        scores = np.empty((ROWS, width), np.float32)
        probs = np.empty((ROWS, n), np.float32)
        mixed = np.empty((ROWS, hd), np.float32)
        pow2 = np.empty(n, np.int32)
        for h0 in range(kvh * group, (kvh + 1) * group, ROWS):
            rows = min((kvh + 1) * group, h0 + ROWS) - h0
            for c0 in range(0, n, TILE):
                block(heads, h0, rows, keys, c0, min(TILE, T - c0), scores, c0)
            for j in range(rows):
                s = scores[j]
                for tau in range(n):
                    s[tau] *= scale
                exp_shifted(s, n, max8(s, n), pow2)
                inv = np.float32(1.0 / sum4(s, n))
                for tau in range(n):
                    probs[j, tau] = s[tau] * inv
            for e0 in range(0, hd, TILE):
                block(probs, 0, rows, values, e0, min(TILE, hd - e0), mixed, e0)
            for j in range(rows):
                for e in range(hd):
                    out[r, (h0 + j) * hd + e] = mixed[j, e]


#: Rows from which SwiGLU runs on all threads; below, a parallel region costs more than it saves.
_PARALLEL_SWIGLU_ROWS = 64


@njit(cache=True, inline="always")
def _swiglu_row(gu, out, r, e, pow2):
    """``out[r] = silu(g) * u`` for ``gu[r] = [g | u]``: ``silu(x) = x / (1 + exp(-x))``, exp from
    ``exp_shifted`` (``e``, ``pow2``: scratch of the row's length)."""
    n = out.shape[1]
    for j in range(n):
        e[j] = min(-gu[r, j], _SILU_CLAMP)
    exp_shifted(e, n, np.float32(0.0), pow2)
    for j in range(n):
        out[r, j] = gu[r, j] / (np.float32(1.0) + e[j]) * gu[r, n + j]


@njit(parallel=True, cache=True)
def _swiglu_rows_parallel(gu, out):
    for r in prange(out.shape[0]):
        _swiglu_row(gu, out, r, np.empty(out.shape[1], np.float32), np.empty(out.shape[1], np.int32))


@njit(cache=True)
def _swiglu_rows(gu, out):
    """``out[r] = silu(g) * u`` for every row of ``gu = [g | u]`` (on all threads for many rows)."""
    if out.shape[0] >= _PARALLEL_SWIGLU_ROWS:
        _swiglu_rows_parallel(gu, out)
        return
    e, pow2 = np.empty(out.shape[1], np.float32), np.empty(out.shape[1], np.int32)
    for r in range(out.shape[0]):
        _swiglu_row(gu, out, r, e, pow2)


# --8<-- [start:forward_rows]
@njit(cache=True)
def forward_rows(weights, tokens, pos, slots, kc, vc, cos, sin, eps, n_kv, logits):
    """The model at each row: input ``tokens[r]`` at position ``pos[r]`` of slot ``slots[r]``.

    Writes the rows' keys and values into the caches first, then attends, so
    rows of one call may belong to one sequence (a prefill) or to many (lockstep).
    ``logits[r]`` receives row ``r``'s logits over the vocabulary.
    """
    embed, out, attn_norm, wqkv, wo, ffn_norm, wgu, wd, out_norm = weights
    R = tokens.shape[0]
    L, d = wqkv.shape[0], wqkv.shape[2]
    kv, f = kc.shape[2] * kc.shape[3], wd.shape[2]
    hd = kc.shape[3]
    x = np.empty((R, d), np.float32)  # [R, d] the residual stream
    for r in range(R):
        for j in range(d):
            x[r, j] = packed_item(embed, j, tokens[r])
    h = np.empty((R, d), np.float32)
    qkv = np.empty((R, d + 2 * kv), np.float32)  # [q | k | v]
    q = np.empty((R, d), np.float32)
    att = np.empty((R, d), np.float32)
    a = np.empty((R, d), np.float32)
    gu = np.empty((R, 2 * f), np.float32)  # [gate | up]
    g = np.empty((R, f), np.float32)
    for l in range(L):
        _rms_norm_rows(x, attn_norm[l], eps, h)
        matmul(h, wqkv[l], qkv)
        q[:] = qkv[:, :d]
        _rotate_rows(q, pos, cos, sin, hd)
        _rotate_rows(qkv[:, d:d + kv], pos, cos, sin, hd)
        for r in range(R):
            for c in range(kv):
                kc[slots[r], l, c // hd, c % hd, pos[r]] = qkv[r, d + c]
                vc[slots[r], l, c // hd, pos[r], c % hd] = qkv[r, d + kv + c]
        _attention_rows(q, kc, vc, l, pos, slots, n_kv, att)
        matmul(att, wo[l], a)
        x += a
        _rms_norm_rows(x, ffn_norm[l], eps, h)
        matmul(h, wgu[l], gu)
        _swiglu_rows(gu, g)
        matmul(g, wd[l], a)
        x += a
    _rms_norm_rows(x, out_norm, eps, h)
    matmul(h, out, logits)
# --8<-- [end:forward_rows]


@njit(cache=True)
def row_pdf(logits, pdf, pow2):
    """The coder's probabilities of one row: ``pdf = exp(logits - max)`` (float32, unnormalised).

    ``quantize`` normalises by the total itself, so no log-softmax is needed.
    """
    n = logits.shape[0]
    for j in range(n):
        pdf[j] = logits[j]
    exp_shifted(pdf, n, max8(pdf, n), pow2)


# ------------------------------------------------------------- coding path ----
#
# A *symbol* is a token id below the vocabulary size V, or ``V + b`` for a byte
# ``b`` the tokenizer could not express with a token: it is coded as the escape
# token (under the model) followed by ``b`` under a uniform 8-bit code, and the
# model reads the escape token as its next input.
#
# A group of chunks shares one arithmetic-code stream, interleaved in lockstep:
# step ``t`` codes symbol ``t`` of every chunk that has one, in chunk order.
# That is the order in which the decoder, running the chunks side by side,
# learns the symbols, and it saves each chunk its own stream's length entry
# and final flush.

_BYTE_UNITS = np.int64(1 << 16)  # a uniform byte: 2**16 of the 2**24 units of a CDF


@njit(parallel=True, cache=True)
def _intervals(logits, targets, lo, hi, bits):
    """Each row's coding interval for its target token, and its ideal cost in bits."""
    for r in prange(logits.shape[0]):
        pdf = np.empty(logits.shape[1], np.float32)
        pow2 = np.empty(logits.shape[1], np.int32)
        row_pdf(logits[r], pdf, pow2)
        lo[r], hi[r] = quantize_interval(pdf, targets[r])
        total = 0.0
        for j in range(pdf.shape[0]):
            total += pdf[j]
        bits[r] = -np.log2(pdf[targets[r]] / total)


@njit(cache=True)
def _encode_lockstep(lo, hi, starts, lengths, escaped, est, out):
    """Encode the chunks' intervals in lockstep order (escaped bytes right after their escape)."""
    steps = 0
    for c in range(lengths.shape[0]):
        steps = max(steps, lengths[c])
    for t in range(steps):
        for c in range(lengths.shape[0]):
            if t < lengths[c]:
                i = starts[c] + t
                encode_interval(est, out, lo[i], hi[i])
                if escaped[i] >= 0:
                    encode_interval(est, out, escaped[i] * _BYTE_UNITS, (escaped[i] + 1) * _BYTE_UNITS)


def model_inputs(symbols, vocab, bos, escape):
    """The model's input tokens for a chunk's symbols: ``bos``, then each symbol but the last
    (an escaped byte reads as the escape token)."""
    symbols = np.asarray(symbols, np.int64)
    toks = np.where(symbols >= vocab, escape, symbols)
    return np.concatenate([[bos], toks[:-1]]).astype(np.int64), toks


def encode_group(weights, config, chunks, bos, escape, rows=256, progress=None):
    """Code the symbol arrays ``chunks`` into one lockstep stream; return ``(stream, ideal bits)``.

    Each chunk is a prefill of its own (``rows`` positions per ``forward_rows``
    call); the ideal bits count the escape token's cost and 8 bits per escaped byte.
    """
    vocab = config["vocab"]
    for c in chunks:
        if len(c) and (int(np.min(c)) < 0 or int(np.max(c)) >= vocab + 256 or np.any(np.asarray(c) == escape)):
            raise ValueError(f"symbols must lie in [0, {vocab + 256}) and never be the escape token {escape}")
    lengths = np.array([len(c) for c in chunks], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    n = int(lengths.sum())
    lo, hi, bits = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
    escaped = np.full(n, -1, np.int64)
    capacity = int(lengths.max(initial=1))
    cos, sin = angles(config, capacity)
    for c, chunk in enumerate(chunks):
        inputs, targets = model_inputs(chunk, vocab, bos, escape)
        s0 = int(starts[c])
        escaped[s0:s0 + len(chunk)] = np.where(np.asarray(chunk) >= vocab, np.asarray(chunk) - vocab, -1)
        kc, vc = new_cache(config, 1, max(1, len(chunk)))
        for a in range(0, len(chunk), rows):
            b = min(len(chunk), a + rows)
            logits = np.empty((b - a, vocab), np.float32)
            forward_rows(weights, inputs[a:b], np.arange(a, b, dtype=np.int64), np.zeros(b - a, np.int64),
                         kc, vc, cos, sin, config["rms_eps"], config["n_kv_heads"], logits)
            _intervals(logits, targets[a:b], lo[s0 + a:s0 + b], hi[s0 + a:s0 + b], bits[s0 + a:s0 + b])
            if progress is not None:
                progress(b - a)
    est = encoder_init()
    out = np.zeros(max_stream_bytes(2 * n + 1), np.uint8)
    _encode_lockstep(lo, hi, starts, lengths, escaped, est, out)
    size = encoder_finish(est, out)
    return out[:size].tobytes(), float(bits.sum() + 8 * np.count_nonzero(escaped >= 0))


@njit(parallel=True, cache=True)
def _pdf_rows(logits):
    """``row_pdf`` of every row, rows side by side (each row's bits do not depend on the thread)."""
    pdf = np.empty_like(logits)
    for r in prange(logits.shape[0]):
        pow2 = np.empty(logits.shape[1], np.int32)
        row_pdf(logits[r], pdf[r], pow2)
    return pdf


@njit(cache=True)
def _decode_rows(logits, live, dst, stream, vocab, escape, out):
    """Decode one symbol for each live chunk (rows in chunk order) into ``out[row]``."""
    pdfs = _pdf_rows(logits)
    for r in range(live.shape[0]):
        pdf = pdfs[r]
        s, lo, hi = quantize_search(pdf, decoder_target(dst))
        decode_interval(dst, stream, lo, hi)
        if s == escape:
            b = decoder_target(dst) // _BYTE_UNITS
            decode_interval(dst, stream, b * _BYTE_UNITS, (b + 1) * _BYTE_UNITS)
            s = vocab + b
        out[r] = s


def decode_group(weights, config, stream, n_chunks, finished, bos, escape, max_symbols, progress=None):
    """Inverse of ``encode_group`` for ``n_chunks`` chunks: a list of symbol arrays.

    ``finished(c, symbol)`` is told every decoded symbol of chunk ``c`` and says
    whether the chunk is complete (the tokenizer knows from the bytes so far);
    a chunk that reaches ``max_symbols`` without finishing is corrupt.
    """
    vocab = config["vocab"]
    payload = np.frombuffer(stream, np.uint8)
    dst = decoder_init(payload)
    capacity = min(max_symbols, 256)
    kc, vc = new_cache(config, n_chunks, capacity)
    cos, sin = angles(config, max_symbols)
    symbols = [[] for _ in range(n_chunks)]
    last = np.full(n_chunks, bos, np.int64)
    live = list(range(n_chunks))
    t = 0
    while live:
        if t == max_symbols:
            raise ValueError(f"a chunk does not end within {max_symbols} symbols (corrupt payload)")
        if t == capacity:
            capacity = min(max_symbols, 2 * capacity)
            kc, vc = grow_cache(kc, vc, capacity)
        rows = np.array(live, np.int64)
        logits = np.empty((len(live), vocab), np.float32)
        forward_rows(weights, last[rows], np.full(len(live), t, np.int64), rows, kc, vc, cos, sin,
                     config["rms_eps"], config["n_kv_heads"], logits)
        got = np.empty(len(live), np.int64)
        _decode_rows(logits, rows, dst, payload, vocab, escape, got)
        still = []
        for c, s in zip(live, got.tolist()):
            symbols[c].append(s)
            last[c] = escape if s >= vocab else s
            if not finished(c, s):
                still.append(c)
        if progress is not None:
            progress(len(live))
        live, t = still, t + 1
    return [np.array(s, np.int64) for s in symbols]
