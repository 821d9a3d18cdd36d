"""From what was read to a trigger: a schedule, or a watch on mail."""

from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass

from app.instructions.drafting.days import _DAY_WORDS, _WEEK_ORDER
from app.instructions.drafting.errors import (
    DraftWatchNotAvailable,
    _not_understood,
    _quote,
)
from app.instructions.drafting.reading import (
    _FILLER,
    _PERIODS,
    _SMALL_HOURS,
    _Reading,
    _Schedule,
    _Time,
)
from app.instructions.schemas import (
    CronTriggerIn,
    IntervalTriggerIn,
    WatchTriggerIn,
)

log = logging.getLogger(__name__)

# --- From what was read to a trigger ----------------------------------------------------------


def _days_field(days: set[int]) -> str:
    """A crontab day-of-week field, Monday first: "1-5", "6,0", "2,4"."""
    ordered = [d for d in _WEEK_ORDER if d in days]
    if len(ordered) in (0, 7):
        return "*"
    parts: list[str] = []
    run: list[int] = []
    for day in ordered:
        if run and day == run[-1] + 1:
            run.append(day)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
        run = [day]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
    return ",".join(parts)


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _days_words(days: set[int]) -> tuple[str, str]:
    """("every weekday", "Weekday"): the days in a phrase, and as a title's first word."""
    if len(days) == 7 or not days:
        return "every day", "Daily"
    if days == {1, 2, 3, 4, 5}:
        return "every weekday", "Weekday"
    if days == {6, 0}:
        return "on weekends", "Weekend"
    names = [_DAY_WORDS[d] for d in _WEEK_ORDER if d in days]
    if len(names) == 1:
        return f"every {names[0]}", names[0]
    if len(names) == 6:
        missing = next(_DAY_WORDS[d] for d in _WEEK_ORDER if d not in days)
        return f"every day except {missing}", f"Daily except {missing}"
    positions = [_WEEK_ORDER.index(d) for d in _WEEK_ORDER if d in days]
    if len(names) > 2 and positions == list(range(positions[0], positions[0] + len(names))):
        return f"{names[0]} to {names[-1]}", f"{names[0]} to {names[-1]}"
    return "on " + _and([n + "s" for n in names]), _and(names)


def _hours_field(window: tuple[int, int] | None, step: int) -> str:
    every = f"/{step}" if step > 1 else ""
    if window is None:
        return f"*{every}"
    first, last = window
    if first <= last:
        return f"{first}-{last}{every}"
    if step > 1:
        raise _not_understood("an interval of hours over a range that spans midnight")
    return f"{first}-23,0-{last}"


@dataclass
class _Plan:
    trigger: CronTriggerIn | IntervalTriggerIn
    when: str  # "every weekday at 08:00"
    title_head: str  # "Weekday"
    title_tail: str  # "at 08:00"
    note: str = ""


def _interval_plan(s: _Schedule, timezone: str) -> _Plan:
    assert s.interval is not None
    words = s.interval_words
    if s.times or s.periods or s.twice:
        told = _and([str(t) for t in s.times] or s.periods or ["twice a day"])
        raise _not_understood(
            f"the schedule: it has both an interval ({_quote(words)}) and a time of day "
            f"({told}), and an interval "
            'counts from when the instruction is created; try "every hour between 9 and 17" '
            'or "every day at 8"'
        )
    if s.days_of_month or s.monthly or s.weekly:
        raise _not_understood(
            f"the schedule: {_quote(words)} cannot be combined with a day of the week or month"
        )
    restricted = bool(s.days) and len(s.days) < 7
    if not restricted and s.window is None and s.minute_of_hour is None:
        # Days apart: the time of day is the saving's, which the words do not say.
        note = ("counted from when it is saved, so at the time of day it is saved"
                if s.interval >= 86400 else "")
        return _Plan(IntervalTriggerIn(type="interval", seconds=s.interval), words,
                     "Hourly" if s.interval == 3600 else "", "" if s.interval == 3600 else words,
                     note)
    # On some days or hours only, or at a minute past the hour: the same rhythm as a cron
    # expression, if it has one.
    seconds = s.interval
    whole_hours = seconds % 3600 == 0 and 24 % (seconds // 3600) == 0
    if s.minute_of_hour is not None and not whole_hours:
        raise _not_understood(
            f"{_quote(s.minute_words)} with {_quote(words)}: a minute past the hour goes with "
            'an interval of whole hours that divides a day, e.g. "every hour at :15" or '
            '"every 2 hours on the hour"'
        )
    if whole_hours:
        minute = str(s.minute_of_hour or 0)
        hour = _hours_field(s.window, seconds // 3600)
    elif seconds < 3600 and seconds % 60 == 0 and 60 % (seconds // 60) == 0:
        step = seconds // 60
        minute, hour = ("*" if step == 1 else f"*/{step}"), _hours_field(s.window, 1)
    else:
        raise _not_understood(
            f"{_quote(words)} on some days or hours only: that needs an interval that divides "
            'a day or an hour evenly, such as "every 2 hours" or "every 15 minutes"'
        )
    days_phrase, head = _days_words(s.days)
    when = words
    if s.minute_of_hour is not None:
        when += (" on the hour" if s.minute_of_hour == 0
                 else f" at {s.minute_of_hour} minutes past the hour")
    note = ""
    if s.window is not None:
        when += f" between {s.window[0]:02d}:00 and {s.window[1]:02d}:59"
        if s.afternoon_window:  # said without am or pm: shown, so the user can correct it
            a, b = s.afternoon_window
            note = (f'read "{a}" to "{b}" as {s.window[0]:02d}:00 to {s.window[1]:02d}:59; '
                    f'say "{a}am" for the morning')
        elif s.afternoon:  # "every 2 hours from 1"
            said = s.afternoon[0].said
            note = f'read "{said}" as {s.afternoon[0]}; say "{said}am" for the morning'
    if restricted:
        when += f", {days_phrase}"
    cron = f"{minute} {hour} * * {_days_field(s.days)}"
    tail = words if s.interval != 3600 or restricted else "every hour"
    return _Plan(CronTriggerIn(type="cron", cron=cron, timezone=timezone), when,
                 head if restricted else "", tail, note)


def _cron_plan(s: _Schedule, timezone: str) -> _Plan:
    if s.minute_of_hour is not None:
        raise _not_understood(
            f"{_quote(s.minute_words)}: a minute past the hour goes with an interval of hours, "
            'e.g. "every hour at :15" or "every 2 hours on the hour"'
        )
    if s.window is not None:
        raise _not_understood(
            f"the schedule: a range of hours ({s.window[0]:02d}:00 to {s.window[1]:02d}:00) "
            'needs an interval, e.g. "every hour between 9 and 17"'
        )
    times = list(s.times)
    note = ""
    if s.afternoon:  # said without am or pm: shown, so the user can correct it
        def _said(t: _Time) -> str:
            return t.said or (f"{t.hour - 12}:{t.minute:02d}" if t.minute else f"{t.hour - 12}")

        # the user's words ("quarter to 6"), the hour to say instead in figures ("5:45am")
        said = _and([f'"{s.clock_words.get(_said(t), _said(t))}" as {t}' for t in s.afternoon])
        note = f'read {said}; say "{_said(s.afternoon[0])}am" for the morning'
    if not times:
        defaults = [_PERIODS[p][0] for p in s.periods] or (
            [(8, 0), (18, 0)] if s.twice else [(8, 0)]
        )
        times = [_Time(h, m, True) for h, m in defaults]
        if not s.periods:
            note = f"no time was given, so {_and([str(t) for t in times])}"
    elif s.periods:
        adjusted = []
        for time in times:
            if "night" in s.periods and time.hour == 12 and not time.fixed:
                time = _Time(0, time.minute, True)  # "at 12 at night" is midnight
            after_midnight = "night" in s.periods and time.hour in _SMALL_HOURS
            if not time.fixed and time.hour < 12 and "morning" not in s.periods and any(
                p in s.periods for p in ("afternoon", "evening", "night", "end of day")
            ) and not after_midnight:
                time = _Time(time.hour + 12, time.minute, True)
            adjusted.append(time)
        times = adjusted
        for period in s.periods:
            within = _PERIODS[period][1]
            if not any(t.hour in within or (period == "night" and t.hour in _SMALL_HOURS)
                       for t in times):
                raise _not_understood(
                    f"the times: {_and([str(t) for t in times])} is not in the {period}"
                )
    if s.twice and len(times) != 2:
        raise _not_understood(f"the times: twice a day, but {_and([str(t) for t in times])}")
    if len({t.minute for t in times}) > 1:
        raise _not_understood(
            f"the times {_and([str(t) for t in times])} together: one instruction runs at "
            "one minute past its hours; make one instruction for each time"
        )
    hours = sorted({t.hour for t in times})
    minute = times[0].minute
    at = _and([f"{h:02d}:{minute:02d}" for h in hours])

    if s.days_of_month or s.monthly:
        if s.days and len(s.days) < 7:
            raise _not_understood(
                "the schedule: a day of the month and a day of the week cannot be combined; "
                'try "on the 1st of every month" or "every Monday"'
            )
        dates = sorted(s.days_of_month) or [1]
        if not s.days_of_month:
            note = "; ".join(n for n in (note, "monthly means the 1st") if n)
        cron = f"{minute} {','.join(map(str, hours))} {','.join(map(str, dates))} * *"
        on = f"day{'s' if len(dates) > 1 else ''} {_and([str(d) for d in dates])}"
        return _Plan(CronTriggerIn(type="cron", cron=cron, timezone=timezone),
                     f"on {on} of every month at {at}", "Monthly", f"at {at}", note)
    days = set(s.days)
    if s.weekly and not days:
        days = {1}
        note = "; ".join(n for n in (note, "weekly means Mondays") if n)
    days_phrase, head = _days_words(days)
    cron = f"{minute} {','.join(map(str, hours))} * * {_days_field(days)}"
    return _Plan(CronTriggerIn(type="cron", cron=cron, timezone=timezone),
                 f"{days_phrase} at {at}", head, f"at {at}", note)


# --- Watch triggers: understood, not available yet --------------------------------------------

_WHENEVER = r"\b(?:whenever|when|each\s+time|every\s+time|as\s+soon\s+as|if)\b"
_MAILWORD = r"(?:e-?mails?|mails?|messages?|anything|something)"
_ADDRESS = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|[\w.-]+"
_WATCH_MAIL_FROM = re.compile(
    rf"{_WHENEVER}[^.;!?]*?(?:\b(?:new\s+|an?\s+)?{_MAILWORD}(?:\s+comes?|\s+arrives?)?\s+from"
    rf"|\bfrom)\s+(?:the\s+|my\s+|our\s+)?(?P<who>{_ADDRESS})"
    rf"|{_WHENEVER}\s+(?:my\s+|the\s+)?(?P<sender>{_ADDRESS})\s+(?:e-?mails|writes|sends)\b"
)
# "when I get mail about the merger": the mention, then its topic, up to a word that ends it.
# Found as `when[^.;!?]*?mention topic` it was tried with each "when" and each mention after
# it, the topic read to its end from each: cubic in a sentence built of them (see
# _mail_about).
_WHEN = re.compile(_WHENEVER)
_CLAUSE_STOP = re.compile(r"[.;!?]")
_MAIL_ABOUT = re.compile(rf"\b{_MAILWORD}\s+(?:about|regarding|on|mentioning)(?=\s)")
_TOPIC = re.compile(
    r"\s+(?P<topic>[\w\"' -]+?)(?=\s*(?:[,.;!?]|$|\s(?:arrives?|comes?|lands?|and|tell|let|"
    r"notify|send|email|ping|i\b)))"
)
_TOPIC_RUN = re.compile(r"[\w\"' -]*")  # what a topic may span
_WATCH_THING = re.compile(
    rf"{_WHENEVER}\s+(?:i\s+(?:get|receive)\s+)?(?:an?\s+|any\s+|new\s+|the\s+)*(?:new\s+)?"
    r"(?P<thing>[a-z][\w-]+?)s?\s+(?:arrives?|comes?\s+in|lands?|is\s+received|"
    r"are\s+received|shows?\s+up)\b"
)
_WATCH_FOLDER = re.compile(
    r"\bin\s+(?:the\s+|my\s+)?(?:folder\s+(?P<a>\"[^\"]+\"|'[^']+'|[\w.-]+)"
    r"|(?P<b>\"[^\"]+\"|'[^']+'|[\w.-]+)\s+folder)"
)
_WATCH_CHANGE = re.compile(
    rf"{_WHENEVER}[^.;!?]*?\b(?:changes?|changed|is\s+(?:updated|edited|added|modified)|"
    r"are\s+(?:updated|edited|added|modified)|arrives?|comes?\s+in|i\s+(?:get|receive))\b"
)
# Arrivals that are not one kind of mail: "whenever mail arrives" is any mail.
_NOT_A_KIND = frozenset(
    "mail email e-mail message anything something thing document doc file sheet note".split()
)


# Words a sender is not: "whenever mail from arrives", "when mail from someone comes".
_NOT_A_SENDER = _FILLER | frozenset(
    "arrives arrive arrived comes come came lands land landed gets get shows show is are "
    "someone somebody anyone anybody everyone everybody people nobody".split()
)


_MAIL_NOUN = re.compile(r"\b(?:e-?mails?|mails?|messages?|inbox|gmail)\b")
_DRIVE_NOUN = re.compile(r"\b(?:docs?|documents?|files?|drive|sheets?|spreadsheets?|folders?)\b")
_FOLDER_ID_HOW = (
    'a watch on a Drive folder needs the folder\'s id, which drafting cannot look up: create '
    'the instruction with {"type": "watch", "drive_folder_id": "..."}, the id being the last '
    "part of the folder's URL (https://drive.google.com/drive/folders/ID) (in the dashboard's "
    'editor: "When new mail or files arrive", "Drive folder id"), or use the closest schedule, '
    '"every hour", e.g. "every hour '
)


@dataclass
class _WatchPlan:
    trigger: WatchTriggerIn
    when: str  # "whenever mail from billing@example.com arrives"
    title: str  # "New mail from billing@example.com"


def _mail_watch(query: str, when: str, title: str) -> _WatchPlan:
    return _WatchPlan(WatchTriggerIn(type="watch", gmail_query=query), when, title)


def _mail_about(low: str) -> re.Match[str] | None:
    """The topic of the first mention of mail about something said after "when", "if"...
    in its clause (no . ; ! ? between), as `when[^.;!?]*?mention topic` reads it, in time
    linear in the sentence: each "when" and each clause stop is found once, and a topic
    that does not end is read once for the mentions it spans (it does not end for them
    either: they read on to the same place)."""
    whens = list(_WHEN.finditer(low))
    ends = [when.end() for when in whens]
    stops = [stop.start() for stop in _CLAUSE_STOP.finditer(low)]
    read_to = 0
    for mention in _MAIL_ABOUT.finditer(low):
        if mention.start() < read_to:
            continue
        said = bisect.bisect_right(ends, mention.start())  # the "when"s ended before it
        stop = bisect.bisect_left(stops, mention.start())
        clause = stops[stop - 1] + 1 if stop else 0
        if not said or whens[said - 1].start() < clause:
            continue
        if topic := _TOPIC.match(low, mention.end()):
            return topic
        run = _TOPIC_RUN.match(low, mention.end())
        read_to = run.end() if run else mention.end()
    return None


def _watch_plan(reading: _Reading) -> _WatchPlan | None:
    """The watch trigger the sentence asks for: a Gmail query for mail, None when it asks for
    no event; raises DraftWatchNotAvailable for a Drive folder (a watch needs its id) or an
    event it cannot tell mail from documents in."""
    low, text = reading.low, reading.text
    if match := _WATCH_MAIL_FROM.search(low):
        who = text[match.start("who"):match.end("who")] if match["who"] else text[
            match.start("sender"):match.end("sender")]
        who = who.lower()
        if who in _NOT_A_SENDER:  # "whenever mail from arrives": no sender was said
            raise _not_understood(
                f"who the mail to watch for is from in {_quote(text)}: name the sender, e.g. "
                '"whenever mail from billing@example.com arrives tell me"'
            )
        return _mail_watch(f"from:{who}", f"whenever mail from {who} arrives",
                           f"New mail from {who}")
    if match := _mail_about(low):
        topic = text[match.start("topic"):match.end("topic")].strip(" \"'")
        topic = " ".join(re.sub(r"^(?:the|a|an)\s+", "", topic, flags=re.I).split()[:6])
        if not [w for w in re.findall(r"[\w'-]+", topic.lower()) if w not in _FILLER]:
            raise _not_understood(
                f"what the mail to watch for is about in {_quote(text)}: name the topic, e.g. "
                '"when I get mail about the merger tell me"'
            )
        term = f'"{topic}"' if " " in topic else topic
        return _mail_watch(f"subject:{term} OR {term}", f"whenever mail about {topic} arrives",
                           f"New mail about {topic}")
    if ((match := _WATCH_THING.search(low)) and match["thing"] not in _NOT_A_KIND
            and match["thing"] not in _FILLER):
        thing = match["thing"]
        article = "an" if thing[0] in "aeiou" else "a"
        return _mail_watch(f"subject:{thing} OR {thing}", f"whenever {article} {thing} arrives",
                           f"New {thing}s")
    if (match := _WATCH_FOLDER.search(low)) and _WATCH_CHANGE.search(low):
        span = "a" if match["a"] else "b"
        folder = text[match.start(span):match.end(span)].strip("\"'")
        understood = f"whenever a document in the folder '{folder}' changes"
        raise DraftWatchNotAvailable(
            f"Understood {_quote(understood, 120)} (Drive folder: '{folder}'): {_FOLDER_ID_HOW}"
            f"tell me what changed in the folder '{folder}'\"."
        )
    if match := _WATCH_CHANGE.search(low):
        understood = _quote(" ".join(text[match.start():match.end()].split()), 120)
        rest = reading.rest  # without the channel words: "email me" is not mail to watch
        mail, drive = bool(_MAIL_NOUN.search(rest)), bool(_DRIVE_NOUN.search(rest))
        if mail and not drive:
            return _mail_watch("in:inbox", "whenever new mail arrives in the inbox", "New mail")
        if drive and not mail:
            raise DraftWatchNotAvailable(
                f"Understood {understood} (Drive: changed files): {_FOLDER_ID_HOW}"
                'tell me what changed in my documents".'
            )
        raise DraftWatchNotAvailable(
            f"Understood {understood} as an event, but not what to watch: say which mail, e.g. "
            '"whenever mail from billing@example.com arrives tell me" or "whenever an invoice '
            'arrives tell me", or create the instruction with a watch trigger on a Drive '
            'folder ({"type": "watch", "drive_folder_id": ...}, the id from the folder\'s URL); '
            'or use the closest schedule, "every hour".'
        )
    return None
