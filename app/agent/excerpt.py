"""Mail bodies made short for the model: the lines that carry the message, within a budget.

`excerpt(body, limit)` keeps, in this order of claim on the budget, every sentence or
line with a request or an action, the first sentence that says something, those with a
date or an amount (shortest first), then other text, and shows what it kept in the body's
order; quoted replies, "On … wrote:" lines, greetings, sign-offs and signatures are left
out. Lines stay lines. `GAP` marks text left out between or after the kept parts; `CUT`
at the end says that a request or an action did not fit, so a read gives more. Text that
addresses an assistant or gives instructions (prompt injection) counts as a request: the
model must see it, fenced as data, to report it. Only the first `EXCERPT_BODY_CHARS` of
a body are read.

The same line splitting serves the offline model, which reads what Gemini reads.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.sources.base import MailCard, Source, SourceError

log = logging.getLogger(__name__)

GAP = " … "
CUT = " [cut]"
# Only a body's first characters are excerpted: what a person writes fits many times
# over, and a log or a mail bomb of megabytes must not hold the worker (the model can
# still read the mail, cut to the tools' own limit).
EXCERPT_BODY_CHARS = 100_000

_WROTE = re.compile(r"^On .+wrote:$")
_BULLET = re.compile(r"^([-*•]|\d+[.)])\s")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[A-Z0-9\"(])")
_GREETING_LINE = re.compile(
    r"^(hi|hello|hey|dear|good (morning|afternoon|evening))\b[^.!?]{0,40}[,!]?$", re.I
)
_SIGN_OFF = re.compile(
    r"^(thanks|thank you|cheers|best|best regards|regards|kind regards|many thanks|"
    r"warm regards|talk soon|see you)\b[^.!?]{0,20}[,!.]?$",
    re.I,
)
# What a line is worth keeping for: 2 a request or an action, 1 a date or an amount.
_ACTION = re.compile(
    r"\?|\b(please|could you|can you|would you|will you|let me know|need[s]? (your|you)|"
    r"sign-?off|approv\w*|deadline|asap|urgent|decision needed|instructions?|assistant|"
    r"system prompt|forward)\b|\b(action( items?)?|todo)\s*:|\bAI\b",
    re.I,
)
_OWNER_FIRST = re.compile(r"^([-*•]\s*)?[A-Z][\w.'-]*( [A-Z][\w.'-]*)? (to|will|should|must) [a-z]")
_FACT = re.compile(
    r"\b(due|by (mon|tues|wednes|thurs|fri|satur|sun)day|(mon|tues|wednes|thurs|fri|satur|sun)day|"
    r"tomorrow|today|tonight|eod|invoice|amount|total|payment|overdue|"
    r"\d{1,2} (jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*|"
    r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]* \d{1,2}|\d{4}-\d{2}-\d{2})\b"
    r"|[$€£]\s?\d|\b(usd|eur|gbp)\s?\d",
    re.I,
)


def logical_lines(body: str) -> list[str]:
    """Lines with quoted text and signatures dropped and hard-wrapped lines joined again."""
    # Each logical line as its pieces, joined once at the end: adding to a string line by
    # line copies it each time, and a mail of one long paragraph made that quadratic.
    out: list[list[str]] = []
    last = ""  # the kind of the previous line
    for raw in body.splitlines():
        if raw.startswith(">") or _WROTE.match(raw.strip()):
            continue
        if raw.rstrip() == "--":
            break
        text = raw.strip()
        kind = (
            "" if not text
            else "heading" if text.startswith("#")
            else "bullet" if _BULLET.match(text)
            else "indented" if raw[:1].isspace()
            else "prose"
        )  # fmt: skip
        if (kind, last) in (("indented", "bullet"), ("prose", "prose")):
            out[-1].append(text)  # a hard-wrapped line continues the one before
        else:
            out.append([text])
            last = kind
    return [" ".join(pieces) for pieces in out]


def sentences(text: str) -> list[str]:
    return [s for line in logical_lines(text) for s in _SENTENCE_END.split(line) if s]


@dataclass(frozen=True)
class _Unit:
    text: str
    rank: int  # 2 a request or an action, 1 a date or an amount, 0 other text
    line: int  # the logical line it comes from


def _rank(text: str) -> int:
    if _ACTION.search(text) or _OWNER_FIRST.match(text):
        return 2
    return 1 if _FACT.search(text) else 0


def _units(body: str) -> list[_Unit]:
    lines = [line for line in logical_lines(body[:EXCERPT_BODY_CHARS]) if line]
    for back in range(1, min(4, len(lines) - 1) + 1):  # a sign-off near the end, the name
        if _SIGN_OFF.match(lines[-back]):
            lines = lines[:-back]
            break
    while lines and len(lines[-1].split()) <= 2 and not _rank(lines[-1]):
        lines.pop()  # a name under the message
    units: list[_Unit] = []
    for number, line in enumerate(lines):
        if _GREETING_LINE.match(line):
            continue
        parts = [line] if _BULLET.match(line) else _SENTENCE_END.split(line)
        for part in parts:
            part = " ".join(part.lstrip("#").split())
            if not part:
                continue
            rank = _rank(part)
            if rank or len(part.split()) > 3:  # short lines without either are headings
                units.append(_Unit(part, rank, number))
    return units


def excerpt(body: str, limit: int, *, context: bool = True) -> str:
    """The body's gist within about `limit` characters (see the module docstring).

    Without `context` only requests, actions, dates and amounts are kept (mail from a
    system: the subject says what it is); `GAP` alone when it has none."""
    units = _units(body)
    if not units:
        return ""
    whole = _join(units, set(range(len(units))))
    if context and len(whole) <= limit:
        return whole
    first = next((i for i, u in enumerate(units) if len(u.text.split()) >= 4), 0)
    order = [i for i, u in enumerate(units) if u.rank == 2]
    # Dates and amounts shortest first: more of them fit ("Amount due: USD 2,418.60").
    facts = sorted(
        (i for i, u in enumerate(units) if u.rank == 1), key=lambda i: len(units[i].text)
    )
    if context:
        order += [first] if first not in order else []
        order += [i for i in facts if i != first]
        order += [i for i, u in enumerate(units) if u.rank == 0 and i != first]
    else:
        order += facts
        if not order:
            return GAP.strip()
    chosen: set[int] = set()
    used, cut = 0, False
    for index in order:
        size = len(units[index].text) + len(GAP)
        if used + size > limit:
            if units[index].rank == 2:
                cut = True
            continue
        chosen.add(index)
        used += size
    if not chosen and not context:
        return GAP.strip() + (CUT if cut else "")
    if not chosen:  # one long first sentence: its start
        text = units[first].text[: max(limit - len(GAP), 20)].rsplit(" ", 1)[0]
        return text + (CUT if cut else GAP.rstrip())
    out = _join(units, chosen)
    if cut:
        return out + CUT
    if max(chosen) != len(units) - 1:
        out += GAP.rstrip()
    return out


def _join(units: list[_Unit], chosen: set[int]) -> str:
    """The chosen units in order: lines kept apart, `GAP` where text was left out."""
    out: list[str] = []
    previous = -1
    for index in sorted(chosen):
        unit = units[index]
        if previous < 0:
            out.append("… " if index else "")
        else:
            same_line = units[previous].line == unit.line
            if index == previous + 1:
                out.append(" " if same_line else "\n")
            else:
                out.append(GAP if same_line else GAP.rstrip() + "\n")
        out.append(unit.text)
        previous = index
    return "".join(out)


# --- The first prompt's mail texts ---------------------------------------------------------

# Characters of excerpt per mail: a mail from a person gets room for all its requests and
# actions (up to EXCERPT_MAX_CHARS) plus a share of CONTEXT_BUDGET_CHARS, within these
# bounds, for its first sentence, dates and amounts; mail from systems (notifications,
# newsletters) gets its requests, dates and amounts only, in SYSTEM_MAIL_CHARS.
CONTEXT_BUDGET_CHARS = 1_800
CONTEXT_MIN_CHARS = 60
CONTEXT_MAX_CHARS = 300
EXCERPT_MAX_CHARS = 600
SYSTEM_MAIL_CHARS = 80
READ_CONCURRENCY = 8


def requests_size(body: str) -> int:
    """Characters the body's requests and actions take in an excerpt."""
    return sum(len(u.text) + len(GAP) for u in _units(body) if u.rank == 2)


def excerpt_limits(bodies: Sequence[tuple[str, bool]]) -> list[int]:
    """The excerpt length of each (body, from a system) mail, in order."""
    people = sum(not system for _, system in bodies)
    share = CONTEXT_BUDGET_CHARS // max(people, 1)
    context = min(max(share, CONTEXT_MIN_CHARS), CONTEXT_MAX_CHARS)
    return [
        SYSTEM_MAIL_CHARS if system else min(requests_size(body) + context, EXCERPT_MAX_CHARS)
        for body, system in bodies
    ]


async def mail_excerpts(
    mails: Sequence[tuple[Source, MailCard]], automated: Callable[[str], bool]
) -> dict[str, str]:
    """Each new mail's excerpt by id, read by the app before the first turn (no model turn
    spent on it). A mail its source cannot read keeps its snippet (not in the answer)."""
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def body(source: Source, card: MailCard) -> str | None:
        async with gate:
            try:
                return (await source.read_message(card.id)).body
            except SourceError as exc:
                log.info("mail %s not read for the prompt: %s", card.id, exc)
                return None

    bodies = await asyncio.gather(*(body(source, card) for source, card in mails))
    read = [
        (card, text) for (_, card), text in zip(mails, bodies, strict=True) if text is not None
    ]

    def excerpts() -> dict[str, str]:
        limits = excerpt_limits([(text, automated(card.sender)) for card, text in read])
        return {
            card.id: excerpt(text, limit, context=not automated(card.sender))
            for (card, text), limit in zip(read, limits, strict=True)
        }

    # Off the event loop: a hundred long mails are still a second of regular expressions,
    # and the worker renews the leases of all its runs on that loop.
    found = await asyncio.to_thread(excerpts)
    return {key: text for key, text in found.items() if text}
