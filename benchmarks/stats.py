"""Stopwatch and percentile shared by the benchmark stages."""

from __future__ import annotations

import time


def clock():
    """Start a stopwatch; calling the result gives (wall seconds, CPU seconds) since."""
    w0, c0 = time.perf_counter(), time.process_time()
    return lambda: (time.perf_counter() - w0, time.process_time() - c0)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); with fewer than 100 samples p99 is the max."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]
