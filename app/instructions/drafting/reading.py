"""Reading a sentence: the times, days and intervals it names."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from app.instructions.drafting.errors import (
    MAX_INTERVAL_SECONDS,
    DraftIntervalTooShort,
    _not_understood,
    _quote,
)
from app.instructions.schemas import (
    MIN_INTERVAL_SECONDS,
)

log = logging.getLogger(__name__)

# --- Reading a sentence -----------------------------------------------------------------------


def _lower(text: str) -> str:
    """Lowercase with common variants spelled one way, keeping every index of `text`."""
    low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    for old, new in (("’", "'"), ("‘", "'"), ("–", "-"), ("—", "-"),
                     ("a.m.", "am  "), ("p.m.", "pm  "), ("o'clock", " " * 7)):
        low = low.replace(old, new)
    return low


@dataclass
class _Reading:
    """The sentence, with the phrases already understood blanked out of `rest`."""

    text: str
    low: str
    rest: str = ""

    def __post_init__(self) -> None:
        self.rest = self.low

    def take(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        """Every match of `pattern` in what is left, each blanked out once read."""
        found = list(pattern.finditer(self.rest))
        for match in found:
            start, end = match.span()
            # NUL cannot be in the sentence; \s does not match it, so no phrase spans a gap.
            self.rest = self.rest[:start] + "\0" * (end - start) + self.rest[end:]
        return found

    def leftover(self) -> str:
        return " ".join(self.rest.replace("\0", " ").split())


_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty-five": 45, "sixty": 60, "ninety": 90,
}
_NUM = r"\d+(?:\.\d+)?|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
_UNIT = r"seconds?|secs?|minutes?|mins?|hours?|hrs?|h|days?"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DAY = r"monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_DAY_SHORT = r"mon|tues?|wed|thu(?:rs?)?|fri|sat|sun"
# Crontab numbers the weekdays from Sunday = 0.
_DAY_NUMBERS = {name[:3]: (i + 1) % 7 for i, name in enumerate(_DAY.split("|"))}
_DAY_WORDS = {0: "Sunday", 1: "Monday", 2: "Tuesday", 3: "Wednesday", 4: "Thursday",
              5: "Friday", 6: "Saturday"}
_WEEK_ORDER = (1, 2, 3, 4, 5, 6, 0)
_TIME = r"noon|midday|midnight|\d{1,2}(?:[:.]\d{2})?(?:\s*(?:am|pm|h)(?![a-z]))?"
_EVERY = r"(?:every|each)\s+"

_ONE_OFF = re.compile(
    r"\b(?:tomorrow|tonight|this\s+(?:morning|afternoon|evening|week|month|weekend|"
    rf"{_DAY})|next\s+(?:week|month|weekend|{_DAY})|in\s+(?:{_NUM})\s+(?:{_UNIT})|"
    r"later\s+today|once\b(?!\s+(?:a|an|per|every|each)\b))"
)
_RECURRING = re.compile(
    rf"\b(?:every|each|daily|weekly|monthly|hourly|nightly|weekdays|weekends|(?:{_DAY})s|"
    r"once\s+(?:a|an|per))\b"
)
_EMAIL_CHANNEL = re.compile(
    r"\b(?:e-?mail|mail)\s+(?:it\s+|this\s+)?(?:to\s+)?me\b|\b(?:by|via|per|as\s+an?|in\s+an?)"
    r"\s+e-?mail\b|\bsend\s+(?:me\s+)?an?\s+e-?mail\b"
)
_PUSH_CHANNEL = re.compile(
    r"\b(?:(?:as|via|by|with|send(?:\s+me)?)\s+(?:an?\s+)?)?push(?:\s+notifications?)?\b"
    r"|\b(?:notify|ping|alert|buzz)\s+my\s+phone\b|\b(?:on|to)\s+my\s+phone\b"
)
_EVERY_OTHER_WEEK = re.compile(
    rf"\b{_EVERY}(?:other|second|third|fourth|\d+|two|three|four)\s+"
    rf"(?:weeks?|months?|years?|(?:{_DAY})s?)\b"
)
_NTH_WEEKDAY = re.compile(
    rf"\b(?:first|second|third|fourth|last|1st|2nd|3rd|4th)\s+(?:{_DAY})\s+of\b"
)
_LAST_DAY = re.compile(r"\blast\s+(?:working\s+|business\s+)?day\s+of\b")
_TIMES_A_DAY = re.compile(
    r"\b(?:\d+|three|four|five|six|several|a\s+few)\s+times\s+(?:a|per)\s+day\b"
)
_TWICE_A_DAY = re.compile(r"\btwice\s+(?:a\s+day|per\s+day|daily)\b")
_EVERY_N = re.compile(rf"\b{_EVERY}(?P<n>{_NUM})\s*(?P<unit>{_UNIT})\b")
_EVERY_OTHER = re.compile(rf"\b{_EVERY}(?:other|second)\s+(?P<unit>hour|day)\b")
_EVERY_PART_HOUR = re.compile(
    rf"\b{_EVERY}(?P<part>half|quarter)[\s-]+(?:(?:of\s+)?an\s+)?hour\b"
)
_EVERY_UNIT = re.compile(
    rf"\b(?:{_EVERY}|once\s+(?:an?|per)\s+|per\s+)(?P<unit>second|minute|hour)\b"
    rf"(?![\s-]*(?:{_DAY}|day|week|month|year))|\b(?P<hourly>hourly)\b"
)
_WINDOW = re.compile(
    r"\b(?:between|from)\s+(?P<a>\d{1,2}(?::\d{2})?(?:\s*(?:am|pm))?)\s*(?:and|to|-|until|till)"
    r"\s*(?P<b>\d{1,2}(?::\d{2})?(?:\s*(?:am|pm))?)(?![\d:])"
)
_AT = re.compile(
    rf"(?:\b(?:at|around)\s+(?:about\s+|around\s+)?|(?<![\w.])@\s*)(?P<first>{_TIME})"
    rf"(?P<more>(?:\s*(?:,|and|&)\s*(?:at\s+)?(?:{_TIME}))*)(?![\d:])"
)
_BARE_TIME = re.compile(
    r"\b(?:\d{1,2}:\d{2}(?:\s*(?:am|pm)(?![a-z]))?|\d{1,2}\s*(?:am|pm)(?![a-z])"
    r"|noon|midday|midnight)(?![\d:])"
)
_ONE_TIME = re.compile(_TIME)
_DAY_RANGE = re.compile(
    rf"\b(?:(?:every|each|on|from)\s+)?(?P<a>{_DAY}|{_DAY_SHORT})s?\s*"
    rf"(?:-|to|through|thru|till|until)\s*(?P<b>{_DAY}|{_DAY_SHORT})s?\b"
)
_WEEKDAYS = re.compile(
    r"\b(?:(?:every|each|on|during)\s+(?:the\s+)?)?(?:week\s?days?|work\s?days?|"
    r"working\s+days?|business\s+days?)\b"
)
_WEEKENDS = re.compile(r"\b(?:(?:every|each|on|at|over|during)\s+(?:the\s+)?)?weekends?\b")
_DAY_NAME = re.compile(rf"\b(?:(?:every|each|on)\s+)?(?P<d>{_DAY}|tues|thurs)s?\b")
_DAILY = re.compile(
    rf"\b(?:{_EVERY}(?:single\s+)?day|everyday|daily|(?:once\s+)?(?:a|per)\s+day|"
    r"(?:7|seven)\s+days\s+a\s+week)\b"
)
_WEEKLY = re.compile(rf"\b(?:weekly|{_EVERY}week|(?:once\s+)?(?:a|per)\s+week)\b")
_MONTHLY = re.compile(rf"\b(?:monthly|{_EVERY}month|(?:once\s+)?(?:a|per)\s+month)\b")
_OF_MONTH = r"\s+(?:day\s+)?of\s+(?:the|each|every)\s+month"
_DAY_OF_MONTH = re.compile(
    rf"\b(?:on\s+)?the\s+(?:(?P<n>\d{{1,2}})(?:(?:st|nd|rd|th)(?:{_OF_MONTH})?|{_OF_MONTH})"
    rf"|(?P<first>first)(?:{_OF_MONTH}))\b"
)
_PERIOD = re.compile(
    rf"\b(?:(?:{_EVERY}|in\s+the\s+|at\s+|during\s+the\s+)?(?P<p>mornings?|afternoons?|"
    r"evenings?|nights?|nightly|lunch(?:time)?|end\s+of\s+(?:the\s+)?(?:work\s?)?day|eod))\b"
)
# Default time, and the hours that belong to it, of each part of the day.
_PERIODS: dict[str, tuple[tuple[int, int], range]] = {
    "morning": ((8, 0), range(5, 12)),
    "lunch": ((12, 0), range(11, 15)),
    "afternoon": ((14, 0), range(12, 18)),
    "end of day": ((17, 0), range(15, 21)),
    "evening": ((18, 0), range(16, 24)),
    "night": ((21, 0), range(19, 24)),
}
_UNKNOWN_EVERY = re.compile(r"\b(?:every|each)\s+[\w'-]+")


def _period(word: str) -> str:
    for name in _PERIODS:
        if word.startswith(name.split()[0]):
            return name
    return "night" if word == "nightly" else "end of day"  # "eod"


def _number(token: str) -> float:
    return float(token) if token[0].isdigit() else float(_NUMBER_WORDS[token])


@dataclass
class _Time:
    hour: int
    minute: int
    fixed: bool  # am/pm, "h", noon, or a 24-hour value: not to be moved by a part of the day

    def __str__(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"


def _read_time(token: str) -> _Time:
    token = token.strip()
    if token in ("noon", "midday"):
        return _Time(12, 0, True)
    if token == "midnight":
        return _Time(0, 0, True)
    match = re.fullmatch(r"(\d{1,2})(?:[:.](\d{2}))?\s*(am|pm|h)?", token)
    if match is None:
        raise _not_understood(f"the time {_quote(token)}")
    hour, minute, suffix = int(match[1]), int(match[2] or 0), match[3]
    if minute > 59 or hour > 23 or (suffix in ("am", "pm") and not 1 <= hour <= 12):
        raise _not_understood(f"the time {_quote(token)} (no such time of day)")
    if suffix == "am":
        return _Time(hour % 12, minute, True)
    if suffix == "pm":
        return _Time(hour % 12 + 12, minute, True)
    return _Time(hour, minute, suffix == "h" or hour == 0 or hour > 12)


@dataclass
class _Schedule:
    interval: int | None = None  # seconds
    interval_words: str = ""
    window: tuple[int, int] | None = None  # hours, inclusive
    times: list[_Time] = field(default_factory=list)
    periods: list[str] = field(default_factory=list)
    days: set[int] = field(default_factory=set)
    day_of_month: int | None = None
    daily: bool = False
    weekly: bool = False
    monthly: bool = False
    twice: bool = False

    def found(self) -> bool:
        return bool(
            self.interval or self.times or self.periods or self.days or self.day_of_month
            or self.daily or self.weekly or self.monthly or self.twice or self.window
        )


def _set_interval(schedule: _Schedule, seconds: float, words: str) -> None:
    if seconds > MAX_INTERVAL_SECONDS:  # before round(), which overflows on inf ("every 1e400")
        raise _not_understood(f"{_quote(words)} (intervals go up to a year)")
    seconds = round(seconds)
    if schedule.interval is not None and schedule.interval != seconds:
        raise _not_understood(
            f"two different intervals ({_quote(schedule.interval_words)} and {_quote(words)})"
        )
    if seconds <= 0:
        raise _not_understood(f"{_quote(words)} as an interval")
    if seconds < MIN_INTERVAL_SECONDS:
        raise DraftIntervalTooShort(
            f"{_quote(words)} is too often: instructions run at most once a minute. "
            'Try "every minute" or "every 5 minutes".'
        )
    schedule.interval, schedule.interval_words = seconds, " ".join(words.split())


def _read_schedule(reading: _Reading) -> _Schedule:
    schedule = _Schedule()
    for pattern, reason in (
        (_EVERY_OTHER_WEEK, "as a schedule: weeks, months or years apart cannot be expressed; "
                            'try "every Monday" or "on the 1st of every month"'),
        (_NTH_WEEKDAY, "as a schedule: a weekday of a given week of the month cannot be "
                       'expressed; try "every Monday" or "on the 1st of every month"'),
        (_LAST_DAY, 'as a schedule: "the last day of the month" cannot be expressed; try '
                    '"on the 1st of every month"'),
        (_TIMES_A_DAY, "as a schedule: say the times instead, e.g. \"at 8, 12 and 17\""),
    ):
        if match := pattern.search(reading.rest):
            raise _not_understood(f"{_quote(match[0])} {reason}")

    schedule.twice = bool(reading.take(_TWICE_A_DAY))
    for match in reading.take(_EVERY_N):
        size = _UNIT_SECONDS[match["unit"][0]]
        _set_interval(schedule, _number(match["n"]) * size, match[0])
    for match in reading.take(_EVERY_OTHER):
        _set_interval(schedule, 2 * _UNIT_SECONDS[match["unit"][0]], match[0])
    for match in reading.take(_EVERY_PART_HOUR):
        _set_interval(schedule, 1800 if match["part"] == "half" else 900, match[0])
    for match in reading.take(_EVERY_UNIT):
        unit = "hour" if match["hourly"] else match["unit"]
        _set_interval(schedule, _UNIT_SECONDS[unit[0]], "every " + unit)

    _read_times(reading, schedule)
    _read_days(reading, schedule)
    for match in reading.take(_PERIOD):
        name = _period(match["p"])
        if name not in schedule.periods:
            schedule.periods.append(name)
    return schedule


def _read_times(reading: _Reading, schedule: _Schedule) -> None:
    for match in reading.take(_WINDOW):
        start, stop = _read_time(match["a"]), _read_time(match["b"])
        if start.minute or stop.minute:
            raise _not_understood(f"{_quote(match[0])}: a range of hours takes whole hours")
        end = stop.hour
        if not stop.fixed and end < start.hour and end < 12:
            end += 12  # "between 9 and 5"
        schedule.window = (start.hour, end)
    for match in reading.take(_AT):
        tokens = [match["first"], *_ONE_TIME.findall(match["more"])]
        previous: _Time | None = None
        for token in tokens:
            time = _read_time(token)
            if previous and not time.fixed and time.hour < previous.hour and time.hour < 12:
                time = _Time(time.hour + 12, time.minute, True)  # "at 9 and 5"
            schedule.times.append(time)
            previous = time
    for match in reading.take(_BARE_TIME):
        schedule.times.append(_read_time(match[0]))


def _read_days(reading: _Reading, schedule: _Schedule) -> None:
    for match in reading.take(_DAY_RANGE):
        day, last = _DAY_NUMBERS[match["a"][:3]], _DAY_NUMBERS[match["b"][:3]]
        schedule.days.add(day)
        while day != last:
            day = (day + 1) % 7
            schedule.days.add(day)
    if reading.take(_WEEKDAYS):
        schedule.days.update({1, 2, 3, 4, 5})
    if reading.take(_WEEKENDS):
        schedule.days.update({6, 0})
    for match in reading.take(_DAY_NAME):
        schedule.days.add(_DAY_NUMBERS[match["d"][:3]])
    for match in reading.take(_DAY_OF_MONTH):
        day = 1 if match["first"] else int(match["n"])
        if not 1 <= day <= 31:
            raise _not_understood(f"{_quote(match[0])} (no such day of the month)")
        if schedule.day_of_month not in (None, day):
            raise _not_understood("two different days of the month")
        schedule.day_of_month = day
    schedule.daily = bool(reading.take(_DAILY))
    schedule.weekly = bool(reading.take(_WEEKLY))
    schedule.monthly = bool(reading.take(_MONTHLY))
