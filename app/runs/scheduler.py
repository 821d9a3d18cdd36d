"""The scheduler tick: turn due instructions into queued runs, exactly one per fire time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    bindparam,
    literal_column,
    select,
    update,
)
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)

from app.core.config import Settings
from app.core.db import after_commit, db_now, transaction, uuid7s
from app.core.loops import LoopService
from app.core.pubsub import EVENTS_CHANNEL
from app.core.runtime import Wakeups
from app.instructions import triggers
from app.instructions.models import Instruction
from app.runs import metrics, queue
from app.runs.batching import HeldConnection
from app.runs.service import WORKER_CHANNEL

log = logging.getLogger(__name__)

# Batches per iteration: enough to drain a burst, bounded so one iteration ends.
_MAX_BATCHES = 50

# Reads only the partial index of due instructions (ix_instructions_due) and only the
# columns a fire needs; SKIP LOCKED lets several schedulers share the work on
# PostgreSQL, and the unique (instruction_id, scheduled_for) stops a second run if two
# race.
def _due(now: Any) -> Any:
    return (
        select(
            Instruction.id, Instruction.user_id, Instruction.trigger, Instruction.next_run_at,
            Instruction.created_at, Instruction.covered_until,
        )
        .where(
            # Literal, not bound: the planner then matches the index's predicate also with a
            # generic plan for the prepared statement.
            Instruction.status == literal_column("'active'"),
            Instruction.deleted_at.is_(None),
            Instruction.next_run_at <= now,
        )
        .order_by(Instruction.next_run_at)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )


_DUE = _due(bindparam("now"))

# PostgreSQL: the tick's two statements go to the asyncpg connection itself, as plain
# SQL with positional parameters: SQLAlchemy's per-row and per-parameter processing
# cost more Python than the statements cost PostgreSQL. Same rows as _due reads, and
# only what the fire times need, decoded cheaply: the trigger as text (parsed once per
# distinct schedule, not once per row), the anchor only where the trigger uses one
# (interval and date triggers; cron fire times do not depend on it), and the clock as
# seconds. The run's other columns (user_id, covered_until) come back from the
# UPDATE of _FIRE_ALL_SQL instead.
_DUE_COLUMNS = (
    "id, trigger::text AS trigger, next_run_at,"
    " CASE WHEN trigger->>'type' = 'cron' THEN NULL ELSE created_at END AS anchor"
)
_DUE_WHERE = "status = 'active' AND deleted_at IS NULL"  # ix_instructions_due's predicate
# The clock is read by the statement that reads the due rows (statement_timestamp() is
# the real time at the statement's start, one value for every row): no round trip of
# its own.
_DUE_NOW_SQL = f"""
    SELECT {_DUE_COLUMNS}, extract(epoch FROM statement_timestamp())::float8 AS db_now
    FROM instructions
    WHERE {_DUE_WHERE} AND next_run_at <= statement_timestamp()
    ORDER BY next_run_at LIMIT $1 FOR UPDATE SKIP LOCKED"""
# With a test's clock ($2), or a sped-up one.
_DUE_AT_SQL = f"""
    SELECT {_DUE_COLUMNS} FROM instructions
    WHERE {_DUE_WHERE} AND next_run_at <= $2
    ORDER BY next_run_at LIMIT $1 FOR UPDATE SKIP LOCKED"""

# The tick's transaction does not wait for its commit to reach the disk
# (synchronous_commit off, for this transaction only). If the server crashes before it
# does, the tick is lost whole, its runs with the moves of next_run_at, and the next
# tick after the restart queues the same fire times again: nothing is missed or doubled.
# Whatever acts on a queued run (a worker's claim) commits synchronously, and the write-
# ahead log is flushed in order, so a run that was started is durable with its tick.
#
# The due rows are read by an index scan of ix_instructions_due in its order, never by a
# bitmap scan (which the planner prefers when it expects few rows): each fire leaves the
# entry of the old next_run_at dead at the left edge of the index until a vacuum, and
# only a plain index scan marks such entries dead for the scans after it (a bitmap scan
# visits them all again on every tick: measured 2.0 ms against 0.4 ms for 100 due rows
# after 140 ticks).
_BEGIN = "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL enable_bitmapscan = off"

# How long until the next instruction is due, by the database's clock (NULL: none is):
# the tick loop sleeps until then when that is sooner than its interval.
_NEXT_DUE_SQL = f"""
    SELECT extract(epoch FROM min(next_run_at) - clock_timestamp())::float8
    FROM instructions WHERE {_DUE_WHERE}"""

# SQLite: one UPDATE executed with every row's parameters.
_MOVE_EACH = (
    update(Instruction)
    .where(Instruction.id == bindparam("b_id"))
    .values(next_run_at=bindparam("b_next"))
)

# One statement for a whole batch on PostgreSQL: every fired instruction's new
# next_run_at (UPDATE ... FROM unnest), the runs of those whose fire time is recent
# enough (INSERT ... SELECT from the UPDATE's RETURNING, which gives each run its
# instruction's user and covered window; ON CONFLICT DO NOTHING on the unique fire
# time), and the NOTIFYs that wake idle workers and the event streams when anything was
# queued. Returns how many runs were new. $1 is the database's clock; then per fired
# instruction: its id, its new next_run_at, the fire time of its run (NULL: no run) and
# the run's id.
_FIRE_ALL_SQL = f"""
    WITH moved AS (
        UPDATE instructions SET next_run_at = moves.next, updated_at = $1
        FROM unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::uuid[])
            AS moves(id, next, fire, run_id)
        WHERE instructions.id = moves.id
        RETURNING instructions.id, instructions.user_id, instructions.covered_until,
            moves.fire, moves.run_id
    ), new_runs AS (
        INSERT INTO runs (id, user_id, instruction_id, reason, scheduled_for,
            window_start, window_end, status, attempt, available_at, interaction_ids,
            input_tokens, output_tokens, thought_tokens, cached_tokens, cost_usd,
            created_at, updated_at)
        SELECT run_id, user_id, id, 'schedule', fire, covered_until, fire, 'queued', 0, $1,
            '{{}}'::jsonb, 0, 0, 0, 0, 0.0, $1, $1
        FROM moved WHERE fire IS NOT NULL
        ON CONFLICT (instruction_id, scheduled_for) DO NOTHING
        RETURNING runs.id
    ), counted AS (SELECT count(*) AS queued FROM new_runs)
    SELECT queued,
        CASE WHEN queued > 0 THEN pg_notify('{queue.RUNS_CHANNEL}', '') END AS workers,
        CASE WHEN queued > 0 THEN pg_notify('{EVENTS_CHANNEL}', '') END AS events
    FROM counted
"""

# Schedules whose last answer is kept: bounded, so memory does not grow with the table.
_FIRE_CACHE_SIZE = 4096


class FireTimes:
    """`triggers.next_after` for cron schedules, remembered per schedule.

    The first fire time after `after` is the same `next` for every moment in
    [after, next): no fire time lies between. The due rows of a tick come in order of
    next_run_at, so the instructions of one schedule due in one tick cost one trigger
    computation instead of one each. Interval and date triggers depend on the
    instruction's anchor and are computed as before.
    """

    def __init__(self, size: int = _FIRE_CACHE_SIZE) -> None:
        self.size = size
        self._known: OrderedDict[tuple[str, str], tuple[datetime, datetime | None]] = (
            OrderedDict()
        )

    def next_after(
        self, spec: dict[str, Any], after: datetime, *, anchor: datetime | None
    ) -> datetime | None:
        if spec.get("type") != "cron":
            return triggers.next_after(spec, after, anchor=anchor)
        key = (str(spec["cron"]), str(spec.get("timezone") or "UTC"))
        known = self._known.get(key)
        if known is not None:
            start, following = known
            if start <= after and (following is None or after < following):
                self._known.move_to_end(key)
                return following
        following = triggers.next_after(spec, after, anchor=anchor)
        self._known[key] = (after, following)
        self._known.move_to_end(key)
        if len(self._known) > self.size:
            self._known.popitem(last=False)
        return following


class SchedulerTick(LoopService):
    name = "scheduler"

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        wakeups: Wakeups,
        settings: Settings,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(interval=settings.scheduler_tick_seconds)
        self.sessionmaker = sessionmaker
        self.wakeups = wakeups
        self.batch_size = settings.scheduler_batch_size
        self.grace = timedelta(seconds=settings.scheduler_misfire_grace_seconds)
        self.speedup = settings.scheduler_clock_speedup
        self.origin = settings.scheduler_clock_origin
        self.clock = clock
        self.fire_times = FireTimes()
        # PostgreSQL: one connection for the batches of a tick, kept between ticks while
        # the loop runs (no checkout, whose ping is three round trips, per batch).
        engine = sessionmaker.kw.get("bind")
        self._held = (
            HeldConnection(engine)  # autocommit: the tick begins its own transaction
            if isinstance(engine, AsyncEngine) and engine.dialect.name == "postgresql"
            else None
        )
        self._stop: asyncio.Event | None = None

    async def run(self, stop: asyncio.Event) -> None:
        # Kept so that a burst of batches stops between two of them on SIGTERM.
        self._stop = stop
        async with self.holding():
            await super().run(stop)

    @contextlib.asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """Keep the connection between ticks (as `run` does) until the block ends."""
        if self._held is not None:
            self._held.keep = True
        try:
            yield
        finally:
            if self._held is not None:
                await self._held.close()

    async def _now(self, session: AsyncSession) -> tuple[datetime, datetime | None]:
        """The scheduler's clock and the database's (None when the test's clock is used).

        The scheduler's clock is the database's (or the test's), sped up when testing
        asks for it; runs are stamped with the database's, which workers go by.
        """
        db_time = None if self.clock is not None else await db_now(session)
        return self._scaled(self.clock() if self.clock is not None else db_time), db_time

    def _scaled(self, now: datetime | None) -> datetime:
        assert now is not None
        if self.speedup != 1 and self.origin is not None:
            now = self.origin + (now - self.origin) * self.speedup
        return now

    async def run_once(self) -> int:
        """Queue one run for each due instruction; returns how many were queued."""
        queued = 0
        for _ in range(_MAX_BATCHES):
            batch_queued, full = await self._batch()
            queued += batch_queued
            if not full or (self._stop is not None and self._stop.is_set()):
                break
        if queued:
            log.info("queued %d scheduled run(s)", queued)
        return queued

    async def plan_wait(self) -> float:
        """The tick loop's wait: the interval, or on PostgreSQL on the real clock until a
        few milliseconds after the next instruction is due when that is sooner (one read
        of ix_instructions_due's first entry), so that a run is queued on time rather
        than up to an interval late."""
        if self._held is None or self.clock is not None or self.speedup != 1:
            return self.interval
        async with self._held.use() as connection:
            driver = await _driver(connection)
            seconds = await driver.fetchval(_NEXT_DUE_SQL)
        if seconds is None:
            return self.interval
        return min(self.interval, max(float(seconds), 0.0) + 0.005)

    async def _batch(self) -> tuple[int, bool]:
        if self._held is not None:
            queued, full = await self._batch_postgresql(self._held)
            if queued:
                self.wakeups.notify(WORKER_CHANNEL)
                metrics.RUNS_QUEUED.labels("schedule").inc(queued)
            return queued, full
        async with transaction(self.sessionmaker) as session:
            # Core statements on the session's connection: no ORM state to build or flush.
            connection = await session.connection()
            now, db_time = await self._now(session)
            due = (
                await connection.execute(_DUE, {"limit": self.batch_size, "now": now})
            ).all()
            if not due:
                return 0, False
            runs: list[dict[str, Any]] = []
            moves: list[tuple[uuid.UUID, datetime | None]] = []
            for row in due:
                next_run_at, fire = self._fire(
                    row.id, row.trigger, row.next_run_at, row.created_at, now
                )
                moves.append((row.id, next_run_at))
                if fire is not None:
                    runs.append({
                        "user_id": row.user_id, "instruction_id": row.id,
                        "reason": "schedule", "scheduled_for": fire,
                        "window_start": row.covered_until, "window_end": fire,
                    })
            queued = await queue.enqueue_many(session=session, rows=runs, now=db_time)
            await self._move(connection, moves)
            if queued:
                after_commit(session, lambda: self.wakeups.notify(WORKER_CHANNEL))
                after_commit(session, lambda: metrics.RUNS_QUEUED.labels("schedule").inc(queued))
        return queued, len(due) == self.batch_size

    async def _batch_postgresql(self, held: HeldConnection) -> tuple[int, bool]:
        """On the held connection's asyncpg connection: BEGIN, the due rows (with the
        clock), one statement for the whole batch, COMMIT; no checkout."""
        async with held.use() as connection:
            driver = await _driver(connection)
            await driver.execute(_BEGIN)
            try:
                queued, count = await self._fire_postgresql(driver)
            except BaseException:
                await driver.execute("ROLLBACK")
                raise
            await driver.execute("COMMIT")
        return queued, count == self.batch_size

    async def _fire_postgresql(self, driver: Any) -> tuple[int, int]:
        """The batch in the open transaction: (runs queued, instructions due)."""
        db_time: datetime | None
        if self.clock is None and self.speedup == 1:
            due = await driver.fetch(_DUE_NOW_SQL, self.batch_size)
            if not due:
                return 0, 0
            now = db_time = datetime.fromtimestamp(due[0]["db_now"], UTC)
        else:
            db_time = (
                None if self.clock is not None
                else (await driver.fetchval("SELECT clock_timestamp()")).astimezone(UTC)
            )
            now = self._scaled(self.clock() if self.clock is not None else db_time)
            due = await driver.fetch(_DUE_AT_SQL, self.batch_size, now)
            if not due:
                return 0, 0
        if db_time is None:  # a test's clock stamps nothing (as enqueue_many)
            db_time = (await driver.fetchval("SELECT clock_timestamp()")).astimezone(UTC)
        specs: dict[str, dict[str, Any]] = {}  # each distinct trigger parsed once
        ids, nexts, fires = [], [], []
        for row in due:
            text = row["trigger"]
            spec = specs.get(text)
            if spec is None:
                spec = specs[text] = json.loads(text)
            next_run_at, fire = self._fire(row["id"], spec, row["next_run_at"], row["anchor"], now)
            ids.append(row["id"])
            nexts.append(next_run_at)
            fires.append(fire)
        queued = await driver.fetchval(
            _FIRE_ALL_SQL, db_time, ids, nexts, fires, uuid7s(len(ids))
        )
        return int(queued), len(due)

    def _fire(
        self, instruction_id: uuid.UUID, spec: dict[str, Any], fire: datetime,
        anchor: datetime | None, now: datetime,
    ) -> tuple[datetime | None, datetime | None]:
        """The instruction's new next_run_at, and the fire time of its run (None when
        the fire time is too old to run: skipped)."""
        following = self.fire_times.next_after(spec, fire, anchor=anchor)
        if following is not None and following <= now:
            # Missed several fire times (schedulers down)? One catch-up run for the
            # newest of them covers the whole gap.
            fire = triggers.latest_due(spec, fire, now, anchor=anchor)
            following = self.fire_times.next_after(spec, fire, anchor=anchor)
        # next_run_at only ever moves forward, whatever the trigger says.
        next_run_at = following if following is None or following > fire else None
        if now - fire > self.grace:
            log.warning(
                "instruction %s missed its run at %s by more than the grace period; skipped",
                instruction_id, fire.isoformat(),
            )
            return next_run_at, None
        return next_run_at, fire

    @staticmethod
    async def _move(
        connection: AsyncConnection, moves: Sequence[tuple[uuid.UUID, datetime | None]]
    ) -> None:
        """SQLite: every fired instruction's next_run_at, one UPDATE executed per row."""
        await connection.execute(_MOVE_EACH, [{"b_id": m[0], "b_next": m[1]} for m in moves])


async def _driver(connection: AsyncConnection) -> Any:
    """The asyncpg connection under a SQLAlchemy one (PostgreSQL only)."""
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    return driver
