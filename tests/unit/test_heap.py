"""heap.settle(): what a long-running process does to its cycle collector at start."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.core import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_settle_freezes_what_exists_and_collects_young_objects_less_often(
    restored_gc: None,
) -> None:
    gc.set_threshold(700, 10, 10)
    before = Node()
    heap.settle()
    # What existed at start is no longer gone through by any collection ...
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(before)
    assert not any(before is obj for obj in gc.get_objects(generation=2))
    # ... and young objects may pile up further before one.
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)


def test_cycles_made_after_settle_are_still_collected(restored_gc: None) -> None:
    heap.settle()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None  # a cycle: reference counting alone does not free it
    gc.collect()
    assert gone() is None


def test_settle_never_lowers_a_higher_threshold(restored_gc: None) -> None:
    gc.set_threshold(heap.YOUNG_THRESHOLD * 2, 10, 10)
    heap.settle()
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD * 2
