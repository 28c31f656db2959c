"""Building large acyclic structures without Python's cyclic garbage collector in the way.

Compiling rules and flows makes hundreds of thousands of small objects (rules, flows, match
tuples, conjunction sets) that form no reference cycles: reference counting frees them.
Meanwhile every collection their allocation triggers walks the whole heap of the process (the
cluster's objects too): measured, about half of S3's compile time and of S1's `cluster_rules`
(benchmarks/results). `gc_paused` pauses the collector for such a build; if the build made many
objects, they are then promoted without a scan (gc.freeze then gc.unfreeze moves them to the
oldest generation, where cycles, if any, are still found by the next full collection), or join
the permanent generation if the process keeps one (sdn.engine.bulk freezes the cluster).
"""

from __future__ import annotations

import contextlib
import gc

BULK_ALLOCATIONS = 10_000  # objects made while paused above which they are promoted, not scanned


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector for a build (usable as a decorator too)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if gc.get_count()[0] > BULK_ALLOCATIONS:
            frozen = gc.get_freeze_count()
            gc.freeze()
            if not frozen:
                gc.unfreeze()
        gc.enable()
