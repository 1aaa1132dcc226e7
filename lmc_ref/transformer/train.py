"""Training the transformer on a laptop CPU: manual backprop (``lmc_ref.transformer.backprop``) + Adam.

* Data: random windows of ``seq_len`` bytes from the training split (the first
  ``train_bytes`` bytes; 900,000 by default, as for ``enwik8_head``); the rest is
  the validation split, never overlapping it.
* Validation: bits/byte of the model on the validation split cut into 2048-byte
  chunks, each read from an empty context, exactly as evaluation codes them
  (the float model's ideal code length, ``-log2 p``).
* Windows default to 2048 bytes, the evaluation chunk: sinusoidal positions do
  not extrapolate, so a model trained on short windows is poor at later
  positions (200K, 8 min at 256-byte windows: 3.41 bits/byte on validation
  positions 0-255 but 4.35 on positions 256-2047).
* Optimiser: Adam (b1 0.9, b2 0.999, eps 1e-8), linear warmup then cosine decay
  to 10 % of the peak rate, global-norm gradient clipping; all in float32.
  With ``minutes`` the cosine runs over wall-clock time instead of steps.
* Batches are drawn from a generator seeded with ``(seed, step)``, so a run
  resumed from a checkpoint (in ``steps`` mode) continues exactly as the
  uninterrupted run would have.
* Checkpoints are ``.npz`` files (``lmc_ref.transformer.checkpoint``, never
  unpickled): weights, Adam moments, step, and a JSON ``meta`` (config,
  hyper-parameters, SHA-256 of the data, history) stored as a uint8 array.
"""

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .backprop import loss_and_grads
from ..constants import CHUNK_SIZE
from ..progress import close, progress_bar
from .checkpoint import load_checkpoint, model_hash, save_checkpoint
from .model import CONFIGS, forward, get_config, init_params, param_count

DEFAULT_TRAIN_BYTES = 900_000
LN2 = math.log(2.0)
HPARAMS = {"lr": 1e-3, "warmup": 100, "final_lr_frac": 0.1, "clip": 1.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8}


def split_data(data, train_bytes=None):
    """``(train, val)`` uint8 arrays: first ``train_bytes`` (default 900,000, or 90 % of shorter data) and the rest."""
    data = as_uint8(data)
    if train_bytes is None:
        train_bytes = DEFAULT_TRAIN_BYTES if len(data) > DEFAULT_TRAIN_BYTES + CHUNK_SIZE else int(0.9 * len(data))
    if not 0 < train_bytes < len(data):
        raise ValueError(f"train_bytes={train_bytes} must leave both splits non-empty ({len(data)} bytes)")
    return data[:train_bytes], data[train_bytes:]


def learning_rate(step, progress, hp):
    """Linear warmup over ``hp['warmup']`` steps, then cosine from the peak to ``final_lr_frac`` of it."""
    peak = hp["lr"]
    if step < hp["warmup"]:
        return peak * (step + 1) / hp["warmup"]
    cos = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return peak * (hp["final_lr_frac"] + (1.0 - hp["final_lr_frac"]) * cos)


def clip_by_global_norm(grads, max_norm):
    """Scale all gradients together so their joint L2 norm is at most ``max_norm``; returns the norm."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if norm > max_norm:
        for g in grads.values():
            g *= np.float32(max_norm / norm)
    return norm


def adam_step(params, grads, m, v, t, lr, hp):
    """One Adam update (in place) at 1-based step ``t``."""
    b1, b2 = hp["b1"], hp["b2"]
    c1, c2 = 1.0 - b1**t, 1.0 - b2**t
    for name, g in grads.items():
        m[name] *= np.float32(b1)
        m[name] += np.float32(1.0 - b1) * g
        v[name] *= np.float32(b2)
        v[name] += np.float32(1.0 - b2) * g * g
        params[name] -= np.float32(lr / c1) * m[name] / (np.sqrt(v[name] / np.float32(c2)) + np.float32(hp["eps"]))


def adam_moments(params):
    """Adam's first and second moments for ``params`` at the start of training: ``(m, v)``, all zeros."""
    return ({k: np.zeros_like(w) for k, w in params.items()},
            {k: np.zeros_like(w) for k, w in params.items()})


# --8<-- [start:train_step]
def train_step(params, m, v, config, batch, step, lr, hp):
    """One optimiser step, in place: the loss and gradients of ``batch`` (``[B, T]`` symbols) by
    backprop, the gradients clipped to a global norm of ``hp["clip"]``, then Adam at learning rate
    ``lr`` as the optimiser's step ``step + 1`` (``step`` steps were taken before).

    Returns the batch's loss in bits per symbol (measured before the update).  ``train`` and the
    tokenization experiment both train through this function, so bytes and tokens are trained alike.
    """
    loss, grads = loss_and_grads(params, config, batch)
    clip_by_global_norm(grads, hp["clip"])
    adam_step(params, grads, m, v, step + 1, lr, hp)
    return float(loss) / LN2
# --8<-- [end:train_step]


def sample_batch(train, seq_len, batch, seed, step):
    """``[batch, seq_len]`` random windows of the training split, drawn from ``rng(seed, step)``."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(train) - seq_len + 1, size=batch)
    return np.stack([train[s:s + seq_len] for s in starts])  # [B, T]


def validation_bpb(params, config, val, max_chunks=None, chunk_size=CHUNK_SIZE):
    """Bits/byte on ``val`` cut into ``chunk_size`` chunks, each from an empty context (last may be shorter)."""
    starts = list(range(0, len(val), chunk_size))[:max_chunks]
    bits = total = 0
    for s in starts:
        chunk = val[s:s + chunk_size]
        logp = forward(params, config, chunk)  # [T, 256]
        bits -= float(logp[np.arange(len(chunk)), chunk].astype(np.float64).sum()) / LN2
        total += len(chunk)
    return bits / max(total, 1)


def as_uint8(data):
    """Bytes-like or integer array -> 1-D uint8 array (no copy for bytes)."""
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).reshape(-1)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def data_sha256(data):
    """Hex SHA-256 of the data's bytes (recorded in checkpoints, checked on resume)."""
    return hashlib.sha256(as_uint8(data).tobytes()).hexdigest()


def train(config, data, steps=None, minutes=None, seq_len=CHUNK_SIZE, batch=2, out=None, progress=True, seed=0,
          resume=None, train_bytes=None, val_chunks=16, val_every=250, hparams=None):
    """Train (or continue training) a transformer; returns ``(params, history)``.

    Args:
        config: a name in ``CONFIGS`` or a config dict.
        data: bytes or uint8 array; split by ``split_data(data, train_bytes)``.
        steps: total step count to reach (a resumed run continues up to it).
        minutes: wall-clock budget of this call instead of ``steps``.
        out: checkpoint path written at every validation and at the end.
        resume: a checkpoint path or a state from ``load_checkpoint`` to continue.
        val_chunks: validation chunks (2048 bytes) evaluated; None for all.
        val_every: steps between validations (one always runs at the end).
        hparams: overrides of ``HPARAMS`` (lr, warmup, final_lr_frac, clip, ...).
        progress: a bar of steps on stderr: True, False or "auto" (on a terminal; ``lmc_ref.progress``).
    """
    if (steps is None) == (minutes is None):
        raise ValueError("give exactly one of steps or minutes")
    cfg = get_config(config)
    train_split, val_split = split_data(data, train_bytes)
    if len(train_split) < seq_len:
        raise ValueError(f"training split ({len(train_split)} bytes) shorter than seq_len={seq_len}")
    digest = data_sha256(data)
    if resume is not None:
        state = load_checkpoint(resume) if isinstance(resume, (str, Path)) else resume
        if state["meta"]["config"] != cfg:
            raise ValueError(f"checkpoint config {state['meta']['config']} differs from {cfg}")
        if state["meta"]["data_sha256"] != digest:
            raise ValueError("checkpoint was trained on different data (data SHA-256 mismatch)")
        hp = dict(state["meta"]["hparams"])
        params, m, v, step = state["param"], state["adam_m"], state["adam_v"], state["step"]
        history = list(state["meta"]["history"])
    else:
        hp = dict(HPARAMS)
        params = init_params(cfg, seed)
        m, v = adam_moments(params)
        step, history = 0, []
    hp.update(hparams or {})
    meta = {"config": cfg, "hparams": hp, "data_sha256": digest, "train_bytes": len(train_split),
            "seq_len": seq_len, "batch": batch, "seed": seed, "history": history}

    def checkpoint():
        if out is not None:
            save_checkpoint(out, {"step": step, "meta": meta, "param": params, "adam_m": m, "adam_v": v})

    bar = progress_bar(steps, progress, unit="step", threshold=0, leave=True, initial=step if steps else 0)
    t0, recent = time.monotonic(), []
    while True:
        elapsed = time.monotonic() - t0
        if (steps is not None and step >= steps) or (minutes is not None and elapsed >= 60 * minutes):
            break
        prog = step / steps if steps is not None else elapsed / (60 * minutes)
        lr = learning_rate(step, prog, hp)
        last = train_step(params, m, v, cfg, sample_batch(train_split, seq_len, batch, seed, step), step, lr, hp)
        step += 1
        recent.append(last)
        if step % val_every == 0:
            history.append({"step": step, "seconds": round(time.monotonic() - t0, 2), "lr": lr,
                            "train_bpb": float(np.mean(recent)),
                            "val_bpb": validation_bpb(params, cfg, val_split, val_chunks)})
            recent = []
            checkpoint()
        if bar is not None:
            bar.update(1)
            post = {"train_bpb": f"{last:.3f}"}
            if history:
                post["val_bpb"] = f"{history[-1]['val_bpb']:.3f}"
            bar.set_postfix(post)
    if not history or history[-1]["step"] != step:
        history.append({"step": step, "seconds": round(time.monotonic() - t0, 2),
                        "lr": learning_rate(step, 1.0, hp) if step else 0.0,
                        "train_bpb": float(np.mean(recent)) if recent else None,
                        "val_bpb": validation_bpb(params, cfg, val_split, val_chunks)})
    checkpoint()
    close(bar)
    return params, history


DESCRIPTION = ("Train the paper's byte transformer (manual backprop and Adam, on the CPU) on enwik8, or on "
               "--data FILE, and write a checkpoint (--out) for --model transformer:ckpt=FILE.")


def main(argv=None):
    """``python -m lmc_ref.transformer.train``: parse ``argv`` with this module's own parser and ``run`` it.

    ``lmc-ref train`` reaches ``run`` through the main parser instead, which holds the same
    options (``add_arguments``).
    """
    ap = argparse.ArgumentParser(prog="lmc-ref train", description=DESCRIPTION)
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(ap):
    """Add the options of ``lmc-ref train`` to the argparse parser ``ap`` (the main CLI's
    ``train`` subparser, or ``main``'s own), so both parse them alike."""
    ap.add_argument("--config", default="200K", choices=sorted(CONFIGS), help="model size (default: %(default)s)")
    budget = ap.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="wall-clock training budget")
    budget.add_argument("--steps", type=int, help="total number of optimiser steps")
    ap.add_argument("--seq-len", type=int, default=CHUNK_SIZE, help="bytes per training window (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=2, help="windows per step (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=HPARAMS["lr"], help="peak learning rate (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=HPARAMS["warmup"], help="linear warmup steps (default: %(default)s)")
    ap.add_argument("--out", help="checkpoint path (.npz); a copy also goes into the user model store "
                                  "(~/.cache/lmc_ref/models, named by its hash), where decompression finds it")
    ap.add_argument("--no-store", dest="store", action="store_false",
                    help="do not copy the checkpoint into the user model store")
    ap.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    ap.add_argument("--data", help="training file (default: enwik8 / enwik8_head via LMC_REF_DATA)")
    ap.add_argument("--train-bytes", type=int, default=None,
                    help=f"bytes of the training split (default: {DEFAULT_TRAIN_BYTES:,}, or 90 %% of shorter data)")
    ap.add_argument("--val-chunks", type=int, default=16, help="validation chunks (0 = all; default: %(default)s)")
    ap.add_argument("--val-every", type=int, default=250, help="steps between validations (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and batch seed (default: %(default)s)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default="auto",
                    help="show a progress bar on stderr (default: when stderr is a terminal)")
    ap.add_argument("--curve", metavar="PNG", help="write the learning curve (bits/byte against minutes) "
                                                   "to PNG at the end; with --resume and the checkpoint's own "
                                                   "step count as --steps, it only draws the curve")


def run(args):
    """Run ``lmc-ref train`` with the parsed ``args`` (see ``add_arguments``); returns the exit status."""
    if args.data is None:
        from ..data import find_enwik
        args.data = find_enwik("enwik8").path
    data = Path(args.data).read_bytes()
    resume = args.out if args.resume and args.out and Path(args.out).exists() else None
    print(f"config {args.config}: {param_count(args.config):,} parameters")
    params, history = train(args.config, data, steps=args.steps, minutes=args.minutes, seq_len=args.seq_len,
                            batch=args.batch, out=args.out, progress=args.progress, seed=args.seed,
                            resume=resume, train_bytes=args.train_bytes, val_chunks=args.val_chunks or None,
                            val_every=args.val_every, hparams=None if resume else {"lr": args.lr, "warmup": args.warmup})
    for row in history:
        print(json.dumps(row))
    print(f"model hash {model_hash(params).hex()}")
    if args.out and getattr(args, "store", True):
        from ..models import add

        try:
            entry, added = add(args.out)
        except (OSError, ValueError) as err:  # the checkpoint itself is written: warn, do not fail
            print(f"lmc-ref: warning: model store: could not copy {args.out}: {err}", file=sys.stderr)
        else:
            print(f"model store: {'copied' if added else 'already holds'} {args.out} as {entry.path} "
                  "(decompression finds it there by hash; lmc-ref models list)")
    if args.curve:
        learning_curve(history, args.curve, title=f"{args.config}, sequence {args.seq_len}, batch {args.batch}")
        print(f"wrote {args.curve}")
    return 0


def learning_curve(history, path, title=""):
    """Train and validation bits per byte against wall-clock minutes, from a run's ``history``."""
    from ..experiments.report import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6.5, 3.8))
    for key, style in (("train_bpb", "--o"), ("val_bpb", "-o")):
        pts = [(h["seconds"] / 60, h[key]) for h in history if h.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=key.replace("_bpb", "") + " (bits/byte)")
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("bits per byte")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
