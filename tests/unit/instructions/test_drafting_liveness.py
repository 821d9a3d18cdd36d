"""Sentences built to make the drafting parser's patterns backtrack are read at once.

Drafting reads what any signed-in user types, on the API's event loop: one sentence that
holds a pattern for minutes holds every user. Each is read in a child process, which a
hang cannot take the suite down with (tests/liveness.py): the time limit is a liveness
bound (minutes), not a measurement.
"""

from __future__ import annotations

from typing import Any

from app.instructions.schemas import DRAFT_TEXT_MAX
from tests.liveness import read_in_child

# What parse() answers for a sentence: the trigger it proposes, or the refusal's reason.
_READ = (
    "import json, sys\n"
    "from app.core.errors import DomainError\n"
    "from app.instructions.drafting import parse\n"
    "text = json.load(sys.stdin)\n"
    "try:\n"
    "    answer = parse(text, timezone='UTC').instruction.trigger.model_dump()\n"
    "except DomainError as exc:\n"
    "    answer = exc.detail\n"
    "print(json.dumps(answer))\n"
)


def read(sentence: str) -> Any:
    return read_in_child(_READ, sentence)


def test_zone_words_said_again_and_again() -> None:
    """ "european" was twice in the alternation of a zone's words, so each repeat of it
    could be read two ways: 2**60 ways for this sentence, which is within the API's limit."""
    sentence = "every day at 9 eastern" + " european" * 60 + " x summarise my mail"
    assert len(sentence) <= DRAFT_TEXT_MAX
    assert read(sentence) == {"type": "cron", "cron": "0 9 * * *", "timezone": "UTC"}
    # said before "time", it is still refused as a zone this cannot tell
    assert read("every day at 9 eastern" + " european" * 60 + " time summarise my mail"
                ).startswith('Could not read the time zone "eastern european european')



def test_days_left_out_said_again_and_again() -> None:
    """ "tues" was read as "tues", "tues" + "" and "tue" + "s" by the days left out, so a
    list of them that ends inside a word was tried in each of 3**150 ways."""
    sentence = "every day except " + "tuesor" * 150 + "x at 9 summarise my mail"
    assert len(sentence) <= DRAFT_TEXT_MAX
    assert read(sentence).startswith('Could not read "except tues" as a schedule: only days')
    # a list of them as people say it is read whole
    assert read("every day except " + "tues or " * 100 + "weds at 9 summarise my mail") == {
        "type": "cron", "cron": "0 9 * * 1,4-6,0", "timezone": "UTC"}


def test_days_after_a_run_of_commas() -> None:
    """For each day said, the glue before it ("and", ",", "-") was searched for as `glue*$`
    from each place before it, each try reading a run of commas to its end: quadratic in
    the run, for each day (1.5 s for a sentence of the API's 1000 characters, hours here:
    parse() reads past the API's limit)."""
    sentence = "at 9 " + "," * 12_000 + "x" + " monday and" * 40
    answer = read(sentence)
    assert answer.startswith('Could not read what to do in "at 9 ,,,')
    assert "(every Monday at 09:00) but no task" in answer


def test_mail_about_said_again_and_again() -> None:
    """ "when ... mail about <topic>" was one pattern that tried each "when" with each
    mention after it, and read the topic to its end from each: cubic in a sentence built
    of them (a quarter of a second at the API's 1000 characters, hours here)."""
    assert read("if mail about " * 1000 + ":").startswith(
        'Could not read when to run "if mail about if mail about')
    # after a clause with none, the mention said after "when" is the watch's
    topic = '"mail about mail about mail about"'
    assert read("mail about x: when " + "mail about " * 300 + "the merger arrives tell me")[
        "gmail_query"] == f"subject:{topic} OR {topic}"
