"""Crashes and concurrency with real processes: nothing lost, nothing done twice."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from app.agent.llm import Usage
from app.agent.pricing import ModelPrice, cost_usd
from app.core.db import transaction
from app.core.runtime import Runtime
from app.instructions import triggers
from app.instructions.models import Instruction
from app.runs.models import FINAL_STATUSES, Run
from tests import factories
from tests.integration.processes import (
    command,
    pilotlight_env,
    start,
    stop,
    stopped_cleanly,
    wait_logged,
)
from tests.integration.runs.helpers import deliveries_of, get_run, notifications_of, steps_of
from tests.integration.runs.test_worker import run_now

pytestmark = pytest.mark.slow


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def worker_env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return pilotlight_env(
        data_dir=tmp_path / "data", database_url=database_url,
        PILOTLIGHT_WORKER_LEASE_SECONDS="2", PILOTLIGHT_WORKER_POLL_SECONDS="0.2",
        PILOTLIGHT_SCHEDULER_TICK_SECONDS="0.2", **extra,
    )


async def assert_told_once(runtime: Runtime, run_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """One digest for the run, and one delivery per channel."""
    mine = [n for n in await notifications_of(runtime, user_id) if n.run_id == run_id]
    assert [n.kind for n in mine] == ["digest"]
    channels = [d.channel for d in await deliveries_of(runtime, mine[0].id)]
    assert channels == ["email", "in_app"]


@pytest.mark.parametrize(
    "point",
    ["claimed", "model_answered", "digest_written", "notification_written", "outcome_committed"],
)
async def test_worker_killed_at_any_point_the_run_completes_exactly_once(
    runtime: Runtime, database_url: str, tmp_path: Path, point: str
) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app", "email"])
    run_id = await run_now(runtime, instruction)
    env = worker_env(database_url, tmp_path)

    victim = start(command("worker"), {**env, "PILOTLIGHT_TEST_FAULT": f"kill:{point}"},
                   tmp_path, tmp_path / "victim.log")
    assert victim.wait(60) == -signal.SIGKILL, (tmp_path / "victim.log").read_text()

    survivor = start(command("worker"), env, tmp_path, tmp_path / "survivor.log")
    try:
        async def done() -> bool:
            return (await get_run(runtime, run_id)).status in FINAL_STATUSES

        await eventually(done, 30, "the run to end")
        wait_logged(tmp_path / "survivor.log", "worker started")
    finally:
        assert stopped_cleanly(stop(survivor), tmp_path / "survivor.log")
    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error
    # Killed before its outcome committed, the run was taken over (attempt 2);
    # killed after, it was already done.
    assert run.attempt == (1 if point == "outcome_committed" else 2)
    await assert_told_once(runtime, run_id, user.id)


# The offline model priced as a paid one: what a run's turns cost is on the run.
PRICES = {"pilotlight-offline": ModelPrice(input=1.0, output=1.0)}


async def cost_of_steps(runtime: Runtime, run_id: uuid.UUID) -> float:
    """What the run's model turns cost, every attempt's, each turn once (its step)."""
    usage = Usage()
    for step in await steps_of(runtime, run_id):
        if step.kind == "model":
            usage += Usage(input_tokens=step.input_tokens, output_tokens=step.output_tokens,
                           thought_tokens=step.thought_tokens,
                           cached_tokens=step.cached_tokens)
    return cost_usd("pilotlight-offline", usage, PRICES)


def priced_env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return worker_env(database_url, tmp_path, PILOTLIGHT_GEMINI_PRICES=json.dumps(
        {name: price.model_dump() for name, price in PRICES.items()}), **extra)


async def test_what_a_killed_attempt_spent_is_charged_to_its_run(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """A worker SIGKILLed after a model turn never ends its attempt: what the turn cost
    was on no run, so it counted against no cap, and a run crashing again and again
    spent without limit."""
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app", "email"])
    run_id = await run_now(runtime, instruction)
    env = priced_env(database_url, tmp_path)
    victim = start(command("worker"), {**env, "PILOTLIGHT_TEST_FAULT": "kill:model_answered"},
                   tmp_path, tmp_path / "victim.log")
    assert victim.wait(60) == -signal.SIGKILL, (tmp_path / "victim.log").read_text()
    killed = await cost_of_steps(runtime, run_id)
    assert killed > 0  # the killed attempt's turn, on its step
    assert (await get_run(runtime, run_id)).cost_usd == pytest.approx(killed)

    survivor = start(command("worker"), env, tmp_path, tmp_path / "survivor.log")
    try:
        async def done() -> bool:
            return (await get_run(runtime, run_id)).status in FINAL_STATUSES

        await eventually(done, 30, "the run to end")
    finally:
        assert stopped_cleanly(stop(survivor), tmp_path / "survivor.log")
    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error
    assert run.attempt == 2
    assert {s.attempt for s in await steps_of(runtime, run_id)} == {1, 2}
    # Both attempts' turns, each once.
    assert run.cost_usd == pytest.approx(await cost_of_steps(runtime, run_id))
    assert run.cost_usd > killed


async def test_a_frozen_worker_loses_its_run_and_its_late_write_is_refused(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app", "email"])
    run_id = await run_now(runtime, instruction)
    env = priced_env(database_url, tmp_path)
    frozen_log, survivor_log = tmp_path / "frozen.log", tmp_path / "survivor.log"
    # The frozen worker claims at once, then must not poll, nor renew its lease before it
    # freezes (its first renewal comes at a third of the lease): on SQLite a process frozen
    # in the middle of a transaction would hold the write lock for everyone.
    frozen = start(command("worker"), {**env, "PILOTLIGHT_TEST_FAULT": "stop:model_answered",
                                       "PILOTLIGHT_WORKER_POLL_SECONDS": "60",
                                       "PILOTLIGHT_DELIVERY_POLL_SECONDS": "60",
                                       "PILOTLIGHT_WORKER_LEASE_SECONDS": "9"},
                   tmp_path, frozen_log)
    survivor = None
    try:
        async def is_frozen() -> bool:
            return "test fault: stop at model_answered" in frozen_log.read_text()

        await eventually(is_frozen, 30, "the worker to freeze mid-run")
        frozen_id = (await get_run(runtime, run_id)).worker_id
        survivor = start(command("worker"), env, tmp_path, survivor_log)

        async def taken_over() -> bool:
            run = await get_run(runtime, run_id)
            return run.status == "succeeded" and run.worker_id != frozen_id

        await eventually(taken_over, 30, "another worker to finish the run")
        frozen.send_signal(signal.SIGCONT)

        async def refused() -> bool:
            return "lease lost" in frozen_log.read_text()

        await eventually(refused, 30, "the frozen worker to find its lease lost")
    finally:
        frozen.send_signal(signal.SIGCONT)
        assert stopped_cleanly(stop(frozen), frozen_log), frozen_log.read_text()
        if survivor is not None:
            assert stopped_cleanly(stop(survivor), survivor_log)
    run = await get_run(runtime, run_id)
    assert run.status == "succeeded"
    assert run.attempt == 2
    await assert_told_once(runtime, run_id, user.id)
    # The frozen attempt's turn counts once, though its worker lived on to end it.
    assert run.cost_usd == pytest.approx(await cost_of_steps(runtime, run_id))


async def test_sigterm_during_runs_loses_none(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    user, _ = await factories.user_with_token(runtime)
    instructions = [
        await factories.instruction(runtime, user, channels=["in_app", "email"])
        for _ in range(12)
    ]
    run_ids = [await run_now(runtime, i) for i in instructions]
    env = worker_env(database_url, tmp_path, PILOTLIGHT_WORKER_CONCURRENCY="4",
                     PILOTLIGHT_WORKER_SHUTDOWN_SECONDS="0")
    first = start(command("worker"), env, tmp_path, tmp_path / "first.log")

    async def started() -> bool:
        statuses = [(await get_run(runtime, r)).status for r in run_ids]
        return any(status in ("running", "succeeded") for status in statuses)

    try:
        await eventually(started, 30, "the first worker to start runs")
    finally:
        code = stop(first, timeout=30, log=tmp_path / "first.log")
    assert code == 0, (tmp_path / "first.log").read_text()

    second = start(command("worker"), env, tmp_path, tmp_path / "second.log")
    try:
        async def all_done() -> bool:
            runs = [await get_run(runtime, r) for r in run_ids]
            return all(r.status in FINAL_STATUSES for r in runs)

        await eventually(all_done, 60, "every run to end")
        wait_logged(tmp_path / "second.log", "worker started")
    finally:
        assert stopped_cleanly(stop(second), tmp_path / "second.log")
    for run_id in run_ids:
        assert (await get_run(runtime, run_id)).status == "succeeded"
        await assert_told_once(runtime, run_id, user.id)


async def test_three_schedulers_and_four_workers_make_one_run_per_fire_time(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    user, _ = await factories.user_with_token(runtime)
    made = [
        await factories.instruction(runtime, user, trigger={"type": "interval", "seconds": 60})
        for _ in range(4)
    ] + [
        await factories.instruction(
            runtime, user, trigger={"type": "cron", "cron": "* * * * *", "timezone": "UTC"}
        )
        for _ in range(4)
    ]
    # Simulated time, shared by every process: one real second is 20 seconds.
    origin = datetime.now(UTC)
    env = worker_env(
        database_url, tmp_path, PILOTLIGHT_SCHEDULER_CLOCK_SPEEDUP="20",
        PILOTLIGHT_SCHEDULER_CLOCK_ORIGIN=origin.isoformat(),
    )
    schedulers = [
        start(command("scheduler"), env, tmp_path, tmp_path / f"scheduler{n}.log")
        for n in range(3)
    ]
    workers = [
        start(command("worker"), env, tmp_path, tmp_path / f"worker{n}.log") for n in range(4)
    ]
    try:
        for n in range(3):
            wait_logged(tmp_path / f"scheduler{n}.log", "scheduler started")
        for n in range(4):
            wait_logged(tmp_path / f"worker{n}.log", "worker started")
        await asyncio.sleep(15)  # five simulated minutes once everyone is up
        for process in schedulers:
            assert stop(process) == 0

        async def drained() -> bool:
            async with transaction(runtime.sessionmaker) as session:
                open_runs = await session.execute(
                    select(Run.id).where(Run.status.not_in(FINAL_STATUSES)).limit(1)
                )
                return open_runs.first() is None

        await eventually(drained, 60, "the workers to finish every run")
    finally:
        for process in schedulers + workers:
            if process.poll() is None:
                stop(process)
    for n, process in enumerate(workers):
        assert stopped_cleanly(process.returncode, tmp_path / f"worker{n}.log")

    total = 0
    for instruction in made:
        async with transaction(runtime.sessionmaker) as session:
            runs = (
                await session.execute(
                    select(Run).where(Run.instruction_id == instruction.id)
                    .order_by(Run.scheduled_for)
                )
            ).scalars().all()
            current = await session.get(Instruction, instruction.id)
        assert current is not None
        fires = [r.scheduled_for for r in runs]
        assert len(fires) >= 3, "five simulated minutes give several fire times"
        # The chain of fire times from the first to the next one due.
        chain = [fires[0]]
        while True:
            nxt = triggers.next_after(instruction.trigger, chain[-1],
                                      anchor=instruction.created_at)
            assert nxt is not None
            if nxt >= current.next_run_at:  # type: ignore[operator]
                break
            chain.append(nxt)
        # No fire time twice, none off the chain, and the newest due one has its run.
        assert len(set(fires)) == len(fires), fires
        assert set(fires) <= set(chain), (fires, chain)
        assert fires[-1] == chain[-1], (fires, chain)
        # A fire time without a run of its own was coalesced (every scheduler stalled
        # for a simulated minute, three real seconds on a loaded machine): the next run
        # covers it, its window reaching back over it.
        for missing in sorted(set(chain) - set(fires)):
            cover = next(r for r in runs if r.scheduled_for > missing)
            assert cover.window_end == cover.scheduled_for
            assert cover.window_start is None or cover.window_start < missing, (missing, cover)
        assert all(r.status in ("succeeded", "skipped") for r in runs)
        assert sum(r.status == "succeeded" for r in runs) == 1  # only the first saw news
        total += len(runs)
    digests = [n for n in await notifications_of(runtime, user.id) if n.kind == "digest"]
    assert len(digests) == len(made)
    assert total >= 3 * len(made)
