"""Times said inside the task ("tell me who wrote to me at 3am"), told from the schedule's."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from app.instructions.drafting.days import _CLAUSE_SUBJECTS, _CLAUSE_WORDS, _LEAD_WORDS
from app.instructions.drafting.errors import _not_understood, _quote

if TYPE_CHECKING:
    from app.instructions.drafting.reading import _Reading, _Schedule

# What ends a clause before a time, or ties the time to the schedule after it: punctuation,
# or a phrase of the schedule read ("\0", see _Reading.take).
_CLAUSE_BREAK = re.compile(r"[\0,;:.!?]")
_THEN_SCHEDULE = re.compile(r"(?:[\s,&]|\b(?:and|or|then)\b)*\0")


def _in_clause(rest: str, task_start: int, start: int, end: int) -> bool:
    """Whether the phrase at `start`:`end` stands in a clause of the task: after the task's
    first word, with a clause word before it ("who", "what", "that"...) or a subject past
    the task's first word ("the mail I got"), and nothing of the schedule or no punctuation
    between the two, nor a phrase of the schedule right after it ("at 8 every weekday")."""
    if start < task_start or _THEN_SCHEDULE.match(rest, end):
        return False
    words = list(re.finditer(r"[a-z][a-z']*", rest[task_start:start]))
    opener = next((w for i, w in reversed(list(enumerate(words)))
                   if w[0] in _CLAUSE_WORDS or (i > 0 and w[0] in _CLAUSE_SUBJECTS)), None)
    return opener is not None and not _CLAUSE_BREAK.search(
        rest, task_start + opener.end(), start)


def _place_times(reading: _Reading, schedule: _Schedule) -> None:
    """Tell the times of the schedule from times the task talks about, as the days are
    (days._place_days). A time that stands in a clause of the task ("tell me who wrote to
    me at 3am", "list the mail that came after 6pm", "the mail I got at 3am") is the task's
    when the schedule has its time elsewhere ("every day at 9 ...", "every morning ...",
    "every 2 hours ..."), and is left in the sentence for the task. When it is the only
    time, it could be either ("every weekday tell me who wrote at 3am"): refused, saying
    how to put each, rather than guessed."""
    rest = reading.rest
    task_start = next(
        (m.start() for m in re.finditer(r"[a-z][a-z'-]*", rest) if m[0] not in _LEAD_WORDS),
        len(rest),
    )
    in_task = [(start, end, times) for start, end, times in schedule.time_phrases
               if _in_clause(rest, task_start, start, end)]
    if not in_task:
        return
    task_ids = {id(time) for _, _, times in in_task for time in times}
    others = [time for time in schedule.times if id(time) not in task_ids]
    if not (others or schedule.periods or schedule.interval or schedule.twice):
        start, end, _ = in_task[0]
        said = " ".join(reading.text[start:end].split())
        raise _not_understood(
            f"{_quote(said)} in {_quote(reading.text)}: it could be when to run or what the "
            f'task is about; if it is when, say it before the task, e.g. "every day {said} '
            '..."; if it is the task\'s, say when to run as well, e.g. "every morning ..."'
        )
    schedule.times = others
    schedule.list_afternoon = [t for t in schedule.list_afternoon if id(t) not in task_ids]
    starts = {start for start, _, _ in in_task}
    schedule.marks = [mark for mark in schedule.marks if mark[0] not in starts]
    for start, end, _ in in_task:  # back in the sentence, for the task
        reading.rest = reading.rest[:start] + reading.low[start:end] + reading.rest[end:]
        schedule.task_times.append((start, end))
