"""The worker: claims, executes with the offline agent, writes outcomes once, fenced by lease."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, update

from app.accounts.models import Account
from app.accounts.queries import NOTHING_TO_READ
from app.agent.gemini import GeminiModel
from app.agent.llm import LLMError, TurnRequest, TurnResponse, Usage
from app.agent.offline import OfflineModel
from app.agent.prompt import SENT_ALERTS_LABEL
from app.core.db import transaction
from app.core.runtime import Runtime
from app.instructions import service as instructions_service
from app.instructions.models import Instruction
from app.notifications import service as notifications_service
from app.runs import queue
from app.runs import service as runs_service
from app.runs.endings import KEY_REJECTED, KEY_REJECTED_BACKOFF_SECONDS
from app.runs.models import Run
from app.runs.scheduler import SchedulerTick
from tests import factories
from tests.fakes.gemini import FakeGemini
from tests.integration.runs.helpers import (
    deliveries_of,
    drain,
    get_run,
    make_worker,
    notifications_of,
    runs_of,
    steps_of,
    work_once,
)


async def run_now(runtime: Runtime, instruction: Instruction) -> uuid.UUID:
    async with transaction(runtime.sessionmaker) as session:
        run = await runs_service.run_now(
            session=session, instruction=instruction, wakeups=runtime.wakeups
        )
        return run.id


class CountingModel(OfflineModel):
    """The offline model, counting the turns it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.turns = 0

    async def turn(self, request: TurnRequest) -> TurnResponse:
        self.turns += 1
        return await super().turn(request)


class SlowModel(OfflineModel):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def turn(self, request: TurnRequest) -> TurnResponse:
        await asyncio.sleep(self.delay)
        return await super().turn(request)


async def test_run_produces_one_digest_with_steps_then_skips_when_nothing_is_new(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.runs.execute")
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app", "email"])
    model = CountingModel()
    worker = make_worker(runtime, model)

    first = await run_now(runtime, instruction)
    assert await work_once(worker) == 1
    run = await get_run(runtime, first)
    assert run.status == "succeeded", run.error
    assert run.attempt == 1
    assert run.lease_token is None
    assert run.finished_at is not None
    assert run.result is not None
    assert run.result["model"] == "pilotlight-offline"
    assert run.input_tokens > 0
    assert run.output_tokens > 0

    steps = await steps_of(runtime, first)
    kinds = [s.kind for s in steps]
    assert kinds[0] == "model"
    assert kinds[-1] == "model"
    assert "tool" in kinds
    assert [s.seq for s in steps] == list(range(1, len(steps) + 1))
    tool = next(s for s in steps if s.kind == "tool")
    assert tool.arguments
    assert tool.result_excerpt

    (digest,) = await notifications_of(runtime, user.id)
    assert digest.kind == "digest"
    assert digest.run_id == first
    assert digest.body == run.result["summary"]
    deliveries = {d.channel: d.status for d in await deliveries_of(runtime, digest.id)}
    assert deliveries == {"email": "pending", "in_app": "sent"}

    turns_before = model.turns
    second = await run_now(runtime, instruction)
    await work_once(worker)
    run2 = await get_run(runtime, second)
    assert run2.status == "skipped"
    assert model.turns == turns_before  # nothing new: no model call at all
    assert len(await notifications_of(runtime, user.id)) == 1
    # The run that did something is a line in the log; the one with nothing new is not
    # (a watch or a frequent schedule would make one a few minutes, all day).
    lines = [r.getMessage() for r in caplog.records if r.name == "app.runs.execute"]
    assert [line.split(" in ")[0] for line in lines] == [f"run {first} succeeded"], lines


async def test_outcome_of_a_worker_that_lost_its_lease_is_refused(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    run_id = await run_now(runtime, instruction)
    worker = make_worker(runtime, SlowModel(0.3))

    assert await worker.run_once() == 1
    (claim, task) = worker.inflight[run_id]
    # Another worker takes the run over (its lease expired and was re-claimed).
    other = uuid.uuid4()
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(lease_token=other))
    await asyncio.gather(task, return_exceptions=True)

    run = await get_run(runtime, run_id)
    assert run.status == "running"
    assert run.lease_token == other
    assert await notifications_of(runtime, user.id) == []
    async with transaction(runtime.sessionmaker) as session:
        assert not await queue.finish(session=session, claim=claim, status="succeeded")


async def test_cancelling_a_running_run_stops_it_without_an_outcome(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    run_id = await run_now(runtime, instruction)
    worker = make_worker(runtime, SlowModel(0.3))
    await worker.run_once()
    async with transaction(runtime.sessionmaker) as session:
        await runs_service.cancel(session=session, user=user, run_id=run_id)
    await asyncio.gather(*(t for _c, t in worker.inflight.values()), return_exceptions=True)
    run = await get_run(runtime, run_id)
    assert run.status == "cancelled"
    assert run.result is None
    assert await notifications_of(runtime, user.id) == []


async def test_failed_attempts_retry_with_backoff_then_fail_and_stop_the_instruction(
    runtime: Runtime,
) -> None:
    settings = runtime.settings
    settings.worker_max_attempts = 2
    settings.worker_failures_before_error = 2
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    # Every attempt fails reading it: the sample's folder is gone.
    settings.sample_data_dir = settings.data_dir / "no-such-folder"
    worker = make_worker(runtime)

    for n in (1, 2):
        run_id = await run_now(runtime, instruction)
        await work_once(worker)
        run = await get_run(runtime, run_id)
        assert run.status == "queued"
        assert run.attempt == 1
        assert run.error
        assert "no-such-folder does not exist" in run.error
        # Backing off: the retry waits at least half the base delay after the failure.
        assert run.available_at - run.updated_at >= timedelta(seconds=0.05)
        async with transaction(runtime.sessionmaker) as session:
            await session.execute(
                update(Run).where(Run.id == run_id).values(available_at=datetime.now(UTC))
            )
        await work_once(worker)
        run = await get_run(runtime, run_id)
        assert run.status == "failed"
        assert run.attempt == 2
        async with transaction(runtime.sessionmaker) as session:
            reloaded = await session.get(Instruction, instruction.id)
            assert reloaded is not None
            assert reloaded.consecutive_failures == n
        await asyncio.sleep(0.001)  # run-now fire times must differ

    assert reloaded.status == "error"
    assert reloaded.next_run_at is None
    assert reloaded.status_detail
    assert "2 failed runs" in reloaded.status_detail
    errors = [n for n in await notifications_of(runtime, user.id) if n.kind == "error"]
    assert len(errors) == 2
    assert "Resume it" in errors[-1].body


async def test_a_run_with_nothing_to_read_fails_at_once_and_says_what_to_do(
    runtime: Runtime,
) -> None:
    """The user's only account went after the run was queued: another attempt would find
    no more, so the run fails at its first, and the user is told what to do."""
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    run_id = await run_now(runtime, instruction)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(delete(Account).where(Account.user_id == user.id))

    await work_once(make_worker(runtime))
    run = await get_run(runtime, run_id)
    assert (run.status, run.attempt, run.error) == ("failed", 1, NOTHING_TO_READ)
    (told,) = [n for n in await notifications_of(runtime, user.id) if n.kind == "error"]
    assert told.body == f"The run failed: {NOTHING_TO_READ}"
    assert "Connect Google" in told.body


async def test_a_run_that_fails_for_good_is_one_line_in_the_log_and_so_is_the_stop(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The log told each failed attempt ("attempt 2 failed: ..."), but not that the run had
    failed for good, nor that its instruction had stopped: an operator could not tell the
    last attempt from one that would be retried."""
    settings = runtime.settings
    settings.worker_max_attempts = 1
    settings.worker_failures_before_error = 2
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    settings.sample_data_dir = settings.data_dir / "no-such-folder"
    worker = make_worker(runtime)
    told = []
    for _ in range(2):
        run_id = await run_now(runtime, instruction)
        with caplog.at_level(logging.WARNING, logger="app.runs.endings"):
            await work_once(worker)
        run = await get_run(runtime, run_id)
        assert run.status == "failed"
        told.append((run_id, run.error,
                     [r.getMessage() for r in caplog.records if r.name == "app.runs.endings"]))
        caplog.clear()
        await asyncio.sleep(0.001)  # run-now fire times must differ
    (first, error, lines), (second, _, stopped) = told
    assert lines == [f"run {first} failed after 1 attempt(s): {error}"]
    assert stopped == [f"run {second} failed after 1 attempt(s): {error}; its instruction "
                       f"{instruction.id} is stopped after 2 failed runs in a row"]


async def test_a_rejected_api_key_gives_runs_back_uncounted_until_it_is_fixed(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's key is broken, not the users' instructions: a run the model service
    refuses (the real SDK, a wrong key: 400 API_KEY_INVALID) waits in the queue, its attempt
    and its instruction's failures uncounted, nobody told; the operator is told once in
    the log, without the key, and by a gauge. Once the key works, every run runs."""
    settings = runtime.settings
    settings.worker_max_attempts = 1
    settings.worker_failures_before_error = 1
    user, _ = await factories.user_with_token(runtime)
    instructions = [
        await factories.instruction(runtime, user, channels=["in_app", "email"]),
        await factories.instruction(runtime, user, title="Invoices"),
    ]
    given_back = REGISTRY.get_sample_value("pilotlight_runs_waiting_for_key_total") or 0
    with FakeGemini() as fake:
        revoked = GeminiModel("revoked-key-123", base_url=fake.url, max_retries=0)
        worker = make_worker(runtime, revoked)
        run_ids = [await run_now(runtime, i) for i in instructions]
        with caplog.at_level(logging.ERROR, logger="app.runs.endings"):
            assert await work_once(worker) == 2
        assert [r.status for r in fake.requests()] == [400, 400]
        for run_id in run_ids:
            run = await get_run(runtime, run_id)
            assert (run.status, run.attempt, run.error) == ("queued", 0, KEY_REJECTED)
            assert run.available_at - run.updated_at == timedelta(
                seconds=KEY_REJECTED_BACKOFF_SECONDS)
        async with transaction(runtime.sessionmaker) as session:
            for instruction in instructions:
                reloaded = await session.get(Instruction, instruction.id)
                assert reloaded is not None
                assert (reloaded.status, reloaded.consecutive_failures) == ("active", 0)
        assert await notifications_of(runtime, user.id) == []
        (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "API key not valid" in logged.getMessage()
        assert "revoked-key-123" not in logged.getMessage()
        assert REGISTRY.get_sample_value("pilotlight_model_key_rejected") == 1
        assert REGISTRY.get_sample_value(
            "pilotlight_runs_waiting_for_key_total") == given_back + 2

        # Claimed again within the back-off, they are given back without a request.
        async with transaction(runtime.sessionmaker) as session:
            await session.execute(update(Run).where(Run.id.in_(run_ids))
                                  .values(available_at=datetime.now(UTC)))
        assert await work_once(worker) == 2
        assert len(fake.requests()) == 2
        assert {(await get_run(runtime, r)).status for r in run_ids} == {"queued"}
        await revoked.aclose()

        # The key is fixed (the worker restarts with a good one): every run runs.
        async with transaction(runtime.sessionmaker) as session:
            await session.execute(update(Run).where(Run.id.in_(run_ids))
                                  .values(available_at=datetime.now(UTC)))
        fixed = GeminiModel(fake.api_key, base_url=fake.url, max_retries=0)
        assert await work_once(make_worker(runtime, fixed)) == 2
        await fixed.aclose()
    for run_id in run_ids:
        run = await get_run(runtime, run_id)
        assert (run.status, run.attempt, run.error) == ("succeeded", 1, None)
        # The refused turn's step stays; the good attempt's steps follow it.
        steps = [(s.attempt, s.seq, s.error is not None) for s in await steps_of(runtime, run_id)]
        assert len(steps) > 1
        assert steps == [(1, seq, seq == 1) for seq in range(1, len(steps) + 1)]
    assert sorted(n.kind for n in await notifications_of(runtime, user.id)) == [
        "digest", "digest"]


async def test_rescuer_requeues_a_run_whose_worker_died(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    run_id = await run_now(runtime, instruction)
    async with transaction(runtime.sessionmaker) as session:
        (dead,) = await queue.claim(
            session=session, worker_id="dead", limit=1, lease_seconds=60
        )
        await session.execute(
            update(Run).where(Run.id == run_id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    worker = make_worker(runtime)
    await work_once(worker)
    run = await get_run(runtime, run_id)
    assert run.status == "succeeded"
    assert run.attempt == 2
    assert run.worker_id == worker.worker_id
    async with transaction(runtime.sessionmaker) as session:
        assert not await queue.finish(session=session, claim=dead, status="failed")
    assert len(await notifications_of(runtime, user.id)) == 1


async def test_stopping_the_worker_gives_its_runs_back(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    run_id = await run_now(runtime, instruction)
    runtime.settings.worker_shutdown_seconds = 0.1
    worker = make_worker(runtime, SlowModel(5))
    stop = asyncio.Event()
    loop_task = asyncio.create_task(worker.run(stop))
    for _ in range(100):
        if worker.inflight:
            break
        await asyncio.sleep(0.02)
    assert run_id in worker.inflight
    stop.set()
    # Its turn is given a few seconds (CANCELLED_TURN_WAIT_SECONDS) to count what it billed.
    await asyncio.wait_for(loop_task, 15)
    run = await get_run(runtime, run_id)
    assert run.status == "queued"
    assert run.attempt == 0
    assert run.lease_token is None

    await work_once(make_worker(runtime))
    assert (await get_run(runtime, run_id)).status == "succeeded"


async def test_a_model_turn_on_its_way_at_shutdown_is_in_the_run_given_back(
    runtime: Runtime,
) -> None:
    """A worker that stops cancels the runs that did not finish in time; one cancelled
    while its model turn was on its way had that turn billed by Gemini, but the turn was in
    no step and the run's cost left it out. The cancelled run waits a little for the
    answer and charges it to the run it gives back."""
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    run_id = await run_now(runtime, instruction)
    runtime.settings.worker_shutdown_seconds = 0.1
    with FakeGemini() as fake:
        fake.slow(1.0)
        model = GeminiModel(fake.api_key, base_url=fake.url, max_retries=0)
        worker = make_worker(runtime, model)
        stop = asyncio.Event()
        loop_task = asyncio.create_task(worker.run(stop))
        while not fake.requests():  # the first turn is on its way
            assert not loop_task.done()
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(loop_task, 15)
        await model.aclose()
        for _ in range(250):  # the service answers, and bills, whoever still listens
            if fake.billed():
                break
            await asyncio.sleep(0.02)
        billed = fake.billed()

    assert len(billed) == 1
    run = await get_run(runtime, run_id)
    assert (run.status, run.attempt, run.lease_token) == ("queued", 0, None)
    assert (run.input_tokens, run.output_tokens, run.thought_tokens) == (
        billed[0]["total_input_tokens"], billed[0]["total_output_tokens"],
        billed[0]["total_thought_tokens"])
    assert run.cost_usd > 0
    (step,) = await steps_of(runtime, run_id)
    assert (step.kind, step.input_tokens) == ("model", billed[0]["total_input_tokens"])


async def test_many_runs_in_flight_each_finish_once(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    instructions = [await factories.instruction(runtime, user) for _ in range(6)]
    ids = [await run_now(runtime, i) for i in instructions]
    workers = [make_worker(runtime, SlowModel(0.05)) for _ in range(3)]
    for _ in range(5):
        await asyncio.gather(*(work_once(w) for w in workers))
    statuses = [(await get_run(runtime, i)).status for i in ids]
    assert statuses == ["succeeded"] * 6
    digests = [n for n in await notifications_of(runtime, user.id) if n.kind == "digest"]
    assert sorted(n.run_id for n in digests) == sorted(ids)


async def test_deleting_an_instruction_or_its_user_deletes_their_runs(runtime: Runtime) -> None:
    """Runs have no foreign key to their instruction (migration 0013); the trigger
    `instructions_delete_runs` keeps what its ON DELETE CASCADE did."""
    from sqlalchemy import delete, func, select

    from app.users.models import User

    user, _ = await factories.user_with_token(runtime)
    first = await factories.instruction(runtime, user)
    second = await factories.instruction(runtime, user)
    other_user, _ = await factories.user_with_token(runtime)
    kept = await factories.instruction(runtime, other_user)
    for instruction in (first, second, kept):
        await run_now(runtime, instruction)
        await work_once(make_worker(runtime))  # with its steps (whose key cascades)
    kept_run = await run_now(runtime, kept)

    async def count(*where: object) -> int:
        async with transaction(runtime.sessionmaker) as session:
            return int(await session.scalar(select(func.count()).select_from(Run).where(*where)))

    assert await count(Run.user_id == user.id) == 2
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(delete(Instruction).where(Instruction.id == first.id))
    assert await count(Run.instruction_id == first.id) == 0
    assert await count(Run.instruction_id == second.id) == 1
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(delete(User).where(User.id == user.id))
    assert await count(Run.user_id == user.id) == 0
    assert await count(Run.user_id == other_user.id) == 2
    assert (await get_run(runtime, kept_run)).status == "queued"


async def test_rescuer_cancels_a_run_whose_instruction_is_gone(runtime: Runtime) -> None:
    """A run written by a transaction that raced its instruction's deletion outlives it:
    a worker claims it, finds nothing to load, and the rescuer cancels it once the lease
    runs out (rather than queueing it again, forever)."""
    from sqlalchemy import delete, insert

    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    run_id = await run_now(runtime, instruction)
    orphan = await get_run(runtime, run_id)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(delete(Instruction).where(Instruction.id == instruction.id))
        # The racing writer's run, committed after the deletion's trigger ran.
        await session.execute(insert(Run).values(
            id=run_id, user_id=user.id, instruction_id=instruction.id, reason="manual",
            scheduled_for=orphan.scheduled_for, status="queued", attempt=0,
            available_at=orphan.available_at, interaction_ids={},
        ))
    worker = make_worker(runtime)
    await work_once(worker)
    run = await get_run(runtime, run_id)
    assert run.status == "running"  # claimed, nothing loaded: the lease runs out
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(Run).where(Run.id == run_id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    async with transaction(runtime.sessionmaker) as session:
        assert await queue.rescue_expired(session=session) == 0
    run = await get_run(runtime, run_id)
    assert run.status == "cancelled"
    assert run.error == "the instruction was deleted"
    assert run.lease_token is None
    await work_once(worker)
    assert (await get_run(runtime, run_id)).status == "cancelled"


class FailsWhenLetGo(OfflineModel):
    """A model that fails its turn (an overloaded service) once the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.go_on = asyncio.Event()

    async def turn(self, request: TurnRequest) -> TurnResponse:
        self.started.set()
        await self.go_on.wait()
        raise LLMError("model overloaded")


async def test_a_last_attempt_failing_after_its_instruction_was_deleted_ends_cancelled_untold(
    runtime: Runtime,
) -> None:
    """Deleted while its last attempt ran: "Morning digest: run failed" went out on every
    channel (email too), and the deleted instruction counted the failure."""
    runtime.settings.worker_max_attempts = 1
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, only_new=False,
                                              channels=["in_app", "email"])
    model = FailsWhenLetGo()
    worker = make_worker(runtime, model)
    run_id = await run_now(runtime, instruction)
    await worker.run_once()
    await asyncio.wait_for(model.started.wait(), 5)
    async with transaction(runtime.sessionmaker) as session:
        await instructions_service.delete(session=session, user=user,
                                          instruction_id=instruction.id)
    model.go_on.set()
    await drain(worker)

    run = await get_run(runtime, run_id)
    assert (run.status, run.error) == ("cancelled", "the instruction was deleted")
    assert [n for n in await notifications_of(runtime, user.id) if n.kind == "error"] == []
    async with transaction(runtime.sessionmaker) as session:
        gone = await session.get(Instruction, instruction.id)
        assert gone is not None
        assert gone.consecutive_failures == 0


async def test_runs_of_the_schedule_queued_before_a_pause_are_cancelled_not_run(
    runtime: Runtime,
) -> None:
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    fire = datetime.now(UTC) - timedelta(minutes=1)
    async with transaction(runtime.sessionmaker) as session:
        scheduled = await queue.enqueue(
            session=session, user_id=user.id, instruction_id=instruction.id,
            reason="schedule", scheduled_for=fire, window_start=None, window_end=fire,
        )
    assert scheduled is not None
    async with transaction(runtime.sessionmaker) as session:
        await instructions_service.set_paused(
            session=session, user=user, instruction_id=instruction.id, paused=True)
    # Asked for by hand while paused: that one runs.
    by_hand = await run_now(runtime, instruction)
    worker = make_worker(runtime)
    while await work_once(worker):
        pass
    run = await get_run(runtime, scheduled)
    assert (run.status, run.error) == ("cancelled", "the instruction was paused")
    assert (await get_run(runtime, by_hand)).status in ("succeeded", "skipped")
    assert [n.run_id for n in await notifications_of(runtime, user.id)
            if n.kind == "digest"] in ([by_hand], [])
    assert await steps_of(runtime, scheduled) == []


async def test_a_catch_up_run_covers_up_to_when_it_read_the_sources(runtime: Runtime) -> None:
    """The schedulers were down across a fire time: its catch-up run, hours later, read
    what came since, but its digest said it covered up to the missed fire time (and the
    model was told it was then), and the next run's window started there again."""
    user, _ = await factories.user_with_token(runtime)
    now = datetime.now(UTC)
    missed = (now - timedelta(hours=10)).replace(minute=0, second=0, microsecond=0)
    instruction = await factories.instruction(
        runtime, user, only_new=False,
        trigger={"type": "cron", "cron": f"0 {missed.hour} * * *", "timezone": "UTC"},
    )
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Instruction).where(Instruction.id == instruction.id)
                              .values(next_run_at=missed))
    scheduler = SchedulerTick(sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
                              settings=runtime.settings)
    assert await scheduler.run_once() == 1
    [run] = await runs_of(runtime, instruction.id)
    assert run.window_end == missed  # the fire time it stands for
    await work_once(make_worker(runtime))

    run = await get_run(runtime, run.id)
    assert run.status == "succeeded", run.error
    assert run.started_at is not None
    covers_end = datetime.fromisoformat(run.result["covers"]["end"])
    assert covers_end >= run.started_at - timedelta(seconds=5)
    async with transaction(runtime.sessionmaker) as session:
        moved = await session.get(Instruction, instruction.id)
        assert moved is not None
        assert moved.covered_until is not None
        assert moved.covered_until >= run.started_at - timedelta(seconds=5)


class FirstInputs(OfflineModel):
    """Records the first turn's input of each attempt, and answers with a digest."""

    def __init__(self) -> None:
        super().__init__()
        self.first_inputs: list[str] = []

    async def turn(self, request: TurnRequest) -> TurnResponse:
        if isinstance(request.input, str):
            self.first_inputs.append(request.input)
        return TurnResponse(interaction_id="i1", usage=Usage(input_tokens=10),
                            text='{"summary": "Done.", "sections": []}')


async def test_a_run_given_back_at_shutdown_is_shown_the_alerts_it_sent(
    runtime: Runtime,
) -> None:
    """Given back uncounted (attempt - 1, no error), the next attempt was not told of the
    alert the first one sent, and could send it again in new words."""
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    run_id = await run_now(runtime, instruction)
    async with transaction(runtime.sessionmaker) as session:
        (claim,) = await queue.claim(session=session, worker_id="w-old", limit=1,
                                     lease_seconds=60)
        await notifications_service.notify(
            session=session, user_id=user.id, key=f"run:{run_id}:notify:c1", kind="alert",
            title=f"{instruction.title}: Invoice overdue", body="Skyline is overdue.",
            channels=["in_app"], run_id=run_id, instruction_id=instruction.id)
    async with transaction(runtime.sessionmaker) as session:
        assert await queue.release(session=session, claim=claim)
    model = FirstInputs()
    await work_once(make_worker(runtime, model))
    assert (await get_run(runtime, run_id)).status == "succeeded"
    [first] = model.first_inputs
    assert SENT_ALERTS_LABEL in first
    assert "Skyline is overdue." in first

