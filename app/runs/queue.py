"""The run queue in SQL: enqueue, claim, lease renewal, fenced outcome writes.

A claimed run carries a lease token. Every write of its outcome names the
token, so a worker that lost its lease (expired and re-claimed by another)
changes nothing.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CursorResult,
    DateTime,
    String,
    Uuid,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.core.db import db_now, insert_ignore
from app.core.pubsub import publish_event
from app.runs.models import Run

# PostgreSQL NOTIFY channel that wakes idle workers when a run is queued.
RUNS_CHANNEL = "pilotlight_runs"


@dataclass(frozen=True)
class Claim:
    run_id: uuid.UUID
    lease_token: uuid.UUID
    attempt: int
    # When the run became due: its fire time on a first attempt, else its retry time.
    due_at: datetime | None = None
    claimed_at: datetime | None = None


async def enqueue(
    *,
    session: AsyncSession,
    user_id: uuid.UUID,
    instruction_id: uuid.UUID,
    reason: str,
    scheduled_for: datetime,
    window_start: datetime | None,
    window_end: datetime | None,
) -> uuid.UUID | None:
    """Queue a run; None when a run for this (instruction, fire time) already exists.

    On PostgreSQL the same transaction notifies idle workers; the notification
    is delivered only if it commits.
    """
    run_id = uuid.uuid4()
    now = await db_now(session)
    stmt = insert_ignore(session, Run, ["instruction_id", "scheduled_for"]).values(
        id=run_id, user_id=user_id, instruction_id=instruction_id, reason=reason,
        scheduled_for=scheduled_for, window_start=window_start, window_end=window_end,
        status="queued", attempt=0, available_at=now, interaction_ids={},
        input_tokens=0, output_tokens=0, thought_tokens=0, cached_tokens=0, cost_usd=0.0,
        created_at=now, updated_at=now,
    )
    result: CursorResult[Any] = await session.execute(stmt)  # type: ignore[assignment]
    if result.rowcount != 1:
        return None
    await notify_workers(session)
    return run_id


# The columns enqueue_many is given for each run; the rest start as in `enqueue`.
_GIVEN = ("user_id", "instruction_id", "reason", "scheduled_for", "window_start", "window_end")


def _new_run_ids(count: int) -> list[uuid.UUID]:
    """`count` random (version 4) UUIDs, as uuid4 makes them, from one read of urandom."""
    data = os.urandom(16 * count)
    return [uuid.UUID(bytes=data[i:i + 16], version=4) for i in range(0, 16 * count, 16)]


def _runs_from_arrays() -> tuple[list[str], Any]:
    """The columns and SELECT of new runs from one array per given column (PostgreSQL).

    As INSERT ... SELECT FROM unnest(...), a batch is one statement with a parameter
    per column rather than per value: binding thousands of values one by one costs
    more Python than the insert costs PostgreSQL.
    """
    from sqlalchemy.dialects.postgresql import ARRAY

    moment = DateTime(timezone=True)
    new = (
        func.unnest(
            bindparam("id", type_=ARRAY(Uuid())),
            bindparam("user_id", type_=ARRAY(Uuid())),
            bindparam("instruction_id", type_=ARRAY(Uuid())),
            bindparam("reason", type_=ARRAY(String())),
            bindparam("scheduled_for", type_=ARRAY(moment)),
            bindparam("window_start", type_=ARRAY(moment)),
            bindparam("window_end", type_=ARRAY(moment)),
        )
        .table_valued("id", *_GIVEN)
        .render_derived(name="new_runs")
    )
    now = bindparam("now", type_=moment)
    constants = {
        "status": literal_column("'queued'"), "attempt": literal_column("0"),
        "available_at": now, "interaction_ids": literal_column("'{}'::jsonb"),
        "input_tokens": literal_column("0"), "output_tokens": literal_column("0"),
        "thought_tokens": literal_column("0"), "cached_tokens": literal_column("0"),
        "cost_usd": literal_column("0.0"), "created_at": now, "updated_at": now,
    }
    columns = ["id", *_GIVEN, *constants]
    return columns, select(*(new.c[name] for name in ("id", *_GIVEN)), *constants.values())


_COLUMNS_FROM_ARRAYS, _RUNS_FROM_ARRAYS = _runs_from_arrays()


async def enqueue_many(
    *, session: AsyncSession, rows: Sequence[Mapping[str, Any]], now: datetime | None = None
) -> int:
    """Queue many runs with one multi-row INSERT; returns how many were new.

    Each row gives user_id, instruction_id, reason, scheduled_for, window_start and
    window_end. A row whose (instruction, fire time) already has a run is skipped, as
    in `enqueue`. `now` is the database's clock (read when not given). One notification
    wakes idle workers if anything was queued.
    """
    if not rows:
        return 0
    if now is None:
        now = await db_now(session)
    ids = _new_run_ids(len(rows))
    connection = await session.connection()
    stmt = insert_ignore(session, Run, ["instruction_id", "scheduled_for"])
    # RETURNING names the rows that were new (those that met no conflict).
    if connection.dialect.name == "postgresql":
        arrays: dict[str, Any] = {name: [row[name] for row in rows] for name in _GIVEN}
        result = await connection.execute(
            stmt.from_select(_COLUMNS_FROM_ARRAYS, _RUNS_FROM_ARRAYS).returning(Run.id),
            {"id": ids, "now": now, **arrays},
        )
    else:
        # Executed with a list of rows, the statement is compiled once and cached, and
        # SQLAlchemy's "insertmanyvalues" sends it as one INSERT ... VALUES (...), (...)
        # per 1,000 rows (fewer if the limit on bound parameters asks).
        values = [
            {
                "id": run_id, "status": "queued", "attempt": 0, "available_at": now,
                "interaction_ids": {}, "input_tokens": 0, "output_tokens": 0,
                "thought_tokens": 0, "cached_tokens": 0, "cost_usd": 0.0, "created_at": now,
                "updated_at": now, **{name: row[name] for name in _GIVEN},
            }
            for run_id, row in zip(ids, rows, strict=True)
        ]
        result = await connection.execute(stmt.returning(Run.id), values)
    inserted = len(result.all())
    if inserted:
        await notify_workers(session)
    return inserted


async def notify_workers(session: AsyncSession) -> None:
    """Wake idle workers on every machine once this transaction commits (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": RUNS_CHANNEL})
        # A run was queued (or re-queued): its status changed, tell the event streams.
        await publish_event(session)


async def claim(
    *, session: AsyncSession, worker_id: str, limit: int, lease_seconds: float
) -> list[Claim]:
    """Take up to `limit` queued runs that are due, oldest first, one per instruction.

    A run whose instruction already has a running run waits its turn. Two
    workers racing for the same instruction on PostgreSQL meet the unique
    index of running runs; the loser claims nothing this time and polls again.
    """
    now = await db_now(session)
    token = uuid.uuid4()
    running = aliased(Run)
    # FOR UPDATE SKIP LOCKED lets concurrent workers take disjoint batches on
    # PostgreSQL; SQLite ignores it and serialises writers instead.
    candidates = (
        await session.execute(
            select(Run.id, Run.instruction_id)
            .where(
                Run.status == "queued",
                Run.available_at <= now,
                ~exists().where(
                    running.instruction_id == Run.instruction_id, running.status == "running"
                ),
            )
            .order_by(Run.available_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    first_per_instruction = {row.instruction_id: row.id for row in reversed(candidates)}
    chosen = list(first_per_instruction.values())
    if not chosen:
        return []
    stmt = (
        update(Run)
        .where(Run.id.in_(chosen), Run.status == "queued")
        .values(
            status="running", attempt=Run.attempt + 1, lease_token=token,
            lease_expires_at=now + timedelta(seconds=lease_seconds), worker_id=worker_id,
            started_at=now, updated_at=now,
        )
        .returning(Run.id, Run.attempt, Run.scheduled_for, Run.available_at)
        .execution_options(synchronize_session=False)
    )
    try:
        async with session.begin_nested():
            rows = (await session.execute(stmt)).all()
    except IntegrityError:
        return []  # another worker started a run of one of these instructions just now
    if rows:
        await publish_event(session)
    return [
        Claim(
            run_id=r.id, lease_token=token, attempt=r.attempt, claimed_at=now,
            due_at=r.scheduled_for if r.attempt == 1 else r.available_at,
        )
        for r in rows
    ]


async def renew(*, session: AsyncSession, claim: Claim, lease_seconds: float) -> bool:
    """Extend a lease; False when it was lost (expired and taken, or cancelled)."""
    now = await db_now(session)
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Run)
        .where(Run.id == claim.run_id, Run.lease_token == claim.lease_token,
               Run.status == "running")
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def finish(*, session: AsyncSession, claim: Claim, **values: Any) -> bool:
    """Write a run's outcome if this claim still holds its lease."""
    values.setdefault("updated_at", await db_now(session))
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Run)
        .where(Run.id == claim.run_id, Run.lease_token == claim.lease_token,
               Run.status == "running")
        .values(lease_token=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1 and "status" in values:
        await publish_event(session)
    return result.rowcount == 1


async def still_held(*, session: AsyncSession, claim: Claim) -> bool:
    """True when this claim still holds the run (used to fence step writes)."""
    held = await session.execute(
        select(Run.id).where(
            Run.id == claim.run_id, Run.lease_token == claim.lease_token, Run.status == "running"
        )
    )
    return held.first() is not None


def retry_delay(attempt: int, base_seconds: float) -> float:
    """Exponential backoff with full jitter: up to base * 2^(attempt-1)."""
    ceiling = base_seconds * (2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


async def release(*, session: AsyncSession, claim: Claim) -> bool:
    """Give a claimed run back to the queue untouched (shutdown); the attempt is not counted."""
    now = await db_now(session)
    released = await finish(
        session=session, claim=claim, status="queued", available_at=now,
        attempt=Run.attempt - 1, worker_id=None, updated_at=now,
    )
    if released:
        await notify_workers(session)
    return released


async def rescue_expired(*, session: AsyncSession, limit: int = 500) -> int:
    """Re-queue runs whose worker stopped renewing its lease (it died or hung)."""
    now = await db_now(session)
    expired = (
        select(Run.id)
        .where(Run.status == "running", Run.lease_expires_at < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Run)
        .where(Run.id.in_(expired), Run.status == "running")
        .values(status="queued", lease_token=None, lease_expires_at=None, worker_id=None,
                available_at=now, updated_at=now,
                error="the worker holding this run stopped; it was queued again")
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        await notify_workers(session)
    return result.rowcount
