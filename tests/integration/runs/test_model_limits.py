"""Runs against the limits of the model service, through the real google-genai SDK and the
fake Interactions API: answers cut off at the output token limit, the project's daily
quota, a rejected API key."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.agent.gemini import GeminiModel, quota_resets_at
from app.core.db import transaction
from app.core.runtime import Runtime
from app.instructions.models import Instruction
from app.runs import service as runs_service
from app.runs.endings import KEY_REJECTED, QUOTA_WAIT
from app.runs.models import Run
from tests import factories
from tests.fakes.gemini import FakeGemini, Text
from tests.integration.runs.helpers import (
    get_run,
    make_worker,
    notifications_of,
    steps_of,
    work_once,
)

# A whole digest, then blank lines until the output limit (a model stuck repeating them):
# cut off, the text is still valid JSON.
RUNAWAY_DIGEST = json.dumps({"summary": "Nothing needs you today.", "sections": []}) + (
    "\n" * 4000)


async def run_now(runtime: Runtime, instruction: Instruction) -> uuid.UUID:
    async with transaction(runtime.sessionmaker) as session:
        run = await runs_service.run_now(
            session=session, instruction=instruction, wakeups=runtime.wakeups
        )
        return run.id


async def test_a_digest_cut_off_twice_fails_the_run_with_the_reason_and_counts_its_tokens(
    runtime: Runtime,
) -> None:
    """An answer cut off at the output token limit (status `incomplete`) is never delivered
    as a digest, even when what came is valid JSON: asked for again once and cut off again,
    the attempt fails; the user is told why, and the tokens the cut-off answers were billed
    are on the run."""
    settings = runtime.settings
    settings.worker_max_attempts = 1
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app"])
    with FakeGemini(max_output_tokens=200) as fake:
        fake.script(Text(RUNAWAY_DIGEST), Text(RUNAWAY_DIGEST))
        model = GeminiModel(fake.api_key, base_url=fake.url, max_retries=0)
        run_id = await run_now(runtime, instruction)
        assert await work_once(make_worker(runtime, model)) == 1
        await model.aclose()
        billed = fake.billed()

    assert [r.response["status"] for r in fake.requests()] == ["incomplete", "incomplete"]
    run = await get_run(runtime, run_id)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith(
        "IncompleteAnswer: the model's answer was cut off twice, so no digest was made of it")
    assert run.result is None
    assert (run.input_tokens, run.output_tokens, run.thought_tokens) == (
        sum(u["total_input_tokens"] for u in billed),
        sum(u["total_output_tokens"] for u in billed),
        sum(u["total_thought_tokens"] for u in billed),
    )
    assert run.output_tokens > 0
    assert [s.error is not None for s in await steps_of(runtime, run_id)] == [True, True]
    told = await notifications_of(runtime, user.id)
    assert [n.kind for n in told] == ["error"]
    assert "cut off twice" in told[0].body


async def test_a_used_up_daily_quota_defers_runs_to_its_reset_and_tells_the_user_once(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A 429 for the day's quota (its QuotaFailure says PerDay; its RetryInfo a few
    seconds) is not retried for minutes: the run waits, as it is and uncounted, an hour
    (never past the quota's reset at midnight Pacific time), like a run deferred by the
    cost cap; its user is told once, and runs claimed meanwhile wait without a request to
    the model."""
    settings = runtime.settings
    settings.worker_max_attempts = 1
    settings.worker_failures_before_error = 1
    user, _ = await factories.user_with_token(runtime)
    instructions = [
        await factories.instruction(runtime, user, title=title, channels=["in_app", "email"])
        for title in ("Morning digest", "Invoices", "Team")
    ]
    with FakeGemini() as fake:
        fake.fail(429, retry_after=17, times=2,
                  quota_id="GenerateRequestsPerDayPerProjectPerModel")
        model = GeminiModel(fake.api_key, base_url=fake.url, max_retries=4)
        worker = make_worker(runtime, model)
        first = [await run_now(runtime, i) for i in instructions[:2]]
        with caplog.at_level(logging.ERROR, logger="app.runs.endings"):
            assert await work_once(worker) == 2
        resets_at = quota_resets_at(datetime.now(UTC))
        assert [r.status for r in fake.requests()] == [429, 429]  # no retries
        later = await run_now(runtime, instructions[2])
        assert await work_once(worker) == 1
        assert len(fake.requests()) == 2  # deferred without asking the model
        # A preview, which someone is looking at now, fails at once, saying why.
        async with transaction(runtime.sessionmaker) as session:
            preview = (await runs_service.preview(
                session=session, instruction=instructions[2], days=1,
                wakeups=runtime.wakeups)).id
        assert await work_once(worker) == 1
        assert len(fake.requests()) == 2
        await model.aclose()

    shown = await get_run(runtime, preview)
    assert shown.status == "failed"
    assert shown.error is not None
    assert shown.error.startswith("the model service's daily quota is used up until it resets")

    for run_id in [*first, later]:
        run = await get_run(runtime, run_id)
        assert (run.status, run.attempt) == ("queued", 0)
        assert run.available_at == min(run.updated_at + timedelta(hours=1), resets_at)
        assert run.error is not None
        assert run.error.startswith(QUOTA_WAIT)
    async with transaction(runtime.sessionmaker) as session:
        for instruction in instructions:
            reloaded = await session.get(Instruction, instruction.id)
            assert reloaded is not None
            assert (reloaded.status, reloaded.consecutive_failures) == ("active", 0)
    (told,) = await notifications_of(runtime, user.id)
    assert (told.kind, told.title) == ("alert", "Runs wait for the model's daily quota")
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "GenerateRequestsPerDayPerProjectPerModel" in logged.getMessage()


async def test_runs_waiting_for_the_daily_quota_try_again_within_hours_not_at_midnight(
    runtime: Runtime,
) -> None:
    """Runs deferred by a used-up daily quota waited for its reset at midnight Pacific
    time, even when the operator raised the quota (or it reset early) minutes later. A
    refused request is not billed: they try again after an hour, then after 2, 4, 8 hours
    while it stays used up (runs refused together are one try), never past the reset;
    once the model answers, the next quota refusal waits an hour again."""
    user, _ = await factories.user_with_token(runtime)
    instructions = [
        await factories.instruction(runtime, user, title=t) for t in ("A", "B", "C")]
    with FakeGemini() as fake:
        model = GeminiModel(fake.api_key, base_url=fake.url, max_retries=0)
        worker = make_worker(runtime, model)

        async def refused(hours: int, *run_ids: uuid.UUID) -> None:
            """Each run tries the model (the wait is over) and is refused: it waits `hours`
            (or until the quota's reset, if that is sooner)."""
            async with transaction(runtime.sessionmaker) as session:
                await session.execute(update(Run).where(Run.id.in_(run_ids))
                                      .values(available_at=datetime.now(UTC)))
            worker.executor._quota_wait_until = time.monotonic()  # the wait is over
            fake.fail(429, times=len(run_ids),
                      quota_id="GenerateRequestsPerDayPerProjectPerModel")
            asked = len(fake.requests())
            assert await work_once(worker) == len(run_ids)
            assert len(fake.requests()) == asked + len(run_ids)  # each tried the model
            resets_at = quota_resets_at(datetime.now(UTC))
            for run_id in run_ids:
                run = await get_run(runtime, run_id)
                assert (run.status, run.attempt) == ("queued", 0)
                assert run.available_at == min(
                    run.updated_at + timedelta(hours=hours), resets_at), hours

        both = [await run_now(runtime, i) for i in instructions[:2]]
        await refused(1, *both)  # two runs, one refusal
        for hours in (2, 4, 8):
            await refused(hours, both[0])

        # The quota was raised: the runs' next try runs them.
        async with transaction(runtime.sessionmaker) as session:
            await session.execute(update(Run).where(Run.id.in_(both))
                                  .values(available_at=datetime.now(UTC)))
        worker.executor._quota_wait_until = time.monotonic()
        assert await work_once(worker) == 2
        assert {(await get_run(runtime, r)).status for r in both} == {"succeeded"}

        # Used up again: back to the first wait.
        again = await run_now(runtime, instructions[2])
        await refused(1, again)
        await model.aclose()


async def test_the_wait_after_a_rejected_key_grows_with_each_rejection_and_resets_once_it_works(
    runtime: Runtime,
) -> None:
    """A key that stays rejected is tried again less and less often (5 minutes doubling, at
    most an hour) rather than every 5 minutes forever; runs rejected together are one
    rejection; once the model answers, the next rejection waits 5 minutes again. What the
    run says is the same each time."""
    user, _ = await factories.user_with_token(runtime)
    instructions = [
        await factories.instruction(runtime, user, title=t) for t in ("A", "B", "C")]
    with FakeGemini(api_key="the-good-key") as fake:
        model = GeminiModel("revoked-key-123", base_url=fake.url, max_retries=0)
        worker = make_worker(runtime, model)

        async def waits_after_rejection(*run_ids: uuid.UUID) -> set[float]:
            async with transaction(runtime.sessionmaker) as session:
                await session.execute(update(Run).where(Run.id.in_(run_ids))
                                      .values(available_at=datetime.now(UTC)))
            worker.executor._key_rejected_until = time.monotonic()  # the back-off is over
            assert await work_once(worker) == len(run_ids)
            waits = set()
            for run_id in run_ids:
                run = await get_run(runtime, run_id)
                assert (run.status, run.attempt, run.error) == ("queued", 0, KEY_REJECTED)
                waits.add((run.available_at - run.updated_at).total_seconds())
            return waits

        both = [await run_now(runtime, i) for i in instructions[:2]]
        assert await waits_after_rejection(*both) == {300.0}  # two runs, one rejection
        assert [await waits_after_rejection(both[0]) for _ in range(5)] == [
            {600.0}, {1200.0}, {2400.0}, {3600.0}, {3600.0}]

        fake.api_key = "revoked-key-123"  # the key works again: the run runs
        async with transaction(runtime.sessionmaker) as session:
            await session.execute(update(Run).where(Run.id.in_(both))
                                  .values(available_at=datetime.now(UTC)))
        worker.executor._key_rejected_until = time.monotonic()
        assert await work_once(worker) == 2
        assert {(await get_run(runtime, r)).status for r in both} == {"succeeded"}

        fake.api_key = "the-good-key"  # rejected again: back to the first wait
        again = await run_now(runtime, instructions[2])
        assert await waits_after_rejection(again) == {300.0}
        await model.aclose()
