"""The scheduler tick: turn due instructions into queued runs, exactly one per fire time."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Row, Uuid, bindparam, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import after_commit, db_now, transaction
from app.core.loops import LoopService
from app.core.runtime import Wakeups
from app.instructions import triggers
from app.instructions.models import Instruction
from app.runs import metrics, queue
from app.runs.service import WORKER_CHANNEL

log = logging.getLogger(__name__)

# Batches per iteration: enough to drain a burst, bounded so one iteration ends.
_MAX_BATCHES = 50

# Reads only the partial index of due instructions (ix_instructions_due) and only the
# columns a fire needs; SKIP LOCKED lets several schedulers share the work on
# PostgreSQL, and the unique (instruction_id, scheduled_for) stops a second run if two
# race.
_DUE = (
    select(
        Instruction.id, Instruction.user_id, Instruction.trigger, Instruction.next_run_at,
        Instruction.created_at, Instruction.covered_until,
    )
    .where(
        # Literal, not bound: the planner then matches the index's predicate also with a
        # generic plan for the prepared statement.
        Instruction.status == literal_column("'active'"),
        Instruction.deleted_at.is_(None),
        Instruction.next_run_at <= bindparam("now"),
    )
    .order_by(Instruction.next_run_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)

# SQLite (and the fallback): one UPDATE executed with every row's parameters.
_MOVE_EACH = (
    update(Instruction)
    .where(Instruction.id == bindparam("b_id"))
    .values(next_run_at=bindparam("b_next"))
)


def _move_all_postgresql() -> Any:
    """One UPDATE ... FROM unnest(ids, nexts): every row's next_run_at in one statement."""
    moves = (
        func.unnest(
            bindparam("ids", type_=ARRAY(Uuid())),
            bindparam("nexts", type_=ARRAY(DateTime(timezone=True))),
        )
        .table_valued("id", "next")
        .render_derived(name="moves")
    )
    return (
        update(Instruction)
        .where(Instruction.id == moves.c.id)
        .values(next_run_at=moves.c.next)
    )


_MOVE_ALL_POSTGRESQL = _move_all_postgresql()


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
        self._stop: asyncio.Event | None = None

    async def run(self, stop: asyncio.Event) -> None:
        # Kept so that a burst of batches stops between two of them on SIGTERM.
        self._stop = stop
        await super().run(stop)

    async def _now(self, session: AsyncSession) -> tuple[datetime, datetime | None]:
        """The scheduler's clock and the database's (None when the test's clock is used).

        The scheduler's clock is the database's (or the test's), sped up when testing
        asks for it; runs are stamped with the database's, which workers go by.
        """
        db_time = None if self.clock is not None else await db_now(session)
        now = self.clock() if self.clock is not None else db_time
        assert now is not None
        if self.speedup != 1 and self.origin is not None:
            now = self.origin + (now - self.origin) * self.speedup
        return now, db_time

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

    async def _batch(self) -> tuple[int, bool]:
        async with transaction(self.sessionmaker) as session:
            now, db_time = await self._now(session)
            # Core statements on the session's connection: no ORM state to build or flush.
            connection = await session.connection()
            due = (
                await connection.execute(_DUE, {"now": now, "limit": self.batch_size})
            ).all()
            if not due:
                return 0, False
            runs: list[dict[str, Any]] = []
            moves: list[tuple[uuid.UUID, datetime | None]] = []
            for row in due:
                next_run_at, run = self._fire(row, now)
                moves.append((row.id, next_run_at))
                if run is not None:
                    runs.append(run)
            queued = await queue.enqueue_many(session=session, rows=runs, now=db_time)
            await self._move(connection, moves)
            if queued:
                after_commit(session, lambda: self.wakeups.notify(WORKER_CHANNEL))
                after_commit(session, lambda: metrics.RUNS_QUEUED.labels("schedule").inc(queued))
        return queued, len(due) == self.batch_size

    def _fire(
        self, row: Row[Any], now: datetime
    ) -> tuple[datetime | None, dict[str, Any] | None]:
        """The instruction's new next_run_at, and its run unless the fire time is too old."""
        assert row.next_run_at is not None
        # Missed several fire times (schedulers down)? One catch-up run for the
        # newest of them covers the whole gap.
        fire = triggers.latest_due(row.trigger, row.next_run_at, now, anchor=row.created_at)
        following = triggers.next_after(row.trigger, fire, anchor=row.created_at)
        # next_run_at only ever moves forward, whatever the trigger says.
        next_run_at = following if following is None or following > fire else None
        if now - fire > self.grace:
            log.warning(
                "instruction %s missed its run at %s by more than the grace period; skipped",
                row.id, fire.isoformat(),
            )
            return next_run_at, None
        return next_run_at, {
            "user_id": row.user_id, "instruction_id": row.id, "reason": "schedule",
            "scheduled_for": fire, "window_start": row.covered_until, "window_end": fire,
        }

    @staticmethod
    async def _move(
        connection: AsyncConnection, moves: Sequence[tuple[uuid.UUID, datetime | None]]
    ) -> None:
        """Write every fired instruction's next_run_at in one statement."""
        if connection.dialect.name == "postgresql":
            await connection.execute(
                _MOVE_ALL_POSTGRESQL,
                {"ids": [m[0] for m in moves], "nexts": [m[1] for m in moves]},
            )
        else:
            await connection.execute(
                _MOVE_EACH, [{"b_id": m[0], "b_next": m[1]} for m in moves]
            )
