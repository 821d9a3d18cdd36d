"""Helpers to drive the scheduler and worker one iteration at a time."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select

from app.agent.offline import OfflineModel
from app.core.db import transaction
from app.core.runtime import Runtime
from app.notifications.models import Delivery, Notification
from app.runs.execute import RunExecutor
from app.runs.models import Run, RunStep
from app.runs.worker import Worker


def make_worker(runtime: Runtime, llm: Any | None = None) -> Worker:
    executor = RunExecutor(
        sessionmaker=runtime.sessionmaker, settings=runtime.settings, llm=llm or OfflineModel()
    )
    return Worker(runtime=runtime, executor=executor)


async def drain(worker: Worker) -> None:
    """Wait for every run this worker has in flight."""
    await asyncio.gather(*(task for _claim, task in list(worker.inflight.values())))


async def work_once(worker: Worker) -> int:
    claimed = await worker.run_once()
    await drain(worker)
    return claimed


async def get_run(runtime: Runtime, run_id: uuid.UUID) -> Run:
    async with transaction(runtime.sessionmaker) as session:
        run = await session.get(Run, run_id)
        assert run is not None
        return run


async def runs_of(runtime: Runtime, instruction_id: uuid.UUID) -> list[Run]:
    async with transaction(runtime.sessionmaker) as session:
        rows = await session.execute(
            select(Run).where(Run.instruction_id == instruction_id).order_by(Run.scheduled_for)
        )
        return list(rows.scalars())


async def steps_of(runtime: Runtime, run_id: uuid.UUID) -> list[RunStep]:
    async with transaction(runtime.sessionmaker) as session:
        rows = await session.execute(
            select(RunStep).where(RunStep.run_id == run_id)
            .order_by(RunStep.attempt, RunStep.seq)
        )
        return list(rows.scalars())


async def notifications_of(runtime: Runtime, user_id: uuid.UUID) -> list[Notification]:
    async with transaction(runtime.sessionmaker) as session:
        rows = await session.execute(
            select(Notification).where(Notification.user_id == user_id)
            .order_by(Notification.created_at)
        )
        return list(rows.scalars())


async def deliveries_of(runtime: Runtime, notification_id: uuid.UUID) -> list[Delivery]:
    async with transaction(runtime.sessionmaker) as session:
        rows = await session.execute(
            select(Delivery).where(Delivery.notification_id == notification_id)
            .order_by(Delivery.channel)
        )
        return list(rows.scalars())
