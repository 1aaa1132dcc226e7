"""The CUDA backend's kernels against the NumPy model, and lossless batched coding on the GPU.

Marked ``cuda``: excluded from a plain ``pytest`` run, which instead runs this
file in a subprocess under the CUDA simulator (``tests/test_cuda_backend.py``).
Run it directly with ``NUMBA_ENABLE_CUDASIM=1 pytest -m cuda tests/test_transformer_cuda.py``
(simulator), or ``pytest -m cuda tests/test_transformer_cuda.py`` on a machine with a GPU.

In the simulator every GPU thread is a Python thread, so the shapes are tiny
and ``THREADS`` (the block size) is lowered to 16: the kernels run the same
code, with a smaller reduction tree.  On a GPU the real value (128) is used.
"""

import math
import sys
import threading
import traceback

import numpy as np
import pytest
from numba import config as numba_config
from numba import cuda, float32, float64
from numba import types as numba_types
from numba.np import numpy_support

from lmc_ref import codec, container
from lmc_ref.transformer import train as tr
from lmc_ref.transformer import model as tf
from lmc_ref.transformer import infer_cuda as tc
from lmc_ref.transformer import cuda_kernels as ck

SIMULATOR = bool(numba_config.ENABLE_CUDASIM)
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not (SIMULATOR or cuda.is_available()),
                       reason="needs a CUDA GPU or NUMBA_ENABLE_CUDASIM=1"),
]

TINY = {"d_model": 8, "num_heads": 2, "num_layers": 2}
# shared-memory sizes in the test kernels (module constants, so the CUDA compiler sees literals)
RED_MAX = 128  # >= THREADS
D_MAX = ck.D_MAX
T_MAX = ck.T_MAX


def _locked_shared_array(lock):
    """The simulator's ``cuda.shared.array`` with its get-or-create made atomic.

    numba's simulator (``FakeCUDAShared.array``) looks up a block's shared array
    by call site and creates it if missing, without a lock: two threads can both
    create one, and then write to different arrays.  Rare at Python's default
    thread switch interval, it happens at the short interval used here.
    """
    from numba.cuda.simulator import kernelapi

    original = kernelapi.FakeCUDAShared.array

    def array(self, shape, dtype):
        if shape == 0:  # dynamic shared memory: no lookup
            return original(self, shape, dtype)
        if isinstance(dtype, numba_types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]  # as the original does
        with lock:
            found = self._allocations.get(caller)
            if found is None:
                found = self._allocations[caller] = np.empty(shape, dtype)
        return found

    return kernelapi, original, array


def _counted_module_swap(lock):
    """The simulator's ``swapped_cuda_module``, counted per module so that threads cannot undo each other.

    To run a device function, numba's simulator puts its fake ``cuda`` module
    into the function's module globals and puts the real one back on return.
    When a test kernel calls a device function of ``cuda_kernels`` from
    many threads at once, the first thread to return restores the real module
    while the others are still inside, and they fail with "module
    'numba.cuda' has no attribute 'syncthreads'" (rarely, at random).  Here the
    first thread to enter swaps, and the last to leave restores.
    """
    from contextlib import contextmanager

    from numba.cuda.simulator import kernel as sim_kernel

    original = sim_kernel.swapped_cuda_module
    active = {}  # id(module globals) -> [threads inside, the real entries]

    @contextmanager
    def swapped(fn, fake_cuda_module):
        from numba import cuda as real

        globs = fn.__globals__
        with lock:
            entry = active.get(id(globs))
            if entry is None:
                orig = {k: v for k, v in globs.items() if v is real}
                globs.update((k, fake_cuda_module) for k in orig)
                entry = active[id(globs)] = [0, orig]
            entry[0] += 1
        try:
            yield
        finally:
            with lock:
                entry[0] -= 1
                if entry[0] == 0:
                    globs.update(entry[1])
                    del active[id(globs)]

    return sim_kernel, original, swapped


@pytest.fixture(scope="module", autouse=True)
def _small_blocks():
    """In the simulator: 16 threads per block, fast thread switching, race-free shared arrays and module swaps."""
    if not SIMULATOR:
        yield
        return
    kernelapi, original, array = _locked_shared_array(threading.Lock())
    sim_kernel, original_swap, swap = _counted_module_swap(threading.Lock())
    old_threads, old_switch = ck.THREADS, sys.getswitchinterval()
    kernelapi.FakeCUDAShared.array = array
    sim_kernel.swapped_cuda_module = swap
    ck.THREADS = 16
    sys.setswitchinterval(1e-5)
    yield
    ck.THREADS = old_threads
    sys.setswitchinterval(old_switch)
    sim_kernel.swapped_cuda_module = original_swap
    kernelapi.FakeCUDAShared.array = original


def params_for(config, seed=0):
    rng = np.random.default_rng(seed)
    return {k: (w + 0.3 * rng.standard_normal(w.shape)).astype(np.float32)
            for k, w in tf.init_params(config, seed=seed).items()}


# ------------------------------------------------------------ device functions

@cuda.jit
def _reduce_kernel(values, out):
    red = cuda.shared.array(RED_MAX, float64)
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    total = ck._block_sum(red, values[b, tid])
    biggest = ck._block_max(red, values[b, tid])
    if tid == 0:
        out[b, 0] = total
        out[b, 1] = biggest


def test_block_reductions_match_numpy():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((3, ck.THREADS))  # [blocks, threads]
    out = np.zeros((3, 2))
    _reduce_kernel[3, ck.THREADS](values, out)
    np.testing.assert_allclose(out[:, 0], values.sum(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(out[:, 1], values.max(axis=1))


@cuda.jit
def _norm_gelu_kernel(x, w, d, ln_out, gelu_out):
    h = cuda.shared.array(D_MAX, float32)
    red = cuda.shared.array(RED_MAX, float64)
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    for j in range(tid, d, ck.THREADS):
        h[j] = x[b, j]
        gelu_out[b, j] = ck._gelu(x[b, j])
    cuda.syncthreads()
    ck._layer_norm(h, d, w, 0, d, red)
    for j in range(tid, d, ck.THREADS):
        ln_out[b, j] = h[j]


@pytest.mark.parametrize("d", [8, 24])
def test_layer_norm_and_gelu_match_numpy(d):
    rng = np.random.default_rng(d)
    x = (3 * rng.standard_normal((2, d))).astype(np.float32)  # [blocks, d]
    scale, offset = rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)
    w = np.concatenate([scale, offset])  # flat weights: scale at 0, offset at d
    ln_out, gelu_out = np.zeros_like(x), np.zeros_like(x)
    _norm_gelu_kernel[2, ck.THREADS](x, w, d, ln_out, gelu_out)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(ln_out, tf.layer_norm(x64, scale, offset), atol=2e-6)
    np.testing.assert_allclose(gelu_out, tf.gelu(x64), atol=2e-6)


@cuda.jit
def _attention_kernel(q, kc, vc, hd, t, out):
    s = cuda.shared.array(T_MAX, float32)
    part = cuda.shared.array(RED_MAX, float32)
    red = cuda.shared.array(RED_MAX, float64)
    o = cuda.shared.array(D_MAX, float32)
    b = cuda.blockIdx.x
    heads = q.shape[1] // hd
    for hh in range(heads):
        ck._attention_head(q[b], hh * hd, kc, vc, ck.cache_offset(b, 0, hh, 1, heads, hd), hd, t, s, part, red, o)
    for j in range(cuda.threadIdx.x, q.shape[1], ck.THREADS):
        out[b, j] = o[j]


@pytest.mark.parametrize("t", [0, 5, 40, 100])
def test_attention_head_matches_numpy(t):
    rng = np.random.default_rng(t)
    blocks, heads, hd = 2, 2, 4
    q = rng.standard_normal((blocks, heads * hd)).astype(np.float32)  # [B, d]
    kc = np.zeros((blocks, 1, heads, hd, ck.T_MAX), np.float32)  # [B, L, H, hd, T]
    vc = np.zeros((blocks, 1, heads, ck.T_MAX, hd), np.float32)  # [B, L, H, T, hd]
    kc[..., : t + 1] = rng.standard_normal((blocks, 1, heads, hd, t + 1))
    vc[..., : t + 1, :] = rng.standard_normal((blocks, 1, heads, t + 1, hd))
    out = np.zeros_like(q)
    _attention_kernel[blocks, ck.THREADS](q, kc.ravel(), vc.ravel(), hd, t, out)
    for b in range(blocks):
        for hh in range(heads):
            k = kc[b, 0, hh, :, : t + 1].astype(np.float64)  # [hd, t+1]
            v = vc[b, 0, hh, : t + 1].astype(np.float64)  # [t+1, hd]
            scores = q[b, hh * hd:(hh + 1) * hd].astype(np.float64) @ k / math.sqrt(hd)  # [t+1]
            p = np.exp(scores - scores.max())
            np.testing.assert_allclose(out[b, hh * hd:(hh + 1) * hd], (p / p.sum()) @ v, atol=2e-6)


# The plain loops that ``_attention_head`` and ``_dot_column`` unroll: one
# position (one weight) at a time.  The unrolled kernels must give the same
# bits, not merely close ones: the order of the additions is part of the
# numeric contract (files written by the plain loops must still decode).

@cuda.jit(device=True)
def _plain_attention_head(q, base, kc, vc, cbase, hd, t, s, part, red, out):
    tid = cuda.threadIdx.x
    scale = float32(1.0 / math.sqrt(hd))
    m = float64(-math.inf)
    for tau in range(tid, t + 1, ck.THREADS):
        acc = float32(0.0)
        for e in range(hd):
            acc += q[base + e] * kc[cbase + e * T_MAX + tau]
        acc *= scale
        s[tau] = acc
        if acc > m:
            m = float64(acc)
    m32 = float32(ck._block_max(red, m))
    z = float64(0.0)
    for tau in range(tid, t + 1, ck.THREADS):
        p = float32(math.exp(float64(s[tau] - m32)))
        s[tau] = p
        z += float64(p)
    inv = float32(1.0 / ck._block_sum(red, z))
    groups = ck.THREADS // hd
    g = tid // hd
    e = tid - g * hd
    acc = float32(0.0)
    for tau in range(g, t + 1, groups):
        acc += (s[tau] * inv) * vc[cbase + tau * hd + e]
    part[tid] = acc
    cuda.syncthreads()
    if tid < hd:
        acc = float32(0.0)
        for gg in range(groups):
            acc += part[gg * hd + tid]
        out[base + tid] = acc
    cuda.syncthreads()


@cuda.jit
def _unrolled_and_plain_kernel(q, kc, vc, hd, t, x, w, n_out, out, plain_out, dots, plain_dots):
    s = cuda.shared.array(T_MAX, float32)
    part = cuda.shared.array(RED_MAX, float32)
    red = cuda.shared.array(RED_MAX, float64)
    o = cuda.shared.array(D_MAX, float32)
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    heads = q.shape[1] // hd
    for hh in range(heads):
        ck._attention_head(q[b], hh * hd, kc, vc, ck.cache_offset(b, 0, hh, 1, heads, hd), hd, t, s, part, red, o)
    for j in range(tid, q.shape[1], ck.THREADS):
        out[b, j] = o[j]
    cuda.syncthreads()
    for hh in range(heads):
        _plain_attention_head(q[b], hh * hd, kc, vc, ck.cache_offset(b, 0, hh, 1, heads, hd), hd, t, s, part,
                              red, o)
    for j in range(tid, q.shape[1], ck.THREADS):
        plain_out[b, j] = o[j]
    n_in = x.shape[1]
    for j in range(tid, n_out, ck.THREADS):
        dots[b, j] = ck._dot_column(x[b], n_in, w, 3, n_out, j, float32(0.5))
        acc = float32(0.5)
        for i in range(n_in):
            acc += x[b, i] * w[3 + i * n_out + j]
        plain_dots[b, j] = acc


@pytest.mark.parametrize("t, hd", [(2, 4), (13, 4), (40, 4), (100, 4), (130, 4), (70, 1)])
def test_unrolled_loops_equal_plain_loops_bit_for_bit(t, hd):
    """hd = 1: an odd head size (the key rows' remainder)."""
    rng = np.random.default_rng(100 + t)
    blocks, heads = 2, 2
    q = rng.standard_normal((blocks, heads * hd)).astype(np.float32)  # [B, d]
    kc = rng.standard_normal((blocks, 1, heads, hd, T_MAX)).astype(np.float32)  # [B, L, H, hd, T]
    vc = rng.standard_normal((blocks, 1, heads, T_MAX, hd)).astype(np.float32)  # [B, L, H, T, hd]
    n_in, n_out = t % 13 + 5, 9  # 5..17 inputs: the unrolled part and a remainder
    x = rng.standard_normal((blocks, n_in)).astype(np.float32)
    w = rng.standard_normal(3 + n_in * n_out).astype(np.float32)  # the matrix starts at offset 3
    out, plain_out = np.zeros_like(q), np.ones_like(q)
    dots, plain_dots = np.zeros((blocks, n_out), np.float32), np.ones((blocks, n_out), np.float32)
    _unrolled_and_plain_kernel[blocks, ck.THREADS](q, kc.ravel(), vc.ravel(), hd, t, x, w, n_out,
                                                   out, plain_out, dots, plain_dots)
    np.testing.assert_array_equal(out, plain_out)
    np.testing.assert_array_equal(dots, plain_dots)


# ----------------------------------------------------------------- the model

def test_step_kernel_matches_numpy_forward():
    params = params_for(TINY)
    gpu = tc.CudaTransformer(params, TINY, batch=4)
    rng = np.random.default_rng(2)
    chunks = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (7, 3, 1)]
    got = gpu.logprobs(chunks)  # [B, T, 256]
    for b, chunk in enumerate(chunks):
        want = tf.forward({k: w.astype(np.float64) for k, w in params.items()}, TINY,
                          np.frombuffer(chunk, np.uint8))  # [T, 256]
        np.testing.assert_allclose(got[b, : len(chunk)], want, atol=5e-5)


def test_batched_coding_round_trips_and_ignores_batch_size():
    params = params_for(TINY, seed=3)
    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (6, 1, 4)] + [b"aaaa"]
    streams, bits = tc.CudaTransformer(params, TINY, batch=4).encode_chunks(chunks)
    # another batch split computes the same bits: a block never sees another block's chunk
    streams_b, _ = tc.CudaTransformer(params, TINY, batch=3).encode_chunks(chunks)
    assert streams_b == streams
    lengths = [len(c) for c in chunks]
    assert tc.CudaTransformer(params, TINY, batch=1).decode_chunks(streams, lengths) == chunks
    for stream, ideal in zip(streams, bits):
        assert 8 * len(stream) <= ideal + 16  # coder overhead + final flush bits


def test_encoder_and_decoder_see_equal_logprobs():
    """The decoder's probabilities are the encoder's, bit for bit (not merely close)."""
    params = params_for(TINY, seed=4)
    gpu = tc.CudaTransformer(params, TINY, batch=2)
    chunks = [b"abracadabra"[:6], b"xyz"]
    seen = gpu.logprobs(chunks)
    streams, _ = gpu.encode_chunks(chunks)
    decoded = gpu.decode_chunks(streams, [len(c) for c in chunks])
    assert decoded == chunks
    np.testing.assert_array_equal(gpu.logprobs(decoded), seen)


def checkpoint_spec(path, params):
    """Write ``params`` (config TINY) as a checkpoint; return its predictor spec."""
    meta = {"config": tf.get_config(TINY), "hparams": tr.HPARAMS, "data_sha256": "", "history": []}
    zeros = {k: np.zeros_like(w) for k, w in params.items()}
    tr.save_checkpoint(path, {"step": 0, "meta": meta, "param": params, "adam_m": zeros, "adam_v": zeros})
    return f"transformer:ckpt={path}"


def test_container_round_trip_and_backend_checks(tmp_path):
    spec = checkpoint_spec(tmp_path / "tiny.npz", params_for(TINY, seed=5))
    data = b"hello!"
    blob = codec.compress(data, spec, progress=False, backend="cuda")
    header, payload = container.unpack(blob)
    assert header.backend == "cuda" and header.spec == "transformer:v=1"  # the model is named by hash
    assert tc.unpack_streams(payload, len(data))  # one stream, table validated
    assert codec.decompress(blob, progress=False) == data
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "tiny.npz").rename(moved / "tiny.npz")
    assert codec.decompress(blob, progress=False, model_dirs=[moved]) == data
    (moved / "tiny.npz").rename(tmp_path / "tiny.npz")
    with pytest.raises(ValueError, match="backend mismatch"):
        codec.decompress(blob, progress=False, backend="cpu")
    cpu_blob = codec.compress(data, spec, progress=False)
    with pytest.raises(ValueError, match="backend mismatch"):
        codec.decompress(cpu_blob, progress=False, backend="cuda")
    with pytest.raises(ValueError, match="readable path"):
        codec.compress(data, spec, path="readable", progress=False, backend="cuda")


def test_evaluation_harness_on_the_gpu(tmp_path):
    """``evaluate(backend="cuda")`` codes all chunks at once and counts what per-chunk files would hold."""
    from lmc_ref.evaluate import evaluate

    spec = checkpoint_spec(tmp_path / "tiny.npz", params_for(TINY, seed=6))
    chunks = [b"abc", b"hello"]
    rate = evaluate(spec, chunks, backend="cuda")
    assert rate.verified and rate.n_chunks == 2 and rate.model_bytes == 2 * tf.param_count(TINY)
    payloads = [len(container.unpack(codec.compress(c, spec, progress=False, backend="cuda"))[1])
                for c in chunks]
    header = len(codec.compress(b"", spec, progress=False, backend="cuda"))
    assert rate.compressed_bytes == sum(payloads) + header
    assert 0 < rate.ideal_bits <= 8 * sum(payloads)
