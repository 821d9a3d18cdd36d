"""Executing one claimed run: the agent over the user's sources, then its outcome.

The agent runs outside any transaction. Each step is written on its own; the
outcome (run row, instruction cursor, notification and its deliveries) is
written in one transaction that names the lease, so a worker that lost the
run writes nothing, and a retry never tells the user twice.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Account
from app.agent.llm import LLM
from app.agent.pricing import cost_usd
from app.agent.runner import (
    AgentOutcome,
    AgentRequest,
    StepRecord,
    StepRecorder,
    run_agent,
)
from app.core.config import Settings
from app.core.db import after_commit, transaction, utcnow
from app.instructions.models import Instruction
from app.notifications import service as notifications
from app.runs import costs, metrics, queue
from app.runs.models import Run, RunStep
from app.sources.base import Source
from app.sources.registry import source_for
from app.users.models import User

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker (or a cancel) took the run: this worker must not write its outcome."""


@dataclass
class _Context:
    run: Run
    instruction: Instruction
    user: User
    accounts: list[Account]


class Agent(Protocol):
    """What the executor runs: `run_agent`, or another with its signature (benchmarks)."""

    async def __call__(
        self,
        *,
        llm: LLM,
        sources: Mapping[str, Source],
        cursors: Mapping[str, dict[str, Any] | None],
        request: AgentRequest,
        record: StepRecorder,
    ) -> AgentOutcome: ...


class RunExecutor:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        llm: LLM,
        agent: Agent = run_agent,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.llm = llm
        self.agent = agent
        self._fault_fired = False

    def fault(self, point: str) -> None:
        """Testing only: die (SIGKILL) or freeze (SIGSTOP) here, as PILOTLIGHT_TEST_FAULT says."""
        action, _, at = self.settings.test_fault.partition(":")
        if at != point or self._fault_fired:
            return
        self._fault_fired = True
        log.warning("test fault: %s at %s", action, point)
        os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGSTOP)

    async def execute(self, claim: queue.Claim) -> None:
        ctx = await self._load(claim)
        if ctx is None:
            return
        self.fault("claimed")
        if ctx.instruction.deleted_at is not None:
            await self._cancel_deleted(claim)
            return
        over_cap = await self._over_cost_cap(ctx)
        if over_cap is not None:
            await self._skip_for_cost(claim, ctx, over_cap)
            return
        if claim.attempt > self.settings.worker_max_attempts:
            await self._give_up(claim, ctx, "gave up: every attempt stopped before it ended")
            return
        started = time.monotonic()
        try:
            outcome = await self._run_agent(claim, ctx)
        except LeaseLost:
            log.warning("run %s: lease lost while running", claim.run_id)
            return
        except Exception as exc:
            log.warning("run %s attempt %d failed: %s", claim.run_id, claim.attempt, exc)
            await self._failed(claim, ctx, exc)
            return
        try:
            await self._succeeded(claim, ctx, outcome)
        except LeaseLost:
            log.warning("run %s: lease lost before its outcome was written", claim.run_id)
            return
        log.info(
            "run %s %s in %.2fs", claim.run_id, outcome.status, time.monotonic() - started
        )

    async def _load(self, claim: queue.Claim) -> _Context | None:
        async with transaction(self.sessionmaker) as session:
            run = await session.get(Run, claim.run_id)
            if run is None or run.lease_token != claim.lease_token:
                return None
            instruction = await session.get(Instruction, run.instruction_id)
            user = await session.get(User, run.user_id)
            assert instruction is not None
            assert user is not None
            accounts = (
                await session.execute(
                    select(Account).where(Account.user_id == user.id).order_by(Account.created_at)
                )
            ).scalars().all()
            return _Context(run, instruction, user, list(accounts))

    async def _run_agent(self, claim: queue.Claim, ctx: _Context) -> AgentOutcome:
        sources: dict[str, Source] = {}
        for account in ctx.accounts:
            source = source_for(account, self.settings)
            if source is not None:
                sources[str(account.id)] = source
        if not sources:
            raise RuntimeError(
                "no connected account to read: connect Google or enable the sample mailbox"
            )
        kinds = ctx.instruction.sources.get("kinds", [])
        preview = ctx.run.reason == "preview"
        request = AgentRequest(
            title=ctx.instruction.title,
            text=ctx.instruction.text,
            thinking_level=ctx.instruction.thinking_level,  # type: ignore[arg-type]
            max_tool_calls=ctx.instruction.max_tool_calls,
            max_turns=self.settings.agent_max_turns,
            only_new=ctx.instruction.only_new,
            read_mail="gmail" in kinds,
            read_files="drive" in kinds,
            timezone=ctx.user.timezone,
            now=ctx.run.window_end or utcnow(),
            window_start=ctx.run.window_start,
            model=self.llm.name,
            context_limit=self.settings.agent_context_limit,
            since=ctx.run.window_start if preview else None,
            max_input_tokens=self.settings.agent_max_input_tokens,
        )
        # A preview looks at everything in its window, whatever was seen before.
        cursors = {key: None if preview else ctx.instruction.cursor.get(key) for key in sources}
        recorder = _StepWriter(self.sessionmaker, claim, ctx.run, self.fault)
        return await self.agent(
            llm=self.llm, sources=sources, cursors=cursors, request=request, record=recorder
        )

    async def _over_cost_cap(self, ctx: _Context) -> str | None:
        """Why this run would pass the user's daily cost cap, or None if it would not.

        The run's cost is estimated from the instruction's recent runs.
        """
        cap = ctx.user.daily_cost_cap_usd
        async with transaction(self.sessionmaker) as session:
            spent = await costs.spent_today(session=session, user=ctx.user)
            estimate = await costs.typical_cost(session=session, instruction_id=ctx.instruction.id)
        if spent + estimate <= cap:
            return None
        return (
            f"the daily cost cap of ${cap:.2f} would be passed: ${spent:.4f} spent today, "
            f"a run of this instruction costs about ${estimate:.4f}"
        )

    async def _skip_for_cost(self, claim: queue.Claim, ctx: _Context, reason: str) -> None:
        now = utcnow()
        async with transaction(self.sessionmaker) as session:
            if not await queue.finish(
                session=session, claim=claim, status="skipped", finished_at=now, error=reason,
            ):
                return
            day = now.astimezone(ZoneInfo(ctx.user.timezone)).date().isoformat()
            await notifications.notify(
                session=session, user_id=ctx.user.id, key=f"cost-cap:{day}", kind="alert",
                title="Daily cost cap reached",
                body=f"Runs are skipped until tomorrow: {reason}. Raise the cap in your "
                "settings to let them run.",
                channels=[], run_id=claim.run_id, instruction_id=ctx.instruction.id,
            )

    async def _cancel_deleted(self, claim: queue.Claim) -> None:
        async with transaction(self.sessionmaker) as session:
            await queue.finish(
                session=session, claim=claim, status="cancelled", finished_at=utcnow(),
                error="the instruction was deleted",
            )

    async def _succeeded(self, claim: queue.Claim, ctx: _Context, outcome: AgentOutcome) -> None:
        now = utcnow()
        digest = outcome.digest.model_dump(mode="json") if outcome.digest else None
        async with transaction(self.sessionmaker) as session:
            # Locked first: a delete that commits meanwhile waits, or is seen here.
            instruction = await _lock_instruction(session, ctx.instruction)
            if instruction.deleted_at is not None:
                await queue.finish(
                    session=session, claim=claim, status="cancelled", finished_at=now,
                    error="the instruction was deleted while the run was running",
                )
                return
            written = await queue.finish(
                session=session, claim=claim, status=outcome.status, finished_at=now,
                result=digest, model=self.llm.name,
                error=(
                    "Nothing dated in this window." if ctx.run.reason == "preview"
                    and outcome.status == "skipped" else outcome.skipped_reason
                ),
                interaction_ids={"ids": outcome.interaction_ids},
                input_tokens=outcome.usage.input_tokens,
                output_tokens=outcome.usage.output_tokens,
                thought_tokens=outcome.usage.thought_tokens,
                cached_tokens=outcome.usage.cached_tokens,
                cost_usd=cost_usd(self.llm.name, outcome.usage, self.settings.gemini_prices),
            )
            if not written:
                raise LeaseLost()
            self.fault("digest_written")
            after_commit(session, metrics.RUNS_FINISHED.labels(outcome.status).inc)
            if ctx.run.reason == "preview":
                return  # the digest is on the run; nothing else changes
            instruction.cursor = {**instruction.cursor, **outcome.cursors}
            instruction.covered_until = _later(instruction.covered_until, ctx.run.window_end)
            instruction.last_run_at = now
            instruction.consecutive_failures = 0
            if outcome.digest is not None:
                await notifications.notify(
                    session=session, user_id=ctx.user.id, key=f"run:{claim.run_id}:digest",
                    kind="digest", title=instruction.title, body=outcome.digest.summary,
                    channels=instruction.channels.get("kinds", []),
                    data={"digest": digest}, run_id=claim.run_id, instruction_id=instruction.id,
                )
                self.fault("notification_written")
        self.fault("outcome_committed")

    async def _failed(self, claim: queue.Claim, ctx: _Context, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        now = utcnow()
        async with transaction(self.sessionmaker) as session:
            if claim.attempt < self.settings.worker_max_attempts:
                delay = queue.retry_delay(claim.attempt, self.settings.worker_retry_base_seconds)
                written = await queue.finish(
                    session=session, claim=claim, status="queued", worker_id=None,
                    available_at=now + timedelta(seconds=delay), error=reason,
                )
                if not written:
                    log.warning("run %s: lease lost; not retried by this worker", claim.run_id)
                else:
                    after_commit(session, metrics.RUN_RETRIES.inc)
                return
        log.debug("run %s final failure: %s", claim.run_id, traceback.format_exception(exc))
        await self._give_up(claim, ctx, reason)

    async def _give_up(self, claim: queue.Claim, ctx: _Context, reason: str) -> None:
        """Fail the run; after repeated failures stop the instruction and tell the user."""
        now = utcnow()
        async with transaction(self.sessionmaker) as session:
            written = await queue.finish(
                session=session, claim=claim, status="failed", finished_at=now, error=reason,
            )
            if not written:
                return
            after_commit(session, metrics.RUNS_FINISHED.labels("failed").inc)
            if ctx.run.reason == "preview":
                return  # a failed trial is shown on the run; the instruction is unaffected
            instruction = await _lock_instruction(session, ctx.instruction)
            instruction.consecutive_failures += 1
            instruction.last_run_at = now
            threshold = self.settings.worker_failures_before_error
            stopped = instruction.consecutive_failures >= threshold
            if stopped and instruction.status == "active":
                instruction.status = "error"
                instruction.next_run_at = None
                instruction.status_detail = (
                    f"stopped after {instruction.consecutive_failures} failed runs in a row; "
                    f"last error: {reason}"
                )
            body = f"The run failed: {reason}"
            if stopped:
                body += (
                    f"\n\nThe instruction stopped after {instruction.consecutive_failures} "
                    "failed runs in a row. Resume it once the cause is fixed."
                )
            await notifications.notify(
                session=session, user_id=ctx.user.id, key=f"run:{claim.run_id}:failed",
                kind="error", title=f"{instruction.title}: run failed", body=body,
                channels=[], data={"error": reason}, run_id=claim.run_id,
                instruction_id=instruction.id,
            )


class _StepWriter:
    """Writes each step of the agent as it happens, numbered within the attempt."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        claim: queue.Claim,
        run: Run,
        fault: Callable[[str], None],
    ) -> None:
        self.sessionmaker = sessionmaker
        self.claim = claim
        self.run = run
        self.fault = fault
        self.seq = 0

    async def __call__(self, step: StepRecord) -> None:
        self.seq += 1
        async with transaction(self.sessionmaker) as session:
            # Fenced like the outcome: a worker that lost the run stops here.
            held = await queue.still_held(session=session, claim=self.claim)
            if not held:
                raise LeaseLost()
            session.add(
                RunStep(
                    user_id=self.run.user_id, run_id=self.run.id, attempt=self.claim.attempt,
                    seq=self.seq, kind=step.kind, name=step.name[:120],
                    arguments=step.arguments, result_excerpt=step.result_excerpt,
                    interaction_id=step.interaction_id,
                    input_tokens=step.usage.input_tokens, output_tokens=step.usage.output_tokens,
                    thought_tokens=step.usage.thought_tokens,
                    cached_tokens=step.usage.cached_tokens,
                    duration_ms=step.duration_ms, error=step.error,
                )
            )
        if step.kind == "model":
            self.fault("model_answered")


async def _lock_instruction(session: AsyncSession, instruction: Instruction) -> Instruction:
    found = (
        await session.execute(
            select(Instruction).where(Instruction.id == instruction.id).with_for_update()
        )
    ).scalar_one()
    return found


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
