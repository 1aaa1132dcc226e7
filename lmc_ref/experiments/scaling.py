"""Scaling: compression rate against model size, for several amounts of training data.

The paper's point (its Fig. 2): measured by the *adjusted* rate, which charges
a compressor for its own size (2 bytes per parameter), a bigger model pays off
only if there is enough data to compress -- the best model size grows with
the dataset.  This experiment trains transformers of several sizes, each for
the same number of steps, on slices of the text of three sizes, codes the same
held-out chunks with each (decoded and compared), and computes

    raw rate      = compressed size / raw size of the held-out chunks,
    adjusted rate = (raw rate x D + 2 x parameters) / D   for a dataset of D bytes,

i.e. the rate the model would reach on the whole dataset of D bytes if it
compressed it as well as the held-out chunks, plus its own size.  The count
models are the analogue with no stored weights: adaptive n-gram and context
mixing models whose x-coordinate is their table memory, adjusted = raw.
"""

import os
import tempfile
import time
from pathlib import Path

from .. import data
from ..constants import CHUNK_SIZE
from ..evaluate import evaluate
from ..predictors import context_mixing, ngram
from ..transformer.model import param_count
from ..transformer.checkpoint import save_checkpoint
from ..transformer.train import HPARAMS, adam_moments, train
from .report import pyplot, save_figure, write_report

#: Model sizes, smallest first: ~20K, ~40K and the paper's 200K, 800K, 3.2M.
MODELS = {
    "20K": {"d_model": 20, "num_heads": 2, "num_layers": 2},
    "40K": {"d_model": 32, "num_heads": 2, "num_layers": 2},
    "200K": {"d_model": 64, "num_heads": 4, "num_layers": 4},
    "800K": {"d_model": 128, "num_heads": 4, "num_layers": 4},
    "3.2M": {"d_model": 256, "num_heads": 8, "num_layers": 4},
}
#: Per variant: dataset sizes (bytes of training text), steps per run, batch, sequence length
#: (the held-out chunks have this length too: a model is evaluated on the context length it
#: was trained on), held-out chunks, count-model memory settings.
SETTINGS = {
    "quick": {"datasets": (64_000, 256_000, 900_000), "models": ("20K", "200K", "800K", "3.2M"),
              "steps": 100, "batch": 4, "seq_len": 512, "eval_chunks": 32,
              "ngram_mem": (10, 12, 14, 16), "cm_mem": (10, 12, 14, 16)},
    "full": {"datasets": (1_000_000, 10_000_000, 90_000_000), "models": tuple(MODELS),
             "steps": 3000, "batch": 8, "seq_len": CHUNK_SIZE, "eval_chunks": 64,
             "ngram_mem": (10, 12, 14, 16, 18, 20), "cm_mem": (10, 12, 14, 16, 18, 20)},
}
#: Text at and after this offset is never trained on (enwik8_head's validation split).
HELD_OUT_START = 900_000


# --8<-- [start:adjusted]
def adjusted(rate_percent, dataset_bytes, model_bytes):
    """Adjusted rate (%) on a dataset of ``dataset_bytes`` for a model of ``model_bytes``:
    the held-out raw rate applied to the whole dataset, plus the model itself."""
    return rate_percent + 100.0 * model_bytes / dataset_bytes
# --8<-- [end:adjusted]


def run(raw, setting, progress=False, log=print, seed=0, workers=1):
    """Train and evaluate every (dataset size, model) pair and the count models; return rows.

    ``seed``: of each model's initialisation and batches; ``workers``: processes
    for the count models (the transformers code their chunks side by side in one).
    """
    s = SETTINGS[setting] if isinstance(setting, str) else setting
    held_start = max(HELD_OUT_START, max(s["datasets"])) if len(raw) > HELD_OUT_START else int(0.9 * len(raw))
    held = raw[held_start:]
    n = s["seq_len"]
    chunks = [held[i:i + n] for i in range(0, len(held) - n + 1, n)][: s["eval_chunks"]]
    if not chunks:
        raise ValueError(f"no held-out text after byte {held_start:,} (the text has {len(raw):,} bytes)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in s["datasets"]:
            train_bytes = min(size, held_start)
            for name in s["models"]:
                cfg = MODELS[name]
                t0 = time.perf_counter()
                params, history = train(cfg, raw, steps=s["steps"], seq_len=s["seq_len"],
                                        batch=s["batch"], progress=False, train_bytes=train_bytes,
                                        val_chunks=1, val_every=10 ** 9, seed=seed)
                t_train = time.perf_counter() - t0
                ckpt = Path(tmp) / f"{name}-{size}.npz"
                zeros, _ = adam_moments(params)  # the checkpoint's Adam state: not needed to code
                meta = {"config": cfg, "hparams": HPARAMS, "data_sha256": "", "train_bytes": train_bytes,
                        "history": history}
                save_checkpoint(ckpt, {"step": s["steps"], "meta": meta, "param": params,
                                       "adam_m": zeros, "adam_v": zeros})
                rate = evaluate(f"transformer:ckpt={ckpt}", chunks, progress=progress)
                row = {"kind": "transformer", "model": name, "parameters": param_count(cfg),
                       "model_bytes": rate.model_bytes, "dataset_bytes": train_bytes,
                       "rate": round(rate.rate, 3), "ideal_rate": round(rate.ideal_rate, 3),
                       "adjusted_rate": round(adjusted(rate.rate, train_bytes, rate.model_bytes), 3),
                       "train_seconds": round(t_train, 1), "verified": rate.verified}
                rows.append(row)
                log(f"  {name:>5} on {train_bytes:>11,} bytes: raw {row['rate']:6.2f} %, "
                    f"adjusted {row['adjusted_rate']:9.2f} % (trained {t_train:.0f} s)")
    for kind, mems, table_bytes in (("ngram", s["ngram_mem"], lambda m: ngram.memory_bytes(ngram.DEFAULT_ORDER, m)),
                                    ("cm", s["cm_mem"], context_mixing.memory_bytes)):
        for mem in mems:
            rate = evaluate(f"{kind}:mem={mem}", chunks, ideal=False, workers=workers)
            rows.append({"kind": kind, "model": f"{kind}:mem={mem}", "table_bytes": table_bytes(mem),
                         "model_bytes": 0, "rate": round(rate.rate, 3), "adjusted_rate": round(rate.rate, 3),
                         "verified": rate.verified})
            log(f"  {kind}:mem={mem}: {rows[-1]['rate']:.2f} % ({table_bytes(mem):,} bytes of tables, stored: none)")
    return rows, {"held_out_start": held_start, "eval_chunks": len(chunks)}


def best_per_dataset(rows):
    """``{dataset_bytes: model name}`` with the lowest adjusted rate among the transformers."""
    best = {}
    for r in rows:
        if r["kind"] == "transformer":
            d = r["dataset_bytes"]
            if d not in best or r["adjusted_rate"] < best[d]["adjusted_rate"]:
                best[d] = r
    return {d: r["model"] for d, r in best.items()}


def plot(rows, path):
    """Log-log: raw (dashed) and adjusted (solid) rate against parameters, one colour per dataset."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    tf_rows = [r for r in rows if r["kind"] == "transformer"]
    best = best_per_dataset(rows)
    for i, d in enumerate(sorted({r["dataset_bytes"] for r in tf_rows})):
        pts = sorted((r["parameters"], r["rate"], r["adjusted_rate"], r["model"]) for r in tf_rows
                     if r["dataset_bytes"] == d)
        colour = f"C{i}"
        ax.plot([p[0] for p in pts], [p[2] for p in pts], "-o", color=colour, label=f"adjusted, {d:,} B")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", color=colour, alpha=0.6)
        star = next(p for p in pts if p[3] == best[d])
        ax.plot([star[0]], [star[2]], "*", color=colour, markersize=16, markeredgecolor="k")
    for kind, marker, colour in (("ngram", "s", "C3"), ("cm", "^", "C4")):
        pts = sorted((r["table_bytes"] / 2, r["rate"]) for r in rows if r["kind"] == kind)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour, ls=":",
                    label=f"{kind} (x = table bytes / 2; nothing stored)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (count models: table bytes / 2)")
    ax.set_ylabel("rate, % (held-out chunks)")
    ax.set_title("Scaling (lower is better): dashed raw, solid adjusted; * best adjusted per dataset", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def markdown(rows, meta):
    """The transformer rows (best adjusted rate per dataset marked) and the count models, as Markdown."""
    lines = [f"Scaling ({'--quick' if meta['quick'] else 'full'}): {meta['text']}; each model trained "
             f"{meta['steps']} steps (batch {meta['batch']}, sequence {meta['seq_len']}), evaluated on "
             f"{meta['eval_chunks']} held-out chunks of {meta['seq_len']} bytes from byte "
             f"{meta['held_out_start']:,}, each from an empty context, decoded and compared "
             f"({meta['seconds']} s in all).", "",
             "| model | parameters | dataset bytes | raw rate % | adjusted rate % |", "|---|---|---|---|---|"]
    best = best_per_dataset(rows)
    for r in rows:
        if r["kind"] == "transformer":
            mark = " **(best)**" if best.get(r["dataset_bytes"]) == r["model"] else ""
            lines.append(f"| {r['model']} | {r['parameters']:,} | {r['dataset_bytes']:,} | {r['rate']:.2f} | "
                         f"{r['adjusted_rate']:.2f}{mark} |")
    lines += ["", "| count model | table bytes | rate % (= adjusted: nothing stored) |", "|---|---|---|"]
    lines += [f"| {r['model']} | {r['table_bytes']:,} | {r['rate']:.2f} |" for r in rows if r["kind"] != "transformer"]
    return "\n".join(lines) + "\n"


def experiment(outdir="results", *, text=None, quick=False, workers=None, seed=0, progress=False, log=print):
    """Run the experiment and write ``scaling.json``, ``scaling.md`` and ``scaling.png``.

    The arguments are those of every experiment (``lmc_ref.experiments``);
    ``seed`` seeds the training runs, ``workers`` the count models' processes.
    Returns ``{"meta": ..., "rows": ...}``.
    """
    found = data.find_enwik("enwik8", path=text)
    raw = Path(found.path).read_bytes()
    setting = "quick" if quick else "full"
    s = SETTINGS[setting]
    log(f"scaling ({setting}): {found.describe()}; models {', '.join(s['models'])}; datasets "
        f"{', '.join(f'{d:,}' for d in s['datasets'])} bytes; {s['steps']} steps each")
    t0 = time.perf_counter()
    rows, info = run(raw, setting, progress=progress, log=log, seed=seed, workers=workers or os.cpu_count() or 1)
    meta = {"text": found.describe(), "quick": quick, "seconds": round(time.perf_counter() - t0, 1),
            **{k: s[k] for k in ("steps", "batch", "seq_len")}, **info}
    result = {"meta": meta, "rows": rows}
    write_report(outdir, "scaling", result, markdown(rows, meta), lambda path: plot(rows, path), log=log)
    return result
