"""Workers wake on NOTIFY from another process's commit; /metrics shows the queue."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.core.db import create_engine, create_sessionmaker, transaction
from app.core.runtime import Runtime, Wakeups
from app.runs import service as runs_service
from tests import factories
from tests.integration.runs.helpers import get_run, make_worker


async def test_a_run_queued_elsewhere_wakes_an_idle_worker_through_notify(
    runtime: Runtime, database_url: str, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")
    runtime.settings.worker_poll_seconds = 60  # polling alone would not find it in time
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    worker = make_worker(runtime)
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop))
    # An api process elsewhere: its own engine and no shared in-process wake-ups.
    other = create_engine(database_url)
    try:
        await asyncio.sleep(0.5)  # the worker is idle, waiting for its next poll
        async with transaction(create_sessionmaker(other)) as session:
            run = await runs_service.run_now(
                session=session, instruction=instruction, wakeups=Wakeups()
            )
        for _ in range(100):
            if (await get_run(runtime, run.id)).status == "succeeded":
                break
            await asyncio.sleep(0.1)
        assert (await get_run(runtime, run.id)).status == "succeeded"
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        await other.dispose()


async def test_metrics_show_queue_and_outcomes(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    async with transaction(runtime.sessionmaker) as session:
        await runs_service.run_now(session=session, instruction=instruction,
                                   wakeups=runtime.wakeups)
    text = (await client.get("/metrics")).text
    assert "pilotlight_queue_depth 1.0" in text
    assert 'pilotlight_runs{status="queued"} 1.0' in text

    worker = make_worker(runtime)
    await worker.run_once()
    await asyncio.gather(*(t for _c, t in worker.inflight.values()))
    text = (await client.get("/metrics")).text
    assert "pilotlight_queue_depth 0.0" in text
    assert 'pilotlight_runs_finished_total{status="succeeded"}' in text
    assert "pilotlight_run_start_lag_seconds_count" in text
    assert "pilotlight_lease_rescues_total" in text
