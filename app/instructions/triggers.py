"""Fire times and readable schedules for triggers, from APScheduler's triggers.

APScheduler computes fire times (cron and interval, in the trigger's time zone);
its cron answers around daylight saving shifts are post-processed (see "Daylight
saving time" below). The jobs themselves are rows, not in-memory APScheduler jobs.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cron_descriptor import ExpressionDescriptor, Options

# A coalesced catch-up steps through this many fire times at most (a bound, never
# reached in practice: latest_due first narrows the search to a short window).
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


# The bounds of the crontab fields APScheduler reads as written (the weekday is _day_of_week's).
_FIELD_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12))
_FIELD_NAMES = ("minute", "hour", "day of the month", "month")
_FIELD_ITEM = re.compile(r"(?P<first>\*|\d+)(?:-(?P<last>\d+))?(?:/(?P<step>\d+))?")


@functools.lru_cache(maxsize=4096)  # on every look-up of a fire time: 13 µs, uncached
def normalise_cron(expression: str) -> str:
    """The expression with crontab's meaning spelt as APScheduler and the readers take it:
    one space between fields, each item once ("5,5,5" is "5", "8,08" is "8"), a range of
    one value as that value ("8-8" is 8), and a step
    past the end of its range as the one value it names ("8-10/3" and "8/30" are 8,
    "*/90" of the minutes is 0: crontab takes them, APScheduler refuses them). What is
    not five fields, or an item it cannot read, is left for validation to refuse."""
    fields = expression.split()
    if len(fields) != 5:
        return " ".join(fields)
    normal = []
    for index, field in enumerate(fields):
        items: list[str] = []
        seen: set[str] = set()
        for item in field.split(","):
            if (index < len(_FIELD_BOUNDS) and (match := _FIELD_ITEM.fullmatch(item))
                    and match["step"]):
                low, high = _FIELD_BOUNDS[index]
                first = low if match["first"] == "*" else int(match["first"])
                last = int(match["last"]) if match["last"] else high
                step = int(match["step"])
                if low <= first <= last <= high and step > last - first:
                    item = str(first)
            elif (index < len(_FIELD_BOUNDS) and (match := _FIELD_ITEM.fullmatch(item))
                    and match["last"] and match["first"] != "*"
                    and int(match["first"]) == int(match["last"])):
                item = match["first"]  # "8-8" names one value, 8
            key = str(int(item)) if item.isdigit() else item
            if key not in seen:
                seen.add(key)
                items.append(item)
        normal.append(",".join(items))
    return " ".join(normal)


# Built triggers are immutable (APScheduler's get_next_fire_time keeps no state), and
# building one costs ~10x a look-up with it: the scheduler reuses them across fires.
_TRIGGER_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_TRIGGER_CACHE_SIZE)
def _cron(expression: str, timezone: str) -> BaseTrigger:
    """A crontab expression with crontab's meaning (APScheduler's from_crontab differs)."""
    fields = normalise_cron(expression).split()
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


@functools.cache
def _every_hour(hour: str) -> bool:
    """Whether a crontab hour field matches all 24 hours ("*", "*/1", "0-23", ...)."""
    field = next(f for f in CronTrigger(hour=hour, timezone=UTC).fields if f.name == "hour")
    return all(field.get_next_value(datetime(2000, 1, 1, h)) == h for h in range(24))


def _trigger(spec: dict[str, Any], anchor: datetime | None) -> BaseTrigger:
    if spec["type"] == "cron":
        return _cron(spec["cron"], spec.get("timezone") or "UTC")
    if spec["type"] == "interval":
        if anchor is None:
            raise ValueError("an interval trigger counts from an anchor; none was given")
        return _interval(int(spec["seconds"]), anchor)
    raise ValueError(f"trigger type '{spec['type']}' has no fire times")


@functools.lru_cache(maxsize=_TRIGGER_CACHE_SIZE)
def _interval(seconds: int, anchor: datetime) -> BaseTrigger:
    return IntervalTrigger(seconds=seconds, start_date=anchor, timezone=UTC)


def validate_cron(expression: str, timezone: str) -> None:
    """Raise ValueError with a readable reason if the expression is not valid cron."""
    if not expression.isascii():
        # APScheduler reads any Unicode digit ("٧" as 7); crontab and readers of it don't.
        raise ValueError("only ASCII characters: digits 0-9, names such as mon, and * , - /")
    fields = expression.split()
    for field, name, (low, high) in zip(fields[:4], _FIELD_NAMES, _FIELD_BOUNDS, strict=False):
        for item in field.split(","):
            # Said here, not as APScheduler does: "1-31/40" of the hours is a step too big
            # to it, before the 31 no hour is.
            match = _FIELD_ITEM.fullmatch(item)
            for value in (match["first"], match["last"]) if match else ():
                if value and value != "*" and not low <= int(value) <= high:
                    raise ValueError(f"{value} is no {name} (they go from {low} to {high})")
            if (match and match["last"] and match["first"] != "*"
                    and int(match["first"]) > int(match["last"])):
                # APScheduler: "The minimum value in a range must not be higher than the
                # maximum"; crontab refuses it too, and it may be meant across the end
                first, last = int(match["first"]), int(match["last"])
                parts = (f"{first}-{high}" if first < high else f"{first}",
                         f"{low}-{last}" if low < last else f"{last}")
                raise ValueError(
                    f"the range {first}-{last} of the {name} runs backwards; write it from the "
                    f"lower value to the higher, e.g. {last}-{first}, or in two parts to go "
                    f"past the end, e.g. {','.join(parts)}"
                )
    if _cron(expression, timezone).get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError("it never fires (no such date)")
    # A trigger is shown in words wherever it is listed: refuse what cannot be put so.
    _cron_words(expression)


def _descriptor(expression: str) -> str:
    options = Options()
    options.use_24hour_time_format = True
    try:
        return ExpressionDescriptor(expression, options).get_description()
    except Exception as exc:  # FormatError mostly, but it raises other kinds as well
        raise ValueError(
            "it cannot be read in words; write numbers without leading zeros (7, not 07)"
        ) from exc


def _weekday_field(days: set[int]) -> str:
    """Days (Sunday = 0) as a plain crontab field, Monday first: "1-5", "6,7", "3-7"."""
    values = sorted(day or 7 for day in days)
    parts: list[str] = []
    run: list[int] = []
    for value in [*values, 99]:
        if run and value == run[-1] + 1:
            run.append(value)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
        run = [value]
    return ",".join(parts)


def _listed_hours(minute: str, hour: str) -> str:
    """At a fixed minute, an hour list with ranges ("22-23,0-6") as the hours themselves.

    cron_descriptor reads "0 22-23,0-6" as "At 22:00 through 23:59 and 00:00 through
    06:59" (every minute) and "30 1-3,5" as "at 01:00 through 03:59 and 05:00"; both fire
    once an hour, at that minute.
    """
    if not minute.isdigit() or "," not in hour or "-" not in hour:
        return hour
    hours: list[int] = []
    for part in hour.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or not (last or first).isdigit():
            return hour
        hours.extend(h for h in range(int(first), int(last or first) + 1) if h not in hours)
    return ",".join(map(str, hours))


@functools.cache
def _every_day_of_month(field: str) -> bool:
    """Whether a day-of-month field matches all 31 days ("*", "1-31", "*/1", ...)."""
    day = next(f for f in CronTrigger(day=field, timezone=UTC).fields if f.name == "day")
    return all(day.get_next_value(datetime(2000, 1, d)) == d for d in range(1, 32))


def _cron_words(expression: str) -> str:
    """The expression in words, as it fires; raises ValueError where there are none.

    cron_descriptor reads the day fields as written: "0-7" as "Sunday through Sunday"
    (every day), "1-5" beside a day of the month as if both had to match. Crontab fires
    when either matches if neither field starts with "*" (both if one does): the days of
    the week are described as the set they name, and the two fields joined as they fire.
    APScheduler takes a weekday of "07" or "0007" (Sunday), cron_descriptor does not.
    """
    expression = normalise_cron(expression)
    fields = expression.split()
    if len(fields) == 5 and any(
        part.strip().lower().startswith("last") for part in fields[2].split(",")
    ):
        # APScheduler's own "last day of the month"; not crontab, nor readable by others.
        raise ValueError("'last' is not a crontab day of the month; use numbers 1-31")
    words = _descriptor(expression)  # refuses what cron_descriptor cannot read at all
    if len(fields) != 5:
        return words
    minute, hour, day, month, weekday = fields
    hour = _listed_hours(minute, hour)
    words = _descriptor(f"{minute} {hour} {day} {month} {weekday}")
    try:
        named = _day_of_week(weekday)
        every_date = _every_day_of_month(day)
    except ValueError:
        return words
    days = set(range(7)) if named == "*" else {_WEEKDAYS.index(n) for n in named.split(",")}
    either = not day.startswith("*") and not weekday.startswith("*")
    if len(days) == 7 or every_date:
        if either:  # one of the two matches every day
            return _descriptor(f"{minute} {hour} * {month} *")
        if len(days) == 7:
            return _descriptor(f"{minute} {hour} {day} {month} *")
        return _descriptor(f"{minute} {hour} * {month} {_weekday_field(days)}")
    base = _descriptor(f"{minute} {hour} {day} {month} *")
    on_days = _descriptor(f"0 0 * * {_weekday_field(days)}").removeprefix("At 00:00, ")
    on_days = on_days.removeprefix("only ")
    on_days = on_days if on_days.startswith("on ") else f"on {on_days}"
    return f"{base}, or {on_days}" if either else f"{base}, and only {on_days}"


# Daylight saving time
# --------------------
# APScheduler 3.11's CronTrigger matches wall-clock times in the trigger's zone.
# Measured around the 2026 shifts of Europe/London, America/New_York and
# Australia/Lord_Howe, chaining get_next_fire_time from each fire time:
#   - spring forward, a wall time that does not exist that day (02:30 in New York):
#     a job with fixed hours gets the nonexistent time itself, which zoneinfo reads
#     with the old offset, so it fires the gap's length late (03:30 EDT; London 01:30
#     at 02:30 BST; Lord Howe 02:15 at 02:45); a job whose hour field is "*" never
#     gets the missing times (New York "0 * * * *": 01:00 EST, then 03:00 EDT);
#   - spring forward, a step across the shift lands late (it adds a wall-clock
#     difference in real time): after 00:00 on that day a daily 00:00 job next fires
#     two days on, skipping a day (New York, Lord Howe);
#   - fall back, a wall time that happens twice (01:30 in London): every job fires at
#     both occurrences, so a daily 01:30 job runs twice that night.
# Its answers are post-processed into these rules:
#   - Jobs with fixed hours (the hour field is not every hour: daily, weekdays, "at
#     02:00 and 14:00", ...) follow the wall clock: each matching local time fires
#     once. A time that does not exist fires at the first instant after the gap, i.e.
#     the local time the clock jumps to (02:30 in New York fires at 03:00 EDT), as
#     cron implementations run the jobs of the skipped hour right after the jump;
#     several such times (or one and the time the clock jumps to) make one fire time.
#     A time that happens twice fires at its first occurrence only.
#   - Jobs whose hour field is every hour ("0 * * * *", "*/30 * * * *") follow real
#     time: they fire at every instant whose local time matches, so they keep firing
#     through the repeated hour (each real instant once), and a time that does not
#     exist never comes (Lord Howe "0 * * * *": 01:00 +10:30, then 03:00 +11:00).
# The fire times are then one fixed set of instants and next_after gives the first
# one after any instant: the chain next_after(next_after(...)) strictly increases,
# never repeats an instant, and runs a daily job exactly once per local day.

_TICK = timedelta(microseconds=1)

# One search passes at most a handful of shifts; this only stops a runaway loop.
_MAX_CRON_STEPS = 100


def _offset(moment: datetime) -> timedelta:
    """The UTC offset of an aware datetime (as its fold reads it, for a local time)."""
    offset = moment.utcoffset()
    assert offset is not None
    return offset


def _transition(before: datetime, after: datetime, zone: tzinfo) -> datetime:
    """The first instant in (before, after] with the UTC offset the zone has at `after`.

    There must be a single change of offset in between (zone transitions are months
    apart); they fall on whole seconds, so this bisects the seconds.
    """
    target = _offset(after.astimezone(UTC).astimezone(zone))  # the real offset then
    low, high = math.floor(before.timestamp()), math.ceil(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(datetime.fromtimestamp(middle, zone)) == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _next_shift(start: datetime, end: datetime, zone: tzinfo) -> datetime | None:
    """The first instant in (start, end] at which the zone's UTC offset changes, if any."""
    offset = _offset(start.astimezone(zone))
    low = start
    while low < end:
        high = min(low + timedelta(days=1), end)  # UTC arithmetic: real time
        if _offset(high.astimezone(zone)) != offset:
            return _transition(low, high, zone)
        low = high
    return None


def _gap_time_matches(expression: str, shift: datetime, zone: tzinfo) -> bool:
    """Whether the cron expression matches a wall time skipped by a spring-forward `shift`."""
    before = _offset((shift - _TICK).astimezone(zone))
    after = _offset(shift.astimezone(zone))
    if after <= before:
        return False
    # The same expression on a clock without shifts (UTC) finds wall times as such.
    gap_start = (shift + before).replace(tzinfo=UTC)
    match = _cron(expression, "UTC").get_next_fire_time(None, gap_start)
    return match is not None and match < gap_start + (after - before)


def _next_cron(expression: str, timezone: str, after: datetime) -> datetime | None:
    """The first fire time after `after` (UTC) under the rules above."""
    expression = normalise_cron(expression)
    return _next_cron_of(_cron(expression, timezone), expression, after)


# Answers are kept per built trigger (the object _cron hands out while it is cached): a
# fire computes the same look-up twice (latest_due, then the following fire time), and
# instructions on one schedule due at the same moment share it.
@functools.lru_cache(maxsize=_TRIGGER_CACHE_SIZE)
def _next_cron_of(trigger: BaseTrigger, expression: str, after: datetime) -> datetime | None:
    real_time = _every_hour(expression.split()[1])
    cursor = after
    for _ in range(_MAX_CRON_STEPS):
        start = cursor + _TICK
        candidate = trigger.get_next_fire_time(None, start)
        if candidate is None:
            return None
        zone = candidate.tzinfo
        # The two readings of the wall time APScheduler matched: zoneinfo reads fold=0
        # with the offset before a shift and fold=1 with the offset after it.
        first = candidate.replace(fold=0)
        second = candidate.replace(fold=1)
        first_offset, second_offset = _offset(first), _offset(second)
        fire: datetime | None
        if first_offset < second_offset:  # spring forward: the time does not exist
            jump = _transition(second, first, zone)  # the first instant after the gap
            fire = None if real_time else jump
            reached = jump
            resume = jump - _TICK  # go on from the local time the clock jumped to
        elif first_offset == second_offset or candidate.fold == 0 or real_time:
            # An ordinary time, or the first occurrence of a time that happens twice (and
            # the second one too for jobs that follow real time).
            fire = reached = resume = candidate.astimezone(UTC)
        else:  # fall back: the second occurrence, which wall-clock jobs do not repeat
            fire = None
            reached = candidate.astimezone(UTC)
            clocks_back = _transition(first, second, zone)
            # Go on from the end of the repeated wall times.
            resume = clocks_back + (first_offset - second_offset) - _TICK
        # APScheduler 3.11 steps from one candidate to the next by adding wall-clock
        # differences in real time, so a step across a spring-forward shift lands late:
        # from 00:00 on that day a daily 00:00 job would next fire two days on, and a
        # daily job at a time in the gap (reached by such a step) would skip the day.
        # Its answers before the first shift are right: if the search crossed one, look
        # in the gap, then search again from the shift itself.
        crossed = _next_shift(start, reached, zone)
        if crossed is not None and crossed < reached:
            if not real_time and _gap_time_matches(expression, crossed, zone):
                return crossed
            cursor = crossed - _TICK
            continue
        if fire is not None and fire > after:
            return fire
        # Always move on, even if APScheduler were to offer a time already passed.
        cursor = resume if resume > cursor else cursor + timedelta(seconds=1)
    return None


def next_after(
    spec: dict[str, Any], after: datetime, *, anchor: datetime | None
) -> datetime | None:
    """The first fire time strictly after `after` (UTC), or None if there is none.

    `anchor` (the instruction's creation) is where an interval trigger counts from;
    cron fire times do not depend on it.

    A watch trigger has no fire times: the watch poller fires it (app/google/watch.py).
    """
    if spec["type"] == "watch":
        return None
    if spec["type"] == "cron":
        return _next_cron(spec["cron"], spec.get("timezone") or "UTC", after.astimezone(UTC))
    trigger = _trigger(spec, anchor)
    fire = trigger.get_next_fire_time(None, after + _TICK)
    return None if fire is None else fire.astimezone(UTC)


def latest_due(
    spec: dict[str, Any], first_due: datetime, now: datetime, *, anchor: datetime | None
) -> datetime:
    """The newest fire time in [first_due, now]: one catch-up run covers all the missed ones.

    Rather than stepping through every missed fire time (a minutely job down for a
    month has 43,200), look back from now over a window that doubles until it holds
    a fire time, then step forward from there: a few dozen trigger look-ups at most.
    """
    if now <= first_due:
        return first_due
    latest = first_due
    span = timedelta(minutes=1)
    while now - span > first_due:
        fire = next_after(spec, now - span, anchor=anchor)
        if fire is not None and fire <= now:
            latest = fire
            break
        span *= 2
    for _ in range(_MAX_CATCH_UP_STEPS):
        following = next_after(spec, latest, anchor=anchor)
        if following is None or following > now:
            break
        latest = following
    return latest


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def describe(spec: dict[str, Any]) -> str:
    """A readable schedule: "At 08:00, Monday through Friday (Europe/Berlin)"."""
    if spec["type"] == "cron":
        zone = spec.get("timezone") or "UTC"
        try:
            return f"{_cron_words(spec['cron'])} ({zone})"
        except ValueError:  # stored before validation refused it: a listing must not fail
            return f"Cron {spec['cron']!r} ({zone})"
    if spec["type"] == "interval":
        seconds = int(spec["seconds"])
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if seconds % size == 0:
                count = seconds // size
                return f"Every {unit}" if count == 1 else f"Every {_plural(count, unit)}"
        return f"Every {_plural(seconds, 'second')}"
    if spec["type"] == "watch" and spec.get("gmail_query"):
        return f"When new mail matches {spec['gmail_query']!r}"
    if spec["type"] == "watch" and spec.get("drive_folder_id"):
        return f"When a file in Drive folder {spec['drive_folder_id']} is new or changes"
    return "When something new arrives"
