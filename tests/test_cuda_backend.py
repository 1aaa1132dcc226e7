"""The CUDA backend on any machine: its file format, its refusals, and its kernels in the simulator."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import cuda

from lmc_ref import codec, container
from lmc_ref.transformer import infer_cuda as tc
from lmc_ref.transformer import cuda_kernels as ck


def test_kernels_in_the_cuda_simulator():
    """Run ``test_transformer_cuda.py`` (marked ``cuda``) with ``NUMBA_ENABLE_CUDASIM=1``.

    The simulator must be chosen before numba is imported, hence a subprocess.
    """
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    suite = Path(__file__).with_name("test_transformer_cuda.py")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", str(suite)],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]


def test_llama_kernels_in_the_cuda_simulator():
    """Run ``test_llama_cuda.py``'s fast tests (``cuda and not slow``: every kernel, the model step,
    batch independence) in the simulator; its coding round trips run with ``-m cuda``."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    suite = Path(__file__).with_name("test_llama_cuda.py")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda and not slow", "-p", "no:cacheprovider",
                          str(suite)], env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]


def test_stream_table_round_trip():
    streams = [b"", b"\x01\x02", bytes(range(200))]
    length = 2 * tc.CHUNK_SIZE + 5
    assert tc.chunk_lengths(length) == [tc.CHUNK_SIZE, tc.CHUNK_SIZE, 5]
    assert tc.unpack_streams(tc.pack_streams(streams), length) == streams
    assert tc.unpack_streams(b"", 0) == []


@pytest.mark.parametrize("payload, length, message", [
    (b"\x00\x00\x00", 5, "too short"),
    (b"\x05\x00\x00\x00abcd", 5, "sums to 5"),
    (b"\x01\x00\x00\x00ab", 5, "sums to 1"),
    (b"\xff\xff\xff\x7f", 5, "can need"),
])
def test_stream_table_validation(payload, length, message):
    with pytest.raises(ValueError, match=message):
        tc.unpack_streams(payload, length)


def test_config_limits():
    ck.check_config("3.2M")
    ck.check_config("200K")
    with pytest.raises(ValueError, match="d_model"):
        ck.check_config({"d_model": 512, "num_heads": 8, "num_layers": 1})
    with pytest.raises(ValueError, match="head size"):
        ck.check_config({"d_model": 24, "num_heads": 2, "num_layers": 1})


def test_flat_weights_layout():
    from lmc_ref.transformer import model as tf

    params = tf.init_params("200K", seed=0)
    flat, offs = ck.pack_flat(params, "200K")
    d = 64
    assert offs.shape == (2 + 12 * 4 + 2,)
    assert flat.size == tf.param_count("200K") + ck.T_MAX * d  # weights + the position table
    np.testing.assert_array_equal(flat[offs[2]:offs[2] + d * d], params["layer0.wq"].ravel())
    np.testing.assert_array_equal(flat[offs[-1]:], params["out.b"])


def test_cpu_only_predictors_refuse_cuda():
    with pytest.raises(ValueError, match="not on 'cuda'"):
        codec.compress(b"abc", "ngram", progress=False, backend="cuda")


@pytest.mark.skipif(cuda.is_available(), reason="this machine has a GPU")
def test_cuda_file_without_a_gpu_is_refused_clearly():
    blob = codec.compress(b"abc", "ngram", progress=False)
    header, payload = container.unpack(blob)
    from dataclasses import replace

    foreign = container.pack(replace(header, backend="cuda"), payload)
    with pytest.raises(ValueError, match="coded on 'cuda'"):
        codec.decompress(foreign, progress=False)
