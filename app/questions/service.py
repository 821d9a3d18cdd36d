"""Follow-up questions: list the open ones, answer one (which re-queues its run)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import after_commit, utcnow
from app.core.errors import Conflict, NotFound
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


async def list_open(*, session: AsyncSession, user: User) -> Sequence[Question]:
    result = await session.execute(
        select(Question)
        .where(Question.user_id == user.id, Question.status == "open")
        .order_by(Question.created_at)
    )
    return result.scalars().all()


async def answer(
    *, session: AsyncSession, user: User, question_id: uuid.UUID, text: str, wakeups: Wakeups
) -> Question:
    """Record the answer and put the waiting run back in the queue to resume."""
    question = (
        await session.execute(
            select(Question)
            .where(Question.id == question_id, Question.user_id == user.id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if question is None:
        raise QuestionNotFound(f"question {question_id} not found")
    if question.status != "open":
        raise QuestionClosed(f"question {question_id} is already {question.status}")
    now = utcnow()
    question.status = "answered"
    question.answer = text
    question.answered_at = now
    question.updated_at = now
    run = (
        await session.execute(select(Run).where(Run.id == question.run_id).with_for_update())
    ).scalar_one()
    if run.status == "waiting_for_user":
        run.status = "queued"
        run.available_at = now
        run.updated_at = now
        await queue.notify_workers(session)  # workers in other processes, on commit
        after_commit(session, lambda: wakeups.notify(WORKER_CHANNEL))
    await session.flush()
    return question


async def expire_open_for(*, session: AsyncSession, instruction_id: uuid.UUID) -> None:
    """Close the open questions of an instruction that is going away: they can't be answered."""
    now = utcnow()
    await session.execute(
        update(Question)
        .where(Question.instruction_id == instruction_id, Question.status == "open")
        .values(status="expired", updated_at=now)
        .execution_options(synchronize_session=False)
    )
