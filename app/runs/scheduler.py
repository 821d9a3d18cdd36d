"""The scheduler tick: turn due instructions into queued runs, exactly one per fire time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import after_commit, transaction, utcnow
from app.core.loops import LoopService
from app.core.runtime import Wakeups
from app.instructions import triggers
from app.instructions.models import Instruction
from app.runs import queue
from app.runs.service import WORKER_CHANNEL

log = logging.getLogger(__name__)


class SchedulerTick(LoopService):
    name = "scheduler"

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        wakeups: Wakeups,
        interval: float,
        batch_size: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(interval=interval)
        self.sessionmaker = sessionmaker
        self.wakeups = wakeups
        self.batch_size = batch_size
        self.clock = clock

    async def run_once(self) -> int:
        """Queue one run for each due instruction; returns how many were queued."""
        now = self.clock()
        queued = 0
        async with transaction(self.sessionmaker) as session:
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
                assert instruction.next_run_at is not None
                # Missed several fire times (schedulers down)? One catch-up run
                # for the newest of them covers the whole gap.
                fire = triggers.latest_due(
                    instruction.trigger, instruction.next_run_at, now,
                    anchor=instruction.created_at,
                )
                run_id = await queue.enqueue(
                    session=session, user_id=instruction.user_id,
                    instruction_id=instruction.id, reason="schedule", scheduled_for=fire,
                    window_start=instruction.covered_until, window_end=fire,
                )
                queued += run_id is not None
                instruction.next_run_at = triggers.next_after(
                    instruction.trigger, fire, anchor=instruction.created_at
                )
            if queued:
                after_commit(session, lambda: self.wakeups.notify(WORKER_CHANNEL))
        if queued:
            log.info("queued %d scheduled run(s)", queued)
        return queued
