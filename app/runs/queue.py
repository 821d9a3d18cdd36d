"""The run queue in SQL: enqueue, claim, lease renewal, fenced outcome writes.

A claimed run carries a lease token. Every write of its outcome names the
token, so a worker that lost its lease (expired and re-claimed by another)
changes nothing.
"""

from __future__ import annotations

import json
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
    case,
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

from app.core.db import db_now, insert_ignore, utcnow, uuid7, uuid7s
from app.core.pubsub import EVENTS_CHANNEL, publish_event
from app.instructions.models import Instruction
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
    trigger_item: dict[str, Any] | None = None,
) -> uuid.UUID | None:
    """Queue a run; None when a run for this (instruction, fire time) already exists.

    `trigger_item` names the message or file that fired a watch run.

    On PostgreSQL the same transaction notifies idle workers; the notification
    is delivered only if it commits.
    """
    run_id = uuid7()
    now = await db_now(session)
    stmt = insert_ignore(session, Run, ["instruction_id", "scheduled_for"]).values(
        id=run_id, user_id=user_id, instruction_id=instruction_id, reason=reason,
        scheduled_for=scheduled_for, window_start=window_start, window_end=window_end,
        status="queued", attempt=0, available_at=now, interaction_ids={},
        input_tokens=0, output_tokens=0, thought_tokens=0, cached_tokens=0, cost_usd=0.0,
        created_at=now, updated_at=now, trigger_item=trigger_item,
    )
    result: CursorResult[Any] = await session.execute(stmt)  # type: ignore[assignment]
    if result.rowcount != 1:
        return None
    await notify_workers(session)
    return run_id


# The columns enqueue_many is given for each run; the rest start as in `enqueue`.
_GIVEN = ("user_id", "instruction_id", "reason", "scheduled_for", "window_start", "window_end")


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


COLUMNS_FROM_ARRAYS, RUNS_FROM_ARRAYS = _runs_from_arrays()


def run_arrays(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The parameters of RUNS_FROM_ARRAYS but `id` and `now`: one list per given column."""
    return {name: [row[name] for row in rows] for name in _GIVEN}


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
    ids = uuid7s(len(rows))
    connection = await session.connection()
    stmt = insert_ignore(session, Run, ["instruction_id", "scheduled_for"])
    # RETURNING names the rows that were new (those that met no conflict).
    if connection.dialect.name == "postgresql":
        arrays = run_arrays(rows)
        result = await connection.execute(
            stmt.from_select(COLUMNS_FROM_ARRAYS, RUNS_FROM_ARRAYS).returning(Run.id),
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


# PostgreSQL: a whole claim in one statement. The due runs, oldest first, locked with
# SKIP LOCKED so that workers take disjoint batches; the first of each instruction (one
# running run per instruction); their lease on the database's clock (one moment for the
# whole statement); and a NOTIFY to the event streams, evaluated only if a row was
# claimed.
_CLAIM_UPDATE = """
    WITH candidates AS (
        SELECT r.id, r.instruction_id, r.available_at FROM runs r
        WHERE r.status = 'queued' AND r.available_at <= statement_timestamp()
          AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.instruction_id = r.instruction_id
                          AND o.status = 'running')
        ORDER BY r.available_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), chosen AS (
        SELECT DISTINCT ON (instruction_id) id FROM candidates
        ORDER BY instruction_id, available_at, id
    )
    UPDATE runs SET status = 'running', attempt = runs.attempt + 1,
        lease_token = :token,
        lease_expires_at = statement_timestamp() + make_interval(secs => :lease_seconds),
        worker_id = :worker_id, started_at = statement_timestamp(),
        updated_at = statement_timestamp()
    FROM chosen WHERE runs.id = chosen.id AND runs.status = 'queued'
    RETURNING runs.*
"""

_CLAIM_POSTGRESQL = text(
    f"""
    WITH claimed AS ({_CLAIM_UPDATE})
    SELECT claimed.id, claimed.attempt, claimed.scheduled_for, claimed.available_at,
        claimed.started_at, (SELECT pg_notify(:events, '')) AS notified
    FROM claimed
    """
)

# The claimed runs as they are after the claim (RETURNING runs.*), for statements that
# read more with them (app/runs/execute.py loads each run's instruction, user and
# accounts in the same statement).
CLAIMED = text(_CLAIM_UPDATE).columns(*Run.__table__.columns).cte("claimed")
CLAIMED_NOTIFY: Any = literal_column(f"(SELECT pg_notify('{EVENTS_CHANNEL}', ''))")


def claim_params(*, worker_id: str, limit: int, lease_seconds: float) -> dict[str, Any]:
    """The parameters of a claim on PostgreSQL, with a new lease token."""
    return {"limit": limit, "token": uuid.uuid4(), "lease_seconds": float(lease_seconds),
            "worker_id": worker_id, "events": EVENTS_CHANNEL}


def claim_of(run: Run, token: uuid.UUID) -> Claim:
    """The claim of a run as it is right after it was claimed."""
    return Claim(
        run_id=run.id, lease_token=token, attempt=run.attempt, claimed_at=run.started_at,
        due_at=run.scheduled_for if run.attempt == 1 else run.available_at,
    )


async def claim(
    *, session: AsyncSession, worker_id: str, limit: int, lease_seconds: float
) -> list[Claim]:
    """Take up to `limit` queued runs that are due, oldest first, one per instruction.

    A run whose instruction already has a running run waits its turn. Two
    workers racing for the same instruction on PostgreSQL meet the unique
    index of running runs; the loser claims nothing this time and polls again.
    """
    if session.get_bind().dialect.name == "postgresql":
        return await _claim_postgresql(
            session=session, worker_id=worker_id, limit=limit, lease_seconds=lease_seconds
        )
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


async def _claim_postgresql(
    *, session: AsyncSession, worker_id: str, limit: int, lease_seconds: float
) -> list[Claim]:
    params = claim_params(worker_id=worker_id, limit=limit, lease_seconds=lease_seconds)
    token = params["token"]
    # Another worker may have started a run of one of these instructions just now: the
    # unique index of running runs refuses the claim, which then takes nothing this time.
    # A claim that begins its transaction rolls it back; one inside a transaction that
    # holds more work uses a savepoint.
    if not session.in_transaction():
        try:
            rows = (await session.execute(_CLAIM_POSTGRESQL, params)).all()
        except IntegrityError:
            await session.rollback()
            return []
    else:
        try:
            async with session.begin_nested():
                rows = (await session.execute(_CLAIM_POSTGRESQL, params)).all()
        except IntegrityError:
            return []
    return [
        Claim(
            run_id=r.id, lease_token=token, attempt=r.attempt, claimed_at=r.started_at,
            due_at=r.scheduled_for if r.attempt == 1 else r.available_at,
        )
        for r in rows
    ]


_RENEW_MANY_POSTGRESQL = text(
    """
    UPDATE runs SET lease_expires_at = clock_timestamp() + make_interval(secs => :seconds)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[])) AS held(id, token)
    WHERE runs.id = held.id AND runs.lease_token = held.token AND runs.status = 'running'
    RETURNING runs.id
    """
)


async def renew_many(
    *, session: AsyncSession, claims: Sequence[Claim], lease_seconds: float
) -> set[uuid.UUID]:
    """Extend many leases at once; returns the runs whose lease still held (see `renew`)."""
    if session.get_bind().dialect.name != "postgresql":
        return {
            claim.run_id for claim in claims
            if await renew(session=session, claim=claim, lease_seconds=lease_seconds)
        }
    rows = await session.execute(
        _RENEW_MANY_POSTGRESQL,
        {"ids": [c.run_id for c in claims], "tokens": [c.lease_token for c in claims],
         "seconds": float(lease_seconds)},
    )
    return {row[0] for row in rows}


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


# What an attempt spent: its tokens and their cost, ADDED to the run's (a run's
# attempts, failed ones too, and its parts before and after a pause all count). The
# values of a charge also hold `day_start`: the start of the user's day now (the cap's).
SPENT_COLUMNS = ("input_tokens", "output_tokens", "thought_tokens", "cached_tokens", "cost_usd")


def spent(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of `finish` that add an attempt's spend (SPENT_COLUMNS of `values`) to
    the run's, and date it (`charged_at`) when it cost money. What the run had spent by
    a charge on an earlier day (before `values["day_start"]`) counted on that day's cap:
    it becomes `charged_before_usd` (and that charge's time `charged_before_at`, the day
    /usage puts it on), and only the rest counts on today's."""
    added: dict[str, Any] = {
        column: getattr(Run, column) + values[column] for column in SPENT_COLUMNS
    }
    if values["cost_usd"] > 0:
        # Both read the row as it was before this charge (SQL's SET).
        added["charged_before_usd"] = case(
            (Run.charged_at < values["day_start"], Run.cost_usd),
            else_=Run.charged_before_usd,
        )
        added["charged_before_at"] = case(
            (Run.charged_at < values["day_start"], Run.charged_at),
            else_=Run.charged_before_at,
        )
        added["charged_at"] = utcnow()
    return added


async def charge(*, session: AsyncSession, run_id: uuid.UUID, values: Mapping[str, Any]) -> None:
    """Add an attempt's spend to the run whatever its lease: the tokens were paid for
    even when the worker lost the run (it was cancelled, or taken over). Only spend is
    written, added to what the holder adds; nothing else of the run changes."""
    await session.execute(
        update(Run).where(Run.id == run_id).values(**spent(values))
        .execution_options(synchronize_session=False)
    )


async def charge_held(*, session: AsyncSession, claim: Claim, values: Mapping[str, Any]) -> bool:
    """Add a model turn's spend to the run if this claim still holds it (False if not:
    nothing is written). A fence like `still_held` that charges the turn in the same
    transaction as its step: a worker killed after that commit has left its turn on the
    run, and one that ends its attempt later does not add it again."""
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Run)
        .where(Run.id == claim.run_id, Run.lease_token == claim.lease_token,
               Run.status == "running")
        .values(**spent(values))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


# The outcome a run's attempt ends with, as `finish_many` writes it for many runs at once;
# its SPENT_COLUMNS are the attempt's, added to the run's.
OUTCOME_COLUMNS = (
    "status", "finished_at", "result", "model", "error", "interaction_ids", "agent_state",
    *SPENT_COLUMNS,
)
_JSON_OUTCOMES = ("result", "interaction_ids", "agent_state")

# PostgreSQL: every run's outcome in one UPDATE ... FROM unnest(...), fenced row by row
# by the claim's lease token; it returns the runs whose lease still held.
# The SET list of a run's outcome from a row `v` of outcomes (also used by outcomes_sql).
OUTCOME_SET = """status = v.status, finished_at = v.finished_at,
        result = CAST(v.result AS jsonb), model = v.model, error = v.error,
        interaction_ids = CAST(v.interaction_ids AS jsonb),
        agent_state = CAST(v.agent_state AS jsonb),
        input_tokens = runs.input_tokens + v.input_tokens,
        output_tokens = runs.output_tokens + v.output_tokens,
        thought_tokens = runs.thought_tokens + v.thought_tokens,
        cached_tokens = runs.cached_tokens + v.cached_tokens,
        cost_usd = runs.cost_usd + v.cost_usd,
        charged_before_usd = CASE WHEN v.cost_usd > 0 AND runs.charged_at < v.day_start
            THEN runs.cost_usd ELSE runs.charged_before_usd END,
        charged_before_at = CASE WHEN v.cost_usd > 0 AND runs.charged_at < v.day_start
            THEN runs.charged_at ELSE runs.charged_before_at END,
        charged_at = CASE WHEN v.cost_usd > 0 THEN clock_timestamp() ELSE runs.charged_at END,
        lease_token = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()"""

FINISH_MANY_UPDATE = f"""
    UPDATE runs SET {OUTCOME_SET}
    FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[]), CAST(:status AS varchar[]),
        CAST(:finished_at AS timestamptz[]), CAST(:result AS text[]),
        CAST(:model AS varchar[]), CAST(:error AS text[]), CAST(:interaction_ids AS text[]),
        CAST(:agent_state AS text[]), CAST(:input_tokens AS integer[]),
        CAST(:output_tokens AS integer[]), CAST(:thought_tokens AS integer[]),
        CAST(:cached_tokens AS integer[]), CAST(:cost_usd AS float8[]),
        CAST(:day_start AS timestamptz[]))
        AS v(id, token, status, finished_at, result, model, error, interaction_ids,
             agent_state, input_tokens, output_tokens, thought_tokens, cached_tokens,
             cost_usd, day_start)
    WHERE runs.id = v.id AND runs.lease_token = v.token AND runs.status = 'running'
    RETURNING runs.id
"""

_FINISH_MANY_POSTGRESQL = text(
    f"""
    WITH done AS ({FINISH_MANY_UPDATE})
    -- The event streams' NOTIFY (publish_event), evaluated only if a row was written.
    SELECT done.id, (SELECT pg_notify(:events, '')) AS notified FROM done
    """
)


def finish_many_params(outcomes: Sequence[tuple[Claim, Mapping[str, Any]]]) -> dict[str, Any]:
    """The parameters of FINISH_MANY_UPDATE: one array per column."""
    params: dict[str, Any] = {
        "ids": [claim.run_id for claim, _values in outcomes],
        "tokens": [claim.lease_token for claim, _values in outcomes],
    }
    for column in OUTCOME_COLUMNS:
        if column in _JSON_OUTCOMES:
            # JSON as the column type writes it: None is JSON null, as in `finish`.
            params[column] = [json.dumps(values[column]) for _claim, values in outcomes]
        else:
            params[column] = [values[column] for _claim, values in outcomes]
    params["day_start"] = [values["day_start"] for _claim, values in outcomes]
    return params


async def finish_many(
    *, session: AsyncSession, outcomes: Sequence[tuple[Claim, Mapping[str, Any]]]
) -> set[uuid.UUID]:
    """Write many runs' outcomes (each with every key of OUTCOME_COLUMNS and `day_start`,
    its spend added to the run's as `spent` adds it); returns the runs whose claim still
    held the lease. The others are left as they are.

    PostgreSQL writes them with one statement, fenced per row as `finish` is; SQLite
    runs `finish` for each in the same transaction.
    """
    if not outcomes:
        return set()
    if session.get_bind().dialect.name != "postgresql":
        written = set()
        for claim, values in outcomes:
            outcome = {k: v for k, v in values.items() if k != "day_start"}
            if await finish(session=session, claim=claim, **{**outcome, **spent(values)}):
                written.add(claim.run_id)
        return written
    params = finish_many_params(outcomes)
    rows = await session.execute(_FINISH_MANY_POSTGRESQL, {**params, "events": EVENTS_CHANNEL})
    return {row[0] for row in rows}


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
    """Re-queue runs whose worker stopped renewing its lease (it died or hung).

    One whose instruction's row is gone is cancelled instead: a worker that claims such
    a run finds nothing to load and lets its lease run out. (Runs have no foreign key
    to their instruction, see app/runs/models.py; deleting an instruction deletes its
    runs, but a run written by a transaction that raced the deletion outlives it.)
    """
    now = await db_now(session)
    await session.execute(
        update(Run)
        .where(Run.status == "running", Run.lease_expires_at < now,
               ~exists().where(Instruction.id == Run.instruction_id))
        .values(status="cancelled", lease_token=None, lease_expires_at=None, worker_id=None,
                finished_at=now, updated_at=now, error="the instruction was deleted")
        .execution_options(synchronize_session=False)
    )
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
