"""Days of the week in a sentence, and whether each is the schedule's or the task's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.instructions.drafting.errors import _not_understood, _quote

if TYPE_CHECKING:
    from app.instructions.drafting.reading import _Reading, _Schedule

_DAY = r"monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_DAY_SHORT = r"mon|tues?|weds?|thu(?:rs?)?|fri|sat|sun"
# Crontab numbers the weekdays from Sunday = 0.
_DAY_NUMBERS = {name[:3]: (i + 1) % 7 for i, name in enumerate(_DAY.split("|"))}
_DAY_WORDS = {0: "Sunday", 1: "Monday", 2: "Tuesday", 3: "Wednesday", 4: "Thursday",
              5: "Friday", 6: "Saturday"}
_WEEK_ORDER = (1, 2, 3, 4, 5, 6, 0)
_DAY_RANGE = re.compile(
    rf"\b(?:(?:every|each|on|from)\s+)?(?P<a>{_DAY}|{_DAY_SHORT})s?\s*"
    rf"(?:-|to|through|thru|till|until)\s*(?P<b>{_DAY}|{_DAY_SHORT})s?\b"
)
# "on workdays", "on the workday", "on a workday", "on any workday", "in the workday", "each
# work-day": Monday to Friday, as "every workday" is ("in" and "during" with an interval
# are hours, and refused: see reading._UNREAD_HOURS).
_WEEKDAYS = re.compile(
    r"\b(?:(?:every|each|on|during)\s+(?:the\s+|an?\s+|any\s+)?|in\s+the\s+)?"
    r"(?:week[\s-]?days?|work[\s-]?days?|working\s+days?|business\s+days?)\b"
)
_WEEKENDS = re.compile(
    r"\b(?:(?:every|each|on|at|over|during)\s+(?:the\s+|an?\s+|any\s+)?)?weekends?\b"
)
# "on a Monday", "on any Monday": on Mondays, as "on a workday" is on workdays.
_DAY_NAME = re.compile(
    rf"\b(?:(?:every|each)\s+|on\s+(?P<any>(?:an?|any)\s+)?)?(?P<d>{_DAY}|tues|thurs)s?\b"
)
# "mon", "wed", "weds", "sat", "sun"...: read as days only where a day is meant, after "every",
# "each" or "on", or in a list with another day ("Mon, Wed, Fri", "Sat and Sun"), for
# "wed", "sat" and "sun" are words too ("the sun", "I sat").
_SHORT_DAY_NAME = re.compile(rf"\b(?P<on>(?:every|each|on)\s+)?(?P<d>{_DAY_SHORT})\b")


# A word where a day is said ("every", "each", "on", or listed after a day read: "\0" marks
# it, see _Reading.take) that is no day but is spelt like one: "wednsday", "mondy", "frday".
_DAY_SLOT = re.compile(
    r"(?:\b(?:every|each|on)\s+|\0[\s,&/-]*(?:(?:and|or|to|through|thru|till|until)\s+)?)"
    r"(?P<w>[a-z]{4,})\b(?!')"
)
# Words spelt near a day that are words of their own.
_NOT_MISSPELT = frozenset("sundry sundae sunday's monday's".split())


def _distance(a: str, b: str) -> int:
    """Edits from `a` to `b`: a letter added, dropped, changed, or two swapped."""
    rows = [list(range(len(b) + 1))]
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (x != y))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                cost = min(cost, rows[-2][j - 2] + 1)
            row.append(cost)
        rows.append(row)
    return rows[-1][-1]


def _misspelt_day(rest: str) -> tuple[str, str] | None:
    """A word said where a day goes that looks like a misspelt day, and the day it looks
    like: ("wednsday", "Wednesday"). One edit away, or two for a longer word that ends as
    a day does ("wensday")."""
    for match in _DAY_SLOT.finditer(rest):
        word = match["w"]
        if word in _NOT_MISSPELT or re.fullmatch(rf"(?:{_DAY}|{_DAY_SHORT})s?", word):
            continue
        stems = {word, word.removesuffix("s")}  # "wednsdays" as "wednsday"
        for day in _DAY.split("|"):
            for stem in stems:
                edits = _distance(stem, day) if stem[0] == day[0] else 3
                if edits <= 1 or (edits == 2 and len(stem) >= 6
                                  and stem.endswith(("day", "dy"))):
                    return word, day.capitalize()
    return None


@dataclass
class _DayPhrase:
    """Days of the week the sentence names: of the schedule, or of the task."""

    start: int
    end: int
    days: set[int]
    strong: bool  # a range or a plural ("Mondays", "weekdays"): how a schedule says days
    every: bool  # "every Monday", "each weekday": only ever a schedule


def _take_days(reading: _Reading) -> list[_DayPhrase]:
    """The days of the week named in what is left, each phrase blanked out once read."""
    phrases: list[_DayPhrase] = []

    def add(match: re.Match[str], days: set[int], strong: bool) -> None:
        every = match[0].startswith(("every", "each"))
        phrases.append(_DayPhrase(match.start(), match.end(), days, strong, every))

    for match in reading.take(_DAY_RANGE):
        day, last = _DAY_NUMBERS[match["a"][:3]], _DAY_NUMBERS[match["b"][:3]]
        days = {day}
        while day != last:
            day = (day + 1) % 7
            days.add(day)
        add(match, days, True)
    for match in reading.take(_WEEKDAYS):
        add(match, {1, 2, 3, 4, 5}, match[0].endswith("s"))
    for match in reading.take(_WEEKENDS):
        add(match, {6, 0}, match[0].endswith("s"))
    for match in reading.take(_DAY_NAME):
        add(match, {_DAY_NUMBERS[match["d"][:3]]},
            match.end("d") < match.end() or bool(match["any"]))
    _take_short_days(reading, phrases)
    return sorted(phrases, key=lambda p: p.start)


def _take_short_days(reading: _Reading, phrases: list[_DayPhrase]) -> None:
    """Short day names said as days: after "every", "each" or "on", or listed beside a day."""
    found = list(_SHORT_DAY_NAME.finditer(reading.rest))
    spans = [(p.start, p.end) for p in phrases]
    taken = [bool(m["on"]) for m in found]

    shorts = {m.span() for m in found}

    def listed(start: int, end: int, other: tuple[int, int]) -> bool:
        a, b = (end, other[0]) if end <= other[0] else (other[1], start)
        # Only spaces between: a list of short names ("mon wed fri"), not "Friday sat".
        return bool(re.search(r"\S", reading.rest[a:b] or "") or other in shorts) and bool(
            _SCHEDULE_GLUE.fullmatch(reading.rest, a, b))

    changed = True
    while changed:  # a short name beside a day ("Mon, Wed", "Sat and Sun") is a day
        changed = False
        for i, match in enumerate(found):
            if taken[i]:
                continue
            near = spans + [found[j].span() for j in range(len(found)) if j != i]
            if any(listed(match.start(), match.end(), other) for other in near):
                taken[i] = changed = True
    for i, match in enumerate(found):
        if taken[i]:
            start, end = match.span()
            reading.rest = reading.rest[:start] + "\0" * (end - start) + reading.rest[end:]
            phrases.append(_DayPhrase(start, end, {_DAY_NUMBERS[match["d"][:3]]}, False,
                                      match[0].startswith(("every", "each"))))


# Words that tie a day to the task, not to the schedule, when right before it: "last
# Friday", "next Monday", "the weekend", "tomorrow's Tuesday meetings", "the team's Monday
# standup".
_TASK_DAY_BEFORE = re.compile(
    r"(?:^|[^\w'])(?:last|next|this|that|coming|upcoming|past|previous|following|same|the|a|an|"
    r"[a-z]+'s|[a-z]+s')\s+$"
)
# Words that tie one day to the task ("tasks for Friday", "mail from Monday", "due by
# Friday"), but not days said as a schedule says them: "a reminder for Mondays", "for
# Friday at 5pm".
_TASK_DAY_AFTER_WORD = re.compile(
    r"(?:^|[^\w'])(?:of|for|from|since|until|till|before|after|by)\s+$"
)
# Between two phrases of one schedule: "every weekday at 8", "Monday, Wednesday and Friday".
_SCHEDULE_GLUE = re.compile(r"(?:[\s,;&/-]|(?:and|or|then|plus)\b)*")
_GLUE_CHAR = re.compile(r"[\s,;&/-]")
_GLUE_WORDS = ("and", "or", "then", "plus")


def _glue_start(rest: str, end: int) -> int:
    """Where the glue of `_SCHEDULE_GLUE` that ends at `end` starts: walked back a piece at a
    time. Searched for as `(?:glue)*$` it was tried from each place before `end`, each try
    reading on to the end of its run: quadratic in a run of commas, for each day said."""
    start = end
    while start > 0:
        if _GLUE_CHAR.match(rest, start - 1):
            start -= 1
            continue
        word = next((w for w in _GLUE_WORDS
                     if start >= len(w) and rest.startswith(w, start - len(w))), None)
        head = start - len(word) if word else 0
        if word is None or (head > 0 and re.match(r"\w", rest[head - 1])):
            break  # "\b(?:and|or|then|plus)": a word of its own, not the end of one
        start = head
    return start
# Words before the task's first word: the task starts at the first word that is none.
_LEAD_WORDS = frozenset(
    "and or then also plus on at in the from during over around about to but hey please "
    "pilotlight ok okay".split()
)
# A bare day said as the task's adjective ("list Saturday shifts"), unless the next word is
# the schedule's ("Monday at 8", "Monday and Friday") or no noun ("remind me Friday to ...",
# "tell me Friday what ...").
_NOT_A_NOUN = frozenset(
    "at and or then plus in from to until till through thru around about on every each "
    "but except for of by with within without before after during over since "
    "a an the my your our their his her its this that these those any some all no "
    "me you us them him it i we they what which who whom whose when where why how whether if "
    "so because as please too only also again instead just once "
    "is are was were be will would should can could must may".split()
)
# Words that open a clause inside the task: a day after one ("tell me who is off on
# Monday") may be what the clause is about.
_CLAUSE_WORDS = frozenset(
    "what which who whom whose when where why how whether if that what's who's".split()
)
# A subject after the task's first word opens a clause without a clause word: "the mail I
# sent on Friday", "the meetings we had on Monday".
_CLAUSE_SUBJECTS = frozenset("i we they he she i've we've they've i'd we'd".split())
# How a day is said when it is not the bare day ("on Monday", "every Monday").
_DAY_LEAD = re.compile(r"(?:every|each|on|from|during|over|at)\b")


def _place_days(
    reading: _Reading, schedule: _Schedule, phrases: list[_DayPhrase], unread: str, *,
    every_period: bool,
) -> None:
    """Tell the days of the schedule from days the task talks about, and refuse when the
    sentence does not say which. A day is the task's when its own words say so ("Friday's
    meetings", "last Monday", "the weekend", "Saturday shifts"), or when it stands inside
    the task, after the task's first word and apart from the schedule's other phrases,
    while the schedule already has its days ("every day at 9 tell me who is off on
    Monday"). Otherwise a day is the schedule's, as the sentence's only days ("at 9
    summarise my mail on Monday"), unless a time is said and the day stands in a clause of
    the task ("at 9 tell me who is off on Monday"): that is refused. The task's days are
    left in the sentence for the task."""
    if not phrases:
        return
    low, rest = reading.low, reading.rest
    # Where the rest of the schedule was read: blanked out here, and not by a day phrase.
    read = [c == "\0" and u != "\0" for c, u in zip(rest, unread, strict=True)]
    for phrase in phrases:
        read[phrase.start:phrase.end] = [False] * (phrase.end - phrase.start)
    task_start = next(
        (m.start() for m in re.finditer(r"[a-z][a-z'-]*", rest) if m[0] not in _LEAD_WORDS),
        len(rest),
    )

    def next_to(phrase: _DayPhrase, marked: list[bool]) -> bool:
        left = _glue_start(rest, phrase.start)
        right = _SCHEDULE_GLUE.match(rest, phrase.end)
        return bool((left > 0 and marked[left - 1])
                    or (right and right.end() < len(rest) and marked[right.end()]))

    placed: dict[int, str] = {}  # index in phrases -> "schedule" or "task"

    def spread(side: str, marked: list[bool]) -> None:
        """Place on `side` every unplaced day next to a `marked` place, until none is."""
        changed = True
        while changed:
            changed = False
            for i, phrase in enumerate(phrases):
                if i not in placed and next_to(phrase, marked):
                    placed[i] = side
                    marked[phrase.start:phrase.end] = [True] * (phrase.end - phrase.start)
                    changed = True

    tied: set[int] = set()  # after "for", "by", "from"...: the task's unless said as a schedule
    for i, phrase in enumerate(phrases):
        if low.startswith("'", phrase.end) or _TASK_DAY_BEFORE.search(low, 0, phrase.start):
            placed[i] = "task"
        elif _TASK_DAY_AFTER_WORD.search(low, 0, phrase.start):
            tied.add(i)
        elif phrase.every or phrase.start < task_start:
            placed[i] = "schedule"
            read[phrase.start:phrase.end] = [True] * (phrase.end - phrase.start)
    # A day beside a schedule's phrase (or beside such a day) is the schedule's.
    spread("schedule", read)
    # "weekly" and "every week" give no day of their own: "every week tell me on Friday ..."
    # runs on Fridays (Mondays only when the sentence names no day of the schedule).
    has_days = (
        any(placed.get(i) == "schedule" for i in range(len(phrases)))
        or schedule.daily or every_period or schedule.monthly
        or bool(schedule.days_of_month)
    )
    for i, phrase in enumerate(phrases):
        if i in placed:
            continue
        if i in tied and (has_days or not phrase.strong):
            placed[i] = "task"  # "list the tasks for Friday", "due by Friday"
            continue
        # Read in `rest`, where the schedule's words are blanked: "Friday morning" is none.
        after = re.match(r"\s+([a-z][a-z'-]*)", rest[phrase.end:])
        if (not low[:phrase.end].endswith("s") and not _DAY_LEAD.match(low, phrase.start)
                and after and after[1] not in _NOT_A_NOUN):
            placed[i] = "task"  # "list Saturday shifts", "the Monday to Friday rota"
    task = [False] * len(rest)
    for i, phrase in enumerate(phrases):
        if placed.get(i) == "task":
            task[phrase.start:phrase.end] = [True] * (phrase.end - phrase.start)
    spread("task", task)  # "Saturday and Sunday shifts": a day beside the task's is the task's
    has_time = bool(schedule.times or schedule.periods or schedule.interval or schedule.window
                    or schedule.twice)
    undecided = [i for i in range(len(phrases)) if i not in placed]
    # A list of days ("Monday, Wednesday and Friday") says days as a plural does.
    listed: set[int] = set()
    for i, j in zip(undecided, undecided[1:], strict=False):
        if _SCHEDULE_GLUE.fullmatch(rest, phrases[i].end, phrases[j].start):
            listed |= {i, j}
    for i, phrase in enumerate(phrases):
        if i in placed:
            continue
        strong = phrase.strong or i in listed
        # With no other days, the day is the schedule's ("at 9 summarise my mail on Monday",
        # "at 9 tell me on Friday what is still open"), unless it stands in a clause of the
        # task, which may be about it ("at 9 tell me who is off on Monday", "at 9 summarise
        # the mail I sent on Friday").
        said = re.findall(r"[a-z][a-z']*", rest[task_start:phrase.start])
        in_clause = (not _CLAUSE_WORDS.isdisjoint(said)
                     or not _CLAUSE_SUBJECTS.isdisjoint(said[1:]))
        # "weekly" and "every week" say when to run as a time does: "every week tell me
        # which meetings I had on Friday" is refused, never saved to run on Fridays.
        if (has_days and phrase.strong) or (not has_days and (has_time or schedule.weekly)
                                            and not strong and in_clause):
            words = _quote(reading.text[phrase.start:phrase.end])
            days = {frozenset({1, 2, 3, 4, 5}): "weekday", frozenset({6, 0}): "weekend"}.get(
                frozenset(phrase.days), _DAY_WORDS[min(phrase.days)])
            raise _not_understood(
                f"{words} in {_quote(reading.text)}: it could be when to run or what the task "
                f'is about; if it is when, put it with the schedule, e.g. "every {days} at 8 '
                '..."; if it is the task\'s, say when to run, e.g. "every day at 8 ..."'
            )
        placed[i] = "task" if has_days else "schedule"
    for i, phrase in enumerate(phrases):
        if placed[i] == "schedule":
            schedule.days |= phrase.days
            schedule.marks.append((phrase.start, "d"))
        else:  # back in the sentence, for the task
            reading.rest = (reading.rest[:phrase.start] + low[phrase.start:phrase.end]
                            + reading.rest[phrase.end:])
    if schedule.daily and schedule.days:
        raise _not_understood(
            f"the days in {_quote(reading.text)}: it says both every day and some days of the "
            'week; say one, e.g. "every day at 8" or "every Monday at 8"'
        )
