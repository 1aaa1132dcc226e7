"""Tokenization: does a model that reads BPE tokens compress text better than one that reads bytes?

The paper's claim (its Section 3.4): tokenization is itself a compressor (a
byte-pair encoding replaces frequent strings by single symbols), so a model
with a fixed context of T symbols sees more text when its symbols are tokens.
Yet, measured against the original bytes, tokenization does not in general
improve the compression rate of a transformer; in the authors' runs larger
vocabularies helped the smallest model and hurt the larger ones.

This experiment trains one transformer configuration per vocabulary (256 =
plain bytes, then BPE vocabularies of 1K, 2K, 5K tokens learned on the
training split) with the same budget: the same number of steps of the same
batch of sequences of the same number of *tokens*.  Each model then codes the
held-out text, tokenized with its own tokenizer and cut into chunks of that
many tokens (each coded from an empty context, exactly as the byte models of
Table 1 code 2048-byte chunks).  Every chunk is decoded again, detokenized and
compared with the original bytes, and

    rate = compressed bits / (8 x original bytes of the held-out text).

The tokenizer's merge table and the model's weights are not charged (as in
the paper's tokenization runs); their sizes are reported beside the rate.
"""

import time
from pathlib import Path

import numpy as np

from .. import data
from ..progress import close, progress_bar
from ..tokenizer import BPETokenizer
from ..transformer import infer_cpu as tk
from ..transformer.model import CONFIGS, get_config, init_params, param_count
from ..transformer.train import HPARAMS, adam_moments, learning_rate, sample_batch, split_data, train_step
from .report import pyplot, save_figure, write_report

#: Per variant: vocabularies (256 = bytes, no tokenizer), model, training steps, batch and
#: sequence length in tokens (the held-out chunks have that many tokens), held-out bytes coded.
SETTINGS = {
    "quick": {"vocabs": (256, 1024, 2048, 5120), "config": "200K", "steps": 600, "batch": 8, "seq_len": 256,
              "eval_bytes": 48_000},
    "full": {"vocabs": (256, 1024, 2048, 5120, 10240), "config": "200K", "steps": 5000, "batch": 8,
             "seq_len": 2048, "eval_bytes": None},
}


# --8<-- [start:train_tokens]
def train_tokens(config, tokens, steps, seq_len, batch, seed=0, log_every=None, log=print, progress=False):
    """Train a transformer on a 1-D array of token ids; returns ``(params, mean train bits/token of
    the last tenth of the steps)``.  Each step is ``lmc_ref.transformer.train.train_step``, with the
    same warmup + cosine schedule and batches as ``train``: only the symbols differ."""
    cfg = get_config(config)
    hp = dict(HPARAMS)
    params = init_params(cfg, seed)
    m, v = adam_moments(params)
    bar = progress_bar(steps, progress, f"vocab {cfg.get('vocab', 256)}", unit="step", threshold=0)
    losses = []
    for step in range(steps):
        lr = learning_rate(step, step / steps, hp)
        losses.append(train_step(params, m, v, cfg, sample_batch(tokens, seq_len, batch, seed, step), step, lr, hp))
        if bar is not None:
            bar.update(1)
        if log_every and (step + 1) % log_every == 0:
            log(f"    step {step + 1}/{steps}: {np.mean(losses[-log_every:]):.3f} bits/token")
    close(bar)
    tail = losses[-max(1, steps // 10):]
    return params, float(np.mean(tail))
# --8<-- [end:train_tokens]


# --8<-- [start:code_tokens]
def code_held_out(params, config, tokenizer, held, seq_len):
    """Code ``held`` (bytes) in chunks of ``seq_len`` symbols, decode, compare.

    Returns ``(compressed bytes, ideal bits, symbols, chunks)``; raises if the
    decoded text differs from ``held``.
    """
    cfg = get_config(config)
    symbols = tokenizer.encode(held) if tokenizer else np.frombuffer(held, np.uint8)
    chunks = [symbols[i:i + seq_len] for i in range(0, len(symbols), seq_len)]
    weights = tk.pack_weights(params, cfg, seq_len)
    streams, bits = tk.encode_chunks(weights, cfg["num_heads"], chunks, tokens=tokenizer is not None)
    decoded = tk.decode_chunks(weights, cfg["num_heads"], streams, [len(c) for c in chunks],
                               tokens=tokenizer is not None)
    text = tokenizer.decode(decoded) if tokenizer else decoded.tobytes()
    if text != held:
        raise AssertionError("decoded text differs from the original: the token coder is broken")
    return sum(len(s) for s in streams), float(sum(bits)), len(symbols), len(chunks)
# --8<-- [end:code_tokens]


def run(raw, setting, log=print, seed=0, progress=False):
    """Train and evaluate one model per vocabulary; return rows (one dict per vocabulary).

    ``seed``: of each model's initialisation and batches; ``progress``: a bar per training run.
    """
    s = SETTINGS[setting] if isinstance(setting, str) else setting
    train_split, val_split = split_data(raw)
    held = val_split.tobytes()[: s["eval_bytes"]]
    train_bytes = train_split.tobytes()
    base = CONFIGS[s["config"]] if isinstance(s["config"], str) else s["config"]
    rows = []
    for vocab in s["vocabs"]:
        t0 = time.perf_counter()
        tokenizer = BPETokenizer.train(train_bytes, vocab) if vocab > 256 else None
        t_bpe = time.perf_counter() - t0
        tokens = tokenizer.encode(train_bytes) if tokenizer else train_split.astype(np.int64)
        cfg = get_config({**base, "vocab": vocab})
        t0 = time.perf_counter()
        params, train_bits = train_tokens(cfg, tokens, s["steps"], s["seq_len"], s["batch"], seed=seed, log=log,
                                          progress=progress)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        size, ideal, n_symbols, n_chunks = code_held_out(params, cfg, tokenizer, held, s["seq_len"])
        t_code = time.perf_counter() - t0
        row = {"vocab": vocab, "parameters": param_count(cfg),
               "tokenizer_bytes": 0 if tokenizer is None else int(tokenizer.merges.size * 2),
               "train_bytes_per_token": round(len(train_bytes) / len(tokens), 4),
               "trained_on_bytes": round(s["steps"] * s["batch"] * s["seq_len"] * len(train_bytes) / len(tokens)),
               "held_out_bytes": len(held), "held_out_symbols": n_symbols,
               "bytes_per_symbol": round(len(held) / n_symbols, 4), "chunks": n_chunks,
               "bytes_per_chunk": round(len(held) / n_chunks, 1),
               "compressed_bytes": size, "rate": round(100.0 * size / len(held), 3),
               "ideal_rate": round(100.0 * ideal / 8 / len(held), 3),
               "bits_per_symbol": round(ideal / n_symbols, 4), "train_bits_per_symbol": round(train_bits, 4),
               "bpe_seconds": round(t_bpe, 1), "train_seconds": round(t_train, 1),
               "code_seconds": round(t_code, 1), "verified": True}
        rows.append(row)
        log(f"  vocab {vocab:>6,}: {row['bytes_per_symbol']:.2f} bytes/symbol, rate {row['rate']:6.2f} % "
            f"({row['parameters']:,} parameters; BPE {t_bpe:.0f} s, training {t_train:.0f} s, "
            f"coding + decoding {t_code:.0f} s)")
    return rows


def plot(rows, path):
    """Rate (left axis) and bytes per symbol (right axis) against the vocabulary size."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    v = [r["vocab"] for r in rows]
    ax.plot(v, [r["rate"] for r in rows], "-o", color="C0", label="rate (coded, decoded, compared)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(v, [f"{x:,}" for x in v])
    ax.set_xlabel("vocabulary (256 = bytes, others: BPE)")
    ax.set_ylabel("rate, % of the original bytes", color="C0")
    ax2 = ax.twinx()
    ax2.plot(v, [r["bytes_per_symbol"] for r in rows], "--s", color="C1", label="bytes per symbol")
    ax2.set_ylabel("bytes per symbol (sequence shortening)", color="C1")
    ax.set_title("Tokenization: same model and budget, symbols = bytes or BPE tokens (rate: lower is better)", fontsize=9)
    save_figure(fig, path)


def markdown(rows, meta):
    """One row per vocabulary: shortening, bits per symbol and the rate, as Markdown."""
    lines = [f"Tokenization ({'--quick' if meta['quick'] else 'full'}): {meta['text']}; model "
             f"{meta['config']}, {meta['steps']} steps of batch {meta['batch']} x {meta['seq_len']} symbols per "
             f"vocabulary; BPE learned on the first {meta['train_bytes']:,} bytes; {meta['held_out_bytes']:,} "
             f"held-out bytes coded in chunks of {meta['seq_len']} symbols, each from an empty context, "
             f"decoded and compared ({meta['seconds']} s in all).", "",
             "| vocabulary | parameters | bytes/symbol | bytes/chunk | text trained on | bits/symbol | rate % "
             "| ideal rate % |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['vocab']:,} | {r['parameters']:,} | {r['bytes_per_symbol']:.2f} | "
                     f"{r['bytes_per_chunk']:,.0f} | {r['trained_on_bytes'] / 1e6:.2f} MB | {r['bits_per_symbol']:.3f} | "
                     f"{r['rate']:.2f} | {r['ideal_rate']:.2f} |")
    return "\n".join(lines) + "\n"


def experiment(outdir="results", *, text=None, quick=False, workers=None, seed=0, progress=False, log=print):
    """Run the experiment and write ``tokenization.json``, ``.md`` and ``.png``.

    The arguments are those of every experiment (``lmc_ref.experiments``);
    ``seed`` seeds the training runs, and ``workers`` is unused (each model
    trains in one process).  Returns ``{"meta": ..., "rows": ...}``.
    """
    found = data.find_enwik("enwik8", path=text)
    raw = np.frombuffer(Path(found.path).read_bytes(), np.uint8)
    setting = "quick" if quick else "full"
    s = SETTINGS[setting]
    log(f"tokenization ({setting}): {found.describe()}; vocabularies {', '.join(map(str, s['vocabs']))}; "
        f"{s['config']}, {s['steps']} steps of {s['batch']} x {s['seq_len']} symbols each")
    t0 = time.perf_counter()
    rows = run(raw, setting, log=log, seed=seed, progress=progress)
    train_split, _ = split_data(raw)
    meta = {"text": found.describe(), "quick": quick, "seconds": round(time.perf_counter() - t0, 1),
            "config": s["config"], "steps": s["steps"], "batch": s["batch"], "seq_len": s["seq_len"],
            "train_bytes": len(train_split), "held_out_bytes": rows[0]["held_out_bytes"]}
    result = {"meta": meta, "rows": rows}
    write_report(outdir, "tokenization", result, markdown(rows, meta), lambda path: plot(rows, path), log=log)
    return result
