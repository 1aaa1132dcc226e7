"""The transformer's per-position inference kernel: Numba, explicit loops, KV cache.

``_step`` computes the model at *one* position ``t``: it reads the input token
(the previous byte, or 0 at ``t = 0``), appends this position's keys and values
to the cache, attends over positions ``0..t`` and writes the log-probabilities
of the byte at ``t``.  Coding a chunk of ``n`` bytes is ``n`` calls: O(n) work
per position for attention, O(n^2) per chunk in total -- never a rerun of the
whole prefix.

It is the *only* code that produces the probabilities the coder sees, so the
encoder and the decoder get bit-identical pdfs by construction: same kernel,
same inputs, same order of float operations.  For that reason it uses no
``fast-math flags`` and no BLAS (a library may pick a different summation order on a
different machine or thread count); the loops are ordered so that the inner
loop is element-wise (``y[j] += x[i] * W[i, j]``), which the compiler can
vectorise without reassociating any sum.

Layouts: key cache ``[L, H, hd, T_max]`` (the score loop runs over positions,
contiguously), value cache ``[L, H, T_max, hd]``.  Everything is float32 except
the LayerNorm statistics and the softmax normalisers, which are accumulated in
float64 (the attention normaliser as four interleaved partial sums, ``sum4``).
The attention weights use our own ``exp`` (``exp_shifted``): plain float32
arithmetic that vectorises and rounds the same on every IEEE machine (a libm
``expf`` call per weight does not vectorise; replacing it took the 2-core
coding rate from about 7.5 to 9.8 KB/s).

Chunks are independent (each restarts from an empty context and has its own
arithmetic-code stream), so ``code_chunks`` codes them side by side with
``prange``; at full 2048-byte chunks a position's attention streams about 4 MB
of KV cache per chunk, so the kernel is bound by memory bandwidth more than by
arithmetic.
"""

import math

import numba
import numpy as np
from numba import njit, prange

from ..coder import (D_SIZE, E_SIZE, decode_interval, decoder_init, decoder_target, encode_interval,
                     encoder_finish, encoder_init, max_stream_bytes)
from ..constants import CHUNK_SIZE
from ..quantize import quantize_interval, quantize_search
from .model import LN_EPS, VOCAB, get_config, shift_right, sinusoid_positions


def pack_weights(params, config, max_len=CHUNK_SIZE):
    """Tuple of float32 arrays in ``_step``'s argument order (per-layer weights stacked on axis 0)."""
    cfg = get_config(config)
    L = cfg["num_layers"]

    def stack(name):
        return np.ascontiguousarray(np.stack([params[f"layer{i}.{name}"] for i in range(L)]), dtype=np.float32)

    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return (f32(params["embed"]) * np.float32(math.sqrt(cfg["d_model"])),  # [V, d], scale folded in
            f32(sinusoid_positions(max_len, cfg["d_model"])),  # [T_max, d]
            stack("wq"), stack("wk"), stack("wv"), stack("wo"),  # [L, d, d]
            stack("ln1.scale"), stack("ln1.offset"),  # [L, d]
            stack("ffn1.w"), stack("ffn1.b"), stack("ffn2.w"), stack("ffn2.b"),  # [L, d, 4d] [L, 4d] [L, 4d, d] [L, d]
            stack("ln2.scale"), stack("ln2.offset"),  # [L, d]
            f32(params["out.w"]), f32(params["out.b"]))  # [d, V] [V]


def new_cache(config, max_len=CHUNK_SIZE):
    """Empty key and value caches for one sequence of up to ``max_len`` positions."""
    cfg = get_config(config)
    L, H, d = cfg["num_layers"], cfg["num_heads"], cfg["d_model"]
    return (np.zeros((L, H, d // H, max_len), np.float32),  # keys [L, H, hd, T_max]
            np.zeros((L, H, max_len, d // H), np.float32))  # values [L, H, T_max, hd]


@njit(cache=True)
def _matvec(x, w, b, y):
    """``y = x @ w (+ b)``; inner loop element-wise over outputs (no reassociated sums)."""
    if b.shape[0] > 0:
        for j in range(y.shape[0]):
            y[j] = b[j]
    else:
        y[:] = 0.0
    for i in range(x.shape[0]):
        xi = x[i]
        for j in range(y.shape[0]):
            y[j] += xi * w[i, j]


@njit(cache=True)
def _layer_norm(x, scale, offset):
    """In place: ``x = (x - mean) / sqrt(var + eps) * scale + offset`` (statistics in float64)."""
    n = x.shape[0]
    s = 0.0
    for i in range(n):
        s += x[i]
    mean = s / n
    s = 0.0
    for i in range(n):
        s += (x[i] - mean) ** 2
    rstd = 1.0 / math.sqrt(s / n + LN_EPS)
    for i in range(n):
        x[i] = np.float32((x[i] - mean) * rstd) * scale[i] + offset[i]


# --8<-- [start:exp]
# exp for the attention weights, in plain float32 arithmetic so that the loop
# vectorises (a call to the math library's expf per element does not) and gives
# the same bits on every IEEE machine: exp(x) = 2**k * e**r with k = round(x / ln 2)
# and |r| <= ln(2) / 2, e**r from a degree-6 polynomial (Cephes' expf
# coefficients), 2**k built from its bit pattern.  Relative error ~1e-7.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)  # ln 2 = _LN2_HI + _LN2_LO, _LN2_HI exact in few bits
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_P = (np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3),
          np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1))


@njit(cache=True)
def exp_shifted(s, n, m, pow2):
    """In place: ``s[i] = exp(s[i] - m)`` for ``i < n``, where ``s[i] <= m`` (``pow2``: int32 scratch)."""
    p0, p1, p2, p3, p4, p5 = _EXP_P
    for i in range(n):
        x = max(s[i] - m, np.float32(-87.0))  # below e**-87 the weight underflows anyway
        k = np.floor(x * _LOG2E + np.float32(0.5))
        r = (x - k * _LN2_HI) - k * _LN2_LO
        y = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
        s[i] = (y * (r * r) + r) + np.float32(1.0)
        pow2[i] = (np.int32(k) + np.int32(127)) << np.int32(23)  # the bits of 2**k
    scale = pow2.view(np.float32)
    for i in range(n):
        s[i] *= scale[i]
# --8<-- [end:exp]


@njit(cache=True, inline="always")
def max8(x, n):
    """``max(x[:n])``, ``n >= 1``, with eight running maxima: exact in any order, and it
    pipelines (about 8 % more coding throughput than one running maximum, bench/transformer.py)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[0]
    m = n - n % 8
    for i in range(0, m, 8):
        m0 = max(m0, x[i])
        m1 = max(m1, x[i + 1])
        m2 = max(m2, x[i + 2])
        m3 = max(m3, x[i + 3])
        m4 = max(m4, x[i + 4])
        m5 = max(m5, x[i + 5])
        m6 = max(m6, x[i + 6])
        m7 = max(m7, x[i + 7])
    for i in range(m, n):
        m0 = max(m0, x[i])
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


@njit(cache=True, inline="always")
def sum4(x, n):
    """``sum(x[:n])`` in float64 as four interleaved partial sums (a fixed order that pipelines)."""
    a0 = a1 = a2 = a3 = 0.0
    m = n - n % 4
    for i in range(0, m, 4):
        a0 += x[i]
        a1 += x[i + 1]
        a2 += x[i + 2]
        a3 += x[i + 3]
    for i in range(m, n):
        a0 += x[i]
    return (a0 + a1) + (a2 + a3)


@njit(cache=True)
def _step(embed, pos, wq, wk, wv, wo, ln1s, ln1o, f1w, f1b, f2w, f2b, ln2s, ln2o, outw, outb,
          kc, vc, t, token, logp):
    """Position ``t`` with input ``token`` (previous byte; 0 at t=0): fill the cache, write ``logp[256]``."""
    n_layers, n_heads, hd = kc.shape[0], kc.shape[1], kc.shape[2]
    d = n_heads * hd
    scale = np.float32(1.0 / math.sqrt(hd))
    no_bias = np.empty(0, np.float32)
    h = np.empty(d, np.float32)  # [d]
    for j in range(d):
        h[j] = embed[token, j] + pos[t, j]
    q = np.empty(d, np.float32)
    k = np.empty(d, np.float32)
    v = np.empty(d, np.float32)
    o = np.empty(d, np.float32)
    a = np.empty(d, np.float32)
    f = np.empty(f1w.shape[2], np.float32)  # [4d]
    s = np.empty(t + 1, np.float32)  # [t+1] scores of one head
    pow2 = np.empty(t + 1, np.int32)  # [t+1] scratch of exp_shifted
    c_gelu = np.float32(math.sqrt(2.0 / math.pi))
    for l in range(n_layers):
        _matvec(h, wq[l], no_bias, q)
        _matvec(h, wk[l], no_bias, k)
        _matvec(h, wv[l], no_bias, v)
        for hh in range(n_heads):
            for e in range(hd):
                kc[l, hh, e, t] = k[hh * hd + e]
                vc[l, hh, t, e] = v[hh * hd + e]
            s[:] = 0.0
            for e in range(hd):
                qe = q[hh * hd + e]
                krow = kc[l, hh, e]
                for tau in range(t + 1):
                    s[tau] += qe * krow[tau]
            for tau in range(t + 1):
                s[tau] *= scale
            exp_shifted(s, t + 1, max8(s, t + 1), pow2)
            inv = np.float32(1.0 / sum4(s, t + 1))
            for tau in range(t + 1):
                s[tau] *= inv
            for e in range(hd):
                o[hh * hd + e] = 0.0
            for tau in range(t + 1):
                p = s[tau]
                vrow = vc[l, hh, tau]
                for e in range(hd):
                    o[hh * hd + e] += p * vrow[e]
        _matvec(o, wo[l], no_bias, a)
        for j in range(d):
            h[j] += a[j]
        _layer_norm(h, ln1s[l], ln1o[l])
        _matvec(h, f1w[l], f1b[l], f)
        for j in range(f.shape[0]):
            x = f[j]
            f[j] = np.float32(0.5) * x * (np.float32(1.0) + np.tanh(c_gelu * (x + np.float32(0.044715) * x * x * x)))
        _matvec(f, f2w[l], f2b[l], a)
        for j in range(d):
            h[j] += a[j]
        _layer_norm(h, ln2s[l], ln2o[l])
    _matvec(h, outw, outb, logp)
    m = logp[0]
    for j in range(logp.shape[0]):
        m = max(m, logp[j])
    z = 0.0
    for j in range(logp.shape[0]):
        z += math.exp(logp[j] - m)
    lz = np.float32(m + math.log(z))
    for j in range(logp.shape[0]):
        logp[j] -= lz


@njit(cache=True)
def _sequence_logprobs(weights, kc, vc, inputs, out):
    """Run ``_step`` over every position of one sequence: ``out[t] = logp of byte t``."""
    for t in range(inputs.shape[0]):
        _step(*weights, kc, vc, t, inputs[t], out[t])


def sequence_logprobs(params, config, data, max_len=CHUNK_SIZE):
    """Log-probabilities ``[T, 256]`` (float32) of ``data`` from an empty context, via the kernel."""
    data = np.asarray(data, dtype=np.uint8)
    if len(data) > max_len:
        raise ValueError(f"sequence of {len(data)} bytes exceeds the context of {max_len}")
    weights = pack_weights(params, config, max_len)
    kc, vc = new_cache(config, max_len)
    out = np.empty((len(data), VOCAB), np.float32)  # [T, 256] (byte models)
    _sequence_logprobs(weights, kc, vc, shift_right(data).astype(np.int64), out)
    return out


# ------------------------------------------------------------- coding path ----

@njit(cache=True)
def pdf_at(weights, kc, vc, t, token, logp, pdf):
    """The coder's view of position ``t``: ``_step``, then ``pdf = exp(logp)`` in float64.

    Both the readable predictor and ``code_chunks`` call this one function, so
    the floats that reach ``quantize`` are the same bits on both paths.
    """
    _step(*weights, kc, vc, t, token, logp)
    for j in range(pdf.shape[0]):
        pdf[j] = math.exp(np.float64(logp[j]))




# --8<-- [start:code_chunks]
@njit(parallel=True, cache=True)
def code_chunks(weights, n_heads, hist, starts, lengths, decode, est, ebuf, dst, payload, pstarts, bits):
    """Chunks side by side (``prange``), each from an empty context into its own stream.

    Chunk ``c`` is ``hist[starts[c] : starts[c] + lengths[c]]`` (filled in when
    decoding); it codes with encoder state ``est[c]`` into ``ebuf[c]``, or
    decodes with ``dst[c]`` from ``payload[pstarts[c] : pstarts[c + 1]]``.  Each
    chunk has its own KV cache; probabilities come from ``pdf_at`` exactly as
    in the readable predictor, so the thread a chunk runs on cannot change them.
    ``bits[c]`` receives the chunk's ideal code length ``-log2 p``.
    """
    n_layers, d, t_max = weights[2].shape[0], weights[2].shape[1], weights[1].shape[0]
    hd = d // n_heads
    for c in prange(starts.shape[0]):
        kc = np.empty((n_layers, n_heads, hd, t_max), np.float32)  # [L, H, hd, T]
        vc = np.empty((n_layers, n_heads, t_max, hd), np.float32)  # [L, H, T, hd]
        logp = np.empty(weights[-1].shape[0], np.float32)  # [V]
        pdf = np.empty(weights[-1].shape[0], np.float64)  # [V]
        stream = payload[pstarts[c]:pstarts[c + 1]]
        total = 0.0
        for t in range(lengths[c]):
            i = starts[c] + t
            token = np.int64(hist[i - 1]) if t > 0 else np.int64(0)
            pdf_at(weights, kc, vc, t, token, logp, pdf)
            if decode:
                s, lo, hi = quantize_search(pdf, decoder_target(dst[c]))
                decode_interval(dst[c], stream, lo, hi)
                hist[i] = s
            else:
                lo, hi = quantize_interval(pdf, np.int64(hist[i]))
                encode_interval(est[c], ebuf[c], lo, hi)
            total -= math.log2(pdf[np.int64(hist[i])])
        bits[c] = total
# --8<-- [end:code_chunks]


def stream_capacity(n_symbols=CHUNK_SIZE):
    """Bytes one chunk's stream can need (its symbols plus the final flush)."""
    return max_stream_bytes(n_symbols)


def _groups(n):
    """Chunk index ranges handed to one ``code_chunks`` call (a few per thread, for progress bars)."""
    size = 2 * numba.get_num_threads()
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def _joined(group, tokens):
    """The chunks of ``group`` end to end: uint8 bytes, or int32 token ids when ``tokens``."""
    if tokens:
        return np.concatenate([np.asarray(c, np.int32) for c in group] or [np.zeros(0, np.int32)])
    return np.frombuffer(b"".join(bytes(c) for c in group), np.uint8).copy()


def encode_chunks(weights, n_heads, chunks, progress=None, tokens=False):
    """Code each chunk (<= the context) from an empty context; return (streams, ideal bits per chunk).

    Chunks are bytes, or with ``tokens`` integer arrays of ids below the model's
    vocabulary (a token model of the tokenization experiment; ids are checked).
    """
    vocab = weights[-1].shape[0]
    streams, bits = [], []
    for lo, hi in _groups(len(chunks)):
        group = chunks[lo:hi]
        n = len(group)
        hist = _joined(group, tokens)
        if hist.size and (int(hist.min()) < 0 or int(hist.max()) >= vocab):
            raise ValueError(f"token ids must lie in [0, {vocab})")
        lengths = np.array([len(c) for c in group], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        est = np.zeros((n, E_SIZE), np.uint64)
        for c in range(n):
            est[c] = encoder_init()
        ebuf = np.zeros((n, stream_capacity(int(lengths.max(initial=0)))), np.uint8)
        b = np.zeros(n)
        code_chunks(weights, n_heads, hist, starts, lengths, False, est, ebuf, np.zeros((n, D_SIZE), np.uint64),
                    np.zeros(0, np.uint8), np.zeros(n + 1, np.int64), b)
        for c in range(n):
            streams.append(ebuf[c, :encoder_finish(est[c], ebuf[c])].tobytes())
        bits += list(b)
        if progress is not None:
            progress(int(lengths.sum()))
    return streams, bits


def decode_chunks(weights, n_heads, streams, lengths, progress=None, tokens=False):
    """Decode chunk ``c`` of ``lengths[c]`` symbols from ``streams[c]``; return one array
    (uint8 bytes, or int32 token ids with ``tokens``)."""
    out = []
    for lo, hi in _groups(len(streams)):
        group, lens = streams[lo:hi], np.asarray(lengths[lo:hi], np.int64)
        n = len(group)
        payload = np.frombuffer(b"".join(group), np.uint8)
        pstarts = np.concatenate([[0], np.cumsum([len(s) for s in group])]).astype(np.int64)
        dst = np.zeros((n, D_SIZE), np.uint64)
        for c in range(n):
            dst[c] = decoder_init(payload[pstarts[c]:pstarts[c + 1]])
        hist = np.zeros(int(lens.sum()), np.int32 if tokens else np.uint8)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        code_chunks(weights, n_heads, hist, starts, lens, True, np.zeros((n, E_SIZE), np.uint64),
                    np.zeros((n, 0), np.uint8), dst, payload, pstarts, np.zeros(n))
        out.append(hist)
        if progress is not None:
            progress(int(lens.sum()))
    return np.concatenate(out) if out else np.zeros(0, np.int32 if tokens else np.uint8)
