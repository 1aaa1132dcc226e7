"""Benchmark: the adaptive n-gram compressor on enwik8_head beside xz and PPMd order 6.

Run:  LMC_REF_DATA=../shared/data python bench/ngram.py [--spec ngram] [--repeats 3]

Prints a table, then one JSON line.  Rates are compressed/original in percent;
speeds are MB/s (10**6 bytes of *original* data per second), best of
``--repeats`` runs after a warm-up that compiles the kernels.  Every figure is
from real encoded bytes that were decoded and compared.  Issue targets: rate
<= 26 % and >= 1 MB/s both ways (fused path).
"""

import argparse
import json
import lzma
import sys
from pathlib import Path

from common import best_time, text_sample

from lmc_ref.codec import compress, decompress
from lmc_ref.predictors import make_predictor


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="ngram", help="predictor spec (default: ngram)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--file", help="input file (default: $LMC_REF_DATA/enwik8_head)")
    args = parser.parse_args()
    data = text_sample(args.file)
    source = Path(args.file).name if args.file else "enwik8_head"
    mb = len(data) / 1e6
    spec = make_predictor(args.spec).spec

    decompress(compress(data[:5000], spec, progress=False), progress=False)  # compile the kernels
    t_enc, blob = best_time(lambda: compress(data, spec, progress=False), args.repeats)
    t_dec, back = best_time(lambda: decompress(blob, progress=False), args.repeats)
    assert back == data, "round trip failed"
    ours = {"rate": 100 * len(blob) / len(data), "compress_mb_s": mb / t_enc, "decompress_mb_s": mb / t_dec}

    rows = {f"lmc_ref {spec}": ours}
    t_enc, xz = best_time(lambda: lzma.compress(data), args.repeats)
    t_dec, back = best_time(lambda: lzma.decompress(xz), args.repeats)
    assert back == data
    rows["xz (lzma.compress default)"] = {"rate": 100 * len(xz) / len(data), "compress_mb_s": mb / t_enc,
                                          "decompress_mb_s": mb / t_dec}
    try:
        import pyppmd
    except ImportError:
        print("pyppmd not installed: skipping PPMd (pip install -e '.[dev]')", file=sys.stderr)
    else:
        t_enc, pp = best_time(lambda: pyppmd.compress(data, max_order=6, mem_size=256 << 20), args.repeats)
        t_dec, back = best_time(lambda: pyppmd.decompress(pp, max_order=6, mem_size=256 << 20), args.repeats)
        assert back == data
        rows["PPMd order 6 (pyppmd, 256 MB)"] = {"rate": 100 * len(pp) / len(data), "compress_mb_s": mb / t_enc,
                                                 "decompress_mb_s": mb / t_dec}

    print(f"{source}: {len(data):,} bytes")
    print(f"{'compressor':36s} {'rate %':>8s} {'comp MB/s':>10s} {'decomp MB/s':>12s}")
    for name, row in rows.items():
        print(f"{name:36s} {row['rate']:8.3f} {row['compress_mb_s']:10.3f} {row['decompress_mb_s']:12.3f}")
    figures = {
        "bench": "ngram",
        "file": source,
        "bytes": len(data),
        "spec": spec,
        "rate_percent": round(ours["rate"], 3),
        "compress_mb_s": round(ours["compress_mb_s"], 3),
        "decompress_mb_s": round(ours["decompress_mb_s"], 3),
        "xz_rate_percent": round(rows["xz (lzma.compress default)"]["rate"], 3),
    }
    ppmd = rows.get("PPMd order 6 (pyppmd, 256 MB)")
    if ppmd:
        figures["ppmd_o6_rate_percent"] = round(ppmd["rate"], 3)
        figures["rate_vs_ppmd_o6"] = round(ours["rate"] / ppmd["rate"], 4)
    figures["targets_met"] = ours["rate"] <= 26.0 and min(ours["compress_mb_s"], ours["decompress_mb_s"]) >= 1.0
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
