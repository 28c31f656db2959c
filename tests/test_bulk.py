"""flows.bulk.gc_paused: the collector is paused inside, back as it was outside, and a bulk of
new objects is promoted without being frozen for good."""

from __future__ import annotations

import gc

from flows.bulk import BULK_ALLOCATIONS, freeze_all, gc_paused, unfreeze_all


@gc_paused()
def _build():
    assert not gc.isenabled()
    return [[i] for i in range(BULK_ALLOCATIONS + 10_000)]


def test_paused_inside_and_promoted_not_frozen_after_a_bulk_build():
    unfreeze_all()  # a process without a permanent generation (other tests may have made one)
    assert gc.isenabled()
    made = _build()
    assert gc.isenabled() and len(made) == BULK_ALLOCATIONS + 10_000
    assert gc.get_freeze_count() == 0  # promoted to the oldest generation, not frozen
    assert gc.get_count()[0] < BULK_ALLOCATIONS


def test_a_bulk_build_joins_a_permanent_generation_the_process_keeps():
    freeze_all()  # as sdn.engine.bulk leaves it
    try:
        before = gc.get_freeze_count()
        made = _build()
        assert gc.isenabled() and gc.get_freeze_count() >= before + len(made)
    finally:
        unfreeze_all()


def test_a_disabled_collector_stays_disabled():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_collector_restored_when_the_build_fails():
    try:
        with gc_paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()
