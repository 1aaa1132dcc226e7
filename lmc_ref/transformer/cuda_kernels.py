"""The transformer's numba.cuda kernels: one thread block per chunk, one position per launch.

``step_kernel`` is the CUDA twin of the CPU kernel ``infer_cpu._step``: for one
position ``t`` of every chunk in a batch it reads the input token, appends this
position's keys and values to the chunk's KV cache in device memory, attends
over positions ``0..t`` and writes the 256 log-probabilities.  The device
functions below it are its parts (block reductions, a column of a matrix
product, LayerNorm, GELU, one attention head).  The host driver that batches
chunks and runs the arithmetic coder is ``infer_cuda``.

Every sum has a fixed order (a thread's own loop, or a reduction tree shaped
by ``THREADS``), there are no atomics, and a block never reads another block's
chunk: the same inputs give the same bits on the same GPU, whatever the batch.
Tests run these kernels on the CPU in the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``
set before numba is imported; ``tests/test_transformer_cuda.py``).
"""

import math

import numpy as np

if not hasattr(np, "row_stack"):
    # numba-cuda <= 0.30 registers an overload for np.row_stack, which NumPy 2.5
    # removed, and fails at the first kernel compile without it.  It was an alias
    # of np.vstack; restoring the alias lets those versions compile our kernels.
    np.row_stack = np.vstack

from numba import config as numba_config  # noqa: E402
from numba import cuda, float32, float64  # noqa: E402

from ..constants import CHUNK_SIZE  # noqa: E402
from .model import LN_EPS, VOCAB, WIDENING, get_config, sinusoid_positions  # noqa: E402

# --8<-- [start:limits]
#: Threads per block.  Part of the numeric contract: the reduction trees (LayerNorm
#: statistics, softmax maximum and normaliser) and the split of the attention-weighted
#: value sum are shaped by it, so encoder and decoder must use the same value.
THREADS = 128
#: Largest model width the kernel's shared-memory buffers hold (the 3.2M config's).
D_MAX = 256
F_MAX = WIDENING * D_MAX
QKV_MAX = 3 * D_MAX
#: Longest context: one chunk.
T_MAX = CHUNK_SIZE
#: Register cap per thread for ``step_kernel``.  Unconstrained, the compiler
#: gives it ~185 registers, which fits only two 128-thread blocks on a
#: multiprocessor; at 64, eight fit.  (A register cap changes where values live,
#: never the arithmetic, so it is not part of the numeric contract.)
MAX_REGISTERS = 64
_KERNEL_OPTIONS = {} if numba_config.ENABLE_CUDASIM else {"max_registers": MAX_REGISTERS}  # simulator: no caps
# --8<-- [end:limits]

#: Number of offsets that describe one layer in the flat weight vector.
_PER_LAYER = 12
_NEG_INF = -math.inf


def check_config(config):
    """The config dict, if the kernel can run it (raises ``ValueError`` otherwise)."""
    cfg = get_config(config)
    d, h = cfg["d_model"], cfg["num_heads"]
    hd = d // h
    if d > D_MAX:
        raise ValueError(f"the CUDA kernel holds models up to d_model={D_MAX}, not {d}")
    if hd > THREADS or THREADS % hd:
        raise ValueError(f"the CUDA kernel needs a head size dividing {THREADS}, not {hd}")
    return cfg


def pack_flat(params, config, max_len=T_MAX):
    """All weights in one float32 vector plus the offset of each array (kernel argument order).

    Offsets: ``[embed, positions, (wq, wk, wv, wo, ln1.scale, ln1.offset, ffn1.w,
    ffn1.b, ffn2.w, ffn2.b, ln2.scale, ln2.offset) per layer, out.w, out.b]``.
    The embedding is stored already multiplied by ``sqrt(d)``, as on the CPU.
    """
    cfg = check_config(config)
    d = cfg["d_model"]
    arrays = [np.asarray(params["embed"], np.float32) * np.float32(math.sqrt(d)),  # [V, d]
              np.asarray(sinusoid_positions(max_len, d), np.float32)]  # [T_max, d]
    for i in range(cfg["num_layers"]):
        p = f"layer{i}."
        for name in ("wq", "wk", "wv", "wo", "ln1.scale", "ln1.offset", "ffn1.w", "ffn1.b",
                     "ffn2.w", "ffn2.b", "ln2.scale", "ln2.offset"):
            arrays.append(np.asarray(params[p + name], np.float32))
    arrays += [np.asarray(params["out.w"], np.float32), np.asarray(params["out.b"], np.float32)]
    sizes = [a.size for a in arrays]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)  # [2 + 12 L + 2]
    flat = np.concatenate([a.ravel() for a in arrays]).astype(np.float32)  # [n_params + T_max d]
    return flat, offsets


# ------------------------------------------------------------------ kernels ----
# Every device function runs in all THREADS threads of a block; loops of the
# form ``for j in range(tid, n, THREADS)`` give thread ``tid`` the outputs
# ``tid, tid + THREADS, ...``, and each output is a sum the thread computes
# alone, in index order.

# --8<-- [start:reductions]
@cuda.jit(device=True)
def _block_sum(red, value):
    """Sum of ``value`` over the block's threads: a fixed binary tree in shared memory."""
    tid = cuda.threadIdx.x
    red[tid] = value
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if tid < stride:
            red[tid] += red[tid + stride]
        cuda.syncthreads()
        stride //= 2
    total = red[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def _block_max(red, value):
    """Maximum of ``value`` over the block's threads (exact in any order)."""
    tid = cuda.threadIdx.x
    red[tid] = value
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if tid < stride and red[tid + stride] > red[tid]:
            red[tid] = red[tid + stride]
        cuda.syncthreads()
        stride //= 2
    total = red[0]
    cuda.syncthreads()
    return total
# --8<-- [end:reductions]


# --8<-- [start:dot_column]
@cuda.jit(device=True)
def _dot_column(x, n_in, w, base, n_out, j, acc):
    """``acc + sum_i x[i] * W[i, j]`` for the row-major ``[n_in, n_out]`` matrix at ``w[base:]``.

    The sum runs in index order, one term at a time.  Eight weights are loaded
    before the eight terms are added, so eight memory reads are in flight at
    once instead of one: the order of the additions, and so the result, is the
    same as the plain loop's.
    """
    i = 0
    while i + 8 <= n_in:
        at = base + i * n_out + j
        w0 = w[at]
        w1 = w[at + n_out]
        w2 = w[at + 2 * n_out]
        w3 = w[at + 3 * n_out]
        w4 = w[at + 4 * n_out]
        w5 = w[at + 5 * n_out]
        w6 = w[at + 6 * n_out]
        w7 = w[at + 7 * n_out]
        acc += x[i] * w0
        acc += x[i + 1] * w1
        acc += x[i + 2] * w2
        acc += x[i + 3] * w3
        acc += x[i + 4] * w4
        acc += x[i + 5] * w5
        acc += x[i + 6] * w6
        acc += x[i + 7] * w7
        i += 8
    while i < n_in:
        acc += x[i] * w[base + i * n_out + j]
        i += 1
    return acc
# --8<-- [end:dot_column]


@cuda.jit(device=True)
def _layer_norm(h, d, w, o_scale, o_offset, red):
    """In place over ``h[:d]``: ``(h - mean) / sqrt(var + eps) * scale + offset``, statistics in float64."""
    tid = cuda.threadIdx.x
    part = float64(0.0)
    for j in range(tid, d, THREADS):
        part += float64(h[j])
    mean = _block_sum(red, part) / d
    part = float64(0.0)
    for j in range(tid, d, THREADS):
        part += (float64(h[j]) - mean) ** 2
    rstd = 1.0 / math.sqrt(_block_sum(red, part) / d + LN_EPS)
    for j in range(tid, d, THREADS):
        h[j] = float32((float64(h[j]) - mean) * rstd) * w[o_scale + j] + w[o_offset + j]
    cuda.syncthreads()


@cuda.jit(device=True)
def _gelu(x):
    """GELU, tanh approximation; tanh in double (``tanhf`` would use approximate instructions)."""
    c = float32(math.sqrt(2.0 / math.pi))
    th = float32(math.tanh(float64(c * (x + float32(0.044715) * x * x * x))))
    return float32(0.5) * x * (float32(1.0) + th)


# --8<-- [start:attention]
@cuda.jit(device=True)
def _attention_head(q, base, kc, vc, cbase, hd, t, s, part, red, out):
    """``out[base:base+hd]`` = softmax(q k^T / sqrt(hd)) v over cached positions 0..t.

    The head's keys are ``kc[cbase + e * T_MAX + tau]`` and its values
    ``vc[cbase + tau * hd + e]`` (flat caches: see ``cache_offset``).

    Reading the cache is most of a step's time, and a thread that issues one
    read and waits for it before the next leaves the memory system idle.  So
    each thread scores four positions side by side (four independent dot
    products, each summed over ``e`` in order, two key rows loaded at a time),
    and the value sum loads eight values ahead of the eight additions, which
    stay in position order.  Every
    sum is the same, term for term, as in the plain loops.
    """
    tid = cuda.threadIdx.x
    scale = float32(1.0 / math.sqrt(hd))
    m = float64(_NEG_INF)
    for tau0 in range(tid, t + 1, 4 * THREADS):  # scores: positions tau0 + k THREADS, k < 4
        # a position past t reads position t's key (a valid address) and is dropped
        r1 = min(tau0 + THREADS, t)
        r2 = min(tau0 + 2 * THREADS, t)
        r3 = min(tau0 + 3 * THREADS, t)
        a0 = float32(0.0)
        a1 = float32(0.0)
        a2 = float32(0.0)
        a3 = float32(0.0)
        e = 0
        while e + 2 <= hd:  # two key rows (eight reads) in flight; each sum still runs over e in order
            row = cbase + e * T_MAX
            k0 = kc[row + tau0]
            k1 = kc[row + r1]
            k2 = kc[row + r2]
            k3 = kc[row + r3]
            row += T_MAX
            k4 = kc[row + tau0]
            k5 = kc[row + r1]
            k6 = kc[row + r2]
            k7 = kc[row + r3]
            qe = q[base + e]
            a0 += qe * k0
            a1 += qe * k1
            a2 += qe * k2
            a3 += qe * k3
            qe = q[base + e + 1]
            a0 += qe * k4
            a1 += qe * k5
            a2 += qe * k6
            a3 += qe * k7
            e += 2
        if e < hd:
            qe = q[base + e]
            row = cbase + e * T_MAX
            a0 += qe * kc[row + tau0]
            a1 += qe * kc[row + r1]
            a2 += qe * kc[row + r2]
            a3 += qe * kc[row + r3]
        a0 *= scale
        s[tau0] = a0
        if a0 > m:
            m = float64(a0)
        if tau0 + THREADS <= t:
            a1 *= scale
            s[tau0 + THREADS] = a1
            if a1 > m:
                m = float64(a1)
        if tau0 + 2 * THREADS <= t:
            a2 *= scale
            s[tau0 + 2 * THREADS] = a2
            if a2 > m:
                m = float64(a2)
        if tau0 + 3 * THREADS <= t:
            a3 *= scale
            s[tau0 + 3 * THREADS] = a3
            if a3 > m:
                m = float64(a3)
    m32 = float32(_block_max(red, m))
    z = float64(0.0)
    for tau in range(tid, t + 1, THREADS):
        p = float32(math.exp(float64(s[tau] - m32)))  # double exp: no approximate instructions
        s[tau] = p
        z += float64(p)
    inv = float32(1.0 / _block_sum(red, z))  # the tree's barriers also publish s[]
    groups = THREADS // hd  # thread (g, e): positions g, g + groups, ... of value dimension e
    g = tid // hd
    e = tid - g * hd
    acc = float32(0.0)
    tau = g
    at = cbase + g * hd + e  # vc index of (tau, e)
    step = groups * hd
    while tau + 7 * groups <= t:  # eight values in flight, added in position order
        v0 = vc[at]
        v1 = vc[at + step]
        v2 = vc[at + 2 * step]
        v3 = vc[at + 3 * step]
        v4 = vc[at + 4 * step]
        v5 = vc[at + 5 * step]
        v6 = vc[at + 6 * step]
        v7 = vc[at + 7 * step]
        acc += (s[tau] * inv) * v0
        acc += (s[tau + groups] * inv) * v1
        acc += (s[tau + 2 * groups] * inv) * v2
        acc += (s[tau + 3 * groups] * inv) * v3
        acc += (s[tau + 4 * groups] * inv) * v4
        acc += (s[tau + 5 * groups] * inv) * v5
        acc += (s[tau + 6 * groups] * inv) * v6
        acc += (s[tau + 7 * groups] * inv) * v7
        tau += 8 * groups
        at += 8 * step
    while tau <= t:
        acc += (s[tau] * inv) * vc[at]
        tau += groups
        at += step
    part[tid] = acc
    cuda.syncthreads()
    if tid < hd:
        acc = float32(0.0)
        for gg in range(groups):  # the groups' partial sums, in group order
            acc += part[gg * hd + tid]
        out[base + tid] = acc
    cuda.syncthreads()
# --8<-- [end:attention]


@cuda.jit(device=True)
def cache_offset(b, layer, hh, n_layers, n_heads, hd):
    """Start of chunk ``b``'s cache for one layer and head in the flat caches.

    Keys are stored ``[B, L, H, hd, T_max]`` (the score loop reads positions
    contiguously), values ``[B, L, H, T_max, hd]``; both blocks have the same size.
    """
    return ((b * n_layers + layer) * n_heads + hh) * hd * T_MAX


# --8<-- [start:step_kernel]
@cuda.jit(**_KERNEL_OPTIONS)
def step_kernel(w, offs, n_layers, n_heads, hd, t, tokens, kc, vc, logp):
    """Position ``t`` of every chunk: block ``b`` reads ``tokens[b]``, fills its cache, writes ``logp[b]``.

    Shapes: ``w`` flat float32 weights with offsets ``offs``; ``tokens [B]``;
    ``kc``, ``vc`` flat ``[B * L * H * hd * T_max]`` (see ``cache_offset``); ``logp [B, 256]``.
    """
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    d = n_heads * hd
    f_dim = WIDENING * d
    h = cuda.shared.array(D_MAX, float32)  # [d] residual stream
    qkv = cuda.shared.array(QKV_MAX, float32)  # [3d] q | k | v
    o = cuda.shared.array(D_MAX, float32)  # [d] attention output (all heads)
    f = cuda.shared.array(F_MAX, float32)  # [4d] feed-forward hidden
    s = cuda.shared.array(T_MAX, float32)  # [t+1] one head's scores, later the 256 logits
    part = cuda.shared.array(THREADS, float32)  # partial value sums
    red = cuda.shared.array(THREADS, float64)  # reduction tree
    token = tokens[b]
    for j in range(tid, d, THREADS):
        h[j] = w[offs[0] + token * d + j] + w[offs[1] + t * d + j]
    cuda.syncthreads()
    for layer in range(n_layers):
        ol = 2 + _PER_LAYER * layer
        for j in range(tid, 3 * d, THREADS):  # q, k, v projections (no biases)
            which = j // d
            qkv[j] = _dot_column(h, d, w, offs[ol + which], d, j - which * d, float32(0.0))
        cuda.syncthreads()
        for j in range(tid, d, THREADS):  # append this position to the KV cache
            hh = j // hd
            e = j - hh * hd
            cb = cache_offset(b, layer, hh, n_layers, n_heads, hd)
            kc[cb + e * T_MAX + t] = qkv[d + j]
            vc[cb + t * hd + e] = qkv[2 * d + j]
        cuda.syncthreads()
        for hh in range(n_heads):
            _attention_head(qkv, hh * hd, kc, vc, cache_offset(b, layer, hh, n_layers, n_heads, hd),
                            hd, t, s, part, red, o)
        for j in range(tid, d, THREADS):  # output projection + residual
            h[j] += _dot_column(o, d, w, offs[ol + 3], d, j, float32(0.0))
        cuda.syncthreads()
        _layer_norm(h, d, w, offs[ol + 4], offs[ol + 5], red)
        for j in range(tid, f_dim, THREADS):  # d -> 4d, GELU
            f[j] = _gelu(_dot_column(h, d, w, offs[ol + 6], f_dim, j, w[offs[ol + 7] + j]))
        cuda.syncthreads()
        for j in range(tid, d, THREADS):  # 4d -> d + residual
            h[j] += _dot_column(f, f_dim, w, offs[ol + 8], d, j, w[offs[ol + 9] + j])
        cuda.syncthreads()
        _layer_norm(h, d, w, offs[ol + 10], offs[ol + 11], red)
    oo = 2 + _PER_LAYER * n_layers
    m = float64(_NEG_INF)
    for j in range(tid, VOCAB, THREADS):  # logits, then log-softmax
        x = _dot_column(h, d, w, offs[oo], VOCAB, j, w[offs[oo + 1] + j])
        s[j] = x
        if x > m:
            m = float64(x)
    m = _block_max(red, m)
    z = float64(0.0)
    for j in range(tid, VOCAB, THREADS):
        z += math.exp(float64(s[j]) - m)
    lz = float32(m + math.log(_block_sum(red, z)))
    for j in range(tid, VOCAB, THREADS):
        logp[b, j] = s[j] - lz
# --8<-- [end:step_kernel]
