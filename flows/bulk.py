"""Building large acyclic structures without Python's cyclic garbage collector in the way.

Compiling rules and flows makes hundreds of thousands of small objects (rules, flows, match
tuples, conjunction sets) that form no reference cycles: reference counting frees them.
Meanwhile every collection their allocation triggers walks the whole heap of the process (the
cluster's objects too): measured, about half of S3's compile time and of S1's `cluster_rules`
(benchmarks/results). `gc_paused` pauses the collector for such a build; if the build made many
objects, they are then promoted without a scan (gc.freeze then gc.unfreeze moves them to the
oldest generation, where cycles, if any, are still found by the next full collection), or join
the permanent generation if the process keeps one (`freeze_all`: sdn.engine.bulk freezes the
cluster). Whether it keeps one is remembered here, not asked of the collector:
`gc.get_freeze_count()` walks the whole permanent generation (80 ms for a frozen S5 benchmark
process, three times the compile it followed).
"""

from __future__ import annotations

import contextlib
import gc

BULK_ALLOCATIONS = 10_000  # objects made while paused above which they are promoted, not scanned
_keeps_permanent = False  # freeze_all() was called: bulk builds join the permanent generation


def freeze_all() -> None:
    """Move every object the collector tracks into the permanent generation (never scanned
    again) and keep one from now on: later bulk builds join it."""
    global _keeps_permanent
    gc.freeze()
    _keeps_permanent = True


def unfreeze_all() -> None:
    """Give the permanent generation back to the oldest one; bulk builds are promoted again."""
    global _keeps_permanent
    gc.unfreeze()
    _keeps_permanent = False


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
            gc.freeze()  # O(1): the generations' lists are spliced, not walked
            if not _keeps_permanent:
                gc.unfreeze()
        gc.enable()
