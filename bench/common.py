"""Helpers shared by the benchmark scripts (run them as ``python bench/NAME.py``)."""

import os
import sys
import time
from pathlib import Path


def text_sample(file=None):
    """Bytes of ``file``, else of ``$LMC_REF_DATA/enwik8_head``; exits with a clear message if absent."""
    if file:
        path = Path(file)
    else:
        root = os.environ.get("LMC_REF_DATA")
        if not root:
            sys.exit("set LMC_REF_DATA to the folder holding enwik8_head (e.g. ../shared/data) or pass --file")
        path = Path(root) / "enwik8_head"
    if not path.is_file():
        sys.exit(f"{path} not found (LMC_REF_DATA must hold enwik8_head)")
    return path.read_bytes()


def best_time(fn, repeats):
    """(fastest wall time of ``repeats`` calls, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result
