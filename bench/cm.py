"""Benchmark: the context-mixing compressor on enwik8_head beside zpaq level 5, PPMd order 16 and xz.

Run:  LMC_REF_DATA=../shared/data python bench/cm.py [--spec cm] [--repeats 1]

Prints a table, then one JSON line.  Rates are compressed/original in percent;
speeds are MB/s (10**6 bytes of *original* data per second), best of
``--repeats`` runs after a warm-up that compiles the kernels, every baseline in
the same process.  Every figure comes from real encoded bytes that were decoded
and compared.  Issue targets: rate <= 21.0 %, and compress and decompress
speed each >= 0.9 x zpaq level 5's in the same run.  Peak RSS covers the whole
process (all compressors).
"""

import argparse
import json
import lzma
import resource
from pathlib import Path

from common import best_time, text_sample

from lmc_ref.codec import compress, decompress
from lmc_ref.predictors import make_predictor


def measure(data, comp, decomp, repeats):
    t_enc, blob = best_time(lambda: comp(data), repeats)
    t_dec, back = best_time(lambda: decomp(blob), repeats)
    assert back == data, "round trip failed"
    mb = len(data) / 1e6
    return {"rate": 100 * len(blob) / len(data), "compress_mb_s": mb / t_enc, "decompress_mb_s": mb / t_dec}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="cm", help="predictor spec (default: cm)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--file", help="input file (default: $LMC_REF_DATA/enwik8_head)")
    parser.add_argument("--only-cm", action="store_true", help="skip the baselines (for tuning)")
    args = parser.parse_args()
    data = text_sample(args.file)
    source = Path(args.file).name if args.file else "enwik8_head"
    spec = make_predictor(args.spec).spec

    decompress(compress(data[:5000], spec, progress=False), progress=False)  # compile the kernels
    rows = {f"lmc_ref {spec}": measure(data, lambda d: compress(d, spec, progress=False),
                                       lambda b: decompress(b, progress=False), args.repeats)}
    if not args.only_cm:
        import zpaq

        rows["zpaq level 5 (threads=1)"] = measure(data, lambda d: zpaq.compress(d, level=5, threads=1),
                                                   lambda b: zpaq.decompress(b, threads=1), args.repeats)
        import pyppmd

        rows["PPMd order 16 (pyppmd, 256 MB)"] = measure(
            data, lambda d: pyppmd.compress(d, max_order=16, mem_size=256 << 20),
            lambda b: pyppmd.decompress(b, max_order=16, mem_size=256 << 20), args.repeats)
        rows["xz (lzma.compress default)"] = measure(data, lzma.compress, lzma.decompress, args.repeats)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    print(f"{source}: {len(data):,} bytes")
    print(f"{'compressor':36s} {'rate %':>8s} {'comp MB/s':>10s} {'decomp MB/s':>12s}")
    for name, row in rows.items():
        print(f"{name:36s} {row['rate']:8.3f} {row['compress_mb_s']:10.3f} {row['decompress_mb_s']:12.3f}")
    ours = rows[f"lmc_ref {spec}"]
    figures = {
        "bench": "cm",
        "file": source,
        "bytes": len(data),
        "spec": spec,
        "rate_percent": round(ours["rate"], 3),
        "compress_mb_s": round(ours["compress_mb_s"], 3),
        "decompress_mb_s": round(ours["decompress_mb_s"], 3),
    }
    if not args.only_cm:
        zp = rows["zpaq level 5 (threads=1)"]
        figures.update({
            "zpaq5_rate_percent": round(zp["rate"], 3),
            "zpaq5_compress_mb_s": round(zp["compress_mb_s"], 3),
            "zpaq5_decompress_mb_s": round(zp["decompress_mb_s"], 3),
            "ppmd16_rate_percent": round(rows["PPMd order 16 (pyppmd, 256 MB)"]["rate"], 3),
            "xz_rate_percent": round(rows["xz (lzma.compress default)"]["rate"], 3),
            "speed_vs_zpaq5_compress": round(ours["compress_mb_s"] / zp["compress_mb_s"], 3),
            "speed_vs_zpaq5_decompress": round(ours["decompress_mb_s"] / zp["decompress_mb_s"], 3),
        })
        figures["targets_met"] = (ours["rate"] <= 21.0 and figures["speed_vs_zpaq5_compress"] >= 0.9
                                  and figures["speed_vs_zpaq5_decompress"] >= 0.9)
    figures["peak_rss_mb"] = round(peak_rss_mb, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
