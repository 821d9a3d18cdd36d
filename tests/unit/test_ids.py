"""Time-ordered UUIDs (version 7) for the keys of runs."""

from __future__ import annotations

import copy
import pickle
import time
import uuid

from app.core.db import uuid7, uuid7s


def test_uuid7s_are_version_7_unique_and_carry_the_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = uuid7s(1000)
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 1000
    for value in ids:
        assert isinstance(value, uuid.UUID)
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert before <= value.int >> 80 <= after
        # Parsed back from its text or bytes, it is the same key, as a dict key too; it
        # copies and pickles as a UUID made by the constructor does.
        parsed = uuid.UUID(str(value))
        assert parsed == value
        assert uuid.UUID(bytes=value.bytes) == value
        assert {parsed: 1}[value] == 1
        assert pickle.loads(pickle.dumps(value)) == value == copy.deepcopy(value)
        assert value.is_safe is uuid.SafeUUID.unknown


def test_uuid7s_made_later_sort_after() -> None:
    first = uuid7()
    time.sleep(0.002)
    later = uuid7s(50)
    assert all(first < value for value in later)
    assert sorted([*later, first])[0] == first
