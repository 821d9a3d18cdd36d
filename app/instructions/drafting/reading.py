"""Reading a sentence: the times, days and intervals it names."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from app.instructions.drafting.clock import (
    _AT_LEAD,
    _HOUR_WORD,
    _MINUTE_WORD,
    _THEN,
    _clock_phrases,
    _word_number,
)
from app.instructions.drafting.days import (
    _DAY,
    _DAY_NUMBERS,
    _DAY_SHORT,
    _DayPhrase,
    _misspelt_day,
    _place_days,
    _take_days,
)
from app.instructions.drafting.errors import (
    MAX_INTERVAL_SECONDS,
    DraftIntervalTooShort,
    _not_understood,
    _quote,
)
from app.instructions.drafting.task_times import _place_times
from app.instructions.drafting.zones import _read_place, _read_zone
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


# Words that say nothing about the task (nor name a sender or a topic).
_FILLER = frozenset(
    "a an the and or but of to in on at for by with from about into is are was were be been "
    "it its this that these those there here me my mine our us we i you your please then also "
    "just tell remind notify let know send give show ping alert what which who whom when how "
    "any some new latest recent all every each up hey pilotlight ok okay".split()
)
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty-five": 45, "sixty": 60, "ninety": 90,
}
_NUM = r"\d+(?:\.\d+)?|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
_UNIT = r"seconds?|secs?|minutes?|mins?|hours?|hrs?|h|days?"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# "8", "8:30", "8.30", "8h30" (and "8:30:00": seconds are read, and refused unless 00);
# "0830" and "930" where a time is meant, not "at 2024 prices" (see clock._THEN).
_TIME = (rf"noon|midday|midnight|(?:\d{{3,4}}(?![\d:.])(?=\s*(?:am|pm)\b|{_THEN})"
         r"|\d{1,2}(?:[:.h]\d{2}(?::\d{2})?)?)(?:\s*(?:am|pm|h)(?![a-z]))?")
_EVERY = r"(?:every|each)\s+"

_ONE_OFF = re.compile(
    # "tomorrow's meetings", "next Monday's agenda": what the task is about, not when it runs
    r"\b(?:(?:tomorrow|tonight|this\s+(?:morning|afternoon|evening|week|month|weekend|"
    rf"{_DAY})|next\s+(?:week|month|weekend|{_DAY}))\b(?!')|in\s+(?:{_NUM})\s+(?:{_UNIT})|"
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
_NTH = r"(?:other|alternate|second|third|fourth|fifth|\d+(?:st|nd|rd|th)?|two|three|four)"
_EVERY_OTHER_WEEK = re.compile(
    rf"\b{_EVERY}{_NTH}\s+(?:weeks?|months?|years?|(?:{_DAY})s?)\b"
)
_ORDINAL = r"(?:first|second|third|fourth|fifth|last|1st|2nd|3rd|4th|5th)"
_NTH_WEEKDAY = re.compile(
    rf"\b{_ORDINAL}\s+(?:{_DAY})s?\s+(?:of|in)\b"
    rf"|\b(?:{_EVERY}|on\s+the\s+|on\s+every\s+){_ORDINAL}\s+(?:{_DAY})s?\b"
)
_RARER = re.compile(
    r"\b(?:(?:bi-?weekly|fortnightly|bi-?monthly|semi-?monthly|quarterly|yearly|annual(?:ly)?)"
    # Only as a schedule: at the end, before punctuation or a schedule's or a task's first
    # word ("quarterly, summarize...", "bi-weekly on Mondays"); an adjective of the task
    # ("the quarterly report", "annual leave requests", "bi-weekly sprint notes") is not.
    r"(?=\s*(?:$|[,.;:!?)]|\s(?:on|at|from|in|by|send|tell|give|remind|check|e-?mail|mail|"
    r"summari[sz]e|list|digest|notify|let)\b))"
    r"|(?:every|each|a|per)\s+fortnight"
    # "a year" alone is the task's ("older than a year"); "every quarter hour" an interval
    r"|(?:every|each|once\s+a|once\s+per|per)\s+(?:year|quarter)(?!\s+(?:of\s+an\s+)?hour))\b"
)
_LAST_DAY = re.compile(r"\blast\s+(?:working\s+|business\s+)?day\s+of\b")
_TIMES_A_DAY = re.compile(
    r"\b(?:\d+|three|four|five|six|several|a\s+few)\s+times\s+(?:a|per)\s+day\b"
)
_TWICE_A_DAY = re.compile(r"\btwice\s+(?:a\s+day|per\s+day|daily)\b")
# "twice a week", "3 times a month": read only with as many days said ("twice a week on
# Mondays and Thursdays"), never as Mondays or the 1st alone.
_TIMES_A = re.compile(
    r"\b(?:(?P<n>twice|two\s+times|three\s+times|four\s+times|five\s+times|\d+\s+times|"
    r"several\s+times|a\s+few\s+times)\s+(?:a|per|each|every)\s+(?P<unit>week|month)"
    r"|(?P<n2>twice)\s+(?P<unit2>week|month)ly)\b"
)
_COUNTS = {"twice": 2, "two times": 2, "three times": 3, "four times": 4, "five times": 5}
# "at the end of every month", "mid-month": a day of the month this has no field for.
_PART_OF = re.compile(
    r"\b(?:(?:at|by|on|in|towards?|around)\s+)?(?:the\s+)?(?P<part>end|close|middle)\s+of\s+"
    r"(?P<which>the\s+|each\s+|every\s+)?(?P<unit>month|week)\b"
    r"|\bmonth[\s-]end\b|\bmid[\s-]?(?P<mid>month|week)\b"
)
_EVERY_N = re.compile(
    rf"\b{_EVERY}(?P<n>{_NUM}|(?:a\s+)?couple(?:\s+of)?)\s*(?P<unit>{_UNIT})\b"
)
# "every hour and a half", "every 1 hour 30 minutes", "every one and a half hours",
# "every 1h30": the parts added up.
_PART = r"(?P<part>a\s+half|a\s+quarter|three\s+quarters)"
_EVERY_COMPOUND = re.compile(
    rf"\b{_EVERY}(?:(?P<n>{_NUM})\s*|an?\s+)?(?P<unit>{_UNIT})\s+(?:and\s+)?"
    rf"(?:{_PART}|(?P<n2>{_NUM})\s*(?P<unit2>{_UNIT}))\b"
    rf"|\b{_EVERY}(?P<n3>{_NUM})\s+and\s+(?P<part3>a\s+half|a\s+quarter)\s+(?P<unit3>{_UNIT})\b"
    r"|\b(?:every|each)\s+(?P<hours>\d+)h(?P<minutes>[0-5]\d)(?:m(?:ins?)?)?\b"
)
_PARTS = {"a half": 0.5, "a quarter": 0.25, "three quarters": 0.75}
# The minute past each hour an interval of hours runs at: "every hour on the hour", "every
# hour at :15", "every 2 hours at quarter past the hour".
_MINUTE_OF_HOUR = re.compile(
    r"(?:\b(?P<top>on\s+the\s+hour|at\s+the\s+top\s+of\s+(?:the|every|each)\s+hour)"
    r"|\b(?P<half>(?:at|on)\s+the\s+(?:half[\s-]+hour|bottom\s+of\s+(?:the|every|each)\s+hour))"
    r"|(?:\b(?:at|on)\s+)?(?<![\w:.])(?:xx|hh)?:(?P<m>[0-5]\d)"
    rf"|\b(?:at\s+)?(?P<m2>\d{{1,2}}|{_MINUTE_WORD}|(?:a\s+)?quarter|half)\s+(?:minutes?\s+|mins?\s+)?"
    r"(?:past|after)\s+(?:the|each|every)\s+hour)(?![\w:-])"  # not "the hour-long call"
)
# "every few hours": no number said.
_EVERY_FEW = re.compile(rf"\b{_EVERY}(?:few|several|some|many|couple\s+more)\s+(?:{_UNIT})\b")
_EVERY_OTHER = re.compile(rf"\b{_EVERY}(?:other|second|2nd)\s+(?P<unit>hour|day)\b")
_EVERY_PART_HOUR = re.compile(
    rf"\b{_EVERY}(?P<part>half|quarter)[\s-]+(?:(?:of\s+)?an\s+)?hour\b"
)
_EVERY_UNIT = re.compile(
    # "every second Monday" is not every second; "every hour Monday to Friday" is hourly
    rf"\b(?:{_EVERY}|once\s+(?:an?|per)\s+|per\s+)(?P<unit>second|minute|hour)\b"
    rf"(?![\s-]*(?:day|week|month|year))(?<!second(?=[\s-]*(?:{_DAY})))"
    r"|\b(?P<hourly>hourly)\b"
)
_WINDOW = re.compile(
    r"\b(?:between|from)\s+(?P<a>\d{1,2}(?::\d{2})?(?:\s*(?:am|pm))?)\s*(?:and|to|-|until|till)"
    r"\s*(?P<b>\d{1,2}(?::\d{2})?(?:\s*(?:am|pm))?)(?![\d:/])"  # "from 10-8/3": crontab's
)
# "every 2 hours from 9", "every hour starting at 8": the interval's hours from then on.
_FROM = re.compile(
    r"\b(?:from|starting(?:\s+(?:at|from))?|beginning(?:\s+(?:at|from))?)\s+"
    r"(?P<t>\d{1,2}(?:[:.h]\d{2})?(?:\s*(?:am|pm)(?![a-z]))?)(?![\d:])"
    # a time, not a count of the task's ("mail from 3 clients"): what follows is the schedule's
    # or the task's first word, or nothing
    r"(?=\s*(?:$|[,.;:!?\0]|(?:on|onwards?|every|each|daily|in|check|summari[sz]e|tell|send|"
    r"list|digest|e-?mail|mail|notify|remind|give|let|show|ping|alert|push|what)\b))"
)
_AT = re.compile(
    rf"(?:\b(?:at|around)\s+(?:about\s+|around\s+)?|(?<![\w.])@\s*)(?P<first>{_TIME})"
    # not the first hour of a range ("at 10-12", "at 10-8/3": see _UNREAD_RANGE)
    rf"(?P<more>(?:\s*(?:,|and|&)\s*(?:at\s+)?(?:{_TIME}))*)(?![\d:]|\s*[-/]\s*\d)"
)
_BARE_TIME = re.compile(
    r"(?<![\d:.])(?<!every )(?<!each )"
    r"\b(?:\d{1,2}[:h]\d{2}(?::\d{2})?(?:\s*(?:am|pm)(?![a-z]))?|\d{1,2}\s*(?:am|pm)(?![a-z])"
    r"|noon|midday|midnight)(?![\d:]|\s*[-/]\s*\d)"
)
_ONE_TIME = re.compile(_TIME)
# Days left out: "every day except Sunday", "not on weekends", "weekdays but not Friday".
# Atomic: "tues" is "tues", "tues" + "" or "tue" + "s" to the alternatives, and a list of
# them that fails to end on a word ("tuesortuesor...x") was tried in each of 3**n ways.
_DAY_SET = (
    rf"(?>(?:{_DAY}|{_DAY_SHORT})s?\s*(?:-|to|through|thru|till|until)\s*(?:{_DAY}|{_DAY_SHORT})s?"
    rf"|week[\s-]?days?|work[\s-]?days?|working\s+days?|business\s+days?|weekends?"
    rf"|(?:{_DAY}|tues|thurs|{_DAY_SHORT})s?)"
)
_EXCEPT_WORD = (
    r"except(?:\s+(?:on|for))?|excluding|but\s+not(?:\s+on)?|(?:and\s+)?not\s+on|never\s+on|"
    r"other\s+than(?:\s+on)?|apart\s+from|besides|skip(?:ping)?|"
    r"(?:do\s+not|don't|dont|never)\s+run\s+on"
)
_EXCEPT_DAYS = re.compile(
    rf"\b(?:{_EXCEPT_WORD})\s+(?:the\s+)?(?P<days>{_DAY_SET}"
    rf"(?:\s*(?:,|and|or|&|nor)\s*(?:on\s+)?(?:the\s+)?{_DAY_SET})*)\b"
)
_MONTH = (r"(?:january|february|april|june|july|august|september|october|november|december|"
          r"jan|feb|apr|jun|jul|aug|sept?|oct|nov|dec)")
_MONTH_ANY = rf"(?:{_MONTH}|march|may)"
# What is left of a schedule the sentence says but this reader cannot: refused, not dropped.
# "\0" marks a phrase already read (see _Reading.take).
_UNREAD_EXCLUSION = re.compile(
    rf"\b(?:{_EXCEPT_WORD}|not|never|unless|no|don't|dont|do\s+not)\b(?:\s+(?:on|in|at|during|"
    r"for|over|the|a|any|public|bank|national|federal|school|it's|its|it\s+is|there's|there\s+is|"
    r"when|from|after|before|run|send|email|ping|notify|bother|me|it|anything|my|our))*\s+"
    r"(?:holidays?|vacations?|\d|noon|midnight|mornings?|afternoons?|evenings?|christmas|xmas|"
    r"easter|thanksgiving|new\s+year'?s?|hanukkah|diwali|ramadan|eid|birthdays?|pto|time\s+off|"
    rf"ooo|out\s+of\s+(?:the\s+)?office|nights?|days?|weekends?|weeks?|months?|{_MONTH_ANY}\b|"
    rf"{_DAY}|{_DAY_SHORT}\b)"
)
# An exception said of when, in words no day of the week is: "except when I am on
# vacation", "unless I'm away", "except if it rains", "except on my birthday".
_EXCEPT_CONDITION = (
    r"\b(?:(?:except(?:\s+for)?|excluding|but\s+not|other\s+than|apart\s+from|save\s+for)\s+"
    r"(?:when|whenever|while|if|during|on|over|around|between|after|before|until|till)"
    r"|unless\s+(?:i'm|im|i\s+am|we're|we\s+are|i|we|when|while|during|on))\b(?!')"
)
_UNREAD_CONDITION = re.compile(rf"{_EXCEPT_CONDITION}(?:\s+[\w'-]+){{0,4}}")
# An exception said right after the schedule ("every day at 9 except Christmas"): of the
# schedule, whatever it names, unlike one in the task ("summarise my mail except newsletters").
_UNREAD_EXCEPT_AFTER = re.compile(
    r"\0[\s,;]*(?P<x>(?:except(?:\s+for)?|excluding|but\s+not|other\s+than|apart\s+from)"
    r"(?:\s+(?:the|a|an|on|in|at|my|our)\b)*\s+[\w'-]+)"
)
_UNREAD_MONTH = re.compile(
    rf"\0[\s,]*(?:(?:of|in|during)\s+)?(?:the\s+month\s+of\s+)?{_MONTH_ANY}\b"
    rf"|\b{_MONTH_ANY}[\s,]*(?:the\s+)?\0|\b(?:every|each)\s+{_MONTH_ANY}\b"
    rf"|\b{_MONTH_ANY}\s+\d{{1,2}}(?:st|nd|rd|th)?\b"
    rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH_ANY}\b"
)
_UNREAD_TIME = re.compile(
    r"\0[\s,&]*(?:(?:and|or|then|at|but)\s+)*(?P<t>\d{1,2}(?:[:.h]\d{2})?(?:\s*(?:am|pm))?)"
    r"(?![\w:])[\s,]*(?:(?:on|every|each|at|in|the|during|over|for)\s+)*\0"
)
# A second time said apart from the first: "at 6 before work and 5 after work".
_UNREAD_LATER_TIME = re.compile(
    r"\b(?:and|or|then|but)\s+(?:at\s+)?(?P<t>\d{1,2}(?:[:.h]\d{2})?(?:\s*(?:am|pm))?\s+"
    r"(?:after|before)\s+(?:work|breakfast|lunch|dinner|school|dawn|sunrise|sunset|dark))\b"
)
_UNREAD_EVERY = re.compile(rf"\b{_EVERY}{_NTH}\b")
# A range of hours said as figures beside the schedule or after "at" ("every weekday 9-5",
# "at 10-8/3", "every 3 hours 10-8"): it was dropped, the schedule read without it.
_RANGE_END = r"\d{1,2}(?::\d{2})?(?:\s*(?:am|pm))?"
_UNREAD_RANGE = re.compile(
    rf"(?:\0[\s,]*|\b(?:at|around|from|between)\s+)(?P<r>(?P<a>{_RANGE_END})\s*-\s*"
    rf"(?P<b>{_RANGE_END})(?:\s*/\s*(?P<step>\d+))?)(?![\w:/])"
)
# Hours an interval keeps to, said in words it has no clock for: "every 2 hours during work
# hours", "every hour during the day", "during the workday" (not "on workdays": days).
_UNREAD_HOURS = re.compile(
    r"\b(?:(?:during|in|within|outside(?:\s+of)?|over|through(?:out)?)\s+)?"
    r"(?:the\s+|my\s+|our\s+)?(?:work(?:ing)?|business|office|opening|school)\s+hours\b"
    r"|\bafter\s+hours\b|\b(?:during|in|through(?:out)?|over)\s+(?:the|my|our)\s+"
    r"(?:day(?:time)?|work(?:ing)?[\s-]*day|business\s+day|school\s*day)\b"
    r"|\bdaytime\b"
)
# What is left after "at" that no time was read from: "at 99999999999:00", "at seven blah".
_UNREAD_AT = re.compile(rf"{_AT_LEAD}(?P<t>[\d:][\w:.]*|(?:{_HOUR_WORD}|{_MINUTE_WORD})\b)")
# "every" opening the sentence says when, as "every blorp at 9" or "every payday at 9" does;
# it is not read when what follows is no schedule this reader knows.
_UNREAD_EVERY_FIRST = re.compile(r"^[\s\0,]*(?:every|each)\s+[a-z][\w'-]*")
_DAILY = re.compile(
    rf"\b(?:{_EVERY}(?:single\s+)?day|everyday|daily|(?:once\s+)?(?:a|per)\s+day|"
    r"(?:7|seven)\s+days\s+a\s+week)\b"
)
_WEEKLY = re.compile(rf"\b(?:weekly|{_EVERY}week|(?:once\s+)?(?:a|per)\s+week)\b")
_MONTHLY = re.compile(rf"\b(?:monthly|{_EVERY}month|(?:once\s+)?(?:a|per)\s+month)\b")
_OF_MONTH = r"\s+(?:day\s+)?of\s+(?:the|each|every)\s+month"
_ORDINAL_DAY = r"\d{1,2}(?:st|nd|rd|th)"
# "on the 15th", "the 1st and 15th", "the 1st, 10th and the 20th of every month".
_DAY_OF_MONTH = re.compile(
    rf"\b(?:on\s+)?the\s+(?:(?P<n>\d{{1,2}})(?:(?:st|nd|rd|th)"
    rf"(?P<more>(?:\s*(?:,\s*(?:and\s+|&\s*)?|and\s+|&\s*)(?:the\s+)?{_ORDINAL_DAY})*)"
    rf"(?:{_OF_MONTH})?|{_OF_MONTH})|(?P<first>first)(?:{_OF_MONTH}))\b"
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
# Hours said of the night that are past midnight: "every night at 1" is 01:00.
_SMALL_HOURS = range(0, 5)
_UNKNOWN_EVERY = re.compile(r"\b(?:every|each)\s+[\w'-]+")
# Common words of French, German and Spanish schedules that are no English words: two of
# them say the sentence is not English, which this reader does not read.
_FOREIGN_WORDS = frozenset(
    "tous toutes les jours chaque heures heure mes lundi mardi mercredi jeudi vendredi "
    "samedi dimanche matin soir semaine résume résumé courriels envoie-moi "
    "jeden jede täglich uhr und meine mir montag dienstag mittwoch donnerstag freitag "
    "samstag sonntag morgens abends woche fasse zusammen stunde stunden "
    "todos cada días día hora horas resume resumen correo correos mis lunes martes miércoles "
    "jueves viernes sábado domingo mañana semana las los".split()
)


def _not_english(low: str) -> bool:
    return len(_FOREIGN_WORDS.intersection(re.findall(r"[^\W\d_][\w'-]*", low))) >= 2


def _period(word: str) -> str:
    for name in _PERIODS:
        if word.startswith(name.split()[0]):
            return name
    return "night" if word == "nightly" else "end of day"  # "eod"


def _number(token: str) -> float:
    if "couple" in token:
        return 2.0
    return float(token) if token[0].isdigit() else float(_NUMBER_WORDS[token])


def _compound_seconds(match: re.Match[str]) -> float:
    """The seconds of "every hour and a half" (5400), "every 1 hour 30 minutes" (5400)."""
    if match["hours"]:
        return int(match["hours"]) * 3600 + int(match["minutes"]) * 60
    if match["n3"]:
        size = _UNIT_SECONDS[match["unit3"][0]]
        return (_number(match["n3"]) + _PARTS[" ".join(match["part3"].split())]) * size
    size = _UNIT_SECONDS[match["unit"][0]]
    first = _number(match["n"]) if match["n"] else 1.0
    if match["part"]:
        return (first + _PARTS[" ".join(match["part"].split())]) * size
    return first * size + _number(match["n2"]) * _UNIT_SECONDS[match["unit2"][0]]


@dataclass
class _Time:
    hour: int
    minute: int
    fixed: bool  # am/pm, "h", noon, or a 24-hour value: not to be moved by a part of the day
    bare: bool = False  # said without am/pm, "h" or a leading zero ("at 5", "at 5:30")
    # In a list ("at 6 and 7"), the hour said just before this one, as said: None first.
    after: int | None = None
    said: str = ""  # as the sentence has it ("5:30", "4.15"), for a bare hour

    def __str__(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"


def _read_time(token: str) -> _Time:
    token = token.strip()
    if token in ("noon", "midday"):
        return _Time(12, 0, True)
    if token == "midnight":
        return _Time(0, 0, True)
    match = re.fullmatch(r"(\d{1,2})(?:([:.h]?)(\d{2})(?::(\d{2}))?)?\s*(am|pm|h)?", token)
    if match is None:
        raise _not_understood(f"the time {_quote(token)}")
    hour, minute, suffix = int(match[1]), int(match[3] or 0), match[5]
    if minute > 59 or hour > 23 or (suffix in ("am", "pm") and not 1 <= hour <= 12):
        raise _not_understood(f"the time {_quote(token)} (no such time of day)")
    if match[4] and int(match[4]):
        raise _not_understood(
            f"the time {_quote(token)}: instructions run on the minute, e.g. "
            f'"{hour}:{minute:02d}"'
        )
    if suffix == "am":
        return _Time(hour % 12, minute, True)
    if suffix == "pm":
        return _Time(hour % 12 + 12, minute, True)
    fixed = "h" in (suffix, match[2]) or hour == 0 or hour > 12
    bare = not fixed and suffix is None and not token.startswith("0")
    return _Time(hour, minute, fixed, bare, said=token if bare else "")


# --- The schedule -----------------------------------------------------------------------------


@dataclass
class _Schedule:
    interval: int | None = None  # seconds
    interval_words: str = ""
    window: tuple[int, int] | None = None  # hours, inclusive; overnight when the first is later
    times: list[_Time] = field(default_factory=list)
    periods: list[str] = field(default_factory=list)
    days: set[int] = field(default_factory=set)
    days_of_month: set[int] = field(default_factory=set)
    daily: bool = False
    weekly: bool = False
    monthly: bool = False
    twice: bool = False
    minute_of_hour: int | None = None  # "every hour on the hour": 0
    minute_words: str = ""  # "on the hour", as said
    timezone: str | None = None  # named in the sentence; else the user's
    timezone_words: str = ""
    afternoon: list[_Time] = field(default_factory=list)  # "at 5" read as 17:00, to say so
    list_afternoon: list[_Time] = field(default_factory=list)  # "at 9 and 5": 5 read as 17:00
    window_said: tuple[_Time, _Time] | None = None  # the range's ends as read
    afternoon_window: tuple[int, int] | None = None  # "between 2 and 6" read as 14-18: said
    window_from: _Time | None = None  # "every 2 hours from 9": the start, as read
    # "quarter to 6" read as "5:45": the words said for each time they were rewritten as
    clock_words: dict[str, str] = field(default_factory=dict)
    # Where each time ("t") and day ("d") phrase starts: to tell times said for other days.
    marks: list[tuple[int, str]] = field(default_factory=list)
    # Each phrase of times said ("at 9 and 5", "6pm"): its span and the times it gave, to
    # tell the schedule's from the task's ("who wrote to me at 3am").
    time_phrases: list[tuple[int, int, list[_Time]]] = field(default_factory=list)
    task_times: list[tuple[int, int]] = field(default_factory=list)  # spans left to the task

    def found(self) -> bool:
        return bool(
            self.interval or self.times or self.periods or self.days or self.days_of_month
            or self.daily or self.weekly or self.monthly or self.twice or self.window
            or self.minute_of_hour is not None
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


_ALL_DAYS = frozenset(range(7))


def _set_minute_of_hour(schedule: _Schedule, match: re.Match[str]) -> None:
    if match["top"]:
        minute = 0
    elif match["half"]:
        minute = 30
    elif match["m"]:
        minute = int(match["m"])
    else:
        said = " ".join(match["m2"].split())
        minute = {"quarter": 15, "a quarter": 15, "half": 30}.get(said) or _word_number(said)
        if not 1 <= minute <= 59:
            raise _not_understood(f"{_quote(match[0])} (no such minute)")
    words = " ".join(match[0].split())
    if schedule.minute_of_hour not in (None, minute):
        raise _not_understood(
            f"two different minutes past the hour ({_quote(schedule.minute_words)} and "
            f"{_quote(words)})"
        )
    schedule.minute_of_hour, schedule.minute_words = minute, words


def _read_schedule(reading: _Reading) -> _Schedule:
    schedule = _Schedule()
    for said in reading.take(_MINUTE_OF_HOUR):
        _set_minute_of_hour(schedule, said)
    _clock_phrases(reading, schedule)
    # Taken before "a week" and "every month" in them are read as weekly and monthly.
    times_a, parts_of = reading.take(_TIMES_A), reading.take(_PART_OF)
    unread = reading.rest  # what this reads of the schedule is what it blanks out of this
    for pattern, reason in (
        (_EVERY_OTHER_WEEK, "as a schedule: weeks, months or years apart cannot be expressed; "
                            'try "every Monday" or "on the 1st of every month"'),
        (_NTH_WEEKDAY, "as a schedule: a weekday of a given week of the month cannot be "
                       'expressed; try "every Monday" or "on the 1st of every month"'),
        (_LAST_DAY, 'as a schedule: "the last day of the month" cannot be expressed; try '
                    '"on the 1st of every month"'),
        (_RARER, "as a schedule: runs weeks, months or years apart cannot be expressed; try "
                 '"every Monday" or "on the 1st of every month"'),
        (_TIMES_A_DAY, "as a schedule: say the times instead, e.g. \"at 8, 12 and 17\""),
        (_EVERY_FEW, 'as an interval: say how many, e.g. "every 3 hours"'),
    ):
        if match := pattern.search(reading.rest):
            raise _not_understood(f"{_quote(match[0])} {reason}")

    excluded: set[int] = set()
    for match in reading.take(_EXCEPT_DAYS):
        excluded |= _days_in(match["days"])
    if match := _UNREAD_EXCLUSION.search(reading.rest) or _UNREAD_CONDITION.search(
            reading.rest):
        raise _not_understood(f"{_quote(match[0])} as a schedule: {_ONLY_DAYS_LEFT_OUT}")
    _read_zone(reading, schedule)

    schedule.twice = bool(reading.take(_TWICE_A_DAY))
    for match in reading.take(_EVERY_COMPOUND):
        _set_interval(schedule, _compound_seconds(match), match[0])
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
    day_phrases = _read_days(reading, schedule)
    every_period = False  # "every morning": every day, as "every day" is
    for match in reading.take(_PERIOD):
        name = _period(match["p"])
        if name not in schedule.periods:
            schedule.periods.append(name)
        schedule.marks.append((match.start(), "t"))
        every_period = every_period or match[0].startswith(("every", "each"))
    _place_days(reading, schedule, day_phrases, unread, every_period=every_period)
    _place_times(reading, schedule)
    _refuse_times_a(reading, schedule, times_a)
    _refuse_parts_of(reading, schedule, parts_of, every_period=every_period)
    _read_place(reading, schedule)
    _read_bare_hours(reading, schedule)
    if schedule.list_afternoon and not schedule.periods:  # "every evening at 9 and 5" says it
        schedule.afternoon += schedule.list_afternoon
        schedule.afternoon.sort(key=schedule.times.index)
    if excluded:
        if schedule.weekly or schedule.monthly or schedule.days_of_month:
            raise _not_understood(
                f"the days in {_quote(reading.text)}: days can be left out of every day or "
                'of days of the week, e.g. "every day except Sunday at 8"'
            )
        left = (schedule.days or _ALL_DAYS) - excluded
        if not left:
            raise _not_understood(f"the days in {_quote(reading.text)}: every day is left out")
        schedule.days = set(left)
    _refuse_unread(reading, schedule)
    return schedule


# Said of a time that is early in the day without "morning": "at 5 at dawn", "at 6
# before work", "at 5 when I wake up".
_EARLY = re.compile(
    r"\b(?:at|by|around|before|after)\s+(?:dawn|daybreak|sunrise|first\s+light)\b"
    r"|\bbefore\s+(?:work|breakfast)\b|\b(?:when|as\s+soon\s+as)\s+i\s+(?:wake|get)\s+up\b"
)


def _read_bare_hours(reading: _Reading, schedule: _Schedule) -> None:
    """An hour from 1 to 6 said without am or pm ("at 5", "at 5:30") is the afternoon or
    evening, 13:00 to 18:59, as people say it ("on Friday at 5 send me the invoices"); 7 to
    11 stay the morning, 12 is noon. "5am", "05:00", "05", "5h", "17", "5 in the morning",
    "at 5 at dawn" and "at 6 before work" keep theirs. A list said rising keeps its order:
    an hour up to two after one read as the afternoon is the afternoon too ("at 6 and 7":
    18:00 and 19:00; "at 5 and 9": 09:00 and 17:00); a range of hours moves whole, or not
    at all ("between 2 and 6": 14:00 to 18:59; "between 5 and 9" as said)."""
    if "morning" in schedule.periods or _EARLY.search(reading.rest):
        return
    if schedule.window_said:  # a range moves whole, or not at all: "between 5 and 9" stays
        a, b = schedule.window_said
        if (a.bare and b.bare and 1 <= a.hour <= 6 and a.hour < b.hour
                and (b.hour <= 6 or b.hour - a.hour <= 2)):
            schedule.window = (a.hour + 12, b.hour + 12)
            schedule.afternoon_window = (a.hour, b.hour)
    start = schedule.window_from  # "every 2 hours from 1": from 13:00, as "at 1" is
    if start and start.bare and 1 <= start.hour <= 6:
        schedule.window = (start.hour + 12, 23)
        schedule.afternoon.append(_Time(start.hour + 12, 0, True, said=start.said))
    night = "night" in schedule.periods
    moved = False  # the time before this one, in its list, was read as the afternoon
    for i, time in enumerate(schedule.times):
        run = moved and time.after is not None and 0 < time.hour - time.after <= 2
        moved = time.bare and time.hour < 12 and (1 <= time.hour <= 6 or run) and not (
            night and time.hour in _SMALL_HOURS)  # "every night at 1": past midnight
        if moved:
            schedule.times[i] = _Time(time.hour + 12, time.minute, True, said=time.said)
            if not schedule.periods:  # "every evening at 5" says it itself
                schedule.afternoon.append(schedule.times[i])


def _refuse_times_a(reading: _Reading, schedule: _Schedule, found: list[re.Match[str]]) -> None:
    """ "twice a week" with two days of the week said, "twice a month" with two days of the
    month; else refused, asking for the days."""
    for match in found:
        said = " ".join((match["n"] or match["n2"]).split())
        count = int(said.split()[0]) if said[0].isdigit() else _COUNTS.get(said)
        words = _quote(" ".join(match[0].split()))
        if (match["unit"] or match["unit2"]) == "week":
            if count != len(schedule.days):
                raise _not_understood(
                    f'{words} as a schedule: say which days, e.g. "every Monday and Thursday '
                    'at 8"'
                )
        elif count != len(schedule.days_of_month):
            raise _not_understood(
                f'{words} as a schedule: say which days of the month, e.g. "on the 1st and '
                '15th at 8"'
            )


def _refuse_parts_of(
    reading: _Reading, schedule: _Schedule, found: list[re.Match[str]], *, every_period: bool
) -> None:
    """ "at the end of every month", "mid-month" are refused, asking for the day; "the end of
    the month" is the task's when the schedule says its days ("every Monday list invoices
    due by the end of the month"), and put back for it."""
    has_days = bool(schedule.days or schedule.days_of_month or schedule.daily
                    or schedule.weekly or schedule.monthly or schedule.interval or every_period)
    for match in found:
        if has_days and (match["which"] or "").strip() not in ("each", "every"):
            start, end = match.span()
            reading.rest = reading.rest[:start] + reading.low[start:end] + reading.rest[end:]
            continue
        words = _quote(" ".join(match[0].split()))
        if (match["unit"] or match["mid"] or "month") == "week":
            raise _not_understood(f'{words} as a schedule: say the day, e.g. "every Friday at 17"')
        day = "15th" if match["mid"] or match["part"] == "middle" else "28th"
        raise _not_understood(
            f'{words} as a schedule: say the day of the month, e.g. "on the {day} of every '
            'month at 8"'
        )


_ONLY_DAYS_LEFT_OUT = (
    'only days of the week can be left out, e.g. "every day except Sunday at 8" or "every '
    'weekday except Friday"; to skip runs for a while, pause the instruction'
)


def _refuse_unread(reading: _Reading, schedule: _Schedule) -> None:
    """Refuse what is left of a schedule that could not be read, rather than drop it."""
    if match := _UNREAD_EXCEPT_AFTER.search(reading.rest):
        raise _not_understood(f"{_quote(match['x'])} as a schedule: {_ONLY_DAYS_LEFT_OUT}")
    if misspelt := _misspelt_day(reading.rest):
        word, day = misspelt
        raise _not_understood(
            f"{_quote(word)} as a day of the week: did you mean {day}? Say the day in full, "
            f'e.g. "every {day} at 8", or in short, e.g. "every {day[:3].lower()}"'
        )
    if match := _UNREAD_EVERY.search(reading.rest):
        raise _not_understood(f"{_quote(match[0])} as a schedule")
    if match := _UNREAD_RANGE.search(reading.rest):
        every = f"every {match['step']} hours" if match["step"] else "every hour"
        a, b = (" ".join(match[e].split()) for e in ("a", "b"))
        a, b = (a, b) if a != b else ("9", "17")  # "8-8" is no range: an example of one
        raise _not_understood(
            f"the hours {_quote(match['r'])} in {_quote(reading.text)}: say a range of hours "
            f'with "between", e.g. "{every} between {a} and {b}"; a crontab expression '
            '("0 9-17 * * *") goes in the cron trigger of an instruction, not in a sentence'
        )
    # In the whole sentence: "during the workday" was read as its days (days.py) too.
    if schedule.interval and (match := _UNREAD_HOURS.search(reading.low)):
        raise _not_understood(
            f"{_quote(match[0])} as the hours of {_quote(schedule.interval_words)}: say them, "
            'e.g. "every 2 hours between 9 and 17 on weekdays"'
        )
    if schedule.found() and (match := _UNREAD_EVERY_FIRST.search(reading.rest)):
        raise _not_understood(f"{_quote(match[0].strip(chr(0) + ' ,'))} as a schedule")
    # A time said after "at" is never dropped for a default one: "at 99999999999:00", "at
    # 12345 check", "at seven blah" with no other time ("look at 2024 invoices" and, beside
    # a time, "look at one invoice" are the task's).
    match = next((m for m in _UNREAD_AT.finditer(reading.rest)  # not a time left to the task
                  if not any(a <= m.start() < b for a, b in schedule.task_times)), None)
    if match and (":" in match["t"] or not schedule.times and (
            not match["t"][0].isdigit() or re.match(_THEN, reading.rest[match.end():]))):
        raise _not_understood(
            f'the time {_quote(match["t"])} in {_quote(reading.text)}: say it as, e.g., "8", '
            '"8:30", "0830", "8:30pm" or "half past 8"'
        )
    if match := _UNREAD_MONTH.search(reading.rest):
        month = _quote(" ".join(match[0].replace("\0", " ").split()))
        raise _not_understood(
            f"{month} in {_quote(reading.text)}: an instruction runs every day, week or month, "
            'not in chosen months or on a date; try "on the 1st of every month"'
        )
    if schedule.times and (match := _UNREAD_LATER_TIME.search(reading.rest)):
        raise _not_understood(
            f"{_quote(match['t'])} in {_quote(reading.text)}: say the times together, e.g. "
            '"every weekday at 6am and 5pm"'
        )
    if match := _UNREAD_TIME.search(reading.rest):
        raise _not_understood(
            f"{_quote(match['t'])} in {_quote(reading.text)}: one instruction runs at the same "
            "times on each of its days; make one instruction for each set of days"
        )
    kinds: list[str] = []
    for _, kind in sorted(schedule.marks):
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    if len(kinds) >= 3:
        raise _not_understood(
            f"which time goes with which days in {_quote(reading.text)}: one instruction runs "
            "at the same times on each of its days; make one instruction for each set of days"
        )


def _read_times(reading: _Reading, schedule: _Schedule) -> None:
    for match in reading.take(_WINDOW):
        start, stop = _read_time(match["a"]), _read_time(match["b"])
        if start.minute or stop.minute:
            raise _not_understood(f"{_quote(match[0])}: a range of hours takes whole hours")

        end = stop.hour
        # "between 9 and 5" is 09-17, "between 9am and 5" too; "between 17 and 9" (a 24-hour
        # clock) and "between 8pm and 6" go overnight.
        twenty_four = not re.search(r"[ap]m", match["a"]) and (
            start.hour > 12 or start.hour == 0 or match["a"].startswith("0"))
        if (not stop.fixed and not twenty_four and end < start.hour and end < 12
                and end + 12 > start.hour):
            end += 12
        if end == start.hour:  # "between 8 and 8", "from 8-8": no hours, or all of them?
            one = f"{start.hour % 12 or 12}{'am' if start.hour < 12 else 'pm'}"
            other = f"{start.hour % 12 or 12}{'pm' if start.hour < 12 else 'am'}"
            raise _not_understood(
                f"{_quote(match[0])}: a range of hours starts and ends at different hours; say "
                f'both, e.g. "every hour between {one} and {other}", or one time, e.g. '
                f'"every day at {one}"'
            )
        schedule.window, schedule.window_said = (start.hour, end), (start, stop)
    if schedule.interval and schedule.window is None:
        for match in reading.take(_FROM):
            start = _read_time(match["t"])
            if start.minute or schedule.window is not None:
                raise _not_understood(
                    f"{_quote(match[0])}: an interval's hours start on the hour, e.g. "
                    '"every 2 hours from 9", a range of hours takes whole hours'
                )
            schedule.window, schedule.window_from = (start.hour, 23), start
    elif not schedule.interval:
        # "every day from 9": a run a day starts then, as "at 9" would
        for match in reading.take(_FROM):
            schedule.times.append(_read_time(match["t"]))
            schedule.marks.append((match.start(), "t"))
    for match in reading.take(_AT):
        tokens = [match["first"], *_ONE_TIME.findall(match["more"])]
        previous: _Time | None = None
        said: int | None = None
        for token in tokens:
            time = _read_time(token)
            time.after, said = said, time.hour
            if previous and not time.fixed and time.hour < previous.hour and time.hour < 12:
                moved = _Time(time.hour + 12, time.minute, True, said=time.said)  # "at 9 and 5"
                if time.bare:  # said without am or pm: shown, so the user can correct it
                    schedule.list_afternoon.append(moved)
                time = moved
            schedule.times.append(time)
            previous = time
        if tokens[-1].rstrip().endswith("am"):  # "at 4 and 5am": said for the whole list
            for time in schedule.times[-len(tokens):]:
                if time.bare:
                    time.bare, time.fixed = False, True
        schedule.marks.append((match.start(), "t"))
        schedule.time_phrases.append((*match.span(), schedule.times[-len(tokens):]))
    for match in reading.take(_BARE_TIME):
        schedule.times.append(_read_time(match[0]))
        schedule.marks.append((match.start(), "t"))
        schedule.time_phrases.append((*match.span(), schedule.times[-1:]))


_SHORT_DAY = re.compile(rf"\b(?P<d>{_DAY_SHORT})s?\b")


def _days_in(words: str) -> set[int]:
    """The days a list such as "Friday and Saturday", "weekends" or "sat, sun" names."""
    reading = _Reading(words, words)
    days = {day for phrase in _take_days(reading) for day in phrase.days}
    for match in reading.take(_SHORT_DAY):
        days.add(_DAY_NUMBERS[match["d"][:3]])
    return days


def _read_days(reading: _Reading, schedule: _Schedule) -> list[_DayPhrase]:
    """Reads the days of the month and "daily", "weekly", "monthly"; returns the days of the
    week it found, to be told apart (schedule or task) once the whole schedule is read."""
    phrases = _take_days(reading)
    for match in reading.take(_DAY_OF_MONTH):
        days = {1} if match["first"] else {
            int(n) for n in [match["n"], *re.findall(r"\d+", match["more"] or "")]}
        if not all(1 <= day <= 31 for day in days):
            raise _not_understood(f"{_quote(match[0])} (no such day of the month)")
        if schedule.days_of_month and schedule.days_of_month != days:
            raise _not_understood("two different days of the month")
        schedule.days_of_month = days
    schedule.daily = bool(reading.take(_DAILY))
    schedule.weekly = bool(reading.take(_WEEKLY))
    schedule.monthly = bool(reading.take(_MONTHLY))
    return phrases
