"""Runs as the user sees them: queue one now, list, read with steps, cancel."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import queries as accounts
from app.core.db import after_commit, utcnow
from app.core.errors import Conflict, NotFound
from app.core.pagination import newest_first
from app.core.pubsub import publish_event
from app.core.runtime import Wakeups
from app.instructions.models import Instruction
from app.runs import metrics, queue
from app.runs.models import FINAL_STATUSES, Run, RunStep
from app.users.models import User

WORKER_CHANNEL = "runs"


class RunNotFound(NotFound):
    pass


class RunAlreadyFinished(Conflict):
    pass


async def run_now(
    *, session: AsyncSession, instruction: Instruction, wakeups: Wakeups
) -> Run:
    """Queue a manual run covering everything since the last covered window."""
    run, _new = await queue_run_now(session=session, instruction=instruction, wakeups=wakeups)
    return run


async def queue_run_now(
    *, session: AsyncSession, instruction: Instruction, wakeups: Wakeups
) -> tuple[Run, bool]:
    """`run_now`, and whether the run is new.

    A run now of the instruction that is queued and has not started yet is returned
    instead of a second one: it reads everything up to when it starts, so a second would
    find nothing new, or, the button pressed ten times, make ten runs of the same mail.
    """
    await accounts.require_something_to_read(
        session=session, user_id=instruction.user_id, kinds=instruction.sources.get("kinds", [])
    )
    # Presses at the same moment queue one run: the instruction's row is their lock.
    await session.execute(
        select(Instruction.id).where(Instruction.id == instruction.id).with_for_update()
    )
    waiting = (
        await session.execute(
            select(Run).where(
                Run.instruction_id == instruction.id, Run.reason == "manual",
                Run.status == "queued", Run.attempt == 0,
            ).order_by(Run.created_at).limit(1)
        )
    ).scalar_one_or_none()
    if waiting is not None:
        return waiting, False
    now = utcnow()
    run_id = await queue.enqueue(
        session=session, user_id=instruction.user_id, instruction_id=instruction.id,
        reason="manual", scheduled_for=now, window_start=instruction.covered_until,
        window_end=now,
    )
    if run_id is None:  # two run-now calls in the same microsecond
        raise Conflict("a run for this instruction was queued at the same instant; try again")
    after_commit(session, lambda: wakeups.notify(WORKER_CHANNEL))
    after_commit(session, metrics.RUNS_QUEUED.labels("manual").inc)
    run = await session.get(Run, run_id)
    assert run is not None
    return run, True


async def preview(
    *, session: AsyncSession, instruction: Instruction, days: int, wakeups: Wakeups
) -> Run:
    """Queue a trial run over the last `days` days: it delivers nothing and moves no cursor."""
    await accounts.require_something_to_read(
        session=session, user_id=instruction.user_id, kinds=instruction.sources.get("kinds", [])
    )
    now = utcnow()
    run_id = await queue.enqueue(
        session=session, user_id=instruction.user_id, instruction_id=instruction.id,
        reason="preview", scheduled_for=now, window_start=now - timedelta(days=days),
        window_end=now,
    )
    if run_id is None:
        raise Conflict("a run for this instruction was queued at the same instant; try again")
    after_commit(session, lambda: wakeups.notify(WORKER_CHANNEL))
    run = await session.get(Run, run_id)
    assert run is not None
    return run


async def get(*, session: AsyncSession, user: User, run_id: uuid.UUID) -> Run:
    """One of the user's runs; another user's is not found."""
    run = (
        await session.execute(select(Run).where(Run.id == run_id, Run.user_id == user.id))
    ).scalar_one_or_none()
    if run is None:
        raise RunNotFound(f"run {run_id} not found")
    return run


async def steps(*, session: AsyncSession, run: Run) -> Sequence[RunStep]:
    """The run's steps in order, attempt by attempt."""
    result = await session.execute(
        select(RunStep)
        .where(RunStep.run_id == run.id, RunStep.user_id == run.user_id)
        .order_by(RunStep.attempt, RunStep.seq)
    )
    return result.scalars().all()


async def list_page(
    *,
    session: AsyncSession,
    user: User,
    instruction_id: uuid.UUID | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Run], bool]:
    stmt = select(Run).where(Run.user_id == user.id)
    if instruction_id is not None:
        stmt = stmt.where(Run.instruction_id == instruction_id)
    if status is not None:
        stmt = stmt.where(Run.status == status)
    stmt = newest_first(stmt, Run.created_at, Run.id, cursor=cursor, limit=limit)
    rows = (await session.execute(stmt)).scalars().all()
    return rows[:limit], len(rows) > limit


async def cancel(*, session: AsyncSession, user: User, run_id: uuid.UUID) -> Run:
    """Cancel a queued, waiting or running run; a running one loses its lease."""
    run = (
        await session.execute(
            select(Run).where(Run.id == run_id, Run.user_id == user.id).with_for_update()
        )
    ).scalar_one_or_none()
    if run is None:
        raise RunNotFound(f"run {run_id} not found")
    if run.status in FINAL_STATUSES:
        raise RunAlreadyFinished(f"run {run_id} already ended as {run.status}")
    now = utcnow()
    run.status = "cancelled"
    run.lease_token = None
    run.lease_expires_at = None
    run.finished_at = now
    run.updated_at = now
    await session.flush()
    await publish_event(session, user.id)  # live feeds see it on commit
    return run


async def cancel_queued_for(*, session: AsyncSession, instruction_id: uuid.UUID) -> None:
    """Cancel the queued and waiting runs of an instruction that is going away.

    A running one is left to its worker, which cancels it when it sees the
    instruction gone.
    """
    await _cancel_where(
        session, "the instruction was deleted", Run.instruction_id == instruction_id,
        Run.status.in_(("queued", "waiting_for_user")),
    )


async def cancel_paused_away(*, session: AsyncSession, instruction_id: uuid.UUID) -> None:
    """Cancel the queued runs of its schedule or watches when an instruction is paused,
    so that a resume does not bring them back. Runs asked for by hand, previews and
    runs resuming from a question go ahead, as the worker's own check lets them."""
    await _cancel_where(
        session, "the instruction was paused", Run.instruction_id == instruction_id,
        Run.status == "queued", Run.reason.in_(("schedule", "watch")),
        keep=lambda run: bool(run.agent_state),
    )


async def _cancel_where(
    session: AsyncSession, why: str, *where: Any, keep: Callable[[Run], bool] | None = None
) -> None:
    now = utcnow()
    rows = [
        run for run in (
            await session.execute(select(Run).where(*where).with_for_update())
        ).scalars()
        if keep is None or not keep(run)
    ]
    for run in rows:
        run.status = "cancelled"
        run.finished_at = now
        run.updated_at = now
        run.error = why
    await session.flush()
    if rows:
        await publish_event(session, rows[0].user_id)


async def latest_by_instruction(
    *, session: AsyncSession, user: User, instruction_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Run]:
    """The newest run of each of these instructions (previews left out), by instruction."""
    if not instruction_ids:
        return {}
    newest = (
        select(Run.instruction_id, func.max(Run.created_at).label("at"))
        .where(Run.user_id == user.id, Run.instruction_id.in_(instruction_ids),
               Run.reason != "preview")
        .group_by(Run.instruction_id)
        .subquery()
    )
    rows = await session.execute(
        select(Run).join(
            newest, (Run.instruction_id == newest.c.instruction_id)
            & (Run.created_at == newest.c.at)
        ).where(Run.user_id == user.id)
    )
    return {run.instruction_id: run for run in rows.scalars()}
