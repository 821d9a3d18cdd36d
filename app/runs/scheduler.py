"""The scheduler tick: turn due instructions into queued runs, exactly one per fire time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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

    async def _now(self, session: AsyncSession) -> datetime:
        """The database's clock (or the test's), sped up when testing asks for it."""
        now = self.clock() if self.clock is not None else await db_now(session)
        if self.speedup != 1 and self.origin is not None:
            now = self.origin + (now - self.origin) * self.speedup
        return now

    async def run_once(self) -> int:
        """Queue one run for each due instruction; returns how many were queued."""
        queued = 0
        for _ in range(_MAX_BATCHES):
            batch_queued, full = await self._batch()
            queued += batch_queued
            if not full:
                break
        if queued:
            log.info("queued %d scheduled run(s)", queued)
        return queued

    async def _batch(self) -> tuple[int, bool]:
        queued = 0
        async with transaction(self.sessionmaker) as session:
            now = await self._now(session)
            # Reads only the partial index of due instructions; SKIP LOCKED lets
            # several schedulers share the work on PostgreSQL, and the unique
            # (instruction_id, scheduled_for) stops a second run if two race.
            due = (
                await session.execute(
                    select(Instruction)
                    .where(
                        Instruction.status == "active",
                        Instruction.deleted_at.is_(None),
                        Instruction.next_run_at <= now,
                    )
                    .order_by(Instruction.next_run_at)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).scalars().all()
            for instruction in due:
                queued += await self._fire(session, instruction, now)
            if queued:
                after_commit(session, lambda: self.wakeups.notify(WORKER_CHANNEL))
        return queued, len(due) == self.batch_size

    async def _fire(self, session: AsyncSession, instruction: Instruction, now: datetime) -> int:
        assert instruction.next_run_at is not None
        # Missed several fire times (schedulers down)? One catch-up run for the
        # newest of them covers the whole gap.
        fire = triggers.latest_due(
            instruction.trigger, instruction.next_run_at, now, anchor=instruction.created_at
        )
        following = triggers.next_after(instruction.trigger, fire, anchor=instruction.created_at)
        # next_run_at only ever moves forward, whatever the trigger says.
        instruction.next_run_at = following if following is None or following > fire else None
        if now - fire > self.grace:
            log.warning(
                "instruction %s missed its run at %s by more than the grace period; skipped",
                instruction.id, fire.isoformat(),
            )
            return 0
        run_id = await queue.enqueue(
            session=session, user_id=instruction.user_id, instruction_id=instruction.id,
            reason="schedule", scheduled_for=fire, window_start=instruction.covered_until,
            window_end=fire,
        )
        if run_id is None:
            return 0
        after_commit(session, metrics.RUNS_QUEUED.labels("schedule").inc)
        return 1
