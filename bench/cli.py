"""Whole-process timings of ``lmc-ref`` against ``gzip -9``, ``xz -6`` and ``zstd -19``.

What a user of the command sees, start-up included: for a 6-byte file and for
``enwik8_head`` (``--file`` for another), each tool compresses to stdout and
decompresses from a file, best of ``--repeats`` (5) runs each way, measured
in the same session.  Reported per tool: start-up (the 6-byte file's compress
time), MB/s each way on the big file, peak RSS of the child (``wait4``), and
rate (compressed / original).  Tools not installed are skipped.  Also
``lmc-ref --help`` (the start-up a user feels first).  Ends by printing one
JSON line with every figure.

    python bench/cli.py [--file FILE] [--repeats 5] [--lmc-args "-1"]
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import text_sample  # noqa: E402


def run(argv, stdin_path=None):
    """Run ``argv`` once, stdout captured; return (seconds, stdout bytes, the child's peak RSS in bytes)."""
    with open(stdin_path, "rb") if stdin_path else open(os.devnull, "rb") as stdin, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource use
        seconds = time.perf_counter() - t
        proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{shlex.join(argv)} failed: {err.read().decode(errors='replace').strip()}")
    return seconds, out, usage.ru_maxrss * 1024  # Linux reports KiB


def timed(argv, repeats, stdin_path=None):
    """Best wall time of ``repeats`` runs, the output, and the largest peak RSS of those runs (bytes)."""
    best, out, rss = float("inf"), b"", 0
    for _ in range(repeats):
        seconds, out, peak = run(argv, stdin_path)
        best, rss = min(best, seconds), max(rss, peak)
    return best, out, rss


def measure_tool(name, compress_argv, decompress_argv, small, big, repeats, workdir):
    """One tool's figures: start-up on ``small``, speed both ways, peak RSS and rate on ``big``."""
    startup, _, _ = timed(compress_argv, repeats, small)
    comp_s, packed, comp_rss = timed(compress_argv, repeats, big)
    packed_path = Path(workdir) / f"{name}.packed"
    packed_path.write_bytes(packed)
    dec_s, restored, dec_rss = timed(decompress_argv, repeats, packed_path)
    size = big.stat().st_size
    if restored != big.read_bytes():
        sys.exit(f"{name}: the round trip did not restore the input")
    return {"startup_s": round(startup, 4), "compress_MBps": round(size / comp_s / 1e6, 3),
            "decompress_MBps": round(size / dec_s / 1e6, 3), "peak_rss_MB": round(max(comp_rss, dec_rss) / 1e6, 1),
            "rate_percent": round(100 * len(packed) / size, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", help="the big input (default: $LMC_REF_DATA/enwik8_head)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lmc-args", default="", help="extra lmc-ref compress options, e.g. '-1' or '--model cm'")
    args = ap.parse_args()
    lmc = [sys.executable, "-m", "lmc_ref"]
    tools = {"gzip -9": (["gzip", "-9", "-c"], ["gzip", "-d", "-c"]),
             "zstd -19": (["zstd", "-19", "-q", "-c"], ["zstd", "-d", "-q", "-c"]),
             "xz -6": (["xz", "-6", "-c"], ["xz", "-d", "-c"]),
             "lmc-ref " + (args.lmc_args or "(default)"): (lmc + shlex.split(args.lmc_args) + ["-c"], lmc + ["-d", "-c"])}
    with tempfile.TemporaryDirectory() as workdir:
        small = Path(workdir) / "six.txt"
        small.write_bytes(b"hello\n")
        big = Path(workdir) / "big"
        big.write_bytes(text_sample(args.file))
        results = {"file_bytes": big.stat().st_size, "repeats": args.repeats}
        help_s, _, _ = timed(lmc + ["--help"], args.repeats)
        results["lmc-ref --help_s"] = round(help_s, 4)
        print(f"lmc-ref --help: {help_s:.3f} s (best of {args.repeats})")
        print(f"{'tool':<22} {'start-up s':>10} {'comp MB/s':>10} {'dec MB/s':>9} {'peak RSS MB':>12} {'rate %':>8}")
        for name, (comp, dec) in tools.items():
            if shutil.which(comp[0]) is None:
                print(f"{name:<22} (not installed)")
                continue
            r = measure_tool(name.split()[0], comp, dec, small, big, args.repeats, workdir)
            results[name] = r
            print(f"{name:<22} {r['startup_s']:>10.3f} {r['compress_MBps']:>10.3f} {r['decompress_MBps']:>9.3f} "
                  f"{r['peak_rss_MB']:>12.1f} {r['rate_percent']:>8.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
