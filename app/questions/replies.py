"""Answers by email: a reply to a question's email answers that question, once.

The email channel records each question's email (`watch`): its Message-ID, the Google
account whose Gmail will hold the user's reply, and the historyId to read from. The
reply poller (`app/questions/reply_poller.py`) finds replies whose `In-Reply-To` /
`References` name a recorded Message-ID and hands their text to `answer_by_reply`.

Mail is untrusted data: the text only ever answers the question its headers point at
(through the same service the API uses), nothing is sent because of it, and each Gmail
message is handled at most once (`EmailReply`, unique per account and message, written
in the transaction that answers).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from sqlalchemy import CursorResult, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import insert_ignore, utcnow
from app.core.runtime import Wakeups
from app.questions import service
from app.questions.models import EmailReply, Question, QuestionEmail
from app.users.models import User

log = logging.getLogger(__name__)

ANSWER_CHARS = 2000
"""As the API's answers (`AnswerIn`)."""
_MESSAGE_IDS = re.compile(r"<[^<>\s]{1,400}>")
_ON_WROTE_START = re.compile(r"^\s*On\s.+", re.IGNORECASE)
_WROTE_END = re.compile(r"wrote:\s*$", re.IGNORECASE)
# Where a client puts the original mail below the reply without quoting it: Outlook's
# rule or "Original Message" line, or its header block ("From: …" then "Sent: …").
_ORIGINAL = re.compile(
    r"^\s*(_{10,}|-{3,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine)"
    r"\s*-{3,})\s*$", re.IGNORECASE)
_HEADER_FROM = re.compile(r"^\s*\*?(From|De|Von|Van|Da|Från|Fra)\s*:\*?\s+\S", re.IGNORECASE)
_HEADER_NEXT = re.compile(
    r"^\s*\*?(Sent|Date|Envoyé|Gesendet|Verzonden|Inviato|Enviado|Skickat|Sendt|To|À|An)"
    r"\s*:", re.IGNORECASE)
_FORWARDED = re.compile(
    r"^\s*-{3,}\s*(Forwarded message|Weitergeleitete Nachricht|Message transféré)"
    r"\s*-{3,}\s*$|^\s*Begin forwarded message:\s*$", re.IGNORECASE)
_FORWARD_SUBJECT = re.compile(r"^\s*(Fwd?|WG|TR)\s*:", re.IGNORECASE)


async def watch(
    *, session: AsyncSession, user_id: uuid.UUID, question_id: uuid.UUID,
    delivery_id: uuid.UUID, account_id: uuid.UUID, message_id: str, history_id: str | None,
) -> None:
    """Remember a question's email; a retried delivery (same Message-ID) keeps the first
    record, whose historyId is the earlier one."""
    await session.execute(
        insert_ignore(session, QuestionEmail, ["message_id"]).values(
            id=uuid.uuid4(), user_id=user_id, question_id=question_id, delivery_id=delivery_id,
            account_id=account_id, message_id=message_id[:200], history_id=history_id,
            created_at=utcnow(),
        )
    )


def referenced_ids(in_reply_to: str, references: str) -> list[str]:
    """The Message-IDs a reply points at, the one it answers (In-Reply-To) first."""
    found = _MESSAGE_IDS.findall(in_reply_to or "") + list(
        reversed(_MESSAGE_IDS.findall(references or ""))
    )
    return list(dict.fromkeys(found))


def reply_text(body: str) -> str:
    """What the user wrote: the text of the reply without the quoted mail.

    - Lines quoted with ">" are dropped, with the line that introduces them when it ends
      in ":" ("On <date>, <someone> wrote:" in any language, also when the client wrapped
      it over two lines), wherever they are: above the reply (bottom posting), below it,
      or between its lines.
    - The reply ends at a signature ("-- "), at an English attribution line not followed
      by quoted lines (the original below it unquoted), and where a client puts the
      original unquoted: Outlook's rule or "Original Message" line, or its header block
      ("From: …" followed by "Sent:", "Date:" or "To:")."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    n = 0
    while n < len(lines):
        line = lines[n]
        if line.rstrip() == "--" or _ORIGINAL.match(line) or _header_block(lines, n):
            break
        if _quoted(line):
            n += 1
            continue
        intro = _introduction(lines, n)
        if intro:
            if _quote_follows(lines, n + intro):
                n += intro
                continue
            if _ON_WROTE_START.match(line):
                break  # "On … wrote:" and the original below it, unquoted
        kept.append(line.rstrip())
        n += 1
    return "\n".join(kept).strip().replace("\x00", "")[:ANSWER_CHARS]


def is_forward(subject: str, body: str) -> bool:
    """A forward of the question's email (to someone else), not an answer to it."""
    if _FORWARD_SUBJECT.match(subject or ""):
        return True
    return any(_FORWARDED.match(line) for line in body.splitlines())


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _introduction(lines: list[str], n: int) -> int:
    """How many lines (1 or 2) from `n` make a line introducing a quote: one that ends in
    ":", or an English attribution that the client wrapped over two lines; 0 if none."""
    line = lines[n].rstrip()
    if line.endswith(":"):
        return 1
    following = lines[n + 1].rstrip() if n + 1 < len(lines) else ""
    if _ON_WROTE_START.match(line) and _WROTE_END.search(f"{line} {following}"):
        return 2
    return 0


def _quote_follows(lines: list[str], n: int) -> bool:
    """Whether the next line with text from `n` on is quoted."""
    for line in lines[n:]:
        if line.strip():
            return _quoted(line)
    return False


def _header_block(lines: list[str], n: int) -> bool:
    """Outlook's header block of the original mail: "From: …" and, within the next two
    lines, "Sent:", "Date:" or "To:"."""
    if not _HEADER_FROM.match(lines[n]):
        return False
    return any(_HEADER_NEXT.match(line) for line in lines[n + 1:n + 3])


def _plain(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".!")


def as_answer(question: Question, text: str) -> str:
    """The answer the text gives: the question's choice it names (any case), else the
    text itself (a question with choices takes free text too, as the API does)."""
    choices = [str(c) for c in (question.choices or {}).get("choices", [])]
    said = _plain(text)
    for choice in choices:
        if _plain(choice) == said:
            return choice
    return text


async def handled(
    *, session: AsyncSession, account_id: uuid.UUID, gmail_ids: list[str]
) -> set[str]:
    """The Gmail messages among `gmail_ids` already handled for this account."""
    if not gmail_ids:
        return set()
    rows = await session.execute(
        select(EmailReply.gmail_message_id).where(
            EmailReply.account_id == account_id, EmailReply.gmail_message_id.in_(gmail_ids)
        )
    )
    return set(rows.scalars())


async def emails_named(
    *, session: AsyncSession, account_id: uuid.UUID, message_ids: list[str]
) -> dict[str, QuestionEmail]:
    """Our question emails among `message_ids`, sent to this account's Gmail."""
    if not message_ids:
        return {}
    rows = await session.execute(
        select(QuestionEmail).where(
            QuestionEmail.account_id == account_id, QuestionEmail.message_id.in_(message_ids)
        )
    )
    return {row.message_id: row for row in rows.scalars()}


async def answer_by_reply(
    *, session: AsyncSession, email: QuestionEmail, gmail_message_id: str, text: str,
    wakeups: Wakeups, forward: bool = False,
) -> str:
    """Answer `email`'s question with a reply's text, unless this reply was handled already
    (another poller, an earlier pass) or the question is closed. Returns the outcome:
    "answered", "ignored" or "duplicate"."""
    claimed: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        insert_ignore(session, EmailReply, ["account_id", "gmail_message_id"]).values(
            id=uuid.uuid4(), account_id=email.account_id, gmail_message_id=gmail_message_id,
            question_id=email.question_id, outcome="answered", detail="",
            created_at=utcnow(),
        )
    )
    if claimed.rowcount != 1:
        return "duplicate"
    reply = (
        await session.execute(
            select(EmailReply).where(EmailReply.account_id == email.account_id,
                                     EmailReply.gmail_message_id == gmail_message_id)
        )
    ).scalar_one()
    question = await session.get(Question, email.question_id)
    user = await session.get(User, email.user_id)
    why = ""
    if question is None or user is None:
        why = "the question is gone"
    elif forward:
        why = "a forward of the question's email, not a reply to it"
    elif not text:
        why = "the reply has no text above the quoted mail"
    elif question.status != "open":
        why = f"the question is already {question.status}"
    else:
        try:
            await service.answer(session=session, user=user, question_id=question.id,
                                 text=as_answer(question, text), wakeups=wakeups)
        except service.QuestionClosed as exc:
            why = str(exc)
    if why:
        reply.outcome, reply.detail = "ignored", why
        log.info("email reply %s to question %s ignored: %s", gmail_message_id,
                 email.question_id, why)
    else:
        log.info("email reply %s answered question %s", gmail_message_id, email.question_id)
    await session.flush()
    return reply.outcome
