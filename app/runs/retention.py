"""What the runs read is not kept for ever: `PILOTLIGHT_RETENTION_DAYS`.

A run's steps hold what its tools returned (excerpts of mail and documents) and what the
model wrote; its result, the digest, and its notifications say it again. All of it is
a copy of the user's mail that a leaked database or backup would give away, long after
anyone looks at it. A loop of the scheduler role deletes, in bounded batches:

- the steps of runs finished more than the retention ago, and their results (the run's
  row stays: its status, window, tokens and cost, which `/usage` and the cost cap read);
- notifications as old, with their deliveries, once none of those is still to be sent
  and their run, if any, has finished (an open question's notification stays).

A run waiting for an answer is never touched. Nothing here needs an index of its own:
it runs a few times a day, and the rows it looks for are the oldest.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, not_, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import db_now, transaction
from app.core.loops import LoopService
from app.notifications.models import Delivery, Notification
from app.runs.models import FINAL_STATUSES, Run, RunStep

log = logging.getLogger(__name__)

EVERY_SECONDS = 6 * 3600.0
BATCH = 500


class RetentionPurger(LoopService):
    name = "retention"

    def __init__(self, *, sessionmaker: async_sessionmaker[AsyncSession], days: int,
                 interval: float = EVERY_SECONDS) -> None:
        super().__init__(interval=interval)
        self.sessionmaker = sessionmaker
        self.days = days

    async def run_once(self) -> tuple[int, int]:
        """Delete what is older than the retention; returns how many runs lost their
        details and how many notifications were deleted."""
        async with transaction(self.sessionmaker) as session:
            before = await db_now(session) - timedelta(days=self.days)
        runs = notes = 0
        while (count := await self._runs(before)) > 0:
            runs += count
        while (count := await self._notifications(before)) > 0:
            notes += count
        if runs or notes:
            log.info("deleted the details of %d run(s) and %d notification(s) older than "
                     "%d days", runs, notes, self.days)
        return runs, notes

    async def _runs(self, before: datetime) -> int:
        async with transaction(self.sessionmaker) as session:
            ids = (await session.execute(
                select(Run.id).where(
                    Run.status.in_(FINAL_STATUSES), Run.finished_at < before,
                    or_(Run.result.is_not(None), exists().where(RunStep.run_id == Run.id)),
                ).limit(BATCH)
            )).scalars().all()
            if ids:
                await session.execute(_no_sync(delete(RunStep).where(RunStep.run_id.in_(ids))))
                # SQL NULL: a JSON null would still be IS NOT NULL, and found again.
                await session.execute(
                    _no_sync(update(Run).where(Run.id.in_(ids)).values(result=null()))
                )
            return len(ids)

    async def _notifications(self, before: datetime) -> int:
        pending = exists().where(
            Delivery.notification_id == Notification.id, Delivery.status == "pending"
        )
        unfinished = exists().where(
            Run.id == Notification.run_id, Run.status.not_in(FINAL_STATUSES)
        )
        async with transaction(self.sessionmaker) as session:
            ids = (await session.execute(
                select(Notification.id).where(
                    Notification.created_at < before, not_(pending), not_(unfinished)
                ).limit(BATCH)
            )).scalars().all()
            if ids:
                await session.execute(
                    _no_sync(delete(Notification).where(Notification.id.in_(ids)))
                )
            return len(ids)


def _no_sync(statement: Any) -> Any:
    return statement.execution_options(synchronize_session=False)
