"""Every way a claimed run's attempt ends but success: skipped or deferred at the cost
cap, cancelled, back to waiting, paused on a question, failed and retried, given up,
cut off from its Google account, given back for a rejected API key or for a Gmail that
is gone. Each adds to the run what the attempt spent and is not on it yet (model turns
whose steps could not be written; the others were charged with their steps), so that it
counts against the user's daily cost cap, also when the lease was lost.

A model service whose daily quota is used up (`QuotaExhausted`) defers the run, its
attempt uncounted, and tells its user once that quota day: for an hour
(`QUOTA_RETRY_SECONDS`), doubling with each try in a row that finds the quota still used
up, never past when it resets (midnight Pacific time), so that a quota raised or reset
early is found within hours rather than at midnight (a refused request is not billed);
the runs claimed during the wait are deferred without trying the model.

A model service that rejects the API key (`KeyRejected`) is the operator's problem,
not the run's: the run is given back to the queue for a back-off that grows with each
rejection in a row (`KEY_REJECTED_BACKOFF_SECONDS` doubling, at most
`KEY_REJECTED_MAX_BACKOFF_SECONDS`, the first again once the model answers),
its attempt uncounted, its instruction and user untouched, and the executor gives
back the runs it claims meanwhile without trying the model. The operator is told
in the log (once per back-off) and by the `pilotlight_model_key_rejected` gauge.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agent.llm import LLM, KeyRejected, QuotaExhausted, Usage
from app.agent.pricing import cost_usd
from app.agent.runner import AgentOutcome
from app.core.config import Settings
from app.core.db import after_commit, db_now, transaction, utcnow
from app.core.faults import FaultPoints
from app.google.accounts import mark_disconnected, mark_no_mailbox
from app.instructions.models import Instruction
from app.notifications import service as notifications
from app.questions import service as questions
from app.runs import costs, metrics, queue
from app.runs.context import RunContext, lock_instruction
from app.runs.models import Run
from app.runs.steps import LeaseLost, without_nul
from app.sources.base import AccountDisconnected, NoMailbox
from app.users.models import User

log = logging.getLogger(__name__)

# How long runs wait after the model service rejected the API key: doubling with each
# rejection in a row (one per back-off: the rejections of runs at work together are
# one), up to the most, back to the first once the model answers.
KEY_REJECTED_BACKOFF_SECONDS = 300.0
KEY_REJECTED_MAX_BACKOFF_SECONDS = 3600.0
KEY_REJECTED = (
    "waiting: the model service rejected the service's API key; the run is tried again "
    "once the operator has fixed it (this is not counted as a failed attempt)"
)

QUOTA_WAIT = "waits for the model service's daily quota to reset"
# How long runs wait after a used-up daily quota before the model is tried again: doubling
# with each try in a row that finds it still used up (the refusals of runs at work
# together are one), never past its reset.
QUOTA_RETRY_SECONDS = 3600.0


class RunEndings:
    """The endings of `RunExecutor` (app/runs/execute.py), which sets these up."""

    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    llm: LLM
    fault: FaultPoints
    # time.monotonic() until which runs are given back without trying the model (it
    # rejected the API key; logged once per back-off).
    _key_rejected_until: float
    # Back-offs in a row for a rejected key, and the current one.
    _key_rejections: int
    _key_backoff_seconds: float
    # When the model service's daily quota resets, once a turn found it used up; the
    # time.monotonic() until which runs are deferred without trying the model, the tries
    # in a row that found it used up, and the current wait.
    _quota_resets_at: datetime | None
    _quota_wait_until: float
    _quota_refusals: int
    _quota_wait_seconds: float

    async def _skip_for_cost(self, claim: queue.Claim, ctx: RunContext, reason: str) -> None:
        now = utcnow()
        async with transaction(self.sessionmaker) as session:
            if not await queue.finish(
                session=session, claim=claim, status="skipped", finished_at=now, error=reason,
                agent_state=None,
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

    async def _defer_for_cost(self, claim: queue.Claim, ctx: RunContext, reason: str) -> None:
        """A run that would pass the cap and cannot be skipped: one that resumes from a
        question (answered, or expired), not thrown away with the user's answer and what
        it spent, or a watch's run, whose one item no later run would report (a schedule's
        next run covers what a skipped one would have). It is queued again, as it is, for
        the user's next midnight, when the cap starts again; the user is told why (in the
        app: once a day per resumed run, once a day for watches). The attempt is not
        counted."""
        async with transaction(self.sessionmaker) as session:
            now = await db_now(session)
            resume_at = costs.next_day(ctx.user, now)
            if not await queue.finish(
                session=session, claim=claim, status="queued", worker_id=None,
                available_at=resume_at, attempt=Run.attempt - 1, updated_at=now,
                error=f"waits for tomorrow: {reason}",
            ):
                return
            zone = ZoneInfo(ctx.user.timezone)
            day = now.astimezone(zone).date().isoformat()
            if not ctx.run.agent_state:  # a watch's run: one notice a day for them all
                await notifications.notify(
                    session=session, user_id=ctx.user.id, key=f"cost-cap:{day}:watches",
                    kind="alert", title="Watches wait for tomorrow",
                    body=(
                        "The daily cost cap is reached, so what your watches caught from "
                        "now on is looked at after midnight "
                        f"({resume_at.astimezone(zone):%Y-%m-%d %H:%M %Z}), when the cap "
                        f"starts again; nothing they caught is dropped. {reason}."
                    ),
                    channels=[], run_id=claim.run_id, instruction_id=ctx.instruction.id,
                )
                return
            await notifications.notify(
                session=session, user_id=ctx.user.id, key=f"run:{claim.run_id}:cost-cap:{day}",
                kind="alert", title=f"{ctx.instruction.title}: goes on tomorrow",
                body=(
                    "The daily cost cap is reached, so this run goes on after midnight "
                    f"({resume_at.astimezone(zone):%Y-%m-%d %H:%M %Z}), when the cap starts "
                    f"again; your answer and what it found so far are kept. {reason}."
                ),
                channels=[], run_id=claim.run_id, instruction_id=ctx.instruction.id,
            )

    async def _quota_exhausted(
        self, claim: queue.Claim, ctx: RunContext, exc: QuotaExhausted
    ) -> None:
        """The model service's daily quota (the operator's project's, not the user's) is
        used up: runs wait, and the runs claimed during the wait are deferred without
        trying the model (`execute`). The wait doubles with each refusal in a row, never
        past the reset; the operator is told once a quota day, then once per wait."""
        now = time.monotonic()
        resets_at = exc.resets_at
        new_day = self._quota_resets_at is None or self._quota_resets_at < resets_at
        if new_day:
            self._quota_resets_at = resets_at
            self._quota_refusals = 0
        if new_day or now >= self._quota_wait_until:  # not another run of the same wait
            self._quota_refusals += 1
            self._quota_wait_seconds = QUOTA_RETRY_SECONDS * 2 ** (self._quota_refusals - 1)
            self._quota_wait_until = now + self._quota_wait_seconds
            if new_day:
                log.error(
                    "%s. Runs wait, uncounted, and are tried again in %d s (longer each "
                    "time), at the latest when it resets at %s (midnight Pacific time); "
                    "raise the quota or the project's tier to run them sooner",
                    exc, self._quota_wait_seconds, resets_at.isoformat(),
                )
            else:
                log.warning("the model service's daily quota is still used up; runs are "
                            "tried again in %d s", self._quota_wait_seconds)
        await self._defer_for_quota(claim, ctx, str(exc))

    def _quota_answered(self) -> None:
        """The model answered: whatever quota was used up is not any more."""
        self._quota_resets_at = None
        self._quota_wait_until = 0.0
        self._quota_refusals = 0

    async def _defer_for_quota(self, claim: queue.Claim, ctx: RunContext, reason: str) -> None:
        """Queue the run again, as it is, for the current wait or until the model's daily
        quota resets if that is sooner, its attempt uncounted; tell its user once a quota
        day. A preview, which someone is looking at now, fails at once instead, saying
        why."""
        resets_at = self._quota_resets_at
        assert resets_at is not None
        if ctx.run.reason == "preview":
            await self._give_up(claim, ctx, (
                "the model service's daily quota is used up until it resets at "
                f"{resets_at:%Y-%m-%d %H:%M %Z}: {reason}"
            ))
            return
        async with transaction(self.sessionmaker) as session:
            now = await db_now(session)
            retry_at = min(now + timedelta(seconds=self._quota_wait_seconds), resets_at)
            if not await self._given_back(session, claim, ctx, available_at=retry_at,
                                          error=f"{QUOTA_WAIT}: {reason}", now=now):
                return
            zone = ZoneInfo(ctx.user.timezone)
            await notifications.notify(
                session=session, user_id=ctx.user.id,
                key=f"model-quota:{resets_at.date().isoformat()}", kind="alert",
                title="Runs wait for the model's daily quota",
                body=(
                    "The model service's daily quota for this Pilotlight is used up, so your "
                    "runs wait: they are tried again within hours, and go on at the latest "
                    f"when it resets ({resets_at.astimezone(zone):%Y-%m-%d %H:%M %Z}); "
                    "nothing is dropped. The operator can raise the quota to run them sooner."
                ),
                channels=[], run_id=claim.run_id, instruction_id=ctx.instruction.id,
            )

    async def _given_back(
        self, session: AsyncSession, claim: queue.Claim, ctx: RunContext, *,
        available_at: datetime | None, error: str, now: datetime | None = None,
    ) -> bool:
        """Queue the run again, as it is, its attempt uncounted and what it spent added,
        to be taken at `available_at` (None: now); False when its lease is gone, and then
        only the spend is added. `now`: the database's clock, if already read."""
        spend = self._spent(ctx)
        now = now or await db_now(session)
        if await queue.finish(
            session=session, claim=claim, status="queued", worker_id=None,
            available_at=available_at or now, attempt=Run.attempt - 1, updated_at=now,
            error=error[:2000], **queue.spent(spend),
        ):
            return True
        await queue.charge(session=session, run_id=claim.run_id, values=spend)
        return False

    async def _cancel(self, claim: queue.Claim, reason: str) -> None:
        async with transaction(self.sessionmaker) as session:
            await queue.finish(
                session=session, claim=claim, status="cancelled", finished_at=utcnow(),
                error=reason, agent_state=None,
            )

    async def _wait_again(self, claim: queue.Claim) -> None:
        """A paused run was queued while its question is open: back to waiting, uncounted."""
        async with transaction(self.sessionmaker) as session:
            await queue.finish(
                session=session, claim=claim, status="waiting_for_user", worker_id=None,
                attempt=Run.attempt - 1,
            )

    async def _paused(self, claim: queue.Claim, ctx: RunContext, outcome: AgentOutcome) -> None:
        """The agent asked the user: park the run with its state, store and send the question.

        A question that repeats an open one of the instruction is stored (its run
        resumes on its own call) but not sent again.
        """
        paused = outcome.paused
        assert paused is not None
        async with transaction(self.sessionmaker) as session:
            instruction = await lock_instruction(session, ctx.instruction)
            if instruction.deleted_at is not None:
                if not await queue.finish(
                    session=session, claim=claim, status="cancelled", finished_at=utcnow(),
                    error="the instruction was deleted while the run was running",
                    agent_state=None, **queue.spent(self._spent(ctx)),
                ):
                    raise LeaseLost()
                return
            now = await db_now(session)
            cursors_from = ctx.cursors_from
            if cursors_from is None:
                cursors_from = {key: ctx.instruction.cursor.get(key) for key in outcome.cursors}
            written = await queue.finish(
                session=session, claim=claim, status="waiting_for_user", worker_id=None,
                model=self.llm.name, interaction_ids={"ids": outcome.interaction_ids},
                agent_state={
                    "attempt": claim.attempt,
                    "cursors_from": cursors_from,
                    "state": without_nul(paused.model_dump(mode="json")),
                },
                **queue.spent(self._spent(ctx)),
            )
            if not written:
                raise LeaseLost()
            question, repeated = await questions.ask(
                session=session, user_id=ctx.user.id, run_id=claim.run_id,
                instruction_id=instruction.id, interaction_id=paused.interaction_id,
                call_id=paused.call_id, text=paused.question, choices=paused.choices,
                expires_at=now + timedelta(seconds=self.settings.agent_question_ttl_seconds),
            )
            if repeated:
                log.info("run %s repeats an open question; not asked again", claim.run_id)
                return
            await notifications.notify(
                session=session, user_id=ctx.user.id,
                key=f"run:{claim.run_id}:question:{paused.call_id}", kind="question",
                title=f"{instruction.title}: a question for you", body=paused.question,
                channels=instruction.channels.get("kinds", []),
                data={"question_id": str(question.id), "choices": paused.choices},
                run_id=claim.run_id, instruction_id=instruction.id,
            )

    def _spent(self, ctx: RunContext) -> dict[str, Any]:
        """What the attempt spent and is not on the run yet (the values of `queue.spent`),
        which every way it ends adds to the run: its model turns whose steps could not
        be written (the others were charged with their steps; a paused run's earlier
        ones are on the run already) and their cost."""
        return self.spend_of(ctx.user, ctx.spent())

    def spend_of(self, user: User, usage: Usage) -> dict[str, Any]:
        """The values of `queue.spent` that charge `usage` to a run of `user`, now."""
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "thought_tokens": usage.thought_tokens,
            "cached_tokens": usage.cached_tokens,
            "cost_usd": cost_usd(self.llm.name, usage, self.settings.gemini_prices),
            "day_start": costs.start_of_day(user, utcnow()),
        }

    async def _charge_lost(self, claim: queue.Claim, ctx: RunContext) -> None:
        """An attempt that lost its run (or was stopped) writes no outcome, but what it
        spent is added to the run all the same: it counts against the user's cap."""
        spend = self._spent(ctx)
        if not any(spend[column] for column in queue.SPENT_COLUMNS):
            return
        try:
            async with transaction(self.sessionmaker) as session:
                await queue.charge(session=session, run_id=claim.run_id, values=spend)
        except Exception:
            log.exception("run %s: could not add what the attempt spent", claim.run_id)

    async def _failed(self, claim: queue.Claim, ctx: RunContext, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        attempt = ctx.attempt(claim)
        async with transaction(self.sessionmaker) as session:
            # The retry time is on the database's clock, like the leases that claim it.
            now = await db_now(session)
            # A paused run keeps its state: the retry resumes it again.
            if attempt < self.settings.worker_max_attempts:
                delay = queue.retry_delay(attempt, self.settings.worker_retry_base_seconds)
                spend = self._spent(ctx)
                written = await queue.finish(
                    session=session, claim=claim, status="queued", worker_id=None,
                    available_at=now + timedelta(seconds=delay), error=reason,
                    updated_at=now,  # one clock reading: the back-off is measured from it
                    **queue.spent(spend),
                )
                if not written:
                    log.warning("run %s: lease lost; not retried by this worker", claim.run_id)
                    await queue.charge(session=session, run_id=claim.run_id, values=spend)
                else:
                    after_commit(session, metrics.RUN_RETRIES.inc)
                return
        log.debug("run %s final failure: %s", claim.run_id, traceback.format_exception(exc))
        await self._give_up(claim, ctx, reason)

    async def _key_rejected(self, claim: queue.Claim, exc: KeyRejected) -> None:
        """The model service refused the API key: no run can work until the operator fixes
        it. Give the run back, tell the operator (once per back-off), and give back the
        runs claimed meanwhile without trying (`execute`)."""
        now = time.monotonic()
        metrics.MODEL_KEY_REJECTED.set(1)
        if now >= self._key_rejected_until:  # not another run of the same back-off
            self._key_rejections += 1
            self._key_backoff_seconds = min(
                KEY_REJECTED_BACKOFF_SECONDS * 2 ** (self._key_rejections - 1),
                KEY_REJECTED_MAX_BACKOFF_SECONDS,
            )
            self._key_rejected_until = now + self._key_backoff_seconds
            message = str(exc)
            key = self.settings.gemini_api_key
            if key is not None and key.get_secret_value():
                message = message.replace(key.get_secret_value(), "[the key]")
            log.error(
                "%s. Runs are given back to the queue, uncounted and without telling their "
                "users, and tried again in %d s (longer each time, up to %d s): fix "
                "PILOTLIGHT_GEMINI_API_KEY and restart (`pilotlight check` tests the key)",
                message, self._key_backoff_seconds, KEY_REJECTED_MAX_BACKOFF_SECONDS,
            )
        await self._give_back_for_key(claim)

    async def _give_back_for_key(self, claim: queue.Claim) -> None:
        """Back to the queue after the key back-off: the attempt is not counted, the
        instruction's failures are not, and nobody is told. A paused run keeps its state."""
        async with transaction(self.sessionmaker) as session:
            now = await db_now(session)
            written = await queue.finish(
                session=session, claim=claim, status="queued", worker_id=None,
                attempt=Run.attempt - 1, error=KEY_REJECTED, updated_at=now,
                available_at=now + timedelta(seconds=self._key_backoff_seconds),
            )
            if written:
                after_commit(session, metrics.RUNS_WAITING_FOR_KEY.inc)

    async def _disconnected(
        self, claim: queue.Claim, ctx: RunContext, exc: AccountDisconnected
    ) -> None:
        """A Google grant is gone: fail the run without retries and mark the user's (one,
        active) Google account; that pauses what depends on it and tells the user once."""
        reason = f"AccountDisconnected: {exc}"[:2000]
        spend = self._spent(ctx)
        async with transaction(self.sessionmaker) as session:
            written = await queue.finish(
                session=session, claim=claim, status="failed", finished_at=utcnow(),
                error=reason, agent_state=None, **queue.spent(spend),
            )
            if not written:
                await queue.charge(session=session, run_id=claim.run_id, values=spend)
                return
            after_commit(session, metrics.RUNS_FINISHED.labels("failed").inc)
            for account in ctx.accounts:
                if account.kind == "google" and account.status == "active":
                    await mark_disconnected(
                        session, account=account, reason=str(exc), settings=self.settings
                    )

    async def _mailbox_gone(self, claim: queue.Claim, ctx: RunContext, exc: NoMailbox) -> None:
        """Gmail answered that a Google account's mail service is gone: record the account
        as mailbox-less (which tells the user once) and give the run back at once, its
        attempt uncounted, in one transaction. Its next attempt reads what is left (the
        account's Drive), or fails saying why if it needs mail; it cannot meet this again,
        as the account is recorded (or gone, or disconnected) when it is claimed. Only a
        run's first reads, before any model turn, let `NoMailbox` out (its tools tell the
        model instead), so no work is thrown away."""
        async with transaction(self.sessionmaker) as session:
            if not await self._given_back(session, claim, ctx, available_at=None,
                                          error=f"NoMailbox: {exc}"):
                return
            for account in ctx.accounts:
                if str(account.id) == exc.account_id:
                    await mark_no_mailbox(session, account=account, settings=self.settings)
        log.warning("run %s: %s; recorded, and the run goes on without that mailbox",
                    claim.run_id, exc)

    async def _give_up(self, claim: queue.Claim, ctx: RunContext, reason: str) -> None:
        """Fail the run; after repeated failures stop the instruction and tell the user.
        A run whose instruction was deleted meanwhile ends cancelled, and nobody is told
        that a deleted instruction failed."""
        now = utcnow()
        spend = self._spent(ctx)
        async with transaction(self.sessionmaker) as session:
            # Locked first, as the outcomes lock it: a delete committing meanwhile is seen.
            instruction = (await session.execute(
                select(Instruction).where(Instruction.id == ctx.instruction.id)
                .with_for_update()
            )).scalar_one_or_none()
            deleted = instruction is None or instruction.deleted_at is not None
            written = await queue.finish(
                session=session, claim=claim, status="cancelled" if deleted else "failed",
                finished_at=now, error="the instruction was deleted" if deleted else reason,
                agent_state=None, **queue.spent(spend),
            )
            if not written:
                await queue.charge(session=session, run_id=claim.run_id, values=spend)
                return
            if instruction is None or deleted:
                return
            after_commit(session, metrics.RUNS_FINISHED.labels("failed").inc)
            told = f"run {claim.run_id} failed after {claim.attempt} attempt(s): {reason}"
            if ctx.run.reason == "preview":
                after_commit(session, functools.partial(log.warning, "%s", told))
                return  # a failed trial is shown on the run; the instruction is unaffected
            instruction.consecutive_failures += 1
            instruction.last_run_at = now
            threshold = self.settings.worker_failures_before_error
            stopped = instruction.consecutive_failures >= threshold
            if stopped:
                told += (f"; its instruction {instruction.id} is stopped after "
                         f"{instruction.consecutive_failures} failed runs in a row")
            after_commit(session, functools.partial(log.warning, "%s", told))
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
                # The instruction's channels: a run.failed webhook, an email, ...
                channels=instruction.channels.get("kinds", []),
                data={"error": reason}, run_id=claim.run_id,
                instruction_id=instruction.id,
            )
