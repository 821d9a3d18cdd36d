"""Fire times of cron and interval triggers, above all around daylight saving shifts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from app.instructions import triggers
from app.instructions.triggers import (
    describe,
    latest_due,
    next_after,
    normalise_cron,
    validate_cron,
)

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def _every(first: str, count: int, minutes: int) -> list[str]:
    """`count` local times `minutes` apart from `first`, all at first's UTC offset."""
    start = datetime.fromisoformat(first)
    return [
        (start + timedelta(minutes=minutes * i)).isoformat(timespec="minutes")
        for i in range(count)
    ]


def _cron(expression: str, zone: str) -> dict[str, str]:
    return {"type": "cron", "cron": expression, "timezone": zone}


LONDON, NEW_YORK, LORD_HOWE = "Europe/London", "America/New_York", "Australia/Lord_Howe"

# (zone, cron, day of the shift, local fire times on that day and the day after).
# Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST, 2026-10-25 02:00 BST -> 01:00 GMT.
# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST.
# Australia/Lord_Howe: 2026-10-04 02:00 -> 02:30 (+10:30 -> +11:00),
#                      2026-04-05 02:00 -> 01:30 (+11:00 -> +10:30).
# All six days are Sundays.
DST_TABLE: list[tuple[str, str, str, list[str]]] = [
    # London, spring forward: 01:00-01:59 do not exist.
    (LONDON, "30 2 * * *", "2026-03-29", ["2026-03-29T02:30+01:00", "2026-03-30T02:30+01:00"]),
    (LONDON, "30 1 * * *", "2026-03-29", ["2026-03-29T02:00+01:00", "2026-03-30T01:30+01:00"]),
    (LONDON, "0 2 * * *", "2026-03-29", ["2026-03-29T02:00+01:00", "2026-03-30T02:00+01:00"]),
    (LONDON, "15 2 * * *", "2026-03-29", ["2026-03-29T02:15+01:00", "2026-03-30T02:15+01:00"]),
    (LONDON, "45 1 * * *", "2026-03-29", ["2026-03-29T02:00+01:00", "2026-03-30T01:45+01:00"]),
    (LONDON, "0 1 * * *", "2026-03-29", ["2026-03-29T02:00+01:00", "2026-03-30T01:00+01:00"]),
    (LONDON, "0 0 * * *", "2026-03-29", ["2026-03-29T00:00+00:00", "2026-03-30T00:00+01:00"]),
    (LONDON, "0 * * * *", "2026-03-29",
     _every("2026-03-29T00:00+00:00", 1, 60) + _every("2026-03-29T02:00+01:00", 22 + 24, 60)),
    (LONDON, "*/30 * * * *", "2026-03-29",
     _every("2026-03-29T00:00+00:00", 2, 30) + _every("2026-03-29T02:00+01:00", 44 + 48, 30)),
    (LONDON, "0 8 * * 1-5", "2026-03-29", ["2026-03-30T08:00+01:00"]),
    # London, fall back: 01:00-01:59 happen twice.
    (LONDON, "30 2 * * *", "2026-10-25", ["2026-10-25T02:30+00:00", "2026-10-26T02:30+00:00"]),
    (LONDON, "30 1 * * *", "2026-10-25", ["2026-10-25T01:30+01:00", "2026-10-26T01:30+00:00"]),
    (LONDON, "0 2 * * *", "2026-10-25", ["2026-10-25T02:00+00:00", "2026-10-26T02:00+00:00"]),
    (LONDON, "15 2 * * *", "2026-10-25", ["2026-10-25T02:15+00:00", "2026-10-26T02:15+00:00"]),
    (LONDON, "45 1 * * *", "2026-10-25", ["2026-10-25T01:45+01:00", "2026-10-26T01:45+00:00"]),
    (LONDON, "0 1 * * *", "2026-10-25", ["2026-10-25T01:00+01:00", "2026-10-26T01:00+00:00"]),
    (LONDON, "0 0 * * *", "2026-10-25", ["2026-10-25T00:00+01:00", "2026-10-26T00:00+00:00"]),
    (LONDON, "0 * * * *", "2026-10-25",
     _every("2026-10-25T00:00+01:00", 2, 60) + _every("2026-10-25T01:00+00:00", 23 + 24, 60)),
    (LONDON, "*/30 * * * *", "2026-10-25",
     _every("2026-10-25T00:00+01:00", 4, 30) + _every("2026-10-25T01:00+00:00", 46 + 48, 30)),
    (LONDON, "0 8 * * 1-5", "2026-10-25", ["2026-10-26T08:00+00:00"]),
    # New York, spring forward: 02:00-02:59 do not exist.
    (NEW_YORK, "30 2 * * *", "2026-03-08", ["2026-03-08T03:00-04:00", "2026-03-09T02:30-04:00"]),
    (NEW_YORK, "30 1 * * *", "2026-03-08", ["2026-03-08T01:30-05:00", "2026-03-09T01:30-04:00"]),
    (NEW_YORK, "0 2 * * *", "2026-03-08", ["2026-03-08T03:00-04:00", "2026-03-09T02:00-04:00"]),
    (NEW_YORK, "15 2 * * *", "2026-03-08", ["2026-03-08T03:00-04:00", "2026-03-09T02:15-04:00"]),
    (NEW_YORK, "45 1 * * *", "2026-03-08", ["2026-03-08T01:45-05:00", "2026-03-09T01:45-04:00"]),
    (NEW_YORK, "0 0 * * *", "2026-03-08", ["2026-03-08T00:00-05:00", "2026-03-09T00:00-04:00"]),
    (NEW_YORK, "0 * * * *", "2026-03-08",
     _every("2026-03-08T00:00-05:00", 2, 60) + _every("2026-03-08T03:00-04:00", 21 + 24, 60)),
    (NEW_YORK, "*/30 * * * *", "2026-03-08",
     _every("2026-03-08T00:00-05:00", 4, 30) + _every("2026-03-08T03:00-04:00", 42 + 48, 30)),
    (NEW_YORK, "0 8 * * 1-5", "2026-03-08", ["2026-03-09T08:00-04:00"]),
    # Several missing times make one fire time, also with the time the clock jumps to.
    (NEW_YORK, "*/15 2 * * *", "2026-03-08",
     ["2026-03-08T03:00-04:00", *_every("2026-03-09T02:00-04:00", 4, 15)]),
    (NEW_YORK, "0 2,3 * * *", "2026-03-08",
     ["2026-03-08T03:00-04:00", "2026-03-09T02:00-04:00", "2026-03-09T03:00-04:00"]),
    # New York, fall back: 01:00-01:59 happen twice.
    (NEW_YORK, "30 2 * * *", "2026-11-01", ["2026-11-01T02:30-05:00", "2026-11-02T02:30-05:00"]),
    (NEW_YORK, "30 1 * * *", "2026-11-01", ["2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00"]),
    (NEW_YORK, "0 2 * * *", "2026-11-01", ["2026-11-01T02:00-05:00", "2026-11-02T02:00-05:00"]),
    (NEW_YORK, "15 2 * * *", "2026-11-01", ["2026-11-01T02:15-05:00", "2026-11-02T02:15-05:00"]),
    (NEW_YORK, "45 1 * * *", "2026-11-01", ["2026-11-01T01:45-04:00", "2026-11-02T01:45-05:00"]),
    (NEW_YORK, "0 0 * * *", "2026-11-01", ["2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00"]),
    (NEW_YORK, "0 * * * *", "2026-11-01",
     _every("2026-11-01T00:00-04:00", 2, 60) + _every("2026-11-01T01:00-05:00", 23 + 24, 60)),
    (NEW_YORK, "*/30 * * * *", "2026-11-01",
     _every("2026-11-01T00:00-04:00", 4, 30) + _every("2026-11-01T01:00-05:00", 46 + 48, 30)),
    (NEW_YORK, "0 8 * * 1-5", "2026-11-01", ["2026-11-02T08:00-05:00"]),
    # Fixed hours follow the wall clock: the repeated 01:xx do not fire again.
    (NEW_YORK, "*/20 1 * * *", "2026-11-01",
     _every("2026-11-01T01:00-04:00", 3, 20) + _every("2026-11-02T01:00-05:00", 3, 20)),
    # Lord Howe, spring forward by 30 minutes: 02:00-02:29 do not exist.
    (LORD_HOWE, "30 2 * * *", "2026-10-04",
     ["2026-10-04T02:30+11:00", "2026-10-05T02:30+11:00"]),
    (LORD_HOWE, "30 1 * * *", "2026-10-04",
     ["2026-10-04T01:30+10:30", "2026-10-05T01:30+11:00"]),
    (LORD_HOWE, "0 2 * * *", "2026-10-04",
     ["2026-10-04T02:30+11:00", "2026-10-05T02:00+11:00"]),
    (LORD_HOWE, "15 2 * * *", "2026-10-04",
     ["2026-10-04T02:30+11:00", "2026-10-05T02:15+11:00"]),
    (LORD_HOWE, "45 1 * * *", "2026-10-04",
     ["2026-10-04T01:45+10:30", "2026-10-05T01:45+11:00"]),
    (LORD_HOWE, "0 0 * * *", "2026-10-04",
     ["2026-10-04T00:00+10:30", "2026-10-05T00:00+11:00"]),
    (LORD_HOWE, "0 * * * *", "2026-10-04",
     _every("2026-10-04T00:00+10:30", 2, 60) + _every("2026-10-04T03:00+11:00", 21 + 24, 60)),
    (LORD_HOWE, "*/30 * * * *", "2026-10-04",
     _every("2026-10-04T00:00+10:30", 4, 30) + _every("2026-10-04T02:30+11:00", 43 + 48, 30)),
    (LORD_HOWE, "0 8 * * 1-5", "2026-10-04", ["2026-10-05T08:00+11:00"]),
    # Lord Howe, fall back by 30 minutes: 01:30-01:59 happen twice.
    (LORD_HOWE, "30 2 * * *", "2026-04-05",
     ["2026-04-05T02:30+10:30", "2026-04-06T02:30+10:30"]),
    (LORD_HOWE, "30 1 * * *", "2026-04-05",
     ["2026-04-05T01:30+11:00", "2026-04-06T01:30+10:30"]),
    (LORD_HOWE, "0 2 * * *", "2026-04-05",
     ["2026-04-05T02:00+10:30", "2026-04-06T02:00+10:30"]),
    (LORD_HOWE, "15 2 * * *", "2026-04-05",
     ["2026-04-05T02:15+10:30", "2026-04-06T02:15+10:30"]),
    (LORD_HOWE, "45 1 * * *", "2026-04-05",
     ["2026-04-05T01:45+11:00", "2026-04-06T01:45+10:30"]),
    (LORD_HOWE, "0 0 * * *", "2026-04-05",
     ["2026-04-05T00:00+11:00", "2026-04-06T00:00+10:30"]),
    (LORD_HOWE, "0 * * * *", "2026-04-05",
     _every("2026-04-05T00:00+11:00", 2, 60) + _every("2026-04-05T02:00+10:30", 22 + 24, 60)),
    (LORD_HOWE, "*/30 * * * *", "2026-04-05",
     _every("2026-04-05T00:00+11:00", 4, 30) + _every("2026-04-05T01:30+10:30", 45 + 48, 30)),
    (LORD_HOWE, "0 8 * * 1-5", "2026-04-05", ["2026-04-06T08:00+10:30"]),
]


def _local_midnight(day: str, zone: str, plus_days: int = 0) -> datetime:
    date = datetime.fromisoformat(day) + timedelta(days=plus_days)
    return date.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _chain(spec: dict[str, Any], start: datetime, end: datetime) -> list[datetime]:
    """The fire times the scheduler gives an instruction: next_after of the last one."""
    fires: list[datetime] = []
    current = start
    while True:
        fire = next_after(spec, current, anchor=ANCHOR)
        assert fire is not None
        assert fire > current
        assert fire.tzinfo is not None
        assert fire.utcoffset() == timedelta(0)
        if fire >= end:
            return fires
        fires.append(fire)
        current = fire


def _ids(row: tuple[str, str, str, list[str]]) -> str:
    zone, cron, day, _ = row
    return f"{zone.split('/')[1]}-{day}-{cron.replace(' ', '_')}"


@pytest.mark.parametrize(("zone", "cron", "day", "expected"), DST_TABLE,
                         ids=[_ids(row) for row in DST_TABLE])
def test_dst_table(zone: str, cron: str, day: str, expected: list[str]) -> None:
    window_start, window_end = _local_midnight(day, zone), _local_midnight(day, zone, 2)
    # From the day before the shift, as the scheduler chains them.
    fires = _chain(_cron(cron, zone), _local_midnight(day, zone, -1), window_end)

    assert fires == sorted(fires)
    assert len(fires) == len(set(fires))
    local = [
        fire.astimezone(ZoneInfo(zone)).isoformat(timespec="minutes")
        for fire in fires if fire >= window_start
    ]
    assert local == expected


@pytest.mark.parametrize(("zone", "cron", "day", "expected"), DST_TABLE,
                         ids=[_ids(row) for row in DST_TABLE])
def test_dst_fire_times_do_not_depend_on_where_the_chain_starts(
    zone: str, cron: str, day: str, expected: list[str]
) -> None:
    # An instruction created (or resumed) at any moment joins the same fire times.
    spec = _cron(cron, zone)
    start, end = _local_midnight(day, zone, -1), _local_midnight(day, zone, 2)
    fires = _chain(spec, start, end)
    moment = start
    while moment < end:
        following = next((fire for fire in fires if fire > moment), None)
        if following is not None:
            assert next_after(spec, moment, anchor=ANCHOR) == following, moment
        moment += timedelta(minutes=37, seconds=11)


def test_daily_jobs_run_once_every_local_day_for_a_year() -> None:
    for zone in (LONDON, NEW_YORK, LORD_HOWE):
        for cron in ("0 0 * * *", "30 1 * * *", "30 2 * * *", "45 1 * * *"):
            fires = _chain(
                _cron(cron, zone), _local_midnight("2025-12-31", zone),
                _local_midnight("2027-01-01", zone),
            )
            days = [fire.astimezone(ZoneInfo(zone)).date() for fire in fires]
            days = [day for day in days if day.year == 2026]
            assert len(days) == len(set(days)) == 365, (zone, cron)


def _weekdays(cron: str) -> list[str]:
    # Monday 2026-03-02 to Sunday 2026-03-08, in UTC (no shifts).
    start = datetime(2026, 3, 2, tzinfo=UTC) - timedelta(microseconds=1)
    fires = _chain(_cron(cron, "UTC"), start, datetime(2026, 3, 9, tzinfo=UTC))
    return [fire.strftime("%a %H:%M") for fire in fires]


def test_crontab_weekdays_count_from_sunday() -> None:
    week = ["Mon 08:00", "Tue 08:00", "Wed 08:00", "Thu 08:00", "Fri 08:00"]
    assert _weekdays("0 8 * * 1-5") == week
    assert _weekdays("0 8 * * mon-fri") == week
    assert _weekdays("0 8 * * 0") == ["Sun 08:00"]
    assert _weekdays("0 8 * * 7") == ["Sun 08:00"]
    assert _weekdays("0 8 * * sun") == ["Sun 08:00"]
    assert _weekdays("0 8 * * 5-7") == ["Fri 08:00", "Sat 08:00", "Sun 08:00"]
    assert _weekdays("0 8 * * 1,3") == ["Mon 08:00", "Wed 08:00"]
    assert _weekdays("0 8 * * */2") == ["Tue 08:00", "Thu 08:00", "Sat 08:00", "Sun 08:00"]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC) - timedelta(microseconds=1)
    end = datetime(2026, 4, 1, tzinfo=UTC)
    # The 1st (a Sunday) or any Monday.
    fires = _chain(_cron("0 8 1 * 1", "UTC"), start, end)
    assert [fire.day for fire in fires] == [1, 2, 9, 16, 23, 30]
    # The 13th or any Friday.
    fires = _chain(_cron("0 8 13 * 5", "UTC"), start, end)
    assert [fire.day for fire in fires] == [6, 13, 20, 27]
    # With one of them "*", only the other restricts.
    assert [f.day for f in _chain(_cron("0 8 1 * *", "UTC"), start, end)] == [1]
    assert [f.day for f in _chain(_cron("0 8 * * 1", "UTC"), start, end)] == [2, 9, 16, 23, 30]


def test_interval_fires_from_the_creation_time() -> None:
    created = datetime(2026, 1, 5, 10, 17, 23, tzinfo=UTC)
    spec = {"type": "interval", "seconds": 3600}
    assert next_after(spec, created - timedelta(days=1), anchor=created) == created
    assert next_after(spec, created, anchor=created) == created + timedelta(hours=1)
    assert next_after(spec, created + timedelta(hours=5, minutes=30), anchor=created) == (
        created + timedelta(hours=6)
    )
    # A fire time itself is not "after" itself.
    assert next_after(spec, created + timedelta(hours=2), anchor=created) == (
        created + timedelta(hours=3)
    )
    # Real time: a DST shift in some zone changes nothing.
    ninety = {"type": "interval", "seconds": 5400}
    fires = _chain(ninety, created, created + timedelta(days=1))
    assert {b - a for a, b in zip(fires, fires[1:], strict=False)} == {timedelta(minutes=90)}


def test_latest_due_coalesces_missed_fire_times() -> None:
    created = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    hourly = {"type": "interval", "seconds": 3600}
    first = created + timedelta(hours=1)
    now = first + timedelta(hours=4, minutes=30)
    assert latest_due(hourly, first, now, anchor=created) == first + timedelta(hours=4)
    # Due exactly now, and not due yet.
    assert latest_due(hourly, first, first, anchor=created) == first
    assert latest_due(hourly, first, first - timedelta(minutes=1), anchor=created) == first


def test_latest_due_across_a_fall_back_shift() -> None:
    zone = ZoneInfo(LONDON)
    first = datetime.fromisoformat("2026-10-25T01:30+01:00")
    later = datetime.fromisoformat("2026-10-25T03:00+00:00")
    # The repeated 01:30 is not a fire time of a daily job...
    assert latest_due(_cron("30 1 * * *", LONDON), first, later, anchor=ANCHOR) == first
    # ...but is one of a job every 30 minutes.
    now = datetime.fromisoformat("2026-10-25T01:45+00:00")
    fire = latest_due(_cron("*/30 * * * *", LONDON), first, now, anchor=ANCHOR)
    assert fire.astimezone(zone).isoformat(timespec="minutes") == "2026-10-25T01:30+00:00"
    assert fire == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_latest_due_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real_next_after = triggers.next_after

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return real_next_after(*args, **kwargs)

    monkeypatch.setattr(triggers, "next_after", counting)
    # A job every minute, schedulers down for a year: half a million missed fire times.
    first = datetime(2025, 6, 1, tzinfo=UTC)
    now = datetime(2026, 6, 1, 12, 34, 56, tzinfo=UTC)
    fire = latest_due(_cron("* * * * *", "UTC"), first, now, anchor=ANCHOR)
    assert fire == datetime(2026, 6, 1, 12, 34, tzinfo=UTC)
    assert calls < 50


def test_a_trigger_that_never_fires_again_does_not_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    ended = datetime(2020, 1, 1, tzinfo=UTC)
    monkeypatch.setattr(
        triggers, "_cron",
        lambda expression, timezone: CronTrigger(hour=8, minute=0, end_date=ended, timezone=UTC),
    )
    spec = _cron("0 8 * * *", "UTC")
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert next_after(spec, now, anchor=ANCHOR) is None
    first = now - timedelta(days=3)
    assert latest_due(spec, first, now, anchor=ANCHOR) == first


def test_describe() -> None:
    assert describe(_cron("0 8 * * 1-5", "Europe/Berlin")) == (
        "At 08:00, Monday through Friday (Europe/Berlin)"
    )
    assert describe({"type": "interval", "seconds": 3600}) == "Every hour"
    assert describe({"type": "interval", "seconds": 5400}) == "Every 90 minutes"
    assert describe({"type": "interval", "seconds": 7200}) == "Every 2 hours"
    assert describe({"type": "interval", "seconds": 86400}) == "Every day"
    assert describe({"type": "cron", "cron": "30 2 * * *"}).endswith("(UTC)")


def _fire_dates(expression: str, count: int = 21) -> list[str]:
    """The first fire dates from Tuesday 2026-12-01, as "Tue 01"."""
    spec = _cron(expression, "UTC")
    moment, dates = datetime(2026, 12, 1, tzinfo=UTC), []
    for _ in range(count):
        fire = next_after(spec, moment, anchor=None)
        assert fire is not None
        dates.append(fire.strftime("%a %d"))
        moment = fire
    return dates


DAILY = [f"{day} {n:02d}" for n, day in zip(range(1, 22), ["Tue", "Wed", "Thu", "Fri", "Sat",
                                                           "Sun", "Mon"] * 3, strict=True)]


@pytest.mark.parametrize(
    ("expression", "words", "fires"),
    [
        # every day of the week, however written: every day
        ("0 8 * * 0-7", "At 08:00", DAILY),
        ("0 8 * * 1-7", "At 08:00", DAILY),
        ("0 8 * * sun-sat", "At 08:00", DAILY),
        ("0 8 * * */1", "At 08:00", DAILY),
        # beside a day of the month, crontab fires when either matches: every day
        ("0 8 1 * 0-7", "At 08:00", DAILY),
        ("0 8 1-31 * 1", "At 08:00", DAILY),
        # the days named, not the field as written
        ("0 8 * * 3/1", "At 08:00, Wednesday through Sunday",
         [d for d in DAILY if d[:3] in ("Wed", "Thu", "Fri", "Sat", "Sun")]),
        ("0 8 * * 0,7", "At 08:00, only on Sunday", [d for d in DAILY if d[:3] == "Sun"]),
        ("0 8 * * */2", "At 08:00, only on Tuesday, Thursday, Saturday, and Sunday",
         [d for d in DAILY if d[:3] in ("Tue", "Thu", "Sat", "Sun")]),
        # either (neither field starts with "*") or both (one does)
        ("0 8 1 * 1", "At 08:00, on day 1 of the month, or on Monday",
         [d for d in DAILY if d[:3] == "Mon" or d.endswith(" 01")]),
        ("0 8 */2 * 1-5", "At 08:00, every 2 days, and only on Monday through Friday",
         [d for d in DAILY if d[:3] not in ("Sat", "Sun") and int(d[-2:]) % 2 == 1]),
    ],
)
def test_the_words_say_when_it_fires(expression: str, words: str, fires: list[str]) -> None:
    assert describe(_cron(expression, "UTC")) == f"{words} (UTC)"
    assert _fire_dates(expression, len(fires)) == fires


@pytest.mark.parametrize(
    ("expression", "words", "hours"),
    [
        # cron_descriptor read these as "22:00 through 23:59 and 00:00 through 06:59" and
        # "at 01:00 through 03:59 and 05:00": they fire once an hour, at the minute
        ("0 22-23,0-6 * * *",
         "At 22:00, 23:00, 00:00, 01:00, 02:00, 03:00, 04:00, 05:00 and 06:00",
         ["00:00", "01:00", "02:00", "03:00", "04:00", "05:00", "06:00", "22:00", "23:00"]),
        ("30 1-3,5 * * *", "At 01:30, 02:30, 03:30 and 05:30",
         ["01:30", "02:30", "03:30", "05:30"]),
        ("0 9-11 * * *", "At 0 minutes past the hour, between 09:00 and 11:59",
         ["09:00", "10:00", "11:00"]),
    ],
)
def test_the_words_say_at_what_hours_it_fires(
    expression: str, words: str, hours: list[str]
) -> None:
    assert describe(_cron(expression, "UTC")) == f"{words} (UTC)"
    spec, fired = _cron(expression, "UTC"), []
    moment = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    while (fire := next_after(spec, moment, anchor=None)) and fire.day == 1:
        fired.append(fire.strftime("%H:%M"))
        moment = fire
    assert fired == hours


@pytest.mark.parametrize(
    ("expression", "plain", "words"),
    [
        # a step past the end of its range names its first value, as in crontab (APScheduler
        # refused these with its own words: "the step value (3) is higher than the total
        # range of the expression (2)")
        ("0 8-10/3 * * *", "0 8 * * *", "At 08:00"),
        ("*/90 * * * *", "0 * * * *", "Every hour"),
        ("0 */30 * * *", "0 0 * * *", "At 00:00"),
        ("0 8 1-31/40 * *", "0 8 1 * *", "At 08:00, on day 1 of the month"),
        # each item once (was "At 5, 5, and 5 minutes past the hour")
        ("5,5,5 * * * *", "5 * * * *", "At 5 minutes past the hour"),
        ("5,05 * * * *", "5 * * * *", "At 5 minutes past the hour"),
        ("0 8,8 * * 1,1", "0 8 * * 1", "At 08:00, only on Monday"),
        # a range of one value as that value (was "between 08:00 and 08:59" for one run)
        ("0 8-8 * * *", "0 8 * * *", "At 08:00"),
        ("0 8-08 * * 1-5", "0 8 * * 1-5", "At 08:00, Monday through Friday"),
        # left as written: a step within its range, and what validation refuses
        ("0 8-10/2 * * *", "0 8-10/2 * * *", "Every 2 hours, between 08:00 and 10:59"),
        ("8/30 9 * * *", "8/30 9 * * *",
         "Every 30 minutes, starting at 8 minutes past the hour, between 09:00 and 09:59"),
    ],
)
def test_a_cron_expression_is_read_in_its_plain_spelling(
    expression: str, plain: str, words: str
) -> None:
    assert normalise_cron(expression) == plain
    validate_cron(expression, "UTC")
    # described and fired as its plain spelling, stored so or not
    assert describe(_cron(expression, "UTC")) == f"{words} (UTC)"
    start = datetime(2026, 12, 1, tzinfo=UTC)
    assert _chain(_cron(expression, "UTC"), start, start + timedelta(days=2)) == _chain(
        _cron(plain, "UTC"), start, start + timedelta(days=2))


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("0 1-31/40 * * *", "31 is no hour (they go from 0 to 23)"),
        ("61 * * * *", "61 is no minute (they go from 0 to 59)"),
        ("0 8 0 * *", "0 is no day of the month (they go from 1 to 31)"),
        ("0 8 * 13 *", "13 is no month (they go from 1 to 12)"),
    ],
)
def test_a_value_out_of_its_fields_range_is_refused_in_our_words(
    expression: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        validate_cron(expression, "UTC")


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        # APScheduler's words were "The minimum value in a range must not be higher than the
        # maximum": what to write instead is said now
        ("0 10-8/3 * * *", "the range 10-8 of the hour runs backwards; write it from the "
                           "lower value to the higher, e.g. 8-10, or in two parts to go past "
                           "the end, e.g. 10-23,0-8"),
        ("0 22-6 * * *", "e.g. 6-22, or in two parts to go past the end, e.g. 22-23,0-6"),
        ("50-10 * * * *", "the range 50-10 of the minute runs backwards"),
        ("0 8 20-10 * *", "the range 20-10 of the day of the month runs backwards"),
        ("0 8 * 12-1 *", "e.g. 1-12, or in two parts to go past the end, e.g. 12,1"),
    ],
)
def test_a_range_that_runs_backwards_is_refused_saying_what_to_write(
    expression: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        validate_cron(expression, "UTC")


def test_last_day_of_the_month_is_refused_as_not_crontab() -> None:
    """APScheduler reads a day "last"; crontab, cron_descriptor and the API's five crontab
    fields do not: refused, and a trigger stored before that is shown as written."""
    for expression in ("0 8 last * *", "0 8 1,last * *", "0 8 LAST * *"):
        with pytest.raises(ValueError, match="'last' is not a crontab day of the month"):
            validate_cron(expression, "UTC")
        assert describe(_cron(expression, "UTC")) == f"Cron '{expression}' (UTC)"


def test_describe_never_fails_on_what_it_cannot_read() -> None:
    """A trigger stored before validation refused it still lists, shown as written."""
    for expression in ("0 8 * * 07", "0 8 * * \u0667", "banana"):
        assert describe(_cron(expression, "Europe/Berlin")) == (
            f"Cron '{expression}' (Europe/Berlin)"
        )


@pytest.mark.parametrize(
    "expression",
    [
        "61 * * * *",  # minute out of range
        "0 24 * * *",  # hour out of range
        "0 0 0 * *",  # no day 0
        "0 8 * 13 *",  # no month 13
        "0 8 * * 8",  # no weekday 8
        "0 8 * * 5-1",  # backwards range
        "*/0 * * * *",  # zero step
        "0 8 * *",  # four fields
        "0 8 * * * *",  # six fields
        "a b c d e",
        "0 8 30 2 *",  # February 30th never comes
        "0 8 * * 07",  # Sunday to APScheduler, but cron_descriptor cannot read it
        "0 8 * * 0007",
        "0 8 * * \u0667",  # an Arabic-Indic 7
        "\u0667 8 * * *",
        "0 \uff18 * * *",  # a fullwidth 8
    ],
)
def test_validate_cron_refuses_bad_expressions(expression: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        validate_cron(expression, "Europe/London")


@pytest.mark.parametrize(
    "expression", ["0 8 * * 1-5", "*/15 * * * *", "0 0 29 2 *", "30 2 1,15 * sun", "0 8 * * 7"]
)
def test_validate_cron_accepts_good_expressions(expression: str) -> None:
    validate_cron(expression, "America/New_York")
