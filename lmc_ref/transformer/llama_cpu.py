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
  in lockstep, one row per chunk and step, every chunk in its own slot.

A row's logits depend only on its token, its position and its slot's cache,
never on the other rows of the call or on how many there are: every sum is
taken in one fixed order (``matmul``: ascending input index, one accumulator
per output), with no BLAS and no fast-math flags, and the threads split the
*outputs* among them, never a sum.  So the encoder's prefill and the
decoder's lockstep give bit-identical probabilities, which the tests check.

Layouts: weight matrices are stored transposed, ``[in, out]``, so that the
innermost loop runs over consecutive outputs and vectorises without
reassociating any sum; the token embedding is stored ``[d, V]`` that way too
and serves as the output layer when it is tied.  Key cache
``[slots, L, KV, hd, T]`` (the score loop runs over positions), value cache
``[slots, L, KV, T, hd]``.  RMSNorm statistics and the attention normaliser are
float64; everything else is float32.
"""

import numpy as np
from numba import njit, prange

from ..coder import (decode_interval, decoder_init, decoder_target, encode_interval, encoder_finish,
                     encoder_init, max_stream_bytes)
from ..quantize import quantize_interval, quantize_search
from .infer_cpu import exp_shifted, max8, sum4
from .llama import head_dim, rope_angles

#: Output tile and row block of ``matmul``: a block of ``ROWS_BLOCK`` rows and
#: ``OUT_TILE`` outputs accumulates in a small local array that stays in L1,
#: while the ``[in, OUT_TILE]`` slice of the weights is reused by every row.
OUT_TILE = 32
ROWS_BLOCK = 4
#: SiLU's exponent is clamped here: exp(80) still fits float32, and silu(x) for
#: x < -80 is below 1e-33 either way.
_SILU_CLAMP = np.float32(80.0)


def pack_weights(tensors, config):
    """The kernel's weight tuple from ``tensors`` (GGUF names, ``(out, in)`` float32 arrays).

    Matrices are transposed to ``[in, out]`` and stacked per layer.  Entries of
    ``tensors`` are removed as they are packed, so that the float32 model is
    held once, not twice (pass a copy of the dict to keep it).
    """
    L, d = config["n_layers"], config["d_model"]

    def take(name):
        return tensors.pop(name)

    def stack(name, rows, cols, transpose=True):
        out = np.empty((L, rows, cols), np.float32)
        for i in range(L):
            a = take(f"blk.{i}.{name}.weight")
            out[i] = a.T if transpose else a
        return out

    def vectors(name):
        return np.stack([take(f"blk.{i}.{name}.weight") for i in range(L)]).astype(np.float32)  # [L, d]

    kv, f, v = config["n_kv_heads"] * head_dim(config), config["d_ff"], config["vocab"]
    embed_t = np.ascontiguousarray(take("token_embd.weight").T, dtype=np.float32)  # [d, V]
    out_t = embed_t if config["tied"] else np.ascontiguousarray(take("output.weight").T, dtype=np.float32)
    return (embed_t, out_t,
            vectors("attn_norm"),  # [L, d]
            stack("attn_q", d, d), stack("attn_k", d, kv), stack("attn_v", d, kv),  # [L, d, d|kv]
            stack("attn_output", d, d),  # [L, d, d]
            vectors("ffn_norm"),  # [L, d]
            stack("ffn_gate", d, f), stack("ffn_up", d, f), stack("ffn_down", f, d),  # [L, d, f] [L, f, d]
            np.ascontiguousarray(take("output_norm.weight"), dtype=np.float32))  # [d]


def new_cache(config, slots, capacity):
    """Empty key and value caches for ``slots`` sequences of up to ``capacity`` positions."""
    L, KV, hd = config["n_layers"], config["n_kv_heads"], head_dim(config)
    return (np.zeros((slots, L, KV, hd, capacity), np.float32),  # keys [S, L, KV, hd, T]
            np.zeros((slots, L, KV, capacity, hd), np.float32))  # values [S, L, KV, T, hd]


def grow_cache(kc, vc, capacity):
    """The caches with room for ``capacity`` positions, the positions so far copied."""
    k2 = np.zeros(kc.shape[:4] + (capacity,), np.float32)
    v2 = np.zeros(vc.shape[:3] + (capacity, vc.shape[4]), np.float32)
    k2[..., :kc.shape[4]] = kc
    v2[:, :, :, :vc.shape[3]] = vc
    return k2, v2


def angles(config, capacity):
    """RoPE tables ``(cos, sin)`` ``[capacity, rope_dim / 2]`` for the kernel."""
    return rope_angles(config, capacity)


# --8<-- [start:matmul]
@njit(parallel=True, cache=True)
def matmul(x, wt, y):
    """``y = x @ wt``: ``y[r, o] = sum_i x[r, i] * wt[i, o]``, summed over ascending ``i``.

    Each (row block, output tile) job is one thread's: it keeps
    ``ROWS_BLOCK x OUT_TILE`` running sums in a local array and streams the
    tile's column of ``wt`` once for all its rows.  The innermost loop runs over
    consecutive outputs, so it vectorises without changing any sum's order.
    """
    R, n_in = x.shape
    n_out = wt.shape[1]
    tiles = (n_out + OUT_TILE - 1) // OUT_TILE
    blocks = (R + ROWS_BLOCK - 1) // ROWS_BLOCK
    for job in prange(tiles * blocks):
        o0 = (job // blocks) * OUT_TILE
        r0 = (job % blocks) * ROWS_BLOCK
        width = min(n_out, o0 + OUT_TILE) - o0
        rows = min(R, r0 + ROWS_BLOCK) - r0
        acc = np.zeros((ROWS_BLOCK, OUT_TILE), np.float32)
        for i in range(n_in):
            w = wt[i, o0:o0 + width]
            for r in range(rows):
                xi = x[r0 + r, i]
                a = acc[r]
                for o in range(width):
                    a[o] += xi * w[o]
        for r in range(rows):
            for o in range(width):
                y[r0 + r, o0 + o] = acc[r, o]
# --8<-- [end:matmul]


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
    """Causal attention of each row over its slot's positions ``0..pos[r]``, per query head."""
    R, d = q.shape
    hd = kc.shape[3]
    n_heads = d // hd
    group = n_heads // n_kv
    scale = np.float32(1.0 / np.sqrt(hd))
    for job in prange(R * n_heads):
        r, hh = job // n_heads, job % n_heads
        kvh, s_, n = hh // group, slots[job // n_heads], pos[job // n_heads] + 1
        s = np.zeros(n, np.float32)  # [t+1] scores
        pow2 = np.empty(n, np.int32)  # [t+1] scratch of exp_shifted
        for e in range(hd):
            qe = q[r, hh * hd + e]
            krow = kc[s_, layer, kvh, e]
            for tau in range(n):
                s[tau] += qe * krow[tau]
        for tau in range(n):
            s[tau] *= scale
        exp_shifted(s, n, max8(s, n), pow2)
        inv = np.float32(1.0 / sum4(s, n))
        for e in range(hd):
            out[r, hh * hd + e] = 0.0
        for tau in range(n):
            p = s[tau] * inv
            vrow = vc[s_, layer, kvh, tau]
            for e in range(hd):
                out[r, hh * hd + e] += p * vrow[e]


@njit(cache=True)
def _swiglu_rows(g, u, pow2):
    """In place: ``g = silu(g) * u``, ``silu(x) = x / (1 + exp(-x))``, exp from ``exp_shifted``."""
    n = g.shape[1]
    e = np.empty(n, np.float32)
    for r in range(g.shape[0]):
        for j in range(n):
            e[j] = min(-g[r, j], _SILU_CLAMP)
        exp_shifted(e, n, np.float32(0.0), pow2)
        for j in range(n):
            g[r, j] = g[r, j] / (np.float32(1.0) + e[j]) * u[r, j]


# --8<-- [start:forward_rows]
@njit(cache=True)
def forward_rows(weights, tokens, pos, slots, kc, vc, cos, sin, eps, n_kv, logits):
    """The model at each row: input ``tokens[r]`` at position ``pos[r]`` of slot ``slots[r]``.

    Writes the rows' keys and values into the caches first, then attends, so
    rows of one call may belong to one sequence (a prefill) or to many (lockstep).
    ``logits[r]`` receives row ``r``'s logits over the vocabulary.
    """
    embed_t, out_t, attn_norm, wq, wk, wv, wo, ffn_norm, wg, wu, wd, out_norm = weights
    R = tokens.shape[0]
    L, d, kv = wk.shape[0], wk.shape[1], wk.shape[2]
    f = wg.shape[2]
    hd = kc.shape[3]
    x = np.empty((R, d), np.float32)  # [R, d] the residual stream
    for r in range(R):
        for j in range(d):
            x[r, j] = embed_t[j, tokens[r]]
    h = np.empty((R, d), np.float32)
    q = np.empty((R, d), np.float32)
    k = np.empty((R, kv), np.float32)
    v = np.empty((R, kv), np.float32)
    att = np.empty((R, d), np.float32)
    a = np.empty((R, d), np.float32)
    g = np.empty((R, f), np.float32)
    u = np.empty((R, f), np.float32)
    pow2 = np.empty(f, np.int32)
    for l in range(L):
        _rms_norm_rows(x, attn_norm[l], eps, h)
        matmul(h, wq[l], q)
        matmul(h, wk[l], k)
        matmul(h, wv[l], v)
        _rotate_rows(q, pos, cos, sin, hd)
        _rotate_rows(k, pos, cos, sin, hd)
        for r in range(R):
            for c in range(kv):
                kc[slots[r], l, c // hd, c % hd, pos[r]] = k[r, c]
                vc[slots[r], l, c // hd, pos[r], c % hd] = v[r, c]
        _attention_rows(q, kc, vc, l, pos, slots, n_kv, att)
        matmul(att, wo[l], a)
        x += a
        _rms_norm_rows(x, ffn_norm[l], eps, h)
        matmul(h, wg[l], g)
        matmul(h, wu[l], u)
        _swiglu_rows(g, u, pow2)
        matmul(g, wd[l], a)
        x += a
    _rms_norm_rows(x, out_norm, eps, h)
    matmul(h, out_t, logits)
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
