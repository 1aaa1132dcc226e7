"""Context length: compression rate against chunk length.

The paper's language models see at most one 2048-byte chunk, and much of
their advantage comes from using that context well (in-context learning).
This experiment asks the same of every compressor: cut the same text into
chunks of 64 bytes up to 2048 (and longer, which the classical compressors and
our adaptive models allow), code each chunk alone, and measure the rate.  A
compressor that gains a lot from longer chunks is one that learns from its
context; one whose curve is flat brought its knowledge with it (or has none).
"""

import os
import time
from pathlib import Path

from .. import data
from ..evaluate import evaluate
from ..predictors import available
from .report import colours, pyplot, save_figure, write_report
from .table1 import PREDICTOR_SPECS

LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)
CLASSICAL_ROWS = ("gzip", "lzma", "brotli")
QUICK_BYTES = 256 << 10
FULL_BYTES = 8 << 20


def chunks_of(raw, length):
    """Consecutive ``length``-byte chunks of ``raw`` (a short tail is dropped)."""
    return [raw[i : i + length] for i in range(0, len(raw) - length + 1, length)]


def run(raw, lengths=LENGTHS, names=None, workers=None, progress=False):
    """Rates (%) of every compressor at every chunk length, verified by decoding."""
    if names is None:
        names = list(CLASSICAL_ROWS) + [spec for key, spec in PREDICTOR_SPECS.items() if key in available()]
    rows = []
    for name in names:
        for length in lengths:
            chunks = chunks_of(raw, length)
            if len(chunks) < 1:
                continue
            rate = evaluate(name, chunks, workers=workers or os.cpu_count() or 1, ideal=False, progress=progress)
            rows.append({"compressor": rate.compressor, "length": length, "chunks": rate.n_chunks,
                         "rate": round(rate.rate, 3), "verified": rate.verified})
    return rows


def plot(rows, path):
    """Rate against chunk length (log scale), one line per compressor."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = list(dict.fromkeys(r["compressor"] for r in rows))
    for name, colour in zip(names, colours(len(names))):
        pts = sorted((r["length"], r["rate"]) for r in rows if r["compressor"] == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name, color=colour)
    ax.set_xscale("log", base=2)
    ax.axvline(2048, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("chunk length, bytes (each chunk coded alone)")
    ax.set_ylabel("raw rate, %")
    ax.set_title("Rate against chunk length (lower is better; dashed: the paper's 2048 bytes)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def markdown(rows, meta):
    """Rates as a Markdown table: one row per compressor, one column per chunk length."""
    lengths = sorted({r["length"] for r in rows})
    head = "| compressor | " + " | ".join(f"{n:,} B" for n in lengths) + " |"
    lines = [f"Raw rate in % on {meta['bytes']:,} bytes of {meta['text']}, each chunk coded alone "
             "and decoded; written by `lmc-ref experiment context"
             + (" --quick" if meta["quick"] else "") + "`.", "", head, "|---|" + "---|" * len(lengths)]
    for name in dict.fromkeys(r["compressor"] for r in rows):
        by_length = {r["length"]: r["rate"] for r in rows if r["compressor"] == name}
        lines.append(f"| {name} | " + " | ".join(f"{by_length[n]:.2f}" if n in by_length else "" for n in lengths) + " |")
    return "\n".join(lines) + "\n"


def experiment(outdir="results", *, text=None, quick=False, workers=None, seed=0, progress=False, log=print):
    """Run the experiment and write ``context.json``, ``context.md`` and ``context.png``.

    The arguments are those of every experiment (``lmc_ref.experiments``); the
    experiment is deterministic, so ``seed`` is unused.  Returns ``{"meta": ..., "rows": ...}``.
    """
    found = data.find_enwik("enwik8", path=text)
    raw = Path(found.path).read_bytes()[: QUICK_BYTES if quick else FULL_BYTES]
    lengths = [n for n in LENGTHS if n <= len(raw)]
    log(f"context: {len(raw):,} bytes of {found.describe()}, chunk lengths {lengths}")
    t0 = time.perf_counter()
    rows = run(raw, lengths, workers=workers, progress=progress)
    meta = {"text": found.describe(), "bytes": len(raw), "quick": quick, "lengths": lengths,
            "seconds": round(time.perf_counter() - t0, 1)}
    result = {"meta": meta, "rows": rows}
    write_report(outdir, "context", result, markdown(rows, meta), lambda path: plot(rows, path), log=log)
    return result
