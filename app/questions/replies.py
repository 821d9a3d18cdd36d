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
    """What the user wrote: the text above the quoted mail.

    Stops at the attribution line ("On <date>, <someone> wrote:", also when the mail
    client wrapped it over two lines) and at a signature ("-- "); drops lines quoted
    with ">"."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for n, line in enumerate(lines):
        if _ON_WROTE_START.match(line) and (
            _WROTE_END.search(line)
            or (n + 1 < len(lines) and _WROTE_END.search(line + " " + lines[n + 1]))
        ):
            break
        if line.rstrip() == "--":
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    return "\n".join(kept).strip().replace("\x00", "")[:ANSWER_CHARS]


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
    wakeups: Wakeups,
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
