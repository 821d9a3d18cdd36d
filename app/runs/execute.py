"""Executing one claimed run: the agent over the user's sources, then its outcome.

The agent runs outside any transaction. Each step (and each `notify_now`
alert) is written on its own; the outcome (run row, instruction cursor,
notification and its deliveries) is written in one transaction that names the
lease, so a worker that lost the run writes nothing, and a retry never tells
the user twice. Nothing, but what the attempt spent: each model turn's tokens
and their cost are added to the run's with its step (app/runs/steps.py), so a
worker killed after a turn leaves it counted against the user's daily cost cap;
a turn whose step could not be written is added by whichever way the attempt
ends (done, paused, failed and retried, given up, lost or stopped). Each turn
counts once.

A run whose agent asks the user a question ends its attempt `waiting_for_user`
with `Run.agent_state`:

    {"attempt": <the claim's attempt when it paused>,
     "cursors_from": {<account>: <the instruction's cursor the run started from>},
     "state": <app.agent.resume.PausedState as JSON>}

and frees the worker. The answer (or the question's expiry) queues it again;
the next claim resumes it from that state. Attempts are counted from the pause.

A model service that rejects the API key is the operator's problem, not the run's:
see app/runs/endings.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.accounts.models import Account
from app.accounts.queries import NOTHING_TO_READ, NothingToRead
from app.agent.llm import LLM, KeyRejected, QuotaExhausted
from app.agent.pricing import price_for, usd
from app.agent.resume import ResumeState
from app.agent.runner import (
    AgentOutcome,
    AgentRequest,
    Notifier,
    StepRecorder,
    run_agent,
)
from app.core.config import Settings
from app.core.db import after_commit, transaction, utcnow
from app.core.faults import FaultPoints
from app.google.accounts import features, mark_no_mailbox, no_mail_detail, no_mail_reason
from app.instructions.models import Instruction
from app.notifications import service as notifications
from app.runs import costs, metrics, outcomes, queue
from app.runs.batching import Coalescer, HeldConnection
from app.runs.context import (
    CLAIM_AND_LOAD,
    RunContext,
    advance,
    later,
    load_resume,
    lock_instruction,
)
from app.runs.endings import KEY_REJECTED_BACKOFF_SECONDS, QUOTA_RETRY_SECONDS, RunEndings
from app.runs.models import Run
from app.runs.steps import Alerter, LeaseLost, StepWriter, without_nul
from app.sources.base import AccountDisconnected, NoMailbox, Source
from app.sources.registry import source_for
from app.users.models import User

log = logging.getLogger(__name__)

# The most runs loaded, or written, in one transaction.
_BATCH = 200


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


def _needs_mail(ctx: RunContext, kinds: list[str]) -> str | None:
    """What about the run needs mail (for its failure's reason), or None: an instruction
    that reads only mail, or a watch's run for a message. A resumed run goes on with what
    it has."""
    if ctx.resume is not None:
        return None
    if (ctx.run.trigger_item or {}).get("kind") == "message":
        return "this run is for a message a mail watch caught"
    if kinds and set(kinds) <= {"gmail"}:
        return "this instruction reads only mail"
    return None


def _unread_mail(ctx: RunContext, kinds: list[str], sources: Mapping[str, Source]) -> list[str]:
    """For an instruction that reads mail, why each account the run reads does not read
    its mail (a Google account without Gmail, or whose grant left Gmail out): the digest
    says so, so that a digest of Drive alone is not taken for one of no mail."""
    if "gmail" not in kinds:
        return []
    reasons = [no_mail_reason(account) for account in ctx.accounts
               if str(account.id) in sources]
    return [f"Mail was not read: {reason}." for reason in reasons if reason]


class RunExecutor(RunEndings):
    """Runs claimed runs: loads them (in batches), runs the agent, writes the outcome
    (successes in batches, app/runs/outcomes.py; every other ending in
    app/runs/endings.py)."""

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
        self._loads: Coalescer[queue.Claim, RunContext | None] = Coalescer(
            self._load_many, max_size=_BATCH, parallel=2
        )
        self._preloaded: dict[Any, RunContext | None] = {}
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
        # (it rejected the API key; logged once per back-off).
        self._key_rejected_until = 0.0
        self._key_rejections = 0
        self._key_backoff_seconds = KEY_REJECTED_BACKOFF_SECONDS
        self._quota_resets_at: datetime | None = None
        self._quota_wait_until = 0.0
        self._quota_refusals = 0
        self._quota_wait_seconds = QUOTA_RETRY_SECONDS

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
        if self._quota_resets_at is not None:
            if utcnow() >= self._quota_resets_at:  # a new quota day
                self._quota_answered()
            elif started < self._quota_wait_until:
                await self._defer_for_quota(claim, ctx, "the quota was used up earlier today")
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
        except NoMailbox as exc:
            await self._mailbox_gone(claim, ctx, exc)
            return
        except NothingToRead as exc:
            # Another attempt would find no more: fail now, and say what to do.
            await self._give_up(claim, ctx, exc.detail)
            return
        except KeyRejected as exc:
            await self._charge_lost(claim, ctx)  # turns before the refusal were billed
            await self._key_rejected(claim, exc)
            return
        except QuotaExhausted as exc:
            await self._quota_exhausted(claim, ctx, exc)
            return
        except Exception as exc:
            log.warning("run %s attempt %d failed: %s", claim.run_id, claim.attempt, exc)
            await self._failed(claim, ctx, exc)
            return
        if self._key_rejected_until and outcome.interaction_ids:
            self._key_rejected_until = 0.0  # the model answered: the key works again
            self._key_rejections = 0
            metrics.MODEL_KEY_REJECTED.set(0)
        if self._quota_resets_at is not None and outcome.interaction_ids:
            self._quota_answered()
        try:
            if outcome.status == "waiting":
                await self._paused(claim, ctx, outcome)
            else:
                await self._succeeded(claim, ctx, outcome)
        except LeaseLost:
            log.warning("run %s: lease lost before its outcome was written", claim.run_id)
            await self._charge_lost(claim, ctx)
            return
        # A skipped run (nothing new) is the common case of a watch or a frequent schedule:
        # a line each would bury the runs that did something.
        log.log(
            logging.DEBUG if outcome.status == "skipped" else logging.INFO,
            "run %s %s in %.2fs", claim.run_id, outcome.status, time.monotonic() - started,
        )

    async def _load(self, claim: queue.Claim) -> RunContext | None:
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

    async def _load_many(
        self, claims: list[queue.Claim]
    ) -> list[RunContext | None | BaseException]:
        async with transaction(self.sessionmaker) as session:
            return list(await self._load_in(session, claims))

    async def _load_in(
        self, session: AsyncSession, claims: list[queue.Claim]
    ) -> list[RunContext | None]:
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
            rows = (await session.execute(CLAIM_AND_LOAD, params)).all()
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
    ) -> list[RunContext | None]:
        """Each claim's context from rows of (run, instruction, user, account or None)."""
        held = {claim.run_id: claim.lease_token for claim in claims}
        found = {run.id: (run, instruction, user) for run, instruction, user, _a in rows
                 if run.lease_token == held[run.id]}
        accounts: dict[Any, dict[Any, Account]] = {}
        for _run, _instruction, user, account in rows:
            users_accounts = accounts.setdefault(user.id, {})
            if account is not None:
                users_accounts.setdefault(account.id, account)
        contexts: list[RunContext | None] = []
        for claim in claims:
            if claim.run_id not in found:
                contexts.append(None)
                continue
            run, instruction, user = found[claim.run_id]
            ctx = RunContext(run, instruction, user, list(accounts[user.id].values()))
            if run.agent_state:
                await load_resume(session, ctx, run.agent_state)
            contexts.append(ctx)
        # A run that stops before its agent (cancelled, its question still open) spends
        # nothing and holds nothing against the cap.
        await self._check_cost_caps(session, [
            ctx for ctx in contexts
            if ctx is not None and not ctx.still_waiting and ctx.cancelled_because() is None
        ])
        return contexts

    async def _run_agent(self, claim: queue.Claim, ctx: RunContext) -> AgentOutcome:
        sources: dict[str, Source] = {}
        for account in ctx.accounts:
            source = source_for(account, self.settings)
            if source is not None:
                sources[str(account.id)] = source
        if not sources:
            raise NothingToRead(NOTHING_TO_READ)
        kinds = ctx.instruction.sources.get("kinds", [])
        needs_mail = _needs_mail(ctx, kinds)
        if needs_mail and not any(
            features(account)["gmail"] for account in ctx.accounts if str(account.id) in sources
        ):
            # Not a digest of nothing: the user is told why no mail was read.
            raise NothingToRead(no_mail_detail(ctx.accounts, what=needs_mail,
                                               settings=self.settings))
        unread = _unread_mail(ctx, kinds, sources)
        # No account reads mail: the model is offered no mail tools (they would find
        # nothing), and the digest says why no mail was read. A resumed run keeps the tools
        # its conversation started with.
        read_mail = "gmail" in kinds and (ctx.resume is not None or any(
            features(account)["gmail"] for account in ctx.accounts
            if str(account.id) in sources
        ))
        preview = ctx.run.reason == "preview"
        interactive = self._user_tools and not preview
        alerter = (Alerter(self.sessionmaker, claim, ctx.user.id, ctx.instruction)
                   if self._user_tools else None)
        sent_alerts: list[dict[str, str]] = []
        if alerter is not None and interactive:
            # Any attempt but the first starts afresh, from the run's start or from its
            # pause: it is shown what the attempts before it told the user. That is a
            # retry, a resume, and a run given back uncounted (a rejected API key, a
            # shutdown), which nothing on the run tells apart: one query, every time.
            sent_alerts = await alerter.sent()
        # A watch's own runs each read their item and leave the instruction's cursors
        # alone: run now on a watch reads, like a preview, what came since the run it
        # says it covers from (without this, all mail and files of the first delta's
        # look-back, as new, under "since" the last watch run).
        looks_back = preview or (ctx.run.reason == "manual"
                                 and ctx.instruction.trigger.get("type") == "watch")
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
            read_mail=read_mail,
            read_files="drive" in kinds,
            timezone=ctx.user.timezone,
            # The sources are read now, whenever the run was due: a catch-up run that
            # waited hours must not tell the model, or the digest, a time hours stale.
            now=read_at,
            window_start=ctx.run.window_start,
            model=self.llm.name,
            context_limit=self.settings.agent_context_limit,
            since=ctx.run.window_start if looks_back else None,
            max_input_tokens=self.settings.agent_max_input_tokens,
            interactive=interactive,
            watch_item=ctx.run.trigger_item,
            sent_alerts=sent_alerts,
            max_cost_usd=ctx.budget_usd,
            price=price_for(self.llm.name, self.settings.gemini_prices),
            unread=unread,
        )
        # A preview looks at everything in its window, whatever was seen before.
        cursors = {key: None if looks_back else ctx.instruction.cursor.get(key)
                   for key in sources}
        recorder = ctx.steps = StepWriter(
            self.sessionmaker, claim, ctx.run, self.fault,
            lambda usage: self.spend_of(ctx.user, usage),
        )
        try:
            if alerter is None:
                outcome = await self.agent(
                    llm=self.llm, sources=sources, cursors=cursors, request=request,
                    record=recorder,
                )
            else:
                outcome = await self.agent(
                    llm=self.llm, sources=sources, cursors=cursors, request=request,
                    record=recorder, resume=ctx.resume, notify=alerter,
                )
        except NoMailbox:
            raise  # recorded as the run is given back (`_mailbox_gone`)
        except Exception:
            await self._record_lost_mailboxes(ctx, sources)
            raise
        await self._record_lost_mailboxes(ctx, sources)
        return outcome

    async def _record_lost_mailboxes(self, ctx: RunContext, sources: Mapping[str, Source]) -> None:
        """A mailbox that a tool found gone (the tool told the model, and the run went on
        without it) is recorded as the run ends, so that later runs and polls leave it."""
        gone = [account for account in ctx.accounts
                if (source := sources.get(str(account.id))) is not None and source.mailbox_gone()]
        if not gone:
            return
        try:
            async with transaction(self.sessionmaker) as session:
                for account in gone:
                    await mark_no_mailbox(session, account=account, settings=self.settings)
        except Exception:  # the next run that meets it records it
            log.exception("run of instruction %s: could not record a lost mailbox",
                          ctx.instruction.id)

    async def _check_cost_caps(self, session: AsyncSession, contexts: list[RunContext]) -> None:
        """Mark the runs that would pass their user's daily cost cap (`over_cap`).

        A run's cost is estimated from its instruction's recent runs. What counts against
        the cap is today's spend, what the estimates of the user's runs still at work (on
        this worker or another) leave after what they have spent today, and, in claim
        order, what the estimate of each run of this batch let through leaves after what
        that run has spent today (a retried or answered run's earlier spend today is in
        today's spend already, so it is not counted twice): runs of one user that start
        together, or while others run, cannot pass the cap together. A run let through is
        given what is left of the cap (`budget_usd`): its agent stops there, however far
        off the estimate was. The runs loaded together are checked together, in three
        statements whatever their number.
        A model the price table does not list (the offline model) costs nothing: no check.
        """
        if not contexts or price_for(self.llm.name, self.settings.gemini_prices) is None:
            return
        users = list({ctx.user.id: ctx.user for ctx in contexts}.values())
        spent = await costs.spent_today_by_user(session=session, users=users)
        at_work = await costs.runs_at_work(
            session=session, users=users, besides=[ctx.run.id for ctx in contexts],
        )
        estimates = await costs.typical_costs(session=session, instruction_ids=list(
            {ctx.instruction.id for ctx in contexts}
            | {i for runs in at_work.values() for i, _spent in runs}
        ))
        for user_id, runs in at_work.items():
            # What a run at work has spent today is in `spent` already: it holds the
            # rest of its estimate.
            spent[user_id] += sum(max(estimates[i] - so_far, 0.0) for i, so_far in runs)
        now = utcnow()
        for ctx in contexts:
            cap = ctx.user.daily_cost_cap_usd
            so_far, estimate = spent[ctx.user.id], estimates[ctx.instruction.id]
            # What the run has spent today (an earlier attempt, or before its question)
            # is in `so_far` already: it needs only the rest of its estimate.
            own = costs.run_spent_today(ctx.user, ctx.run, now)
            needs = max(estimate - own, 0.0)
            if so_far < cap and so_far + needs <= cap:
                spent[ctx.user.id] = so_far + needs
                ctx.budget_usd = cap - so_far
                continue
            ctx.over_cap = (
                "your daily cost cap is $0, which stops paid model turns" if cap <= 0 else
                f"the daily cost cap of {usd(cap)} would be passed: {usd(so_far)} spent "
                f"today or held by runs at work, a run of this instruction costs "
                f"about {usd(estimate)}"
                + (f" ({usd(own)} of it spent by this run today)" if own > 0 else "")
            )

    async def _succeeded(self, claim: queue.Claim, ctx: RunContext, outcome: AgentOutcome) -> None:
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
        self, claim: queue.Claim, ctx: RunContext, outcome: AgentOutcome
    ) -> None:
        now = utcnow()
        # Model text: PostgreSQL cannot store a NUL in it.
        digest = without_nul(outcome.digest.model_dump(mode="json")) if outcome.digest else None
        async with transaction(self.sessionmaker) as session:
            # Locked first: a delete that commits meanwhile waits, or is seen here.
            instruction = await lock_instruction(session, ctx.instruction)
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
            instruction.cursor = advance(instruction.cursor, outcome.cursors, ctx.cursors_from)
            instruction.covered_until = later(instruction.covered_until, ctx.covered_until())
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
