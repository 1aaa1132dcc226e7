"""Whole-process timings of ``lmc-ref`` against ``gzip -9``, ``xz -6``, ``zstd -19`` and zpaq level 5.

What a user of the command sees, start-up included: for a 6-byte file and for
``enwik8_head`` (``--file`` for another), each tool compresses to stdout and
decompresses from a file, best of ``--repeats`` (5) runs each way, measured
in the same session.  Reported per tool: start-up (the 6-byte file's compress
time), MB/s each way on the big file, peak RSS of the child (``wait4``), and
rate (compressed / original).  Tools not installed are skipped.  zpaq level 5
runs as a Python process through the ``zpaq`` package (a dev dependency; one
thread, as our coder), so its start-up includes Python's; ``lmc-ref``'s speed
on the big file over zpaq's is reported both ways (issue target >= 0.9).  Also
``lmc-ref --help`` (the start-up a user feels first).  Ends by printing one
JSON line with every figure.

Threads: on ``--mixed-mb`` MB of mixed data (text, images and audio from
``$LMC_REF_DATA``, repeated to size), ``lmc-ref -T 2`` against ``-T 1``, both
ways (``--threads-repeats`` runs each, best kept): the speed-up, the rates
(``-T 2`` cuts the file into two equal blocks, ``-T 1`` into 16 MiB blocks) and
peak RSS (which a block file bounds by the tables plus a few blocks).

    python bench/cli.py [--file FILE] [--repeats 5] [--lmc-args "-1"] [--mixed-mb 20] [--threads-repeats 1]
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


#: zpaq as a whole process: stdin to stdout through the ``zpaq`` package.
ZPAQ = "import sys, zpaq; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(zpaq.%s)"


def has_zpaq():
    """Whether the ``zpaq`` package (a dev dependency) is importable by this interpreter."""
    import importlib.util
    return importlib.util.find_spec("zpaq") is not None


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


def mixed_sample(megabytes):
    """``megabytes`` MB of text, images and audio from ``$LMC_REF_DATA``, in turn, repeated to size."""
    root = Path(os.environ.get("LMC_REF_DATA", ""))
    files = [root / "enwik8_head"] + sorted((root / "images").glob("*"))[:20] + sorted((root / "audio").glob("*"))[:20]
    pieces = [f.read_bytes() for f in files if f.is_file()]
    if not pieces:
        sys.exit("set LMC_REF_DATA to the folder holding enwik8_head, images/ and audio/")
    out, size, i = [], 0, 0
    while size < megabytes * 10**6:
        out.append(pieces[i % len(pieces)])
        size += len(out[-1])
        i += 1
    return b"".join(out)[: megabytes * 10**6]


def measure_threads(lmc, lmc_args, megabytes, repeats, workdir):
    """``lmc-ref -T 1`` and ``-T 2`` on mixed data: seconds each way, rate, peak RSS (of the largest
    process: wait4 reports the maximum over the children, not their sum); and the speed-ups."""
    path = Path(workdir) / "mixed"
    path.write_bytes(mixed_sample(megabytes))
    size = path.stat().st_size
    out = {"mixed_bytes": size}
    for t in (1, 2):
        # the file named (not piped), so that lmc-ref knows its size and -T 2 cuts it into equal blocks
        comp_s, packed, comp_rss = timed(lmc + lmc_args + ["-T", str(t), "-c", str(path)], repeats)
        packed_path = Path(workdir) / f"mixed.T{t}.lmc"
        packed_path.write_bytes(packed)
        dec_s, restored, dec_rss = timed(lmc + ["-d", "-c", "-T", str(t)], repeats, packed_path)
        if restored != path.read_bytes():
            sys.exit(f"-T {t}: the round trip did not restore the input")
        out[f"T{t}"] = {"compress_s": round(comp_s, 3), "decompress_s": round(dec_s, 3),
                        "rate_percent": round(100 * len(packed) / size, 3),
                        "compress_rss_MB": round(comp_rss / 1e6, 1), "decompress_rss_MB": round(dec_rss / 1e6, 1)}
        print(f"-T {t}: compress {comp_s:.2f} s ({comp_rss / 1e6:.0f} MB), decompress {dec_s:.2f} s "
              f"({dec_rss / 1e6:.0f} MB), rate {out[f'T{t}']['rate_percent']:.3f} %")
    out["T2_speedup_compress"] = round(out["T1"]["compress_s"] / out["T2"]["compress_s"], 3)
    out["T2_speedup_decompress"] = round(out["T1"]["decompress_s"] / out["T2"]["decompress_s"], 3)
    print(f"-T 2 vs -T 1 on {size / 1e6:.0f} MB: {out['T2_speedup_compress']:.2f}x compress, "
          f"{out['T2_speedup_decompress']:.2f}x decompress")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", help="the big input (default: $LMC_REF_DATA/enwik8_head)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lmc-args", default="", help="extra lmc-ref compress options, e.g. '-1' or '--model cm'")
    ap.add_argument("--mixed-mb", type=int, default=20, help="MB of mixed data for -T 2 vs -T 1 (0: skip)")
    ap.add_argument("--threads-repeats", type=int, default=1, help="runs of each -T measurement (best kept)")
    ap.add_argument("--skip-tools", action="store_true", help="only lmc-ref's start-up and the -T figures")
    args = ap.parse_args()
    lmc = [sys.executable, "-m", "lmc_ref"]
    tools = {"gzip -9": (["gzip", "-9", "-c"], ["gzip", "-d", "-c"]),
             "zstd -19": (["zstd", "-19", "-q", "-c"], ["zstd", "-d", "-q", "-c"]),
             "xz -6": (["xz", "-6", "-c"], ["xz", "-d", "-c"]),
             "zpaq -m5": ([sys.executable, "-c", ZPAQ % "compress(d, level=5, threads=1)"],
                          [sys.executable, "-c", ZPAQ % "decompress(d, threads=1)"]),
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
            if args.skip_tools and not name.startswith("lmc-ref"):
                continue
            if shutil.which(comp[0]) is None or (name.startswith("zpaq") and not has_zpaq()):
                print(f"{name:<22} (not installed)")
                continue
            r = measure_tool(name.split()[0], comp, dec, small, big, args.repeats, workdir)
            results[name] = r
            print(f"{name:<22} {r['startup_s']:>10.3f} {r['compress_MBps']:>10.3f} {r['decompress_MBps']:>9.3f} "
                  f"{r['peak_rss_MB']:>12.1f} {r['rate_percent']:>8.3f}")
        ours = next((k for k in results if k.startswith("lmc-ref ") and k != "lmc-ref --help_s"), None)
        if ours and "zpaq -m5" in results:
            for way in ("compress", "decompress"):
                results[f"{way}_vs_zpaq5"] = round(results[ours][f"{way}_MBps"] / results["zpaq -m5"][f"{way}_MBps"], 3)
            print(f"lmc-ref vs zpaq level 5 (whole processes): {results['compress_vs_zpaq5']:.2f}x compress, "
                  f"{results['decompress_vs_zpaq5']:.2f}x decompress (target >= 0.9)")
        if args.mixed_mb:
            results["threads"] = measure_threads(lmc, shlex.split(args.lmc_args), args.mixed_mb,
                                                 args.threads_repeats, workdir)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
