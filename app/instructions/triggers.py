"""Fire times and readable schedules for triggers, from APScheduler's triggers.

APScheduler computes fire times (cron and interval, in the trigger's time zone,
through DST); the jobs themselves are rows, not in-memory APScheduler jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cron_descriptor import ExpressionDescriptor, Options

# A coalesced catch-up looks this many fire times ahead at most; beyond that
# the trigger fires so often that skipping to the newest one by arithmetic
# would not change what the user sees.
_MAX_CATCH_UP_STEPS = 10_000

# Crontab numbers weekdays from Sunday (0, and 7 again); APScheduler 3 from Monday.
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday(token: str) -> int:
    token = token.lower()
    if token.isdigit() and int(token) <= 7:
        return int(token)
    if token in _WEEKDAYS:
        return _WEEKDAYS.index(token)
    raise ValueError(f"unknown day of week '{token}'")


def _day_of_week(field: str) -> str:
    """A crontab day-of-week field as APScheduler weekday names, which mean the same days."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        span, slash, step = part.partition("/")
        if span == "*":
            first, last = 0, 7
        elif "-" in span:
            start, end = span.split("-", 1)
            first, last = _weekday(start), _weekday(end)
        else:
            first = _weekday(span)
            last = 7 if slash else first
        every = int(step) if slash else 1
        if first > last or every < 1:
            raise ValueError(f"invalid day-of-week range '{part}'")
        days.update(day % 7 for day in range(first, last + 1, every))
    return ",".join(_WEEKDAYS[day] for day in sorted(days, key=lambda day: (day + 6) % 7))


def _cron(expression: str, timezone: str) -> BaseTrigger:
    """A crontab expression with crontab's meaning (APScheduler's from_crontab differs)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields

    def cron(day: str, weekday: str) -> CronTrigger:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_day_of_week(weekday), timezone=timezone)

    if day.startswith("*") or weekday.startswith("*"):
        return cron(day, weekday)
    # With both restricted, crontab fires on either: "on day 1 of the month, or on Monday".
    return OrTrigger([cron(day, "*"), cron("*", weekday)])


def _trigger(spec: dict[str, Any], anchor: datetime) -> BaseTrigger:
    if spec["type"] == "cron":
        return _cron(spec["cron"], spec.get("timezone") or "UTC")
    if spec["type"] == "interval":
        return IntervalTrigger(seconds=int(spec["seconds"]), start_date=anchor, timezone=UTC)
    raise ValueError(f"trigger type '{spec['type']}' has no fire times")


def validate_cron(expression: str, timezone: str) -> None:
    """Raise ValueError with a readable reason if the expression is not valid cron."""
    _cron(expression, timezone)


def next_after(spec: dict[str, Any], after: datetime, *, anchor: datetime) -> datetime | None:
    """The first fire time strictly after `after` (UTC), or None if there is none."""
    trigger = _trigger(spec, anchor)
    fire = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    return None if fire is None else fire.astimezone(UTC)


def latest_due(
    spec: dict[str, Any], first_due: datetime, now: datetime, *, anchor: datetime
) -> datetime:
    """The newest fire time in [first_due, now]: one catch-up run covers all the missed ones."""
    latest = first_due
    for _ in range(_MAX_CATCH_UP_STEPS):
        nxt = next_after(spec, latest, anchor=anchor)
        if nxt is None or nxt > now:
            break
        latest = nxt
    return latest


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def describe(spec: dict[str, Any]) -> str:
    """A readable schedule: "At 08:00, Monday through Friday (Europe/Berlin)"."""
    if spec["type"] == "cron":
        options = Options()
        options.use_24hour_time_format = True
        text = ExpressionDescriptor(spec["cron"], options).get_description()
        return f"{text} ({spec.get('timezone') or 'UTC'})"
    if spec["type"] == "interval":
        seconds = int(spec["seconds"])
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if seconds % size == 0:
                count = seconds // size
                return f"Every {unit}" if count == 1 else f"Every {_plural(count, unit)}"
        return f"Every {_plural(seconds, 'second')}"
    return "When something new arrives"
