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
from ..predictors import context_mixing_kernels as K
from ..predictors import fused
from ..predictors.context_mixing import ContextMixingPredictor

#: Inputs in mixer order (see ``ContextModels.add_inputs`` and ``context_mixing_kernels``).
HASHED = ("classes", "o2", "o3", "o4", "o5", "word+prev", "word+o1", "shape")  # see context_hashes
INPUTS = (("o0",) + tuple(f"{h} direct" for h in HASHED) + tuple(f"{h} history" for h in HASHED) + ("match", "bias")
          + tuple(f"{h} run" for h in HASHED[K.RUN_MODEL0:K.RUN_MODEL0 + K.N_RUNS])
          + tuple(f"{h} one-sided" for h in HASHED) + ("match length",))
assert len(HASHED) == K.N_HASHED and len(INPUTS) == K.N_INPUTS


def trace(text, block=4096, mem=16):
    """``(positions, weights [snapshots, inputs])`` of the traced weight set while coding ``text``."""
    model = ContextMixingPredictor(mem)
    code_block = model._block_coder()
    # 7+ contexts known, a run of 4+ bytes of class 0 (lowercase), partial byte 1011 (the next byte is 0x60..0x7f)
    row = ((1 * 4 + 3) * 16 + 0) * 256 + 0b1011
    positions, snapshots = [0], [model.mixer.weights[row].copy()]

    def snapshot(n):
        positions.append(positions[-1] + n)
        snapshots.append(model.mixer.weights[row].copy())

    fused.encode(np.frombuffer(text, np.uint8), code_block, block, 8 * 18, snapshot)
    return np.array(positions), np.stack(snapshots).astype(np.float64) / (1 << 16)  # weights in units of 1


def plot(positions, weights, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.4))
    order = np.argsort(-np.abs(weights[-1]))
    for rank, i in enumerate(order):
        ax.plot(positions / 1e3, weights[:, i], lw=1.4 if rank < 6 else 0.7,
                label=INPUTS[i] if rank < 8 else None, alpha=1.0 if rank < 6 else 0.5)
    ax.set_xlabel("kilobytes of enwik8 coded")
    ax.set_ylabel("mixer weight")
    ax.set_title("cm: weights of one mixer set (4th bit of a letter, 4+ letters into a word)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
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
