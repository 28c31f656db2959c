"""Stopwatch and percentile shared by the benchmark stages."""

from __future__ import annotations

import time

from flows.recheck import without_generation


def clock():
    """Start a stopwatch; calling the result gives (wall seconds, CPU seconds) since."""
    w0, c0 = time.perf_counter(), time.process_time()
    return lambda: (time.perf_counter() - w0, time.process_time() - c0)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); with fewer than 100 samples p99 is the max."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def same_flows(mine, reference) -> str:
    """identical / same up to priority levels (an incremental compile may keep other levels
    than a fresh one) / DIFFERENT."""
    a, b = set(mine), set(reference)
    if a == b:
        return "identical"
    return "same up to priority levels" if _no_prio(a) == _no_prio(b) else "DIFFERENT"


def _no_prio(flows) -> list:
    """Flows without their priority (conjunction ids kept) and without the rule tables'
    generation (flows/recheck.py: it follows the priorities), as a sorted multiset."""
    return sorted((f.table, f.match, f.actions, f.cookie) for f in map(without_generation, flows))
