"""The Llama CUDA kernels against the NumPy reference, and lossless GPU coding with the ``llm:`` predictor.

Marked ``cuda``: excluded from a plain ``pytest`` run, which instead runs this
file in a subprocess under the CUDA simulator (``tests/test_cuda_backend.py``).
Run it directly with ``NUMBA_ENABLE_CUDASIM=1 pytest -m cuda tests/test_llama_cuda.py``
(simulator), or ``pytest -m cuda tests/test_llama_cuda.py`` on a machine with a GPU.
The coding tests are also marked ``slow`` (about a minute in the simulator):
the default run starts only ``-m "cuda and not slow"``; ``-m cuda`` runs all.

In the simulator every GPU thread is a Python thread, so the model is tiny
(``test_gguf_file.TINY``: 2 layers, d_model 32, 4 query and 2 kv heads, a
40-token vocabulary) and the blocks are small: 8 threads for the row
kernels, 8 x 16 matrix tiles of 4 x 4 per thread.  There, float32 arithmetic is NumPy's (no fused
multiply-add), so the matrix product must equal a plain ascending loop bit
for bit; on a GPU the compiler may fuse, and the comparison is to a tolerance.
"""

import importlib.util
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from numba import config as numba_config
from numba import cuda
from test_gguf_file import TINY
from test_llm_predictor import write_tiny
from test_transformer_cuda import _counted_module_swap, _locked_shared_array

from lmc_ref import codec, container
from lmc_ref.predictors import llm
from lmc_ref.transformer import llama, llama_cpu
from lmc_ref.transformer import llama_cuda as lc
from lmc_ref.transformer import llama_cuda_kernels as K

SIMULATOR = bool(numba_config.ENABLE_CUDASIM)
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not (SIMULATOR or cuda.is_available()),
                       reason="needs a CUDA GPU or NUMBA_ENABLE_CUDASIM=1"),
]

SMALL = {"THREADS": 8, "TILE_M": 8, "TILE_N": 16, "TILE_K": 8, "MICRO": 4}  # 8 threads per matmul block


@pytest.fixture(scope="module", autouse=True)
def _small_blocks():
    """In the simulator: small blocks, fast thread switching, race-free shared arrays and module swaps."""
    if not SIMULATOR:
        yield
        return
    kernelapi, original, array = _locked_shared_array(threading.Lock())
    sim_kernel, original_swap, swap = _counted_module_swap(threading.Lock())
    old = {k: getattr(K, k) for k in SMALL}
    old_switch = sys.getswitchinterval()
    kernelapi.FakeCUDAShared.array = array
    sim_kernel.swapped_cuda_module = swap
    for k, v in SMALL.items():
        setattr(K, k, v)
    sys.setswitchinterval(1e-5)
    yield
    for k, v in old.items():
        setattr(K, k, v)
    sys.setswitchinterval(old_switch)
    sim_kernel.swapped_cuda_module = original_swap
    kernelapi.FakeCUDAShared.array = original


def tensors_for(config, seed=0):
    return llama.random_tensors(config, seed=seed, scale=0.2)


def gpu_for(config, seed=0, batch=None):
    return lc.CudaLlama(llama_cpu.pack_weights(dict(tensors_for(config, seed)), config), config, batch=batch)


# ------------------------------------------------------------------ kernels ---

def test_rms_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((3, 37))).astype(np.float32)  # [R, d]: d not a multiple of THREADS
    w = rng.standard_normal(37).astype(np.float32)
    out = np.zeros_like(x)
    K.rms_norm_kernel[3, K.THREADS](x, w, 1e-5, out)
    np.testing.assert_allclose(out, llama.rms_norm(x, w, 1e-5), rtol=1e-6, atol=1e-6)


def _ascending(x, w):
    """``x @ w`` with every sum in float32, one term at a time over ascending inputs."""
    y = np.zeros((x.shape[0], w.shape[1]), np.float32)
    for k in range(x.shape[1]):
        y = y + x[:, k:k + 1] * w[k:k + 1, :]
    return y


@pytest.mark.parametrize("rows, n_in, n_out", [(5, 13, 19), (1, 4, 8), (17, 9, 3)])
def test_matmul_is_an_ascending_sum_whatever_the_rows(rows, n_in, n_out):
    """Edges in every direction; row r's outputs are the same computed alone as among others."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    y = np.zeros((rows, n_out), np.float32)
    grid = (-(-n_out // K.TILE_N), -(-rows // K.TILE_M))
    K.matmul_kernel[grid, K.matmul_threads()](x, w, y, False)
    if SIMULATOR:
        np.testing.assert_array_equal(y, _ascending(x, w))
    else:
        np.testing.assert_allclose(y, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    alone = np.zeros((1, n_out), np.float32)
    K.matmul_kernel[(grid[0], 1), K.matmul_threads()](x[-1:].copy(), w, alone, False)
    np.testing.assert_array_equal(alone[0], y[-1])
    acc = np.ones_like(y)
    K.matmul_kernel[grid, K.matmul_threads()](x, w, acc, True)
    np.testing.assert_array_equal(acc, np.float32(1) + y)


@pytest.mark.parametrize("rope_dim", [8, 4])
def test_rotary_positions_and_cache_writes(rope_dim):
    config = TINY | {"rope_dim": rope_dim}
    H, KV, hd = config["n_heads"], config["n_kv_heads"], llama.head_dim(config)
    d, kv = H * hd, KV * hd
    rng = np.random.default_rng(rope_dim)
    rows, slots, T = 3, 4, 9
    qkv = rng.standard_normal((rows, d + 2 * kv)).astype(np.float32)
    pos, slot = np.array([0, 5, 8]), np.array([2, 0, 3])
    cos, sin = llama.rope_angles(config, T)
    kc = np.zeros((slots, 2, KV, hd, T), np.float32)
    vc = np.zeros((slots, 2, KV, T, hd), np.float32)
    out = qkv.copy()
    K.rope_store_kernel[rows, K.THREADS](out, H, hd, pos, slot, cos, sin, 1, kc, vc)
    for r in range(rows):
        c, s = cos[pos[r]:pos[r] + 1], sin[pos[r]:pos[r] + 1]
        q = llama.rotate(qkv[r:r + 1, :d].reshape(1, H, hd), c, s).reshape(d)
        k = llama.rotate(qkv[r:r + 1, d:d + kv].reshape(1, KV, hd), c, s).reshape(KV, hd)
        np.testing.assert_allclose(out[r, :d], q, atol=1e-6)
        np.testing.assert_allclose(kc[slot[r], 1, :, :, pos[r]], k, atol=1e-6)
        np.testing.assert_array_equal(vc[slot[r], 1, :, pos[r]], qkv[r, d + kv:].reshape(KV, hd))
    np.testing.assert_array_equal(out[:, d:], qkv[:, d:])  # keys and values are not changed in place
    assert not kc[:, 0].any() and not vc[:, 0].any()  # layer 0 untouched


@pytest.mark.parametrize("hd, n_heads, n_kv", [(8, 4, 2), (4, 3, 1), (2, 2, 2)])
def test_grouped_query_attention_matches_numpy(hd, n_heads, n_kv):
    rng = np.random.default_rng(hd + n_heads)
    rows, slots, T = 3, 3, 40
    pos, slot = np.array([0, 17, 39]), np.array([1, 2, 0])
    qkv = rng.standard_normal((rows, (n_heads + 2 * n_kv) * hd)).astype(np.float32)
    kc = rng.standard_normal((slots, 2, n_kv, hd, T)).astype(np.float32)
    vc = rng.standard_normal((slots, 2, n_kv, T, hd)).astype(np.float32)
    scores = np.zeros((rows, n_heads, T), np.float32)
    out = np.zeros((rows, n_heads * hd), np.float32)
    K.attention_kernel[(rows, n_heads), K.THREADS](qkv, hd, pos, slot, 1, kc, vc, scores, out)
    group = n_heads // n_kv
    for r in range(rows):
        n = pos[r] + 1
        for h in range(n_heads):
            q = qkv[r, h * hd:(h + 1) * hd].astype(np.float64)
            k = kc[slot[r], 1, h // group, :, :n].astype(np.float64)  # [hd, n]
            v = vc[slot[r], 1, h // group, :n].astype(np.float64)  # [n, hd]
            p = np.exp(q @ k / np.sqrt(hd) - (q @ k / np.sqrt(hd)).max())
            np.testing.assert_allclose(out[r, h * hd:(h + 1) * hd], (p / p.sum()) @ v, atol=2e-6)


def test_swiglu_matches_numpy():
    rng = np.random.default_rng(5)
    gu = (4 * rng.standard_normal((3, 2 * 21))).astype(np.float32)
    gu[0, 0] = -200.0  # past the exponent's clamp
    out = np.zeros((3, 21), np.float32)
    K.swiglu_kernel[3, K.THREADS](gu, out)
    np.testing.assert_allclose(out, llama.silu(gu[:, :21].astype(np.float64)) * gu[:, 21:], rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------- model ---

def test_model_step_matches_numpy_forward():
    """Chunks of different lengths in lockstep: each position's logits as ``llama.forward`` computes them."""
    gpu = gpu_for(TINY, seed=1)
    tensors = tensors_for(TINY, seed=1)
    rng = np.random.default_rng(1)
    chunks = [rng.integers(0, TINY["vocab"], n) for n in (6, 2, 4)]
    got = gpu.logits(chunks, bos=1)  # [B, T, V]
    for b, c in enumerate(chunks):
        want = llama.forward(tensors, TINY, np.concatenate([[1], c[:-1]]))
        np.testing.assert_allclose(got[b, :len(c)], want, atol=2e-5)


def test_logits_do_not_depend_on_the_other_chunks():
    gpu = gpu_for(TINY, seed=2)
    rng = np.random.default_rng(2)
    chunks = [rng.integers(0, TINY["vocab"], n) for n in (5, 3, 5)]
    together = gpu.logits(chunks, bos=0)
    alone = gpu.logits(chunks[2:], bos=0)
    np.testing.assert_array_equal(together[2], alone[0])


def test_config_the_kernels_cannot_run():
    with pytest.raises(ValueError, match="head size"):
        lc.check_config(TINY | {"d_model": 4 * (3 * K.THREADS // 4), "n_heads": 4})  # head size 3/4 THREADS


# ------------------------------------------------------------------- coding ---

def _groups(seed, vocab, sizes=(2, 1, 3), lengths=(4, 1, 3, 5, 2, 3)):
    """Groups of symbol arrays of the given lengths, escaped bytes (>= vocab) among the tokens."""
    rng = np.random.default_rng(seed)
    chunks = []
    for n in lengths:
        c = rng.integers(1, vocab, n)
        c[rng.random(n) < 0.2] = vocab + rng.integers(0, 256)
        chunks.append(c)
    out, k = [], 0
    for s in sizes:
        out.append(chunks[k:k + s])
        k += s
    return out


@pytest.mark.slow
def test_groups_round_trip_and_ignore_the_batch(monkeypatch):
    """Several groups, chunks of different lengths, escapes; a small first cache that has to grow."""
    monkeypatch.setattr(lc, "FIRST_CAPACITY", 2)
    gpu = gpu_for(TINY, seed=3, batch=3)  # runs of whole groups (a group is never split): [0, 1], [2]
    vocab, escape, bos = TINY["vocab"], 0, 1
    groups = _groups(3, vocab)
    streams, bits = gpu.encode_groups(groups, bos, escape)
    assert len(streams) == 3 and bits > 0
    gpu.batch = 6  # all groups at once: the same streams
    assert gpu.encode_groups(groups, bos, escape)[0] == streams
    lengths = [[len(c) for c in g] for g in groups]
    seen, told = {}, []

    def finished(g, c, symbol):  # the end detector: each chunk's length is known here
        seen[g, c] = seen.get((g, c), 0) + 1
        return seen[g, c] == lengths[g][c]

    gpu.batch = 3
    back = gpu.decode_groups(streams, [len(g) for g in groups], finished, bos, escape, max_symbols=16,
                             progress=told.append)
    assert told == [2, 1]
    for g, group in enumerate(groups):
        for c, chunk in enumerate(group):
            np.testing.assert_array_equal(back[g][c], chunk)


def test_a_chunk_that_never_ends_is_refused():
    gpu = gpu_for(TINY, seed=4)
    streams, _ = gpu.encode_groups([[np.array([3, 4, 5])]], 1, 0)
    with pytest.raises(ValueError, match="does not end within 3 symbols"):
        gpu.decode_groups(streams, [1], lambda g, c, s: False, 1, 0, max_symbols=3)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("llm") / "tiny.gguf"
    write_tiny(path)
    return path


@pytest.mark.slow
def test_codec_round_trip_on_cuda(tiny_gguf, monkeypatch):
    """``codec.compress(backend="cuda")`` and back, several chunks of different lengths in groups of 2.

    The chunks are shortened to 8 bytes (the predictor's ``CHUNK_SIZE``, read by
    encoder and decoder alike) so that the simulator runs a few steps, not 2048.
    """
    monkeypatch.setattr(llm, "CHUNK_SIZE", 8)
    llm.forget()
    data = b"the \x04\xff\xc3\xa9 aaa heath"  # 3 chunks: 8, 8, 3 bytes
    spec = f"llm:gguf={tiny_gguf},group=2"
    blob = codec.compress(data, spec, progress=False, backend="cuda")
    header, payload = container.unpack(blob)
    assert header.backend == "cuda" and header.spec == "llm:v=1,map=latin1,group=2"
    assert codec.decompress(blob, progress=False) == data
    assert codec.decompress(codec.compress(b"", spec, progress=False, backend="cuda"), progress=False) == b""
    with pytest.raises(ValueError, match="backend mismatch"):
        codec.decompress(blob, progress=False, backend="cpu")
    cpu_blob = codec.compress(data, spec, progress=False)
    with pytest.raises(ValueError, match="backend mismatch"):
        codec.decompress(cpu_blob, progress=False, backend="cuda")
    llm.forget()


@pytest.mark.slow
def test_bench_smollm_mode_runs(tiny_gguf):
    """``bench/cuda.py --smollm``'s measurement on the tiny model: GPU and CPU backends, verified."""
    spec = importlib.util.spec_from_file_location("bench_cuda", Path(__file__).parents[1] / "bench" / "cuda.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.llm_bench(str(tiny_gguf), text=b"the theatre: aaa heath " * 4, chunks=3, chunk_len=6,
                          cpu_chunks=2, batch=2, group=2)
    assert row["gpu"]["verified"] and row["cpu"]["verified"]
    assert row["gpu"]["tokens"] > 0 and row["gpu"]["decode_kb_s"] > 0 and "decode_vs_cpu" in row  # ~0 here
