"""Follow-up questions: store one the agent asked, list the open ones, answer one (which
re-queues its run), and expire the ones nobody answered (their runs resume without).

A question repeated on the same instruction while the first is open (same text,
ignoring case and whitespace) is merged: it gets its own row, since its run
resumes on its own call, but the user is not asked again, and one answer
answers them all: also an answer to the first after its run was cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import after_commit, db_now, utcnow
from app.core.errors import BadRequest, Conflict, NotFound
from app.core.runtime import Wakeups
from app.questions.models import Question
from app.runs import queue
from app.runs.models import Run
from app.runs.service import WORKER_CHANNEL
from app.users.models import User


class QuestionNotFound(NotFound):
    pass


class QuestionClosed(Conflict):
    pass


class NoSuchChoice(BadRequest):
    pass


async def get(*, session: AsyncSession, user: User, question_id: uuid.UUID) -> Question:
    """One of the user's questions, in any state; another user's is not found."""
    question = (
        await session.execute(
            select(Question).where(Question.id == question_id, Question.user_id == user.id)
        )
    ).scalar_one_or_none()
    if question is None:
        raise QuestionNotFound(f"question {question_id} not found")
    return question


async def list_open(*, session: AsyncSession, user: User) -> Sequence[Question]:
    """The open questions, oldest first; a merged repeat is shown once, as the first."""
    result = await session.execute(
        select(Question)
        .where(Question.user_id == user.id, Question.status == "open")
        .order_by(Question.created_at, Question.id)
    )
    shown: dict[tuple[uuid.UUID, str], Question] = {}
    for question in result.scalars():
        shown.setdefault((question.instruction_id, same_text(question.text)), question)
    return list(shown.values())


async def standing_for(*, session: AsyncSession, user: User, question_id: uuid.UUID) -> Question:
    """The question a notice about `question_id` stands for: that one, or, when its run was
    cancelled, the open one a later run asked again (which an answer to it answers)."""
    question = await get(session=session, user=user, question_id=question_id)
    return await asked_again(session, question) or question


async def asked_again(session: AsyncSession, question: Question) -> Question | None:
    """The open question a later run asked again in place of `question`, when its run was
    cancelled (the repeat was merged into it, so the user was told only of this one)."""
    if question.status != "cancelled":
        return None
    same = await _open_like(session, question.instruction_id, question.text, lock=False)
    return same[0] if same else None


def same_text(text: str) -> str:
    """The form in which two questions are the same: case and whitespace ignored."""
    return " ".join(text.casefold().split())


async def _open_like(
    session: AsyncSession, instruction_id: uuid.UUID, text: str, *, lock: bool = True
) -> list[Question]:
    """The open questions of an instruction that say `text`, oldest first, locked unless
    only read."""
    query = (
        select(Question)
        .where(Question.instruction_id == instruction_id, Question.status == "open")
        .order_by(Question.created_at, Question.id)
    )
    rows = await session.execute(query.with_for_update() if lock else query)
    key = same_text(text)
    return [q for q in rows.scalars() if same_text(q.text) == key]


async def ask(
    *,
    session: AsyncSession,
    user_id: uuid.UUID,
    run_id: uuid.UUID,
    instruction_id: uuid.UUID,
    interaction_id: str,
    call_id: str,
    text: str,
    choices: Sequence[str],
    expires_at: datetime,
) -> tuple[Question, bool]:
    """Store a question the agent asked; True when it repeats an open one (merged).

    A merged question expires with the one it repeats: to the user they are one.
    """
    earlier = await _open_like(session, instruction_id, text)
    question = Question(
        user_id=user_id, run_id=run_id, instruction_id=instruction_id,
        interaction_id=interaction_id, call_id=call_id, text=text,
        choices={"choices": list(choices)}, status="open",
        expires_at=earlier[0].expires_at if earlier else expires_at,
    )
    session.add(question)
    await session.flush()
    return question, bool(earlier)


async def answer(
    *, session: AsyncSession, user: User, question_id: uuid.UUID, text: str | None = None,
    choice: int | None = None, wakeups: Wakeups,
) -> Question:
    """Record the answer (`text`, or the choice at index `choice`), also on the open
    questions it repeats, and re-queue their runs."""
    question = await get(session=session, user=user, question_id=question_id)
    # Lock it with the open questions it repeats, in one order (no deadlock between two
    # answers to merged questions); the loser finds it answered.
    same = await _open_like(session, question.instruction_id, question.text)
    if question not in same:
        await session.refresh(question)
        if question.status != "cancelled" or not same:
            raise QuestionClosed(f"question {question_id} is already {question.status}")
        # Its run was cancelled, but a later run asked it again, merged into it: every
        # notice the user got names this one, so its answer is theirs.
        question = same[0]
    if choice is not None:
        text = choice_at(question, choice)
    if text is None:
        raise ValueError("an answer needs its text or a choice")
    now = utcnow()
    for each in same:
        each.status = "answered"
        each.answer = text
        each.answered_at = now
        each.updated_at = now
    if await _requeue(session, (q.run_id for q in same), now):
        after_commit(session, lambda: wakeups.notify(WORKER_CHANNEL))
    await session.flush()
    return question


def choice_at(question: Question, index: int) -> str:
    """The whole text of the question's choice at `index` (0 is the first)."""
    choices = [str(c) for c in (question.choices or {}).get("choices", [])]
    if not 0 <= index < len(choices):
        held = (f"its choices are numbered 0 to {len(choices) - 1}" if choices
                else "it has no choices")
        raise NoSuchChoice(f"question {question.id} has no choice {index}: {held}")
    return choices[index]


async def expire_due(*, session: AsyncSession, limit: int = 100) -> int:
    """Expire open questions past `expires_at` and re-queue their runs (to resume unanswered).

    Skips rows another process has locked, so expirers on many workers share the work.
    """
    now = await db_now(session)
    due = (
        await session.execute(
            select(Question)
            .where(Question.status == "open", Question.expires_at <= now)
            .order_by(Question.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).scalars().all()
    for question in due:
        question.status = "expired"
        question.updated_at = now
    await _requeue(session, (q.run_id for q in due), now)
    await session.flush()
    return len(due)


async def _requeue(session: AsyncSession, run_ids: Iterable[uuid.UUID], now: datetime) -> int:
    """Put the runs among `run_ids` that wait for the user back in the queue."""
    ids = sorted(set(run_ids))
    if not ids:
        return 0
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Run)
        .where(Run.id.in_(ids), Run.status == "waiting_for_user")
        .values(status="queued", available_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        await queue.notify_workers(session)  # workers in other processes, on commit
    return result.rowcount


async def cancel_open_for_run(*, session: AsyncSession, run_id: uuid.UUID) -> None:
    """Close the open questions of a run that was cancelled: answering could not resume it.
    An answer to one that a later run asked again goes to that run (`answer`)."""
    await session.execute(
        update(Question)
        .where(Question.run_id == run_id, Question.status == "open")
        .values(status="cancelled", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def cancel_open_for(*, session: AsyncSession, instruction_id: uuid.UUID) -> None:
    """Close the open questions of an instruction that is going away: they can't be answered."""
    now = utcnow()
    await session.execute(
        update(Question)
        .where(Question.instruction_id == instruction_id, Question.status == "open")
        .values(status="cancelled", updated_at=now)
        .execution_options(synchronize_session=False)
    )
