"""Benchmark: coding throughput of the transformer predictor (compress and decompress, KB/s).

Run:  LMC_REF_DATA=../shared/data python bench/transformer.py [--ckpt CKPT] [--kb 8]

Uses ``--ckpt`` if given, else random weights of the 200K configuration (the
speed does not depend on the values).  Codes the first ``--kb`` KB of
``$LMC_REF_DATA/enwik8_head`` in 2048-byte chunks through the Numba KV-cache
kernel (chunks side by side on all cores, one arithmetic stream each), decodes
and compares.  Issue target: >= 10 KB/s each way on 2 cores.
Prints one JSON line at the end.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import text_sample

from lmc_ref.codec import compress, decompress
from lmc_ref.transformer import model as tf
from lmc_ref.transformer import train as tr


def random_checkpoint(config, path):
    params = tf.init_params(config, seed=0)
    meta = {"config": tf.get_config(config), "hparams": tr.HPARAMS, "data_sha256": "", "history": []}
    zeros = {k: np.zeros_like(w) for k, w in params.items()}
    tr.save_checkpoint(path, {"step": 0, "meta": meta, "param": params, "adam_m": zeros, "adam_v": zeros})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint (default: random 200K weights)")
    ap.add_argument("--kb", type=int, default=8, help="KB of text to code (default 8)")
    args = ap.parse_args()
    data = text_sample()[: args.kb * 1024]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or str(Path(tmp) / "random-200K.npz")
        if not args.ckpt:
            random_checkpoint("200K", ckpt)
        spec = f"transformer:ckpt={ckpt}"
        decompress(compress(data[:64], spec, progress=False), progress=False)  # compile
        t0 = time.perf_counter()
        blob = compress(data, spec, progress=False)
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = decompress(blob, progress=False)
        t_dec = time.perf_counter() - t0
    assert back == data
    kb = len(data) / 1000
    print(f"{len(data):,} bytes, {'checkpoint ' + args.ckpt if args.ckpt else 'random 200K weights'}: "
          f"compress {kb / t_enc:.2f} KB/s, decompress {kb / t_dec:.2f} KB/s (target >= 10), "
          f"rate {100 * len(blob) / len(data):.2f} %")
    print(json.dumps({"bench": "transformer", "bytes": len(data), "config": "200K" if not args.ckpt else args.ckpt,
                      "compress_kb_s": round(kb / t_enc, 3), "decompress_kb_s": round(kb / t_dec, 3),
                      "rate_percent": round(100 * len(blob) / len(data), 3)}))


if __name__ == "__main__":
    main()
