"""How the context-mixing model's mixer weights move while it codes text (the figure of chapter 3).

The mixer has one weight per input (order 0; the direct and the indirect
prediction of each hashed context model; the match model; a bias; the run
predictions; each hashed context model's one-sided-history input; the match
length) in each weight set.  This traces one much-used set of the first mixer: the fourth
bit of a lowercase letter (a-o or p-z?) after four or more letters of a word, when at least
seven of the eight hashed contexts have been seen before.  The fused
coder updates the weights in place, so snapshots are taken between blocks.

    python -m lmc_ref.experiments.mixer [--bytes N] [--out PNG]
"""

import argparse
import json
from pathlib import Path

import numpy as np

from .. import data
from ..predictors.cm_contexts import N_HASHED, byte_classes
from ..predictors.cm_mixer import N_INPUTS, mixer_rows
from ..predictors.cm_runs import N_RUNS, RUN_MODEL0
from ..predictors.context_mixing import ContextMixingPredictor
from .report import pyplot, save_figure

#: Inputs in mixer order (see ``cm_mixer``'s input layout).
HASHED = ("classes", "o2", "o3", "o4", "o5", "word+prev", "word+o1", "shape")  # see context_hashes
INPUTS = (("o0",) + tuple(f"{h} direct" for h in HASHED) + tuple(f"{h} history" for h in HASHED) + ("match", "bias")
          + tuple(f"{h} run" for h in HASHED[RUN_MODEL0:RUN_MODEL0 + N_RUNS])
          + tuple(f"{h} one-sided" for h in HASHED) + ("match length",))
assert len(HASHED) == N_HASHED and len(INPUTS) == N_INPUTS

# The traced weight set: all hashed contexts known, a run of 4+ bytes of lowercase letters, and the
# partial byte 1011 (the next byte is 0x60..0x7f, its fourth bit to come); the match and the bytes
# before do not select mixer 1.
ROW = mixer_rows(known=N_HASHED, shape=int(byte_classes()[ord("a")]), run_length=4, mctx=0, c0=0b1011, c4=0,
                 bitpos=3)[0]


def trace(text, block=4096, mem=16):
    """``(positions, weights [snapshots, inputs])`` of the traced weight set while coding ``text``."""
    model = ContextMixingPredictor(mem)
    positions, snapshots = [0], [model.mixer.weights[ROW].copy()]

    def snapshot(n):  # between blocks, the coder's model is ``model``'s
        positions.append(positions[-1] + n)
        snapshots.append(model.mixer.weights[ROW].copy())

    model.fused_encode(np.frombuffer(text, np.uint8), progress=snapshot, block=block)
    return np.array(positions), np.stack(snapshots).astype(np.float64) / (1 << 16)  # weights in units of 1


def plot(positions, weights, path):
    fig, ax = pyplot().subplots(figsize=(8, 4.4))
    order = np.argsort(-np.abs(weights[-1]))
    for rank, i in enumerate(order):
        ax.plot(positions / 1e3, weights[:, i], lw=1.4 if rank < 6 else 0.7,
                label=INPUTS[i] if rank < 8 else None, alpha=1.0 if rank < 6 else 0.5)
    ax.set_xlabel("kilobytes of enwik8 coded")
    ax.set_ylabel("mixer weight")
    ax.set_title("cm: weights of one mixer set (4th bit of a letter, 4+ letters into a word)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)
    # 35 thin translucent lines make a large RGBA PNG; a 128-colour palette keeps it small
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=128)
    small.save(path, optimize=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", type=int, default=1 << 20, help="bytes of text to code (default: %(default)s)")
    ap.add_argument("--out", default="results/mixer.png", help="PNG to write (default: %(default)s)")
    args = ap.parse_args(argv)
    found = data.find_enwik("enwik8")
    text = Path(found.path).read_bytes()[: args.bytes]
    positions, weights = trace(text, block=16384)  # a snapshot every 16 KB: the waves, in a small PNG
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot(positions, weights, args.out)
    final = {name: round(float(w), 3) for name, w in zip(INPUTS, weights[-1])}
    print(json.dumps({"bytes": len(text), "text": found.describe(), "final_weights": final}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
