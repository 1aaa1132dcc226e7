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
the LayerNorm statistics and the softmax normaliser, which are accumulated in
float64.
"""

import math

import numpy as np
from numba import njit

from ..coder import decode_interval, decoder_target, encode_interval
from ..constants import CHUNK_SIZE
from ..quantize import quantize_interval, quantize_search
from .transformer import LN_EPS, VOCAB, get_config, shift_right, sinusoid_positions


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
            m = s[0] * scale
            for tau in range(t + 1):
                s[tau] *= scale
                m = max(m, s[tau])
            z = 0.0
            for tau in range(t + 1):
                s[tau] = np.exp(s[tau] - m)
                z += s[tau]
            inv = np.float32(1.0 / z)
            for e in range(hd):
                o[hh * hd + e] = 0.0
            for tau in range(t + 1):
                p = s[tau] * inv
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
    out = np.empty((len(data), VOCAB), np.float32)  # [T, 256]
    _sequence_logprobs(weights, kc, vc, shift_right(data).astype(np.int64), out)
    return out


# ------------------------------------------------------------- coding path ----

@njit(cache=True)
def pdf_at(weights, kc, vc, t, token, logp, pdf):
    """The coder's view of position ``t``: ``_step``, then ``pdf = exp(logp)`` in float64.

    Both the readable predictor and the fused loops call this one function, so
    the floats that reach ``quantize`` are the same bits on both paths.
    """
    _step(*weights, kc, vc, t, token, logp)
    for j in range(pdf.shape[0]):
        pdf[j] = math.exp(np.float64(logp[j]))


# --8<-- [start:code_block]
@njit(cache=True)
def code_block(weights, kc, vc, hist, start, end, decode, ctx, st, buf, payload):
    """Predict + quantize + (en|de)code positions [start, end); the context restarts every ``ctx`` bytes.

    Encoder and decoder run literally the same model code (``pdf_at``) on the
    same inputs, which is what keeps their quantized CDFs equal.
    """
    logp = np.empty(VOCAB, np.float32)
    pdf = np.empty(VOCAB, np.float64)
    for i in range(start, end):
        t = i % ctx
        token = np.int64(hist[i - 1]) if t > 0 else np.int64(0)
        pdf_at(weights, kc, vc, t, token, logp, pdf)
        if decode:
            s, lo, hi = quantize_search(pdf, decoder_target(st))
            decode_interval(st, payload, lo, hi)
            hist[i] = s
        else:
            lo, hi = quantize_interval(pdf, np.int64(hist[i]))
            encode_interval(st, buf, lo, hi)
# --8<-- [end:code_block]


@njit(cache=True)
def ideal_bits(weights, kc, vc, hist, ctx):
    """Sum of ``-log2 p(x_i | x_<i)`` under the float model, context restarting every ``ctx`` bytes."""
    logp = np.empty(VOCAB, np.float32)
    pdf = np.empty(VOCAB, np.float64)
    bits = 0.0
    for i in range(hist.shape[0]):
        t = i % ctx
        token = np.int64(hist[i - 1]) if t > 0 else np.int64(0)
        pdf_at(weights, kc, vc, t, token, logp, pdf)
        bits -= math.log2(pdf[np.int64(hist[i])])
    return bits
