"""Executing one claimed run: the agent over the user's sources, then its outcome.

The agent runs outside any transaction. Each step (and each `notify_now`
alert) is written on its own; the outcome (run row, instruction cursor,
notification and its deliveries) is written in one transaction that names the
lease, so a worker that lost the run writes nothing, and a retry never tells
the user twice. Nothing, but what the attempt spent: every way an attempt ends
(done, paused, failed and retried, given up, lost or stopped) adds the tokens
of its model turns and their cost to the run's, so that they count against the
user's daily cost cap.

A run whose agent asks the user a question ends its attempt `waiting_for_user`
with `Run.agent_state`:

    {"attempt": <the claim's attempt when it paused>,
     "cursors_from": {<account>: <the instruction's cursor the run started from>},
     "state": <app.agent.resume.PausedState as JSON>}

and frees the worker. The answer (or the question's expiry) queues it again;
the next claim resumes it from that state. Attempts are counted from the pause.

A model service that rejects the API key (`KeyRejected`) is the operator's problem,
not the run's: the run is given back to the queue for `KEY_REJECTED_BACKOFF_SECONDS`,
its attempt uncounted, its instruction and user untouched, and the executor gives
back the runs it claims meanwhile without trying the model. The operator is told
in the log (once per back-off) and by the `pilotlight_model_key_rejected` gauge.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from app.accounts.models import Account
from app.agent.llm import LLM, KeyRejected, Usage
from app.agent.pricing import cost_usd, price_for
from app.agent.resume import ResumeState
from app.agent.runner import (
    AgentOutcome,
    AgentRequest,
    Notifier,
    StepRecorder,
    run_agent,
)
from app.core.config import Settings
from app.core.db import after_commit, db_now, transaction, utcnow
from app.core.faults import FaultPoints
from app.google.accounts import mark_disconnected
from app.instructions.models import Instruction
from app.notifications import service as notifications
from app.questions import service as questions
from app.questions.models import Question
from app.runs import costs, metrics, outcomes, queue
from app.runs.batching import Coalescer, HeldConnection
from app.runs.models import Run
from app.runs.steps import Alerter, LeaseLost, StepWriter, without_nul
from app.sources.base import AccountDisconnected, Source
from app.sources.registry import source_for
from app.users.models import User

log = logging.getLogger(__name__)

# The most runs loaded, or written, in one transaction.
_BATCH = 200

# How long runs wait after the model service rejected the API key.
KEY_REJECTED_BACKOFF_SECONDS = 300.0
KEY_REJECTED = (
    "waiting: the model service rejected the service's API key; the run is tried again "
    "once the operator has fixed it (this is not counted as a failed attempt)"
)


def _claim_and_load() -> Any:
    """PostgreSQL: the claim (a CTE whose RETURNING is the runs as claimed) with each
    run's instruction, user and accounts. Built once: SQLAlchemy then computes its cache
    key once, not on every claim."""
    claimed = aliased(Run, queue.CLAIMED)
    return (
        select(claimed, Instruction, User, Account, queue.CLAIMED_NOTIFY)
        .join(Instruction, Instruction.id == claimed.instruction_id)
        .join(User, User.id == claimed.user_id)
        .outerjoin(Account, Account.user_id == claimed.user_id)
        .order_by(Account.created_at)
    )


_CLAIM_AND_LOAD = _claim_and_load()


@dataclass
class _Context:
    run: Run
    instruction: Instruction
    user: User
    accounts: list[Account]
    # A paused run: how to resume it, or that its question is still open.
    resume: ResumeState | None = None
    still_waiting: bool = False
    paused_at_attempt: int = 0
    cursors_from: dict[str, Any] | None = None
    # Why the run would pass the user's daily cost cap, if it would; else, with a priced
    # model, what the cap leaves it to spend (what others hold left out).
    over_cap: str | None = None
    budget_usd: float | None = None
    # The attempt's step writer: what the attempt has spent so far.
    steps: StepWriter | None = None
    # When the attempt read its sources: what its digest covers up to.
    read_at: datetime | None = None

    def covered_until(self) -> datetime | None:
        """Where the instruction's window moves to: when the sources were read, which is
        later than the fire time for a run that waited (a catch-up after downtime)."""
        return _later(self.run.window_end, self.read_at)

    def spent(self) -> Usage:
        """The tokens the attempt's model turns have used so far."""
        return self.steps.usage if self.steps is not None else Usage()

    def attempt(self, claim: queue.Claim) -> int:
        """Attempts since the run last paused: waiting for the user is not a failure."""
        return claim.attempt - self.paused_at_attempt

    def cancelled_because(self) -> str | None:
        """Why the run must not start at all: its instruction was deleted, or it was
        paused (or stopped after failures) before this run of its schedule or watch got
        going. A run asked for by hand, a preview, or one that has already talked to the
        user (it waits on, or resumes from, a question) goes ahead."""
        if self.instruction.deleted_at is not None:
            return "the instruction was deleted"
        if (
            self.instruction.status != "active" and self.run.reason in ("schedule", "watch")
            and not self.run.agent_state
        ):
            return ("the instruction was paused" if self.instruction.status == "paused"
                    else "the instruction stopped after failed runs")
        return None


class Agent(Protocol):
    """What the executor runs: `run_agent`, or another with its signature (benchmarks).

    `resume` and `notify` are passed only to an agent whose signature names them;
    one without them runs without the user tools.
    """

    async def __call__(
        self,
        *,
        llm: LLM,
        sources: Mapping[str, Source],
        cursors: Mapping[str, dict[str, Any] | None],
        request: AgentRequest,
        record: StepRecorder,
        resume: ResumeState | None = None,
        notify: Notifier | None = None,
    ) -> AgentOutcome: ...


def _takes_user_tools(agent: Agent) -> bool:
    try:
        parameters = inspect.signature(agent).parameters
    except (TypeError, ValueError):
        return False
    return {"resume", "notify"} <= set(parameters) or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


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
        self._user_tools = _takes_user_tools(agent)
        self.fault = FaultPoints(settings.test_fault)
        # Runs that start or end together are loaded, and written, together.
        self._loads: Coalescer[queue.Claim, _Context | None] = Coalescer(
            self._load_many, max_size=_BATCH, parallel=2
        )
        self._preloaded: dict[Any, _Context | None] = {}
        # Called when a run's outcome waits to be written (the worker claims more).
        self.on_writing: Callable[[], None] | None = None
        # PostgreSQL: the connections the batched outcomes are written on (one statement
        # each, no checkout); see app/runs/outcomes_sql.py.
        engine = sessionmaker.kw.get("bind")
        self.writes: HeldConnection | None = (
            HeldConnection(engine, autocommit=False, count=2)
            if isinstance(engine, AsyncEngine) and engine.dialect.name == "postgresql"
            else None
        )
        self._successes: Coalescer[outcomes.Success, None] = Coalescer(
            self._write_successes, max_size=_BATCH, parallel=2
        )
        # time.monotonic() until which runs are given back without trying the model
        # (it rejected the API key), and when that was last logged.
        self._key_rejected_until = 0.0
        self._key_logged_at: float | None = None

    @property
    def writing(self) -> int:
        """Runs whose work is done and whose successful outcome waits to be written."""
        return self._successes.waiting

    async def close(self) -> None:
        """Give back the connection the outcomes are written on (it is taken again if
        needed)."""
        if self.writes is not None:
            await self.writes.close()

    async def execute(self, claim: queue.Claim) -> None:
        ctx = await self._load(claim)
        if ctx is None:
            return
        self.fault("claimed")
        cancelled = ctx.cancelled_because()
        if cancelled is not None:
            await self._cancel(claim, cancelled)
            return
        if ctx.still_waiting:
            await self._wait_again(claim)
            return
        if ctx.over_cap is not None:
            if ctx.run.agent_state or ctx.run.reason == "watch":
                await self._defer_for_cost(claim, ctx, ctx.over_cap)
            else:
                await self._skip_for_cost(claim, ctx, ctx.over_cap)
            return
        if ctx.attempt(claim) > self.settings.worker_max_attempts:
            await self._give_up(claim, ctx, "gave up: every attempt stopped before it ended")
            return
        started = time.monotonic()
        if started < self._key_rejected_until:
            await self._give_back_for_key(claim)
            return
        try:
            outcome = await self._run_agent(claim, ctx)
        except LeaseLost:
            log.warning("run %s: lease lost while running", claim.run_id)
            await self._charge_lost(claim, ctx)
            return
        except asyncio.CancelledError:
            # The lease was lost, or the worker is stopping: what was spent stays spent.
            await self._charge_lost(claim, ctx)
            raise
        except AccountDisconnected as exc:
            await self._disconnected(claim, ctx, exc)
            return
        except KeyRejected as exc:
            await self._charge_lost(claim, ctx)  # turns before the refusal were billed
            await self._key_rejected(claim, exc)
            return
        except Exception as exc:
            log.warning("run %s attempt %d failed: %s", claim.run_id, claim.attempt, exc)
            await self._failed(claim, ctx, exc)
            return
        if self._key_rejected_until and outcome.interaction_ids:
            self._key_rejected_until = 0.0  # the model answered: the key works again
            metrics.MODEL_KEY_REJECTED.set(0)
        try:
            if outcome.status == "waiting":
                await self._paused(claim, ctx, outcome)
            else:
                await self._succeeded(claim, ctx, outcome)
        except LeaseLost:
            log.warning("run %s: lease lost before its outcome was written", claim.run_id)
            await self._charge_lost(claim, ctx)
            return
        log.info(
            "run %s %s in %.2fs", claim.run_id, outcome.status, time.monotonic() - started
        )

    async def _load(self, claim: queue.Claim) -> _Context | None:
        """Everything the run needs (None if its lease is gone): on every run's start path,
        so the runs that start together are loaded in one transaction."""
        if claim.run_id in self._preloaded:
            return self._preloaded.pop(claim.run_id)
        return await self._loads(claim)

    async def preload(self, session: AsyncSession, claims: list[queue.Claim]) -> None:
        """Load the runs just claimed in the claim's own transaction (one round trip of
        BEGIN and COMMIT fewer per batch); `_load` then finds them."""
        if claims:
            self._preloaded.update(zip(
                (claim.run_id for claim in claims), await self._load_in(session, claims),
                strict=True,
            ))

    async def _load_many(self, claims: list[queue.Claim]) -> list[_Context | None | BaseException]:
        async with transaction(self.sessionmaker) as session:
            return list(await self._load_in(session, claims))

    async def _load_in(
        self, session: AsyncSession, claims: list[queue.Claim]
    ) -> list[_Context | None]:
        held = {claim.run_id: claim.lease_token for claim in claims}
        # One statement: each run with its instruction, its user and the user's accounts
        # (a row per account; none is a row with None).
        rows = (
            await session.execute(
                select(Run, Instruction, User, Account)
                .join(Instruction, Instruction.id == Run.instruction_id)
                .join(User, User.id == Run.user_id)
                .outerjoin(Account, Account.user_id == Run.user_id)
                .where(Run.id.in_(held))
                .order_by(Account.created_at)
            )
        ).all()
        return await self._contexts(session, claims, [tuple(row) for row in rows])

    async def claim_and_load(
        self, session: AsyncSession, *, worker_id: str, limit: int, lease_seconds: float
    ) -> list[queue.Claim]:
        """PostgreSQL: claim runs and read what they need in ONE statement (the claim as
        a CTE whose RETURNING is the runs as claimed); `_load` then finds them."""
        params = queue.claim_params(
            worker_id=worker_id, limit=limit, lease_seconds=lease_seconds
        )
        try:
            rows = (await session.execute(_CLAIM_AND_LOAD, params)).all()
        except IntegrityError:
            # Another worker started a run of one of these instructions just now (the
            # unique index of running runs): nothing this time.
            await session.rollback()
            return []
        runs = {row[0].id: row[0] for row in rows}
        claims = [queue.claim_of(run, params["token"]) for run in runs.values()]
        contexts = await self._contexts(session, claims, [tuple(row[:4]) for row in rows])
        self._preloaded.update(zip(runs, contexts, strict=True))
        return claims

    async def _contexts(
        self, session: AsyncSession, claims: list[queue.Claim], rows: list[tuple[Any, ...]]
    ) -> list[_Context | None]:
        """Each claim's context from rows of (run, instruction, user, account or None)."""
        held = {claim.run_id: claim.lease_token for claim in claims}
        found = {run.id: (run, instruction, user) for run, instruction, user, _a in rows
                 if run.lease_token == held[run.id]}
        accounts: dict[Any, dict[Any, Account]] = {}
        for _run, _instruction, user, account in rows:
            users_accounts = accounts.setdefault(user.id, {})
            if account is not None:
                users_accounts.setdefault(account.id, account)
        contexts: list[_Context | None] = []
        for claim in claims:
            if claim.run_id not in found:
                contexts.append(None)
                continue
            run, instruction, user = found[claim.run_id]
            ctx = _Context(run, instruction, user, list(accounts[user.id].values()))
            if run.agent_state:
                await _load_resume(session, ctx, run.agent_state)
            contexts.append(ctx)
        # A run that stops before its agent (cancelled, its question still open) spends
        # nothing and holds nothing against the cap.
        await self._check_cost_caps(session, [
            ctx for ctx in contexts
            if ctx is not None and not ctx.still_waiting and ctx.cancelled_because() is None
        ])
        return contexts

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
        interactive = self._user_tools and not preview
        alerter = (Alerter(self.sessionmaker, claim, ctx.user.id, ctx.instruction)
                   if self._user_tools else None)
        sent_alerts: list[dict[str, str]] = []
        if alerter is not None and interactive and (
            ctx.attempt(claim) > 1 or ctx.run.error is not None
        ):
            # A retry starts afresh, from the run's start or from its pause: it is shown
            # what the attempts before it told the user. (A run given back uncounted,
            # after a rejected API key, is one too: its error says why.)
            sent_alerts = await alerter.sent()
        read_at = utcnow()
        if ctx.run.window_end is not None and ctx.run.window_end > read_at:
            read_at = ctx.run.window_end  # another clock, a little ahead: never go back
        ctx.read_at = read_at
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
            # The sources are read now, whenever the run was due: a catch-up run that
            # waited hours must not tell the model, or the digest, a time hours stale.
            now=read_at,
            window_start=ctx.run.window_start,
            model=self.llm.name,
            context_limit=self.settings.agent_context_limit,
            since=ctx.run.window_start if preview else None,
            max_input_tokens=self.settings.agent_max_input_tokens,
            interactive=interactive,
            watch_item=ctx.run.trigger_item,
            sent_alerts=sent_alerts,
            max_cost_usd=ctx.budget_usd,
            price=price_for(self.llm.name, self.settings.gemini_prices),
        )
        # A preview looks at everything in its window, whatever was seen before.
        cursors = {key: None if preview else ctx.instruction.cursor.get(key) for key in sources}
        recorder = ctx.steps = StepWriter(self.sessionmaker, claim, ctx.run, self.fault)
        if alerter is None:
            return await self.agent(
                llm=self.llm, sources=sources, cursors=cursors, request=request, record=recorder
            )
        return await self.agent(
            llm=self.llm, sources=sources, cursors=cursors, request=request, record=recorder,
            resume=ctx.resume, notify=alerter,
        )

    async def _check_cost_caps(self, session: AsyncSession, contexts: list[_Context]) -> None:
        """Mark the runs that would pass their user's daily cost cap (`over_cap`).

        A run's cost is estimated from its instruction's recent runs. What counts against
        the cap is today's spend, the estimates of the user's runs still at work (on
        this worker or another), and, in claim order, the estimate of each run of this
        batch let through: runs of one user that start together, or while others run,
        cannot pass the cap together. A run let through is given what is left of the cap
        (`budget_usd`): its agent stops there, however far off the estimate was. The runs
        loaded together are checked together, in three statements whatever their number.
        A model the price table does not list (the offline model) costs nothing: no check.
        """
        if not contexts or price_for(self.llm.name, self.settings.gemini_prices) is None:
            return
        users = list({ctx.user.id: ctx.user for ctx in contexts}.values())
        spent = await costs.spent_today_by_user(session=session, users=users)
        at_work = await costs.runs_at_work(
            session=session, user_ids=[user.id for user in users],
            besides=[ctx.run.id for ctx in contexts],
        )
        estimates = await costs.typical_costs(session=session, instruction_ids=list(
            {ctx.instruction.id for ctx in contexts}
            | {i for instructions in at_work.values() for i in instructions}
        ))
        for user_id, instructions in at_work.items():
            spent[user_id] += sum(estimates[i] for i in instructions)
        for ctx in contexts:
            cap = ctx.user.daily_cost_cap_usd
            so_far, estimate = spent[ctx.user.id], estimates[ctx.instruction.id]
            if so_far < cap and so_far + estimate <= cap:
                spent[ctx.user.id] = so_far + estimate
                ctx.budget_usd = cap - so_far
                continue
            ctx.over_cap = (
                f"the daily cost cap of ${cap:.2f} would be passed: ${so_far:.4f} spent "
                f"today or held by runs at work, a run of this instruction costs "
                f"about ${estimate:.4f}"
            )

    async def _skip_for_cost(self, claim: queue.Claim, ctx: _Context, reason: str) -> None:
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

    async def _defer_for_cost(self, claim: queue.Claim, ctx: _Context, reason: str) -> None:
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

    async def _paused(self, claim: queue.Claim, ctx: _Context, outcome: AgentOutcome) -> None:
        """The agent asked the user: park the run with its state, store and send the question.

        A question that repeats an open one of the instruction is stored (its run
        resumes on its own call) but not sent again.
        """
        paused = outcome.paused
        assert paused is not None
        async with transaction(self.sessionmaker) as session:
            instruction = await _lock_instruction(session, ctx.instruction)
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

    def _spent(self, ctx: _Context) -> dict[str, Any]:
        """What the attempt spent (queue.SPENT_COLUMNS), which every way it ends adds to
        the run: its model turns' tokens (a paused run's earlier ones are on the run
        already) and their cost."""
        usage = ctx.spent()
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "thought_tokens": usage.thought_tokens,
            "cached_tokens": usage.cached_tokens,
            "cost_usd": cost_usd(self.llm.name, usage, self.settings.gemini_prices),
        }

    async def _charge_lost(self, claim: queue.Claim, ctx: _Context) -> None:
        """An attempt that lost its run (or was stopped) writes no outcome, but what it
        spent is added to the run all the same: it counts against the user's cap."""
        spend = self._spent(ctx)
        if not any(spend.values()):
            return
        try:
            async with transaction(self.sessionmaker) as session:
                await queue.charge(session=session, run_id=claim.run_id, values=spend)
        except Exception:
            log.exception("run %s: could not add what the attempt spent", claim.run_id)

    async def _succeeded(self, claim: queue.Claim, ctx: _Context, outcome: AgentOutcome) -> None:
        """Write the outcome (raises LeaseLost if the lease was lost): runs that end
        together are written in one transaction (app/runs/outcomes.py)."""
        waiting = self._successes(outcomes.Success(claim, ctx, outcome))
        if self.on_writing is not None:
            self.on_writing()  # the run has done its work: room for another
        await waiting

    async def _write_successes(
        self, items: list[outcomes.Success]
    ) -> list[None | BaseException]:
        return await outcomes.write_successes(self, items)

    async def _succeeded_one(
        self, claim: queue.Claim, ctx: _Context, outcome: AgentOutcome
    ) -> None:
        now = utcnow()
        # Model text: PostgreSQL cannot store a NUL in it.
        digest = without_nul(outcome.digest.model_dump(mode="json")) if outcome.digest else None
        async with transaction(self.sessionmaker) as session:
            # Locked first: a delete that commits meanwhile waits, or is seen here.
            instruction = await _lock_instruction(session, ctx.instruction)
            if instruction.deleted_at is not None:
                if not await queue.finish(
                    session=session, claim=claim, status="cancelled", finished_at=now,
                    error="the instruction was deleted while the run was running",
                    **queue.spent(self._spent(ctx)),
                ):
                    raise LeaseLost()
                return
            written = await queue.finish(
                session=session, claim=claim, status=outcome.status, finished_at=now,
                result=digest, model=self.llm.name,
                error=(
                    "Nothing dated in this window." if ctx.run.reason == "preview"
                    and outcome.status == "skipped" else outcome.skipped_reason
                ),
                interaction_ids={"ids": outcome.interaction_ids}, agent_state=None,
                **queue.spent(self._spent(ctx)),
            )
            if not written:
                raise LeaseLost()
            self.fault("digest_written")
            after_commit(session, metrics.RUNS_FINISHED.labels(outcome.status).inc)
            if ctx.run.reason == "preview":
                return  # the digest is on the run; nothing else changes
            instruction.cursor = _advance(instruction.cursor, outcome.cursors, ctx.cursors_from)
            instruction.covered_until = _later(instruction.covered_until, ctx.covered_until())
            instruction.last_run_at = now
            instruction.consecutive_failures = 0
            if outcome.digest is not None:
                await notifications.notify(
                    session=session, user_id=ctx.user.id, key=f"run:{claim.run_id}:digest",
                    kind="digest", title=instruction.title,
                    body=without_nul(outcome.digest.summary),
                    channels=instruction.channels.get("kinds", []),
                    data={"digest": digest}, run_id=claim.run_id, instruction_id=instruction.id,
                )
                self.fault("notification_written")
        self.fault("outcome_committed")

    async def _failed(self, claim: queue.Claim, ctx: _Context, exc: Exception) -> None:
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
        self._key_rejected_until = now + KEY_REJECTED_BACKOFF_SECONDS
        metrics.MODEL_KEY_REJECTED.set(1)
        if self._key_logged_at is None or now - self._key_logged_at >= (
            KEY_REJECTED_BACKOFF_SECONDS
        ):
            self._key_logged_at = now
            message = str(exc)
            key = self.settings.gemini_api_key
            if key is not None and key.get_secret_value():
                message = message.replace(key.get_secret_value(), "[the key]")
            log.error(
                "%s. Runs are given back to the queue, uncounted and without telling their "
                "users, and tried again every %d s: fix PILOTLIGHT_GEMINI_API_KEY and "
                "restart (`pilotlight check` tests the key)",
                message, KEY_REJECTED_BACKOFF_SECONDS,
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
                available_at=now + timedelta(seconds=KEY_REJECTED_BACKOFF_SECONDS),
            )
            if written:
                after_commit(session, metrics.RUNS_WAITING_FOR_KEY.inc)

    async def _disconnected(
        self, claim: queue.Claim, ctx: _Context, exc: AccountDisconnected
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

    async def _give_up(self, claim: queue.Claim, ctx: _Context, reason: str) -> None:
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
            if ctx.run.reason == "preview":
                return  # a failed trial is shown on the run; the instruction is unaffected
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
                # The instruction's channels: a run.failed webhook, an email, ...
                channels=instruction.channels.get("kinds", []),
                data={"error": reason}, run_id=claim.run_id,
                instruction_id=instruction.id,
            )


async def _load_resume(session: AsyncSession, ctx: _Context, agent_state: dict[str, Any]) -> None:
    """What a paused run resumes with: the answer to its question, or that there is none."""
    state = agent_state.get("state") or {}
    ctx.paused_at_attempt = int(agent_state.get("attempt", 0))
    ctx.cursors_from = agent_state.get("cursors_from")
    question = (
        await session.execute(
            select(Question).where(
                Question.run_id == ctx.run.id, Question.call_id == state.get("call_id")
            ).order_by(Question.created_at.desc()).limit(1)
        )
    ).scalar_one_or_none()
    if question is not None and question.status == "open":
        ctx.still_waiting = True
        return
    answer = question.answer if question is not None and question.status == "answered" else None
    ctx.resume = ResumeState(state=state, answer=answer)


def _advance(
    current: dict[str, Any], new: Mapping[str, Any], started_from: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The instruction's cursors after a run; a resumed run never moves one back.

    While a run waited for the user, a later run of the instruction may have moved
    an account's cursor on: that account keeps the newer one.
    """
    if started_from is None:
        return {**current, **new}
    return {
        **current,
        **{key: value for key, value in new.items() if current.get(key) == started_from.get(key)},
    }


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
