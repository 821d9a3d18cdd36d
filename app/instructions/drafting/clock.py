"""Times said in words or run together ("half past 5", "ten to eight", "nine thirty", "half
8", "12 fifteen", "0830", "9 30"), rewritten in place as the figures they say, so they are
read as "at 5:30" is."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from app.instructions.drafting.days import _DAY, _DAY_SHORT
from app.instructions.drafting.errors import DraftNotUnderstood, _not_understood, _quote

if TYPE_CHECKING:
    from app.instructions.drafting.reading import _Reading, _Schedule

_ONES = "one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
# Tens no minute has, said after an hour ("9 sixty"): read, to be refused, not left to the task.
_NO_MINUTE_TENS = {"sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_HOUR_WORDS = {w: n for n, w in enumerate([*_ONES, *_TEENS[:3]], 1)}
_HOUR_WORD = "|".join(sorted(_HOUR_WORDS, key=len, reverse=True))
_ONE_WORD = "|".join(_ONES)
_MINUTE_WORD = (rf"(?:{'|'.join(_TENS)})(?:[\s-](?:{_ONE_WORD})\b)?|{'|'.join(_TEENS)}"
                rf"|{_ONE_WORD}")
_HOUR = rf"\d{{1,2}}|{_HOUR_WORD}"
# The minutes said after an hour: "thirty", "forty-five", "five", "oh five".
_CLOCK_MINUTE = (rf"oh[\s-]+(?:{_ONE_WORD})\b|{_MINUTE_WORD}"
                 rf"|(?:{'|'.join(_NO_MINUTE_TENS)})(?:[\s-](?:{_ONE_WORD})\b)?")
# "at", "around", "@": what a time is said after.
_AT_LEAD = r"(?:\b(?:at|around)\s+(?:about\s+|around\s+)?|(?<![\w.])@\s*)"
# What may follow a time in words or figures run together, so that "at seven" and "at 0830"
# are times and "at one invoice" and "at 2024 prices" are not: the end, a gap left by a
# phrase read ("\0"), am/pm, or a word of the schedule or a task's first word.
_THEN = (
    r"(?=\s*(?:$|[,.;:!?\0]|(?:am|pm|sharp|exactly|on|every|each|daily|in|at|and|or|then|to|"
    r"till|until|from|i|we|please|check|summari[sz]e|tell|send|list|digest|e-?mail|mail|"
    r"notify|remind|give|let|show|ping|alert|push|what|report|review|look|go|find|read|"
    rf"update|brief|write|make|prepare|get|flag|scan|{_DAY}|(?:{_DAY_SHORT})s?)\b))"
)

# "half past 5", "a quarter to six": "5:30", "5:45".
_CLOCK_PHRASE = re.compile(
    r"\b(?:a\s+)?(?:(?P<part>half)\s+(?P<rel>past|after)|quarter\s+(?P<rel2>past|after|to|before))\s+"
    rf"(?P<h>{_HOUR})\b(?![:.]\d)"
)
# "10 past 8", "five past nine", "20 to 5", "ten minutes to eight": "8:10", "9:05", "4:40",
# "7:50". Said without "at", only with "past": "from 9 to 5" is a range.
_MINUTES_PHRASE = re.compile(
    rf"(?P<lead>{_AT_LEAD})?\b(?P<m>\d{{1,2}}|{_MINUTE_WORD})\s+(?:(?P<mins>minutes?|mins?)\s+)?"
    rf"(?P<rel>past|after|to|before)\s+(?P<h>{_HOUR})\b(?![:.]\d)"
)
# Minutes said before "to", "after" or "before" without "minutes": "at 9 to 5" is no time.
_MINUTES_BEFORE = frozenset({5, 10, 20, 25})
# "at half 8", as said in Britain: "8:30".
_HALF_HOUR = re.compile(
    rf"(?P<lead>{_AT_LEAD})half\s+(?P<h>{_HOUR})\b(?![:.]\d)"
    r"(?!\s+(?:hours?|past|after|to|before)\b)"
)
# "at seven", "at nine thirty", "at 9 and ten", "seven pm": "7", "9:30", "10", "7 pm".
_WORD_TIME = re.compile(
    rf"(?P<lead>{_AT_LEAD}|(?<=\d)\s*(?:,|and|&|or)\s*(?:at\s+)?)?\b(?P<h>{_HOUR_WORD})"
    rf"(?:[\s-]+(?P<m>{_CLOCK_MINUTE}))?\b(?P<ampm>(?=\s*(?:am|pm)\b))?"
)
# "at 12 fifteen", "at 7 forty-five", "at 9 oh 5": "12:15", "7:45", "9:05"; not "at 5
# one-on-ones".
_FIGURES_WORDS = re.compile(
    rf"(?P<lead>{_AT_LEAD}|(?<=\d)\s*(?:,|and|&|or)\s*(?:at\s+)?)(?P<h>\d{{1,2}})[\s-]+"
    rf"(?P<m>oh[\s-]+\d\b|{_CLOCK_MINUTE})\b(?![-'])"
)
# "at 9 30": "9:30" ("at 0830" and "at 930" are read as times are, see reading._TIME).
_SPACED = re.compile(rf"(?P<lead>{_AT_LEAD})(?P<h>\d{{1,2}})\s+(?P<m>\d\d)(?![\d:.]){_THEN}")
_UNREAD_CLOCK = re.compile(
    r"\b(?:(?:at|around|by)\s+)?(?:a\s+)?(?:half|quarter)\s+(?:past|after)\b"
    r"|\b(?:at|around|by)\s+(?:a\s+)?(?:half|quarter)\s+(?:to|before)\b"
    rf"|\b(?:at|around|by)\s+(?:\d{{1,2}}|{_MINUTE_WORD})\s+(?:minutes?\s+|mins?\s+)?"
    rf"(?:past|after)\b(?!\s+(?:{_HOUR})\b)"
)


def _word_number(words: str) -> int:
    """5 for "five", 25 for "twenty-five" or "twenty five", 8 for "8"."""
    if words.isdigit():
        return int(words)
    total = 0
    for word in re.split(r"[\s-]+", words):
        if word == "oh":  # "oh five"
            continue
        if word.isdigit():  # "oh 5"
            total += int(word)
            continue
        total += _TENS.get(word, 0) or _NO_MINUTE_TENS.get(word, 0) or (
            _ONES.index(word) + 1 if word in _ONES else
                                        _TEENS.index(word) + 10)
    return total


def _no_minute(said: str, minute: int) -> DraftNotUnderstood:
    """ "9 sixty", "9 60": a minute past 59, refused rather than read as the hour alone."""
    return _not_understood(
        f"the time {_quote(said)}: there is no minute {minute} (minutes go from 0 to 59); say "
        'the time in figures, e.g. "9:30" or "10:00"'
    )


def _before(hour: int, minute: int) -> str:
    """The time `minute` minutes before `hour`, read as the hour said would be: "quarter to
    6" is "5:45", the afternoon as "at 6" is; "quarter to 7" "06:45", the morning as "at 7"
    is; "quarter to 1" "12:45"."""
    if hour == 0:
        return f"23:{minute:02d}"
    before = {1: 12, 7: 6}.get(hour, hour - 1)
    return f"{before:02d}:{minute:02d}" if hour == 7 else f"{before}:{minute:02d}"


def _clock_phrases(reading: _Reading, schedule: _Schedule) -> None:
    """Rewrites the times said in words or run together in what is left, in place, as the
    figures they say ("half past 5" as "5:30"), keeping the words said for each, to show
    them when the time is read as the afternoon."""
    def put(match: re.Match[str], time: str) -> str:
        lead = match.groupdict().get("lead") or ""
        said = match[0][len(lead):]
        schedule.clock_words.setdefault(time, " ".join(said.split()))
        return lead + time.rjust(len(said))

    def hour_of(match: re.Match[str]) -> int:
        token = match["h"]
        hour = int(token) if token.isdigit() else _HOUR_WORDS[token]
        if hour > 23:
            raise _not_understood(f"the time {_quote(match[0])} (no such time of day)")
        return hour

    def quarters(match: re.Match[str]) -> str:
        hour = hour_of(match)
        if match["part"] or match["rel2"] in ("past", "after"):
            return put(match, f"{hour}:{30 if match['part'] else 15}")
        return put(match, _before(hour, 45))

    def minutes(match: re.Match[str]) -> str:
        minute = _word_number(" ".join(match["m"].split()))
        if match["rel"] != "past" and not (
                match["lead"] and (match["mins"] or minute in _MINUTES_BEFORE)):
            return match[0]  # "from 9 to 5", "at 9 to 5": not a time said in minutes
        if not 1 <= minute <= 59:
            raise _not_understood(f"the time {_quote(match[0])} (no such time of day)")
        hour = hour_of(match)
        if match["rel"] in ("past", "after"):
            return put(match, f"{hour}:{minute:02d}")
        return put(match, _before(hour, 60 - minute))

    def half(match: re.Match[str]) -> str:
        return put(match, f"{hour_of(match)}:30")

    def words(match: re.Match[str]) -> str:
        then = re.match(_THEN, match.string[match.end():])
        if match.group("ampm") is None and not (match["lead"] and then):
            return match[0]  # "look at one invoice": not a time
        minute = _word_number(" ".join(match["m"].split())) if match["m"] else None
        if minute is not None and minute > 59:
            raise _no_minute(" ".join(match[0][len(match["lead"] or ""):].split()), minute)
        hour = hour_of(match)
        return put(match, f"{hour}:{minute:02d}" if minute is not None else f"{hour}")

    def figures_words(match: re.Match[str]) -> str:
        minute = _word_number(" ".join(match["m"].split()))
        said = " ".join(match[0][len(match["lead"]):].split())
        then = re.match(_THEN, match.string[match.end():])
        if not then and match["m"] in _ONES:
            return match[0]  # a count, as in "at 9 one page summary": the task's
        if minute > 59:
            raise _no_minute(said, minute)
        if not then:
            # Never the hour alone, the minutes dropped: "at 12 fifteen reports" may be 12:15.
            raise _not_understood(
                f"the time {_quote(said)} in {_quote(reading.text)}: say the minutes in "
                f'figures, e.g. "{match["h"]}:{minute:02d}"'
            )
        return put(match, f"{hour_of(match)}:{minute:02d}")

    def spaced(match: re.Match[str]) -> str:
        if int(match["m"]) > 59:
            raise _no_minute(f"{match['h']} {match['m']}", int(match["m"]))
        return put(match, f"{match['h']}:{match['m']}")

    rest = _CLOCK_PHRASE.sub(quarters, reading.rest)
    rest = _MINUTES_PHRASE.sub(minutes, rest)
    rest = _HALF_HOUR.sub(half, rest)
    rest = _FIGURES_WORDS.sub(figures_words, rest)
    while True:  # "at nine and ten": the second is read once the first is in figures
        reading.rest, rest = rest, _WORD_TIME.sub(words, rest)
        if rest == reading.rest:
            break
    reading.rest = _SPACED.sub(spaced, rest)
    if match := _UNREAD_CLOCK.search(reading.rest):
        raise _not_understood(
            f"{_quote(match[0])} in {_quote(reading.text)}: say the hour, e.g. \"at half past 5\""
        )
