"""The Llama family's numba.cuda kernels: one model step for many chunks, rows in a batch.

The GPU twin of ``llama_cpu.forward_rows``.  A *row* is one position of one
chunk: its input token, its position and the *slot* of the device KV cache
that holds its chunk.  One step of the model for ``R`` rows is a fixed
sequence of launches (``llama_cuda._Lane.launch`` issues them):

* ``embed_kernel``: each row's token embedding;
* per layer: ``rms_norm_kernel``; ``matmul_kernel`` for ``[q | k | v]``;
  ``rope_store_kernel`` (rotary positions on queries and keys, then the key
  and value written to the cache); ``attention_kernel`` (grouped-query
  attention over positions ``0..pos`` of the row's slot); ``matmul_kernel``
  for the output projection, added to the residual stream; ``rms_norm_kernel``;
  ``matmul_kernel`` for ``[gate | up]``; ``swiglu_kernel``; ``matmul_kernel``
  for the down projection, added to the residual stream;
* ``rms_norm_kernel`` and ``matmul_kernel`` over the full vocabulary: the
  float32 logits, which go back to the host.

The matrix products are where the time goes, and they are batched matrix x
matrix work: ``matmul_kernel`` reads each weight tile once per block of
``TILE_M`` rows into shared memory, so all the chunks in flight share one
read of the weights per step.

The numeric contract: a row's logits depend on its token, its position and
its slot's cache only, never on the other rows of the launch or on how many
there are.  Every output of a matrix product is one thread's sum over the
input index in ascending order; the RMSNorm statistic and the attention
maximum and normaliser are block reductions in a tree whose shape is set by
``THREADS`` (a constant, like the byte model's); there are no atomics; and
``exp`` is taken in float64 (``expf`` may use approximate instructions).  So
the encoder and the decoder, running the same launches on the same GPU, see
bit-identical logits.  The CPU kernel rounds differently (its sums are
ordered differently and it has no fused multiply-add), so a file records the
backend that coded it.

Layouts (float32): weight matrices ``[in, out]`` row-major; key cache
``[slots, L, KV, hd, T]`` and value cache ``[slots, L, KV, T, hd]``, as on
the CPU (consecutive threads read consecutive positions of a key row, and
consecutive channels of a value row).  Tests run every kernel in the CUDA
simulator against ``llama`` (``tests/test_llama_cuda.py``).
"""

import math

import numpy as np

if not hasattr(np, "row_stack"):
    # numba-cuda <= 0.30 registers an overload for np.row_stack, which NumPy 2.5
    # removed (see ``cuda_kernels``): restore the alias before numba.cuda loads.
    np.row_stack = np.vstack

from numba import cuda, float32, float64  # noqa: E402

# --8<-- [start:llama_limits]
#: Threads per block of the row kernels (RMSNorm, rotary positions, attention,
#: SwiGLU).  Part of the numeric contract: the RMSNorm and softmax reduction
#: trees, and the split of the attention's value sum, are shaped by it.
THREADS = 128
#: ``matmul_kernel``: a block computes ``TILE_M`` rows x ``TILE_N`` outputs,
#: each thread a ``MICRO`` x ``MICRO`` patch of them, and steps through the
#: inputs ``TILE_K`` at a time.  The tiling decides only who computes an output,
#: never the order of its sum, so these are not part of the numeric contract.
TILE_M = 64
TILE_N = 64
TILE_K = 16
MICRO = 4
#: SiLU's exponent is clamped here (as in ``llama_cpu``): exp(80) still fits float32.
SILU_CLAMP = 80.0
# --8<-- [end:llama_limits]


def matmul_threads():
    """Threads per block of ``matmul_kernel`` (read at launch: the simulator tests lower the tiles)."""
    return (TILE_M // MICRO) * (TILE_N // MICRO)


# ---------------------------------------------------------- reductions ----

@cuda.jit(device=True)
def _block_sum(red, value):
    """Sum of ``value`` (float64) over the block's ``THREADS`` threads: a fixed binary tree."""
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


# ------------------------------------------------------------- kernels ----

@cuda.jit
def embed_kernel(embed_t, tokens, x):
    """``x[r] = embedding of tokens[r]``; ``embed_t`` is the embedding transposed, ``[d, V]``."""
    r = cuda.blockIdx.x
    tok = tokens[r]
    for j in range(cuda.threadIdx.x, x.shape[1], THREADS):
        x[r, j] = embed_t[j, tok]


# --8<-- [start:rms_norm_kernel]
@cuda.jit
def rms_norm_kernel(x, w, eps, out):
    """``out[r] = x[r] / sqrt(mean(x[r]**2) + eps) * w``, one block per row, the mean in float64."""
    red = cuda.shared.array(THREADS, float64)
    r = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    n = x.shape[1]
    part = float64(0.0)
    for j in range(tid, n, THREADS):
        part += float64(x[r, j]) * float64(x[r, j])
    inv = 1.0 / math.sqrt(_block_sum(red, part) / n + eps)
    for j in range(tid, n, THREADS):
        out[r, j] = float32(x[r, j] * inv) * w[j]
# --8<-- [end:rms_norm_kernel]


# --8<-- [start:matmul_kernel]
@cuda.jit
def matmul_kernel(x, w, y, accumulate):
    """``y[r, n] = sum_k x[r, k] * w[k, n]`` (``y[r, n] +=`` that sum if ``accumulate``).

    ``x`` ``[R, K]``, ``w`` ``[K, N]``, ``y`` ``[R, N]``.  Block ``(bx, by)``
    computes rows ``by * TILE_M ..`` and outputs ``bx * TILE_N ..``: it steps
    through the inputs ``TILE_K`` at a time, staging a ``TILE_K x TILE_M``
    slice of ``x`` and a ``TILE_K x TILE_N`` slice of ``w`` in shared memory,
    so each weight is read from global memory once per ``TILE_M`` rows.
    Thread ``(tm, tn)`` holds the sums of rows ``tm + i * (TILE_M / MICRO)`` and
    outputs ``tn + j * (TILE_N / MICRO)`` in registers; each is one sum over
    ascending ``k``, whatever the number of rows.  (Past ``K`` both slices hold
    zeros, whose products add nothing.)
    """
    xs = cuda.shared.array((TILE_K, TILE_M), float32)  # [k, row]
    ws = cuda.shared.array((TILE_K, TILE_N), float32)  # [k, output]
    acc = cuda.local.array((MICRO, MICRO), float32)
    wv = cuda.local.array(MICRO, float32)
    R, K = x.shape
    N = w.shape[1]
    tid = cuda.threadIdx.x
    across = TILE_N // MICRO  # threads along the outputs
    down = TILE_M // MICRO  # threads along the rows
    nthreads = across * down
    tm = tid // across
    tn = tid - tm * across
    r0 = cuda.blockIdx.y * TILE_M
    n0 = cuda.blockIdx.x * TILE_N
    for i in range(MICRO):
        for j in range(MICRO):
            acc[i, j] = float32(0.0)
    for k0 in range(0, K, TILE_K):
        for e in range(tid, TILE_M * TILE_K, nthreads):  # consecutive threads: consecutive k of a row
            m = e // TILE_K
            kk = e - m * TILE_K
            if r0 + m < R and k0 + kk < K:
                xs[kk, m] = x[r0 + m, k0 + kk]
            else:
                xs[kk, m] = float32(0.0)
        for e in range(tid, TILE_K * TILE_N, nthreads):  # consecutive threads: consecutive outputs
            kk = e // TILE_N
            nn = e - kk * TILE_N
            if k0 + kk < K and n0 + nn < N:
                ws[kk, nn] = w[k0 + kk, n0 + nn]
            else:
                ws[kk, nn] = float32(0.0)
        cuda.syncthreads()
        for kk in range(TILE_K):
            for j in range(MICRO):
                wv[j] = ws[kk, tn + j * across]
            for i in range(MICRO):
                a = xs[kk, tm + i * down]
                for j in range(MICRO):
                    acc[i, j] += a * wv[j]
        cuda.syncthreads()
    for i in range(MICRO):
        r = r0 + tm + i * down
        if r < R:
            for j in range(MICRO):
                n = n0 + tn + j * across
                if n < N:
                    if accumulate:
                        y[r, n] = y[r, n] + acc[i, j]
                    else:
                        y[r, n] = acc[i, j]
# --8<-- [end:matmul_kernel]


# --8<-- [start:rope_store_kernel]
@cuda.jit
def rope_store_kernel(qkv, n_heads, hd, pos, slots, cos, sin, layer, kc, vc):
    """Rotary positions on row ``r``'s queries (in place) and keys, then its key and value into the cache.

    ``qkv[r] = [q | k | v]`` (``d``, ``kv``, ``kv`` channels).  Channel pairs
    ``(2i, 2i+1)`` of each head with ``2i < rope_dim`` turn by the angle of
    position ``pos[r]`` (``cos``, ``sin``: ``[T, rope_dim / 2]``, the tables of
    ``llama.rope_angles``); the key goes to ``kc[slots[r], layer, :, :, pos[r]]``,
    the value to ``vc[slots[r], layer, :, pos[r], :]``.
    """
    r = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    n_kv = kc.shape[2]
    d = n_heads * hd
    kv = n_kv * hd
    half = hd // 2
    rope_half = cos.shape[1]
    t = pos[r]
    s = slots[r]
    for p in range(tid, (d + kv) // 2, THREADS):  # d/2 query pairs, then kv/2 key pairs
        is_key = p >= d // 2
        pp = p - d // 2 if is_key else p
        hh = pp // half
        i = pp - hh * half
        at = (d if is_key else 0) + hh * hd + 2 * i
        a = qkv[r, at]
        b = qkv[r, at + 1]
        if i < rope_half:
            c = cos[t, i]
            sn = sin[t, i]
            a, b = a * c - b * sn, a * sn + b * c
        if is_key:
            kc[s, layer, hh, 2 * i, t] = a
            kc[s, layer, hh, 2 * i + 1, t] = b
        else:
            qkv[r, at] = a
            qkv[r, at + 1] = b
    for c in range(tid, kv, THREADS):
        hh = c // hd
        vc[s, layer, hh, t, c - hh * hd] = qkv[r, d + kv + c]
# --8<-- [end:rope_store_kernel]


# --8<-- [start:attention_kernel]
@cuda.jit
def attention_kernel(qkv, hd, pos, slots, layer, kc, vc, scores, out):
    """Causal grouped-query attention: block ``(r, h)`` is query head ``h`` of row ``r``.

    Query head ``h`` reads kv head ``h // (n_heads / KV)`` of slot ``slots[r]``
    over positions ``0..pos[r]``.  Thread ``tid`` scores positions ``tid,
    tid + THREADS, ...`` (each a sum over ascending channels, times
    ``1/sqrt(hd)``) into ``scores[r, h]`` (global scratch ``[R, H, T]``); the
    maximum and the normaliser are block reductions, ``exp`` in float64.  For the
    value sum, thread ``(g, e)`` adds channel ``e`` of positions ``g, g + G, ...``
    (``G = THREADS / hd`` groups) and the ``G`` partial sums are added in group
    order.  Writes ``out[r, h * hd:(h + 1) * hd]``.
    """
    q = cuda.shared.array(THREADS, float32)  # this head's query (hd <= THREADS)
    part = cuda.shared.array(THREADS, float32)  # partial value sums
    red = cuda.shared.array(THREADS, float64)  # reduction tree
    r = cuda.blockIdx.x
    hh = cuda.blockIdx.y
    tid = cuda.threadIdx.x
    n_heads = cuda.gridDim.y
    kvh = hh // (n_heads // kc.shape[2])
    s = slots[r]
    n = pos[r] + 1
    if tid < hd:
        q[tid] = qkv[r, hh * hd + tid]
    cuda.syncthreads()
    scale = float32(1.0 / math.sqrt(hd))
    m = float64(-math.inf)
    for tau in range(tid, n, THREADS):
        acc = float32(0.0)
        for e in range(hd):
            acc += q[e] * kc[s, layer, kvh, e, tau]
        acc *= scale
        scores[r, hh, tau] = acc
        if acc > m:
            m = float64(acc)
    m32 = float32(_block_max(red, m))
    z = float64(0.0)
    for tau in range(tid, n, THREADS):
        p = float32(math.exp(float64(scores[r, hh, tau] - m32)))
        scores[r, hh, tau] = p
        z += float64(p)
    inv = float32(1.0 / _block_sum(red, z))  # the tree's barriers also publish scores[r, hh]
    groups = THREADS // hd
    g = tid // hd
    e = tid - g * hd
    acc = float32(0.0)
    if g < groups:
        for tau in range(g, n, groups):
            acc += (scores[r, hh, tau] * inv) * vc[s, layer, kvh, tau, e]
    part[tid] = acc
    cuda.syncthreads()
    if tid < hd:
        acc = float32(0.0)
        for gg in range(groups):
            acc += part[gg * hd + tid]
        out[r, hh * hd + tid] = acc
# --8<-- [end:attention_kernel]


# --8<-- [start:swiglu_kernel]
@cuda.jit
def swiglu_kernel(gu, out):
    """``out[r] = silu(g) * u`` for ``gu[r] = [g | u]``: ``silu(x) = x / (1 + exp(-x))``, exp in float64."""
    r = cuda.blockIdx.x
    f = out.shape[1]
    for j in range(cuda.threadIdx.x, f, THREADS):
        g = gu[r, j]
        e = float32(math.exp(min(-float64(g), SILU_CLAMP)))
        out[r, j] = g / (float32(1.0) + e) * gu[r, f + j]
# --8<-- [end:swiglu_kernel]


@cuda.jit
def copy_columns_kernel(src, dst):
    """``dst[i, :src.shape[1]] = src[i]`` (a KV cache moved into a larger one), grid-stride."""
    rows, cols = src.shape
    start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    step = cuda.gridDim.x * cuda.blockDim.x
    for k in range(start, rows * cols, step):
        i = k // cols
        dst[i, k - i * cols] = src[i, k - i * cols]
