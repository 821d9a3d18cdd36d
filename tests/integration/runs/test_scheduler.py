"""The scheduler tick: due instructions become runs, exactly one per fire time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from sqlalchemy import select, update

from app.core.db import db_now, transaction
from app.core.runtime import Runtime
from app.instructions import service as instructions
from app.instructions.models import Instruction
from app.instructions.schemas import InstructionUpdate
from app.runs.scheduler import SchedulerTick
from tests import factories
from tests.integration.runs.helpers import runs_of


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def tick(runtime: Runtime, clock: Clock, **settings: object) -> SchedulerTick:
    return SchedulerTick(
        sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
        settings=runtime.settings.model_copy(update=settings), clock=clock,
    )


def queued_by_schedule() -> float:
    return REGISTRY.get_sample_value("pilotlight_runs_queued_total", {"reason": "schedule"}) or 0


async def _set(runtime: Runtime, instruction_id, **values) -> None:  # type: ignore[no-untyped-def]
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(Instruction).where(Instruction.id == instruction_id).values(**values)
        )


async def test_due_instruction_gets_one_run_and_moves_on(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    assert instruction.next_run_at is not None
    fire = instruction.next_run_at
    clock = Clock(fire + timedelta(seconds=1))
    scheduler = tick(runtime, clock)

    assert await scheduler.run_once() == 1
    assert await scheduler.run_once() == 0  # same moment again: nothing new

    runs = await runs_of(runtime, instruction.id)
    assert [(r.scheduled_for, r.reason, r.status) for r in runs] == [(fire, "schedule", "queued")]
    assert runs[0].window_end == fire
    async with transaction(runtime.sessionmaker) as session:
        reloaded = await session.get(Instruction, instruction.id)
        assert reloaded is not None
        assert reloaded.next_run_at is not None
        assert reloaded.next_run_at > fire
        # 08:00 Berlin on the next weekday.
        local = reloaded.next_run_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (8, 0)
        assert local.weekday() < 5


async def test_not_due_paused_and_deleted_instructions_get_no_run(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    waiting = await factories.instruction(runtime, user)
    paused = await factories.instruction(runtime, user)
    deleted = await factories.instruction(runtime, user)
    assert waiting.next_run_at is not None
    await _set(runtime, paused.id, status="paused")
    await _set(runtime, deleted.id, deleted_at=datetime.now(UTC))

    assert await tick(runtime, Clock(waiting.next_run_at - timedelta(seconds=1))).run_once() == 0
    assert await tick(runtime, Clock(waiting.next_run_at + timedelta(seconds=1))).run_once() == 1
    assert await runs_of(runtime, paused.id) == []
    assert await runs_of(runtime, deleted.id) == []


async def test_an_edit_that_keeps_the_trigger_keeps_a_due_fire_time(runtime: Runtime) -> None:
    """The dashboard sends the trigger with every save: renaming an instruction that is
    due, before the tick has queued its run, must not skip that run."""
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    due = datetime.now(UTC) - timedelta(seconds=30)
    await _set(runtime, instruction.id, next_run_at=due)
    async with transaction(runtime.sessionmaker) as session:
        await instructions.update(
            session=session, user=user, instruction_id=instruction.id,
            data=InstructionUpdate(title="Renamed", trigger=dict(instruction.trigger)),
        )
        # Resuming what is not paused changes nothing either.
        await instructions.set_paused(
            session=session, user=user, instruction_id=instruction.id, paused=False)
    assert await tick(runtime, Clock(due + timedelta(seconds=31))).run_once() == 1
    (run,) = await runs_of(runtime, instruction.id)
    assert run.scheduled_for == due

    # A different trigger takes effect at once: no run for the old schedule's fire time.
    await _set(runtime, instruction.id, next_run_at=due)
    async with transaction(runtime.sessionmaker) as session:
        changed = await instructions.update(
            session=session, user=user, instruction_id=instruction.id,
            data=InstructionUpdate(trigger={"type": "interval", "seconds": 3600}),
        )
        assert changed.next_run_at is not None
        assert changed.next_run_at > datetime.now(UTC)


async def test_missed_fire_times_coalesce_into_one_catch_up_run(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(
        runtime, user, trigger={"type": "interval", "seconds": 3600}
    )
    assert instruction.next_run_at is not None
    first = instruction.next_run_at
    covered = first - timedelta(hours=1)
    await _set(runtime, instruction.id, covered_until=covered)
    # The schedulers were down for five fire times.
    now = first + timedelta(hours=4, minutes=30)
    assert await tick(runtime, Clock(now)).run_once() == 1

    (run,) = await runs_of(runtime, instruction.id)
    assert run.scheduled_for == first + timedelta(hours=4)  # the newest missed fire time
    assert (run.window_start, run.window_end) == (covered, run.scheduled_for)
    async with transaction(runtime.sessionmaker) as session:
        reloaded = await session.get(Instruction, instruction.id)
        assert reloaded is not None
        assert reloaded.next_run_at == first + timedelta(hours=5)


async def test_schedulers_racing_make_exactly_one_run_per_fire_time(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instructions = [
        await factories.instruction(runtime, user, trigger={"type": "interval", "seconds": 600})
        for _ in range(5)
    ]
    start = min(i.next_run_at for i in instructions if i.next_run_at is not None)
    clock = Clock(start)
    schedulers = [tick(runtime, clock) for _ in range(3)]
    # Simulated time: 6 hours in steps of 7 minutes, three schedulers at once.
    for step in range(52):
        clock.now = start + timedelta(minutes=7 * step)
        await asyncio.gather(*(s.run_once() for s in schedulers))

    for instruction in instructions:
        runs = await runs_of(runtime, instruction.id)
        times = [r.scheduled_for for r in runs]
        assert len(times) == len(set(times))
        assert instruction.next_run_at is not None
        # Every 10-minute fire time up to the end of the stretch, none skipped.
        expected, t = [], instruction.next_run_at
        while t <= clock.now:
            expected.append(t)
            t += timedelta(minutes=10)
        # Ticks 7 minutes apart never see two 10-minute fire times at once, so
        # nothing coalesces: every fire time has its run.
        assert times == expected


async def test_changing_the_schedule_takes_effect_at_once(runtime: Runtime, client) -> None:  # type: ignore[no-untyped-def]
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    response = await client.patch(
        f"/api/v1/instructions/{instruction.id}",
        json={"trigger": {"type": "interval", "seconds": 120}}, headers=headers,
    )
    assert response.status_code == 200, response.text
    next_run = datetime.fromisoformat(response.json()["next_run_at"])
    assert next_run - datetime.now(UTC) <= timedelta(seconds=121)
    assert await tick(runtime, Clock(next_run + timedelta(seconds=1))).run_once() == 1


async def test_a_burst_bigger_than_a_batch_is_queued_by_one_tick(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instructions = [await factories.instruction(runtime, user) for _ in range(300)]
    fire = instructions[0].next_run_at
    assert fire is not None
    assert all(i.next_run_at == fire for i in instructions)  # all due in the same second
    wakes: list[str] = []
    runtime.wakeups.subscribe("runs", lambda: wakes.append("runs"))
    counted = queued_by_schedule()
    scheduler = tick(runtime, Clock(fire + timedelta(seconds=1)), scheduler_batch_size=100)

    assert await scheduler.run_once() == 300  # three full batches and an empty one
    assert await scheduler.run_once() == 0

    assert queued_by_schedule() - counted == 300
    assert wakes == ["runs"] * 3  # once per batch that queued something
    for instruction in instructions:
        runs = await runs_of(runtime, instruction.id)
        assert [(r.scheduled_for, r.window_end, r.status) for r in runs] == [
            (fire, fire, "queued")
        ]
    async with transaction(runtime.sessionmaker) as session:
        moved = (await session.execute(select(Instruction.next_run_at))).scalars().all()
    assert len(moved) == 300
    assert all(t is not None and t > fire for t in moved)
    assert len(set(moved)) == 1  # the same next weekday 08:00 for every one of them


async def test_a_stop_ends_a_burst_between_batches(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instructions = [await factories.instruction(runtime, user) for _ in range(30)]
    fire = instructions[0].next_run_at
    assert fire is not None
    stop = asyncio.Event()

    class StoppingClock(Clock):
        # SIGTERM arrives while the first batch is being read.
        def __call__(self) -> datetime:
            stop.set()
            return self.now

    scheduler = tick(runtime, StoppingClock(fire + timedelta(seconds=1)), scheduler_batch_size=10)
    await asyncio.wait_for(scheduler.run(stop), 10)

    queued = [run for i in instructions for run in await runs_of(runtime, i.id)]
    assert len(queued) == 10  # the batch in hand is finished, no further one is started
    # The rest is queued by the next scheduler to tick.
    assert await tick(runtime, Clock(fire + timedelta(seconds=2))).run_once() == 20


async def test_a_fire_time_older_than_the_grace_is_skipped_in_a_mixed_batch(
    runtime: Runtime,
) -> None:
    user, _ = await factories.user_with_token(runtime)
    weekdays = await factories.instruction(runtime, user)
    every_five = await factories.instruction(
        runtime, user, trigger={"type": "cron", "cron": "*/5 * * * *", "timezone": "UTC"}
    )
    assert weekdays.next_run_at is not None
    missed = weekdays.next_run_at
    # The schedulers were down from just before 08:00 until 21:00: the 08:00 fire time
    # is 13 hours old, past the 12-hour grace; the five-minutely one has a fresh one.
    now = missed + timedelta(hours=13)  # 21:00, also a five-minutely fire time
    scheduler = tick(runtime, Clock(now), scheduler_misfire_grace_seconds=12 * 3600)
    assert await scheduler.run_once() == 1

    assert await runs_of(runtime, weekdays.id) == []
    (run,) = await runs_of(runtime, every_five.id)
    assert run.scheduled_for == now
    async with transaction(runtime.sessionmaker) as session:
        skipped = await session.get(Instruction, weekdays.id)
        fired = await session.get(Instruction, every_five.id)
    assert skipped is not None
    assert fired is not None
    # Both move on: the skipped one to its next weekday 08:00.
    assert skipped.next_run_at is not None
    assert skipped.next_run_at > now
    assert fired.next_run_at == now + timedelta(minutes=5)


def test_remembered_fire_times_match_the_trigger_across_dst_shifts() -> None:
    """FireTimes answers as triggers.next_after does, at every moment, also around the
    shifts of the DST table's zones (30 minutes on Lord Howe) and going back in time."""
    import random

    from app.instructions import triggers
    from app.runs.scheduler import FireTimes

    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    schedules = [
        {"type": "cron", "cron": cron, "timezone": zone}
        for zone in ("Europe/London", "America/New_York", "Australia/Lord_Howe")
        for cron in ("30 1 * * *", "30 2 * * *", "0 * * * *", "*/20 1-3 * * *", "0 8 * * 1-5")
    ]
    # Around the 2026 shifts of the three zones, and some moments in between.
    starts = [datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 28, 20, tzinfo=UTC),
              datetime(2026, 4, 4, 12, tzinfo=UTC), datetime(2026, 10, 3, 12, tzinfo=UTC),
              datetime(2026, 10, 24, 20, tzinfo=UTC), datetime(2026, 10, 31, 20, tzinfo=UTC)]
    rng = random.Random(7)
    cached = FireTimes(size=4)  # smaller than the schedules: evictions too
    checked = 0
    for start in starts:
        moments = sorted(start + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
                         for _ in range(40))
        moments += moments[::-7]  # and back again
        for moment in moments:
            for spec in schedules:
                expected = triggers.next_after(spec, moment, anchor=anchor)
                assert cached.next_after(spec, moment, anchor=anchor) == expected, (spec, moment)
                checked += 1
    assert checked == len(starts) * 46 * len(schedules)


async def test_the_loop_wakes_when_the_next_instruction_is_due_not_a_whole_interval_later(
    runtime: Runtime,
) -> None:
    """PostgreSQL: the tick loop's wait ends when the next instruction is due, so a run is
    queued on time with an interval of an hour; SQLite ticks every interval."""
    scheduler = SchedulerTick(
        sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
        settings=runtime.settings.model_copy(update={"scheduler_tick_seconds": 3600}),
    )
    postgresql = runtime.engine.dialect.name == "postgresql"
    async with scheduler.holding():
        assert await scheduler.plan_wait() == 3600  # nothing is scheduled at all
        user, _ = await factories.user_with_token(runtime)
        instruction = await factories.instruction(runtime, user)
        async with transaction(runtime.sessionmaker) as session:
            due = await db_now(session) + timedelta(seconds=1)
        await _set(runtime, instruction.id, next_run_at=due)
        wait = await scheduler.plan_wait()
        if not postgresql:
            assert wait == 3600
            return
        assert 0 < wait <= 1.1

    stop = asyncio.Event()
    loop = asyncio.create_task(scheduler.run(stop))
    try:
        async def queued() -> bool:
            return bool(await runs_of(runtime, instruction.id))

        for _ in range(300):  # at most 30 s, far less than the hour's interval
            if await queued():
                break
            await asyncio.sleep(0.1)
        runs = await runs_of(runtime, instruction.id)
        assert [r.scheduled_for for r in runs] == [due]
    finally:
        stop.set()
        await loop
