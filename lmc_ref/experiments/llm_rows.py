"""Table 1's foundation-model rows: a pretrained Llama-family model codes every modality.

The paper's headline rows are Chinchilla 70B's: 8.3 % on text, 48.0 % on
image patches, 21.0 % on audio.  ``lmc-ref reproduce --llm smollm2`` adds the
same rows for a model of laptop size (SmolLM2-135M from its GGUF file), coded
the way the paper codes: each 2048-byte chunk on its own, from an empty
context, every chunk decoded and compared.

Two kinds of row come from the same model:

* **lossless** (``protocol: "lossless"``): the original bytes, tokenized with
  the spec's byte mapping and escape (``lmc_ref.llm_tokenizer``); the rate is
  the ``.lmc`` file over the original bytes.  Its adjusted rate adds 2 bytes
  per parameter (the paper's rule) and, beside it, the GGUF file's real size.
* **the paper's lossy protocol** (``protocol: "lossy"``, not a lossless code):
  text bytes masked to 7 bits, image and audio bytes shifted right by one
  (their least significant bit dropped), the result coded as 7-bit data and
  its size multiplied by 8/7.  It is what the paper's language-model rows
  measure; a reader sees here what it hides.

Every row is coded on the same fixed subset of chunks, and gzip, LZMA2, PNG,
FLAC and the context-mixing model are measured on that subset beside it: text
chunks after the project's training split (``DEFAULT_TRAIN_BYTES``); ``--quick``
spreads its few chunks evenly over each modality.
"""

import os
import time
from pathlib import Path

import numpy as np

from ..constants import CHUNK_SIZE
from ..evaluate import evaluate

#: Chunks per modality under ``--quick`` (all of them otherwise): a 135M model codes about
#: 100 tokens/s each way on 2 cores, and an image or audio chunk is 2,000-2,700 tokens.
QUICK_CHUNKS = 8
#: Short names of models ``--llm`` accepts, and the spec each means.
NAMES = {"smollm2": "llm:model=smollm2-135m", "smollm2-135m": "llm:model=smollm2-135m"}
#: Row labels of the short names.
LABELS = {"smollm2": "SmolLM2-135M", "smollm2-135m": "SmolLM2-135M"}
#: Compressors measured on the same subset as the model, per modality.
BESIDE = ("gzip", "lzma", "png", "flac", "cm:mem=16")


def llm_spec(name):
    """The predictor spec ``--llm NAME`` means: a short name of ``NAMES``, or a whole ``llm:`` spec."""
    if name in NAMES:
        return NAMES[name]
    if name.startswith("llm:"):
        return name
    raise ValueError(f"--llm {name!r}: give one of {', '.join(NAMES)} or an llm: spec "
                     "(e.g. llm:gguf=PATH)")


def lossy_view(modality, chunk):
    """The bytes the paper's lossy protocol codes: text masked to 7 bits, other data's LSB dropped."""
    arr = np.frombuffer(bytes(chunk), np.uint8)
    return (arr & 0x7F if modality == "text" else arr >> 1).tobytes()


def subset(modality, chunks, quick, held_out_from):
    """``(chunks, description)``: the chunks the model rows are coded on.

    Text chunks start after the project's training split; every modality uses
    all its whole chunks, or under ``quick`` ``QUICK_CHUNKS`` of them spread evenly
    over the available range (the first chunks of an image folder are patches
    of one photo, and an audio folder starts with one speaker's silence, so a
    prefix would stand for one file, not the modality).
    """
    first = -(-held_out_from // CHUNK_SIZE) if modality == "text" else 0
    available = [i for i in range(first, len(chunks)) if len(chunks[i]) == CHUNK_SIZE]  # each one whole context
    if quick and len(available) > QUICK_CHUNKS:
        picked = [available[(2 * i + 1) * len(available) // (2 * QUICK_CHUNKS)] for i in range(QUICK_CHUNKS)]
        what = f"chunks {', '.join(map(str, picked))} (evenly spaced in {first}..{len(chunks) - 1})"
    else:
        picked = list(available)
        what = f"chunks {first}..{len(chunks) - 1}"
    if modality == "text":
        what += f" (after byte {held_out_from:,}, held out from the project's training split)"
    return [chunks[i] for i in picked], what


def _code(spec, chunks, verify, progress):
    """Code ``chunks`` (2048 bytes each, each from an empty context) as one ``.lmc`` file; return its
    size.  With ``verify`` the file is decoded and compared (AssertionError if it differs)."""
    from ..codec import compress, decompress

    data = b"".join(chunks)
    blob = compress(data, spec, progress=progress)
    if verify and decompress(blob, progress=progress) != data:
        raise AssertionError(f"{spec} did not round-trip")
    return len(blob)


def label_of(name, predictor):
    """A row's label: the model's name for a short name, else the model file's name."""
    return LABELS.get(name) or Path(predictor.source).name


def llm_rows(name, modalities, quick=False, verify=True, progress=False, log=print, held_out_from=None):
    """Rows of ``name`` (``--llm``) on each modality: lossless, the paper's lossy protocol, and the
    classical compressors and ``cm`` on the same chunks.  ``modalities``: ``{name: (chunks, text)}``."""
    from ..predictors import make_predictor
    from ..transformer.train import DEFAULT_TRAIN_BYTES

    spec = llm_spec(name)
    predictor = make_predictor(spec)  # loaded once; the coding below reuses it
    header = _code(spec, [], False, False)  # an empty file is its header: counted once per row
    held_out_from = DEFAULT_TRAIN_BYTES if held_out_from is None else held_out_from
    rows = []
    for modality, (chunks, _) in modalities.items():
        chunks, where = subset(modality, chunks, quick, held_out_from)
        if not chunks:
            log(f"{name}: no {modality} chunks; skipped")
            continue
        raw = len(chunks) * CHUNK_SIZE
        t0 = time.perf_counter()
        size = _code(spec, chunks, verify, progress)
        seconds = time.perf_counter() - t0
        label, file_bytes = label_of(name, predictor), os.stat(predictor.source).st_size
        common = {"label": label, "compressor": predictor.spec, "chunked": True, "modality": modality,
                  "chunks": len(chunks), "raw_bytes": raw, "subset": where, "model_bytes": predictor.model_bytes}
        rows.append({**common, "protocol": "lossless", "compressed_bytes": size, "header_bytes": header,
                     "rate": round(100 * size / raw, 3),
                     "adjusted_rate": round(100 * (size + predictor.model_bytes) / raw, 3),
                     "file_bytes": file_bytes, "adjusted_rate_file": round(100 * (size + file_bytes) / raw, 3),
                     "verified": verify, "seconds": round(seconds, 2)})
        log(f"{label} {modality}: {rows[-1]['rate']:.2f} % on {len(chunks)} chunks ({seconds:.0f} s)")
        if modality != "random":
            t0 = time.perf_counter()
            # Not a code of the data, so not decoded: its figure is only the coded size.
            lossy = _code(spec, [lossy_view(modality, c) for c in chunks], False, progress)
            rows.append({**common, "protocol": "lossy", "compressed_bytes": lossy,
                         "rate": round(100 * lossy * 8 / 7 / raw, 3), "verified": False,
                         "seconds": round(time.perf_counter() - t0, 2)})
        for other in BESIDE:
            t0 = time.perf_counter()
            rate = evaluate(other, chunks, verify=verify, ideal=False)
            rows.append({"compressor": rate.compressor, "chunked": True, "modality": modality,
                         "chunks": len(chunks), "raw_bytes": raw, "subset": where, "beside": label,
                         "compressed_bytes": rate.compressed_bytes, "rate": round(rate.rate, 3),
                         "verified": verify, "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def markdown(rows, paper):
    """The foundation-model rows as Markdown, the paper's Chinchilla 70B row beside them."""
    models = [r for r in rows if "protocol" in r]
    if not models:
        return []
    mods = list(dict.fromkeys(r["modality"] for r in models))
    lines = ["", "Pretrained language model rows (2048-byte chunks, each from an empty context; raw rate in %; "
             "lossless rows decoded and compared):", "",
             "| model | protocol | " + " | ".join(mods) + " |", "|---|---|" + "---|" * len(mods)]
    for label, protocol in dict.fromkeys((r["label"], r["protocol"]) for r in models):
        cells = [next((f"{r['rate']:.2f}" for r in models
                       if (r["label"], r["protocol"], r["modality"]) == (label, protocol, m)), "") for m in mods]
        what = "lossless" if protocol == "lossless" else "paper's lossy protocol (not lossless)"
        lines.append(f"| {label} | {what} | " + " | ".join(cells) + " |")
    for other in dict.fromkeys(r["compressor"] for r in rows if "beside" in r):
        cells = [next((f"{r['rate']:.2f}" for r in rows if r.get("beside") and r["compressor"] == other
                       and r["modality"] == m), "") for m in mods]
        lines.append(f"| {other}, same chunks | lossless | " + " | ".join(cells) + " |")
    chinchilla = paper.get(("Chinchilla 70B", True))
    if chinchilla:
        order = ("text", "image", "audio", "random")
        cells = [f"{chinchilla[order.index(m)]:.1f}" if m in order else "" for m in mods]
        lines.append("| Chinchilla 70B (the paper) | lossy (7-bit text, LSB dropped) | " + " | ".join(cells) + " |")
    headers = {r["header_bytes"] for r in models if "header_bytes" in r}
    if headers:
        lines += ["", f"Each lossless row is one .lmc file: its payload and one header of {max(headers)} bytes "
                  "(the spec and the model file's SHA-256), counted once, as the paper counts one header."]
    lines += ["", "Chunks: " + "; ".join(f"{m}: {next(r['subset'] for r in models if r['modality'] == m)}"
                                         for m in mods) + ".",
              "", "Adjusted rate of the lossless rows, % (compressed + model) / raw: 2 bytes per parameter "
              "(the paper's rule), and the model file's actual size:", "",
              "| model | " + " | ".join(f"{m} (2 B/param) | {m} (file)" for m in mods) + " |",
              "|---|" + "---|---|" * len(mods)]
    for label in dict.fromkeys(r["label"] for r in models):
        mine = {r["modality"]: r for r in models if r["label"] == label and r["protocol"] == "lossless"}
        cells = [f"{mine[m]['adjusted_rate']:.0f} | {mine[m]['adjusted_rate_file']:.0f}"
                 if m in mine else " | " for m in mods]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines
