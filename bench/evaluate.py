"""Benchmark: throughput of the chunked evaluation, 1 worker against all cores.

Run:  LMC_REF_DATA=../shared/data python bench/evaluate.py

Evaluates gzip, LZMA2 and the n-gram predictor (the Table 1 spec) on the
2048-byte chunks of ``$LMC_REF_DATA/enwik8_head``, decoding and comparing every
chunk, first with one worker process and then with one per core, in the same
run.  Prints chunks/s for both and their ratio (issue target: >= 1.7 on 2
cores), then one JSON line.
"""

import json
import os
import time

from common import text_sample

from lmc_ref import data
from lmc_ref.evaluate import evaluate
from lmc_ref.experiments.table1 import PREDICTOR_SPECS

NAMES = ("gzip", "lzma", PREDICTOR_SPECS["ngram"])


def run(chunks, workers):
    t0 = time.perf_counter()
    rates = [evaluate(name, chunks, workers=workers) for name in NAMES]
    return time.perf_counter() - t0, rates


def main():
    chunks = list(data.text_chunks(text_sample()))
    cores = os.cpu_count() or 1
    run(chunks[:8], 1)  # compile / warm up
    t1, serial = run(chunks, 1)
    tn, parallel = run(chunks, cores)
    assert [r.compressed_bytes for r in serial] == [r.compressed_bytes for r in parallel]
    total = len(chunks) * len(NAMES)
    print(f"{len(chunks)} chunks x {len(NAMES)} compressors ({', '.join(NAMES)}), verified")
    print(f"1 worker: {total / t1:.1f} chunks/s; {cores} workers: {total / tn:.1f} chunks/s; "
          f"ratio {t1 / tn:.2f} (target >= 1.7 on 2 cores)")
    print(json.dumps({
        "bench": "evaluate", "chunks": len(chunks), "compressors": list(NAMES), "cores": cores,
        "chunks_per_s_1_worker": round(total / t1, 2), "chunks_per_s_all_cores": round(total / tn, 2),
        "parallel_speedup": round(t1 / tn, 3),
    }))


if __name__ == "__main__":
    main()
