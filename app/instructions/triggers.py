"""Fire times and readable schedules for triggers, from APScheduler's triggers.

APScheduler computes fire times (cron and interval, in the trigger's time zone,
through DST); the jobs themselves are rows, not in-memory APScheduler jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cron_descriptor import ExpressionDescriptor, Options

# A coalesced catch-up looks this many fire times ahead at most; beyond that
# the trigger fires so often that skipping to the newest one by arithmetic
# would not change what the user sees.
_MAX_CATCH_UP_STEPS = 10_000


def _trigger(spec: dict[str, Any], anchor: datetime) -> CronTrigger | IntervalTrigger:
    if spec["type"] == "cron":
        return CronTrigger.from_crontab(spec["cron"], timezone=spec.get("timezone") or "UTC")
    if spec["type"] == "interval":
        return IntervalTrigger(seconds=int(spec["seconds"]), start_date=anchor, timezone=UTC)
    raise ValueError(f"trigger type '{spec['type']}' has no fire times")


def validate_cron(expression: str, timezone: str) -> None:
    """Raise ValueError with a readable reason if the expression is not valid cron."""
    CronTrigger.from_crontab(expression, timezone=timezone)


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
