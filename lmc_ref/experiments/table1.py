"""Table 1: compression rates per modality, classical compressors beside our predictors.

``lmc-ref reproduce`` runs this module's ``experiment``: it loads whatever data
is available (text always; image patches, audio chunks when their folders exist;
seeded random bytes), evaluates every compressor on 2048-byte chunks (and
classical compressors also on the whole data), decodes and compares everything,
and writes ``table1.json``, ``table1.md`` and ``table1.png``.
"""

import os
import platform
import time
from pathlib import Path

from .. import data
from ..baselines import CLASSICAL
from ..constants import CHUNK_SIZE
from ..evaluate import evaluate
from ..predictors import available
from . import llm_rows
from .report import colours, pyplot, save_figure, write_report

#: The paper's Table 1, raw rates in % (2048-byte chunks unless "whole"):
#: (text enwik9, image ImageNet, audio LibriSpeech, random), from shared/PAPER.md.
PAPER = {
    ("gzip", True): (48.1, 68.6, 38.5, 100.1),
    ("lzma", True): (50.0, 62.4, 38.2, 100.0),
    ("png_paper", True): (80.6, 61.7, 37.6, 103.2),
    ("flac", True): (88.9, 60.9, 30.3, 107.2),
    ("gzip", False): (32.3, 70.7, 36.4, 100.0),
    ("lzma", False): (23.0, 57.9, 29.9, 100.0),
    ("png_paper", False): (42.9, 58.5, 32.2, 100.0),
    ("flac", False): (89.5, 61.9, 30.9, 107.8),
    ("Transformer 200K", True): (30.9, 194.0, 146.6, 195.5),
    ("Transformer 800K", True): (21.7, 185.1, 131.1, 200.1),
    ("Transformer 3.2M", True): (17.0, 215.8, 228.2, 224.0),
    ("Chinchilla 70B", True): (8.3, 48.0, 21.0, 100.8),
}
MODALITIES = ("text", "image", "audio", "random")
CLASSICAL_ROWS = ("gzip", "lzma", "bzip2", "brotli", "zstd", "ppmd", "png_paper", "png", "flac")
#: Predictors evaluated per chunk.  Small tables suffice for 2048-byte chunks.
PREDICTOR_SPECS = {"ngram": "ngram:order=6,mem=16", "cm": "cm:mem=16"}
QUICK_CHUNKS = 512  # per modality in --quick (text keeps all of enwik8_head's 522)


def load_modalities(text=None, images=None, audio=None, quick=False, seed=0, download=False):
    """``{modality: (chunks, description)}`` for the data found.

    ``text``: an enwik file (default: found by ``data.find_enwik``); ``images`` and
    ``audio``: folders (default: ``$LMC_REF_DATA/images`` and ``/audio`` if present).
    """
    out = {}
    found = data.find_enwik("enwik8", path=text, download=download)
    raw = Path(found.path).read_bytes()
    if quick and not found.is_prefix:
        raw = raw[: 1 << 20]  # 1 MiB of text is plenty for a quick table
    chunks = list(data.text_chunks(raw))
    out["text"] = (chunks, found.describe() + ("; first 1 MiB (--quick)" if quick and not found.is_prefix else ""))
    root = os.environ.get("LMC_REF_DATA")
    for name, folder, loader in (("image", images, data.image_patches), ("audio", audio, data.audio_chunks)):
        folder = folder or (Path(root) / ("images" if name == "image" else "audio") if root else None)
        if folder is None or not Path(folder).is_dir():
            continue
        report = data.LoadReport()
        items = list(loader(folder, report=report))
        if quick:
            items = items[:QUICK_CHUNKS]
        out[name] = (items, f"{len(items)} chunks from {folder} ({report.files_read} files read, {len(report.skipped)} skipped)")
    n_random = len(chunks) if not quick else min(len(chunks), QUICK_CHUNKS)
    out["random"] = (list(data.random_chunks(n_random, seed=seed)), f"{n_random} chunks of seeded random bytes (seed {seed})")
    return out


def transformer_checkpoints(paths=None):
    """Checkpoints for the transformer rows: ``paths``, else ``cache_dir()/checkpoints/*.npz``."""
    if paths:
        return [Path(p) for p in paths]
    folder = data.cache_dir() / "checkpoints"
    return sorted(folder.glob("*.npz")) if folder.is_dir() else []


def _transformer_label(meta):
    from ..transformer.model import CONFIGS, param_count

    name = next((k for k, v in CONFIGS.items() if v == meta["config"]), None)
    return f"Transformer {name or param_count(meta['config'])}"


def _row(rate, modality, seconds, **extra):
    return {
        "compressor": rate.compressor, "chunked": rate.chunked, "modality": modality,
        "chunks": rate.n_chunks, "raw_bytes": rate.raw_bytes,
        "compressed_bytes": rate.compressed_bytes, "model_bytes": rate.model_bytes,
        "rate": round(rate.rate, 3), "adjusted_rate": round(rate.adjusted_rate, 3),
        "ideal_rate": None if rate.ideal_rate is None else round(rate.ideal_rate, 3),
        "verified": rate.verified, "seconds": round(seconds, 2), **extra,
    }


#: --quick codes at most this many chunks per modality with each trained model (CPU time).
QUICK_MODEL_CHUNKS = 128


def transformer_rows(checkpoints, modalities, verify=True, progress=True, backend="cpu", log=print,
                     max_chunks=None):
    """Rows for trained transformers, each chunk coded from an empty context.

    On text, only the chunks after the checkpoint's training split are used
    (``train_bytes`` of its metadata: the split is always a prefix); with
    ``max_chunks``, at most that many chunks of each modality.  Wherever a
    model sees a subset, the other compressors are measured on that same
    subset beside it.
    """
    from ..transformer.checkpoint import load_checkpoint

    rows = []
    for ckpt in checkpoints:
        meta = load_checkpoint(ckpt, parts=())["meta"]  # the config and training split only
        label, spec = _transformer_label(meta), f"transformer:ckpt={ckpt}"
        for modality, (chunks, _) in modalities.items():
            first = -(-int(meta.get("train_bytes", 0)) // CHUNK_SIZE) if modality == "text" else 0
            last = len(chunks) if max_chunks is None else min(len(chunks), first + max_chunks)
            subset = None
            if (first, last) != (0, len(chunks)):
                subset = f"chunks {first}..{last - 1}" + (" (held out from training)" if first else "")
                chunks = chunks[first:last]
            if not chunks:
                log(f"{label}: no held-out {modality} chunks (trained on {meta.get('train_bytes')} bytes); skipped")
                continue
            t0 = time.perf_counter()
            rate = evaluate(spec, chunks, verify=verify, progress=progress, backend=backend)
            rows.append(_row(rate, modality, time.perf_counter() - t0, label=label, checkpoint=str(ckpt),
                             backend=backend, subset=subset))
            if subset:
                for name in ("gzip", "lzma", *PREDICTOR_SPECS.values()):
                    t0 = time.perf_counter()
                    other = evaluate(name, chunks, verify=verify, ideal=False)
                    rows.append(_row(other, modality, time.perf_counter() - t0, subset=subset))
    return rows


def run(modalities, workers=None, verify=True, progress=True):
    """Evaluate every row on every modality; returns a list of result dicts."""
    workers = workers or os.cpu_count() or 1
    rows = []
    names = [(name, True) for name in CLASSICAL_ROWS] + [(name, False) for name in CLASSICAL_ROWS]
    names += [(spec, True) for key, spec in PREDICTOR_SPECS.items() if key in available()]
    for name, chunked in names:
        for modality, (chunks, _) in modalities.items():
            if not chunks:
                continue
            t0 = time.perf_counter()
            rate = evaluate(name, chunks, chunked=chunked, verify=verify, workers=workers,
                            progress=progress, ideal=name not in CLASSICAL)
            rows.append(_row(rate, modality, time.perf_counter() - t0))
    return rows


def markdown(rows, modalities, meta):
    """The table as Markdown: our rates, then the paper's for the rows it has."""
    present = [m for m in MODALITIES if m in modalities]
    mode = "--quick" if meta["quick"] else "full"
    lines = [f"**Table 1** as measured by lmc_ref {meta['version']} ({mode}, {meta['date']}, "
             f"{meta['seconds']} s on {meta['workers']} workers)", ""]
    lines += [f"- {m}: {modalities[m][1]}" for m in present]
    lines += ["", "Raw compression rate in % (compressed / raw); every figure decoded and compared. "
              "Adaptive models store nothing, so their adjusted rate equals the raw rate.", ""]
    lines.append("| compressor | chunks | " + " | ".join(present) + " |")
    lines.append("|---|---|" + "---|" * len(present))
    main = [r for r in rows if not r.get("subset") and "label" not in r]
    models = [r for r in rows if "label" in r and not _llm_row(r)]
    seen = []
    for row in main + models:
        key = (row.get("label", row["compressor"]), row["chunked"])
        if key not in seen:
            seen.append(key)
    for name, chunked in seen:
        cells = []
        for m in present:
            match = [r for r in main + models
                     if (r.get("label", r["compressor"]), r["chunked"], r["modality"]) == (name, chunked, m)]
            cells.append((f"{match[0]['rate']:.2f}" + (" †" if match[0].get("subset") else "")) if match else "")
        lines.append(f"| {name} | {'2048 B' if chunked else 'whole'} | " + " | ".join(cells) + " |")
    lines += _model_notes([r for r in rows if not _llm_row(r)], models, present)
    lines += llm_rows.markdown(rows, PAPER)
    lines += ["", "The paper's Table 1 (enwik9, ImageNet, LibriSpeech, random; 1 GB each):", ""]
    lines.append("| compressor | chunks | text | image | audio | random |")
    lines.append("|---|---|---|---|---|---|")
    for (name, chunked), values in PAPER.items():
        lines.append(f"| {name} | {'2048 B' if chunked else 'whole'} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    if not models:
        lines += ["", "No transformer rows: give trained checkpoints with `--transformer CKPT` (or put them "
                  "in the user cache, `~/.cache/lmc_ref/checkpoints/*.npz`); train one with "
                  "`lmc-ref train --config 200K --minutes 30 --out CKPT`.  Coding runs at about 10 KB/s "
                  "for the 200K model on 2 CPU cores (`--backend cuda` on a GPU)."]
    return "\n".join(lines) + "\n"


def _llm_row(row):
    """True for the rows of ``llm_rows``: a pretrained model's, or a compressor's beside it."""
    return "protocol" in row or "beside" in row


def _model_notes(rows, models, present):
    """The transformer rows' footnote (subsets they were coded on) and their adjusted rates."""
    if not models:
        return []
    lines = []
    for m in present:
        held = [r for r in rows if r.get("subset") and r["modality"] == m]
        if held:
            others = ", ".join(f"{r['compressor']} {r['rate']:.2f}" for r in held if "label" not in r)
            lines += ["", f"† {m}: trained models coded {held[0]['subset']} ({held[0]['chunks']} chunks); "
                      f"on those same chunks: {others}."]
    lines += ["", "Adjusted rate of the trained models, % ((compressed + 2 bytes per parameter) / raw; "
              "the paper's rule), next to the raw rate:", "",
              "| model | parameters | " + " | ".join(f"{m} raw | {m} adjusted" for m in present) + " |",
              "|---|---|" + "---|---|" * len(present)]
    for label in dict.fromkeys(r["label"] for r in models):
        mine = {r["modality"]: r for r in models if r["label"] == label}
        any_row = next(iter(mine.values()))
        cells = [f"{mine[m]['rate']:.2f} | {mine[m]['adjusted_rate']:.2f}" if m in mine else " | " for m in present]
        lines.append(f"| {label} | {any_row['model_bytes'] // 2:,} | " + " | ".join(cells) + " |")
    return lines


def bar_chart(rows, path):
    """Grouped bars: chunked raw rate per modality for each compressor."""
    plt = pyplot()
    chunked = [dict(r, compressor=r.get("label", r["compressor"])) for r in rows
               if r["chunked"] and (not r.get("subset") or "label" in r) and r.get("protocol") != "lossy"]
    names = list(dict.fromkeys(r["compressor"] for r in chunked))
    mods = [m for m in MODALITIES if any(r["modality"] == m for r in chunked)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(names), 1)
    palette = colours(len(names))
    for i, name in enumerate(names):
        values = [next((r["rate"] for r in chunked if r["compressor"] == name and r["modality"] == m), 0) for m in mods]
        ax.bar([j + i * width for j in range(len(mods))], values, width, label=name, color=palette[i])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(mods))], mods)
    ax.axhline(100, color="gray", lw=0.8, ls="--")
    ax.set_ylabel("raw rate, % (2048-byte chunks)")
    ax.set_title("Table 1 on our data: raw rate per modality (lower is better; dashed: 100 %, no gain)", fontsize=9)
    ax.legend(fontsize=7, ncol=4)
    save_figure(fig, path)


def experiment(outdir="results", *, text=None, quick=False, workers=None, seed=0, progress=False, log=print,
               images=None, audio=None, verify=True, download=False, transformers=None, backend="cpu", llm=None):
    """Run Table 1 and write ``table1.json``, ``table1.md``, ``table1.png`` into ``outdir``.

    The arguments every experiment takes are described in ``lmc_ref.experiments``
    (``seed``: of the random-bytes modality).  ``images``/``audio``: data folders
    (default: under ``$LMC_REF_DATA``); ``verify``: decode and compare every
    chunk; ``download``: fetch enwik8 if none is found; ``transformers``:
    checkpoints for transformer rows (default: those in the user cache, if
    any), coded on ``backend``.  Returns ``{"meta": ..., "rows": ...}``.
    """
    from .. import __version__

    modalities = load_modalities(text, images, audio, quick=quick, seed=seed, download=download)
    for name, (chunks, description) in modalities.items():
        log(f"{name}: {description}")
    t0 = time.perf_counter()
    rows = run(modalities, workers=workers, verify=verify, progress=progress)
    checkpoints = transformer_checkpoints(transformers)
    if checkpoints:
        log(f"transformer rows from {', '.join(map(str, checkpoints))} on the {backend} backend")
        rows += transformer_rows(checkpoints, modalities, verify=verify, progress=progress, backend=backend, log=log,
                                 max_chunks=QUICK_MODEL_CHUNKS if quick else None)
    if llm:
        log(f"pretrained model rows: {llm_rows.llm_spec(llm)}")
        rows += llm_rows.llm_rows(llm, modalities, quick=quick, verify=verify, progress=progress, log=log)
    meta = {
        "version": __version__, "date": time.strftime("%Y-%m-%d"), "quick": quick,
        "seconds": round(time.perf_counter() - t0, 1), "workers": workers or os.cpu_count(),
        "machine": platform.platform(), "data": {k: v[1] for k, v in modalities.items()},
    }
    result = {"meta": meta, "rows": rows}
    write_report(outdir, "table1", result, markdown(rows, modalities, meta), lambda path: bar_chart(rows, path),
                 log=log)
    if llm:  # the model's rows on their own too, for the foundation-model chapter
        mine = [r for r in rows if _llm_row(r)]
        write_report(outdir, "table1_llm", {"meta": meta, "rows": mine},
                     "\n".join(llm_rows.markdown(mine, PAPER)).strip() + "\n", log=log)
    return result
