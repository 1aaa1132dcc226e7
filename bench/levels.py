"""The compression levels ``-1`` .. ``-9`` measured as a user meets them: whole ``lmc-ref`` processes.

For each level, ``lmc-ref -N -c FILE`` and ``lmc-ref -d -c`` on its output
(default FILE: ``$LMC_REF_DATA/enwik8_head``), best of ``--repeats`` runs each
way: rate (compressed / original), MB/s each way (start-up and loading the
compiled kernels included, so small files look slow), and the peak RSS of the
child process.  This is the table ``lmc_ref/levels.py`` quotes.  Ends with one
JSON line.

    python bench/levels.py [--file FILE] [--repeats 3]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cli import timed  # noqa: E402
from common import text_sample  # noqa: E402

from lmc_ref.levels import LEVELS  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", help="the input (default: $LMC_REF_DATA/enwik8_head)")
    ap.add_argument("--repeats", type=int, default=3, help="runs each way, best kept (default: %(default)s)")
    args = ap.parse_args()
    lmc = [sys.executable, "-m", "lmc_ref"]
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        src = Path(workdir) / "input"
        src.write_bytes(text_sample(args.file))
        size = src.stat().st_size
        print(f"{'level':<6} {'spec':<22} {'rate %':>8} {'comp MB/s':>10} {'dec MB/s':>9} {'peak RSS MB':>12}")
        for level, (spec, _) in LEVELS.items():
            comp_s, packed, comp_rss = timed(lmc + [f"-{level}", "-c"], args.repeats, src)
            packed_path = Path(workdir) / "packed.lmc"
            packed_path.write_bytes(packed)
            dec_s, restored, dec_rss = timed(lmc + ["-d", "-c"], args.repeats, packed_path)
            if restored != src.read_bytes():
                sys.exit(f"level {level}: the round trip did not restore the input")
            row = {"spec": spec, "rate_percent": round(100 * len(packed) / size, 3),
                   "compress_MBps": round(size / comp_s / 1e6, 3), "decompress_MBps": round(size / dec_s / 1e6, 3),
                   "peak_rss_MB": round(max(comp_rss, dec_rss) / 1e6, 1)}
            rows[str(level)] = row
            print(f"{level:<6} {spec:<22} {row['rate_percent']:>8.2f} {row['compress_MBps']:>10.3f} "
                  f"{row['decompress_MBps']:>9.3f} {row['peak_rss_MB']:>12.1f}")
    print(json.dumps({"file_bytes": size, "repeats": args.repeats, "levels": rows}))


if __name__ == "__main__":
    main()
