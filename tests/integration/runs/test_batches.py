"""Runs that start and end together are claimed, loaded and written in batches.

The effects must be those of one run at a time: every run succeeds once, with one
digest notification and its deliveries, its instruction moved on; a run whose lease
was lost meanwhile writes nothing, and its neighbours in the batch are written.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select, update

from app.agent.digest import CoverWindow, Digest
from app.agent.offline import OfflineModel
from app.agent.runner import AgentOutcome
from app.core.db import transaction
from app.core.runtime import Runtime
from app.instructions.models import Instruction
from app.notifications.models import Notification
from app.runs import queue
from app.runs import service as runs_service
from app.runs.execute import RunExecutor
from app.runs.models import Run
from app.runs.worker import Worker
from tests import factories
from tests.integration.runs.helpers import deliveries_of, get_run, notifications_of


class GatedAgent:
    """Answers with a one-line digest and a new cursor once `gate` is set; counts calls."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0

    async def __call__(self, *, llm: Any, sources: Any, cursors: Any, request: Any,
                       record: Any) -> AgentOutcome:
        self.waiting += 1
        await self.gate.wait()
        digest = Digest(summary=f"Digest of {request.title}.", model=request.model,
                        covers=CoverWindow(start=request.window_start, end=request.now))
        return AgentOutcome(status="succeeded", digest=digest,
                            cursors={key: {"seen": 1} for key in sources})


async def _queued(runtime: Runtime, count: int, **overrides: Any) -> list[uuid.UUID]:
    user, _ = await factories.user_with_token(runtime)
    run_ids = []
    for n in range(count):
        instruction = await factories.instruction(runtime, user, title=f"Digest {n}",
                                                  **overrides)
        async with transaction(runtime.sessionmaker) as session:
            run = await runs_service.run_now(
                session=session, instruction=instruction, wakeups=runtime.wakeups
            )
        run_ids.append(run.id)
    return run_ids


async def _wait(check: Any, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_a_worker_loop_writes_many_runs_in_batches_each_exactly_once(
    runtime: Runtime,
) -> None:
    run_ids = await _queued(runtime, 12, channels=["in_app", "email"])
    runtime.settings.worker_concurrency = 5
    agent = GatedAgent()
    executor = RunExecutor(sessionmaker=runtime.sessionmaker, settings=runtime.settings,
                           llm=OfflineModel(), agent=agent)
    worker = Worker(runtime=runtime, executor=executor)
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop))

    async def five_waiting() -> bool:
        return agent.waiting >= 5

    await _wait(five_waiting)
    agent.gate.set()  # the first five end together, and so on

    async def all_done() -> bool:
        return [(await get_run(runtime, run_id)).status for run_id in run_ids] == [
            "succeeded"] * len(run_ids)

    await _wait(all_done)
    stop.set()
    await asyncio.wait_for(loop, 10)

    assert agent.waiting == 12  # each run's agent ran once
    user_id = (await get_run(runtime, run_ids[0])).user_id
    notes = await notifications_of(runtime, user_id)
    assert sorted(n.run_id for n in notes if n.run_id) == sorted(run_ids)
    for note in notes:
        run = await get_run(runtime, note.run_id)  # type: ignore[arg-type]
        assert note.kind == "digest"
        assert note.key == f"run:{run.id}:digest"
        assert note.title.startswith("Digest ")
        assert run.result is not None
        assert run.result["summary"] == note.body
        assert run.lease_token is None
        assert run.lease_expires_at is None
        assert run.finished_at is not None
        deliveries = await deliveries_of(runtime, note.id)
        channels = [(d.channel, d.status, d.attempts) for d in deliveries]
        assert channels == [("email", "pending", 0), ("in_app", "sent", 1)]
    async with transaction(runtime.sessionmaker) as session:
        moved = (await session.execute(
            select(Instruction).where(Instruction.user_id == user_id))).scalars().all()
    for instruction in moved:
        assert instruction.last_run_at is not None
        assert instruction.consecutive_failures == 0
        assert list(instruction.cursor.values()) == [{"seen": 1}]
        assert instruction.covered_until is not None


async def test_a_run_whose_lease_was_lost_writes_nothing_and_its_batch_is_written(
    runtime: Runtime,
) -> None:
    run_ids = await _queued(runtime, 4)
    agent = GatedAgent()
    executor = RunExecutor(sessionmaker=runtime.sessionmaker, settings=runtime.settings,
                           llm=OfflineModel(), agent=agent)
    async with transaction(runtime.sessionmaker) as session:
        claims = await queue.claim(session=session, worker_id="w", limit=10, lease_seconds=60)
    assert sorted(c.run_id for c in claims) == sorted(run_ids)
    executions = [asyncio.create_task(executor.execute(claim)) for claim in claims]

    async def all_waiting() -> bool:
        return agent.waiting == 4

    await _wait(all_waiting)
    lost = claims[1]
    # Another worker took this run over (its lease expired and it was claimed again).
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(Run).where(Run.id == lost.run_id).values(lease_token=uuid.uuid4())
        )
    agent.gate.set()
    await asyncio.gather(*executions)
    await executor.close()

    taken = await get_run(runtime, lost.run_id)
    assert (taken.status, taken.result, taken.finished_at) == ("running", None, None)
    async with transaction(runtime.sessionmaker) as session:
        keys = set((await session.execute(select(Notification.key))).scalars())
        told = (await session.execute(
            select(Instruction.last_run_at).where(Instruction.id == taken.instruction_id)
        )).scalar_one()
    assert told is None  # its instruction was not moved on
    assert f"run:{lost.run_id}:digest" not in keys
    for claim in claims:
        if claim is lost:
            continue
        run = await get_run(runtime, claim.run_id)
        assert run.status == "succeeded"
        assert f"run:{claim.run_id}:digest" in keys
