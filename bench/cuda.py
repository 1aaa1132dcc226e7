"""Benchmark: the transformer's GPU backend (numba.cuda) against its CPU backend, in one run.

Run on a machine with an NVIDIA GPU:

    LMC_REF_DATA=../shared/data python bench/cuda.py [--configs 200K,3.2M] [--batches 1,8,64,256,1024,2048]

For each configuration (random weights: the speed does not depend on their
values) and each batch size B, codes B chunks of 2048 bytes of text
(``$LMC_REF_DATA/enwik8_head``, chunks reused cyclically when B exceeds the
sample) with ``CudaTransformer``, decodes them and compares; reports tokens/s
and KB/s both ways.  The CPU backend (the Numba KV-cache kernel, chunks side
by side on all cores) codes ``--cpu-kb`` KB in the same run as the baseline;
the default, two chunks per core, keeps every core busy.  Issue targets: for the
200K model, >= 1 MB/s aggregate decode and >= 10x the CPU backend.  Prints one
JSON line at the end.  ``--tiny`` runs a tiny model on short chunks (for
checking the script in the CUDA simulator).
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# This file is named like NVIDIA's ``cuda`` package, which numba-cuda imports
# (``cuda.bindings``): keep its folder off the import path, load ``common`` by path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
_spec = importlib.util.spec_from_file_location("bench_common", os.path.join(_HERE, "common.py"))
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
text_sample = _common.text_sample

import numpy as np  # noqa: E402

from lmc_ref.codec import compress, decompress
from lmc_ref.constants import CHUNK_SIZE
from lmc_ref.transformer import model as tf
from lmc_ref.transformer import infer_cuda as tc
from lmc_ref.transformer import cuda_kernels as ck
from lmc_ref.transformer import train as tr

TINY = {"d_model": 8, "num_heads": 2, "num_layers": 1}


def log(*a):
    print(*a, flush=True)


def checkpoint(config, params, path):
    meta = {"config": tf.get_config(config), "hparams": tr.HPARAMS, "data_sha256": "", "history": []}
    zeros = {k: np.zeros_like(w) for k, w in params.items()}
    tr.save_checkpoint(path, {"step": 0, "meta": meta, "param": params, "adam_m": zeros, "adam_v": zeros})
    return f"transformer:ckpt={path}"


def cpu_backend(spec, data):
    """(compress KB/s, decompress KB/s) of the CPU backend on ``data``, compile excluded."""
    decompress(compress(data[:32], spec, progress=False), progress=False)  # compile
    t0 = time.perf_counter()
    blob = compress(data, spec, progress=False)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert decompress(blob, progress=False) == data
    t_dec = time.perf_counter() - t0
    return len(data) / 1000 / t_enc, len(data) / 1000 / t_dec


def gpu_backend(gpu, text_chunks, batch, chunk_len):
    chunks = [text_chunks[i % len(text_chunks)][:chunk_len] for i in range(batch)]
    gpu.batch = batch
    t0 = time.perf_counter()
    streams, bits = gpu.encode_chunks(chunks)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = gpu.decode_chunks(streams, [len(c) for c in chunks])
    t_dec = time.perf_counter() - t0
    if back != chunks:
        raise AssertionError(f"GPU round trip failed at batch {batch}")
    n = sum(len(c) for c in chunks)
    return {"batch": batch, "bytes": n, "encode_tokens_s": round(n / t_enc), "decode_tokens_s": round(n / t_dec),
            "encode_kb_s": round(n / 1000 / t_enc, 2), "decode_kb_s": round(n / 1000 / t_dec, 2),
            "rate_percent": round(100 * sum(4 + len(s) for s in streams) / n, 3),
            "ideal_rate_percent": round(100 * sum(bits) / 8 / n, 3), "verified": True}


def kernel_only(gpu, batch, kernel=None, every=1):
    """Seconds for the 2048 step launches of one batch with no transfers or host coding (where time goes).

    ``every > 1`` launches only positions 0, every, 2 every, ... and scales the time up.
    """
    from numba import cuda

    kernel = kernel or ck.step_kernel
    L, H, hd = gpu.n_layers, gpu.n_heads, gpu.hd
    kc = cuda.device_array(batch * L * H * hd * ck.T_MAX, np.float32)
    vc = cuda.device_array(batch * L * H * ck.T_MAX * hd, np.float32)
    tokens = cuda.to_device(np.zeros(batch, np.int32))
    logp = cuda.device_array((batch, tf.VOCAB), np.float32)
    kernel[batch, ck.THREADS](gpu._w, gpu._offs, L, H, hd, 0, tokens, kc, vc, logp)  # compile
    cuda.synchronize()
    t0 = time.perf_counter()
    for t in range(0, ck.T_MAX, every):
        kernel[batch, ck.THREADS](gpu._w, gpu._offs, L, H, hd, t, tokens, kc, vc, logp)
    cuda.synchronize()
    return (time.perf_counter() - t0) * every


def register_sweep(gpu, batch, caps):
    """Kernel-only seconds (every 8th position, scaled) per register cap (0: no cap)."""
    from numba import cuda

    out = {}
    for cap in caps:
        kernel = cuda.jit(max_registers=cap)(ck.step_kernel.py_func) if cap else cuda.jit(ck.step_kernel.py_func)
        out[str(cap)] = round(kernel_only(gpu, batch, kernel, every=8), 3)
        log(f"  register cap {cap or 'none'}: 2048 launches of batch {batch} take ~{out[str(cap)]} s")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="200K,3.2M", help="comma-separated configurations (default: %(default)s)")
    ap.add_argument("--batches", default="1,8,64,256,1024,2048", help="chunks per batch (default: %(default)s)")
    ap.add_argument("--cpu-kb", type=int, default=4 * (os.cpu_count() or 1),
                    help="KB coded by the CPU baseline (default: two 2 KB chunks per core, %(default)s)")
    ap.add_argument("--tiny", action="store_true", help="tiny model, 16-byte chunks (simulator check)")
    ap.add_argument("--sweep-registers", default="", help="register caps to time the kernel with, e.g. 0,96,64,40 "
                                                          "(0: none), on the first config's largest batch")
    args = ap.parse_args()
    from numba import cuda

    if not cuda.is_available():
        sys.exit("no CUDA GPU (numba.cuda.is_available() is False); set NUMBA_ENABLE_CUDASIM=1 with --tiny to "
                 "check the script in the simulator")
    try:
        name = cuda.get_current_device().name
        name = name.decode() if isinstance(name, bytes) else str(name)
    except AttributeError:  # the simulator
        name = "CUDA simulator"
    text = text_sample()
    text_chunks = [text[i:i + CHUNK_SIZE] for i in range(0, len(text) - CHUNK_SIZE + 1, CHUNK_SIZE)]
    configs = ["tiny"] if args.tiny else args.configs.split(",")
    chunk_len = 16 if args.tiny else CHUNK_SIZE
    batches = [int(b) for b in args.batches.split(",")]
    log(f"device: {name}; {len(text_chunks)} text chunks of {CHUNK_SIZE} bytes; batches {batches}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            cfg = TINY if config == "tiny" else config
            params = tf.init_params(cfg, seed=0)
            row = {"parameters": tf.param_count(cfg)}
            t0 = time.perf_counter()
            gpu = tc.CudaTransformer(params, cfg, batch=1)
            gpu.decode_chunks(gpu.encode_chunks([text[:8]])[0], [8])  # compile the kernels
            row["compile_s"] = round(time.perf_counter() - t0, 1)
            log(f"{config}: {row['parameters']:,} parameters, GPU kernels ready in {row['compile_s']} s")
            if args.sweep_registers and config == configs[0]:
                caps = [int(c) for c in args.sweep_registers.split(",")]
                row["register_sweep_s"] = register_sweep(gpu, max(batches), caps)
            row["gpu"] = []
            for batch in batches:
                r = gpu_backend(gpu, text_chunks, batch, chunk_len)
                row["gpu"].append(r)
                log(f"  GPU batch {batch:5d}: encode {r['encode_kb_s']:9.2f} KB/s, decode {r['decode_kb_s']:9.2f} KB/s "
                    f"({r['decode_tokens_s']:,} tokens/s), rate {r['rate_percent']:.2f} % (verified)")
            if not args.tiny:
                big = max(batches)
                row["kernel_only_s"] = round(kernel_only(gpu, big), 3)
                t_dec = big * CHUNK_SIZE / 1000 / row["gpu"][-1]["decode_kb_s"]
                log(f"  batch {big}: the 2048 kernel launches alone take {row['kernel_only_s']} s "
                    f"of the decode's {t_dec:.2f} s")
            spec = checkpoint(cfg, params, Path(tmp) / f"{config}.npz")
            cpu_bytes = text[: (256 if args.tiny else args.cpu_kb * 1024)]
            enc, dec = cpu_backend(spec, cpu_bytes)
            row["cpu"] = {"bytes": len(cpu_bytes), "encode_kb_s": round(enc, 3), "decode_kb_s": round(dec, 3)}
            best = max(row["gpu"], key=lambda r: r["decode_kb_s"])
            row["best_decode_kb_s"] = best["decode_kb_s"]
            row["best_decode_batch"] = best["batch"]
            row["decode_vs_cpu"] = round(best["decode_kb_s"] / dec, 1)
            log(f"  CPU backend ({len(cpu_bytes)} bytes): encode {enc:.2f} KB/s, decode {dec:.2f} KB/s; "
                f"best GPU decode {best['decode_kb_s']:.1f} KB/s = {row['decode_vs_cpu']}x CPU")
            results[config] = row
    summary = {"bench": "cuda", "device": name, "configs": results}
    if "200K" in results:
        summary["decode_mb_s_200K"] = round(results["200K"]["best_decode_kb_s"] / 1000, 3)
        summary["decode_vs_cpu_200K"] = results["200K"]["decode_vs_cpu"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
