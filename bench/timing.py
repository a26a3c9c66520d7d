"""Shared by the bench scripts (run as ``python bench/<name>.py``, so this folder is on sys.path)."""
from __future__ import annotations

import time


def timed(fn, repeats: int = 1):
    """Best wall time of ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
