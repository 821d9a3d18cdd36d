"""What runs and other model turns cost: today's spend against the cap, usage over days and
instructions, and the check that refuses a model turn once the cap is reached.

The cap's day is the user's: from midnight in the user's time zone. A run's spend is
added to the run turn by turn: each model turn with its step (app/runs/steps.py), in
one transaction, and a turn whose step could not be written when its attempt ends
(app/runs/endings.py). Each charge dates the run (`Run.charged_at`; nothing else
moves it: claiming, cancelling or requeueing the run does not). A day's cap counts
what the runs charged that day spent since the day began: a run charged on an earlier
day keeps what it spent by then in `charged_before_usd`, which counted on that day.
So each model turn counts once, on the day it was charged: a run that paused on a
question counts what it spent before the pause on the day it paused, and what it
spends after on the day it goes on. A run deferred to the next day by the cap does
not carry its earlier spend into that day.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, field_serializer
from sqlalchemy import func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agent.llm import Usage as TokenUsage
from app.agent.pricing import ModelPrice, cost_usd, price_for, usd
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import DomainError
from app.runs.models import ModelCall, Run
from app.users.models import User


class CostCapReached(DomainError):
    """The user's daily cost cap is spent: no more paid model turns today."""

    status_code = 429


def start_of_day(user: User, now: datetime) -> datetime:
    """The user's last midnight, when the daily cost cap's day began."""
    zone = ZoneInfo(user.timezone)
    return datetime.combine(now.astimezone(zone).date(), time(), zone)


def next_day(user: User, now: datetime) -> datetime:
    """The user's next midnight, when the daily cost cap starts again."""
    zone = ZoneInfo(user.timezone)
    return datetime.combine(now.astimezone(zone).date() + timedelta(days=1), time(), zone)


# `cost_usd > 0` as a literal: the predicate of the partial index ix_runs_spend, which a
# query must repeat (a bound parameter would not match it).
_SPENT_MONEY = Run.cost_usd > literal_column("0")


def _spent_since(user: User, now: datetime) -> Any:
    """What the user's runs and other model turns (drafting) have cost since midnight in
    the user's time zone: one scalar expression (two subqueries). The runs are those
    that spent money and were charged today, finished or not (through ix_runs_spend),
    each with what it spent since it was last charged on an earlier day."""
    since = start_of_day(user, now)
    runs = (
        select(func.coalesce(func.sum(Run.cost_usd - Run.charged_before_usd), 0.0)).where(
            Run.user_id == user.id, _SPENT_MONEY, Run.charged_at >= since,
        ).scalar_subquery()
    )
    calls = (
        select(func.coalesce(func.sum(ModelCall.cost_usd), 0.0)).where(
            ModelCall.user_id == user.id, ModelCall.created_at >= since
        ).scalar_subquery()
    )
    return runs + calls


async def spent_today(*, session: AsyncSession, user: User) -> float:
    """USD the user's runs and other model turns (drafting) have cost since midnight in
    the user's time zone."""
    return float(await session.scalar(select(_spent_since(user, utcnow()))) or 0.0)


async def spent_today_by_user(
    *, session: AsyncSession, users: Sequence[User]
) -> dict[uuid.UUID, float]:
    """`spent_today` of several users, in one statement."""
    if not users:
        return {}
    now = utcnow()
    row = (await session.execute(select(*(_spent_since(user, now) for user in users)))).one()
    return {user.id: float(value or 0.0) for user, value in zip(users, row, strict=True)}


def spend_counted_today(
    user: User, *, charged_at: datetime | None, cost_usd: float, charged_before_usd: float,
    now: datetime,
) -> float:
    """What of a run's spend counts against today's cap, from its columns: what it spent
    since it was last charged on an earlier day, if it was charged today (else nothing).
    The rule `_spent_since` applies in SQL, for one run."""
    if charged_at is None or charged_at < start_of_day(user, now):
        return 0.0
    return cost_usd - charged_before_usd


def run_spent_today(user: User, run: Run, now: datetime) -> float:
    """What of the run's spend counts against today's cap (`spend_counted_today`). It is
    in `spent_today` already."""
    return spend_counted_today(user, charged_at=run.charged_at, cost_usd=run.cost_usd,
                               charged_before_usd=run.charged_before_usd, now=now)


async def runs_at_work(
    *, session: AsyncSession, users: Sequence[User], besides: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[uuid.UUID, float]]]:
    """For each of these users, their runs at work (running, on any worker) other than
    the runs `besides`, in one statement: each as its instruction and what it has spent
    today so far (each model turn is on its run as soon as its step is written, so it
    is in `spent_today` already). What those runs will still cost is not spent yet, but
    it will be."""
    if not users:
        return {}
    by_id = {user.id: user for user in users}
    rows = await session.execute(
        select(Run.user_id, Run.instruction_id, Run.cost_usd, Run.charged_before_usd,
               Run.charged_at).where(
            Run.status == "running", Run.user_id.in_(by_id), Run.id.not_in(besides),
        )
    )
    now = utcnow()
    found: dict[uuid.UUID, list[tuple[uuid.UUID, float]]] = {user_id: [] for user_id in by_id}
    for user_id, instruction_id, cost, before, charged_at in rows:
        found[user_id].append((instruction_id, spend_counted_today(
            by_id[user_id], charged_at=charged_at, cost_usd=cost, charged_before_usd=before,
            now=now,
        )))
    return found


async def ensure_under_cap(
    *, session: AsyncSession, user: User, model: str, prices: Mapping[str, ModelPrice]
) -> None:
    """Raise `CostCapReached` when the user's spend today has reached the daily cap and
    `model` costs money (the offline model is free and always allowed)."""
    if price_for(model, prices) is None:
        return
    cap = user.daily_cost_cap_usd
    spent = await spent_today(session=session, user=user)
    if spent >= cap:
        raise CostCapReached(
            "your daily cost cap is $0, which stops paid model turns; raise it to use "
            "the model" if cap <= 0 else
            f"the daily cost cap of {usd(cap)} is reached ({usd(spent)} spent today); "
            "paid model turns resume tomorrow, or raise the cap"
        )


async def ensure_preview_under_cap(
    *, session: AsyncSession, user: User, settings: Settings
) -> None:
    """The cap check before queueing a preview run, which uses Gemini only when a key is
    set (the offline model is free)."""
    key = settings.gemini_api_key
    if key is not None and key.get_secret_value():
        await ensure_under_cap(
            session=session, user=user, model=settings.gemini_model,
            prices=settings.gemini_prices,
        )


async def record_model_call(
    *, session: AsyncSession, user_id: uuid.UUID, purpose: str, model: str,
    usage: TokenUsage, prices: Mapping[str, ModelPrice],
) -> ModelCall:
    """Store a model turn outside a run with its cost (flushes; the caller commits)."""
    call = ModelCall(
        user_id=user_id, purpose=purpose, model=model, input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens, thought_tokens=usage.thought_tokens,
        cached_tokens=usage.cached_tokens, cost_usd=cost_usd(model, usage, prices),
    )
    session.add(call)
    await session.flush()
    return call


def _typical(instruction_id: uuid.UUID) -> Any:
    """The average cost of the instruction's last five runs that reached the model, as a
    scalar expression."""
    recent = (
        select(Run.cost_usd)
        .where(Run.instruction_id == instruction_id, Run.status == "succeeded")
        .order_by(Run.created_at.desc())
        .limit(5)
        .subquery()
    )
    return select(func.coalesce(func.avg(recent.c.cost_usd), 0.0)).scalar_subquery()


async def typical_costs(
    *, session: AsyncSession, instruction_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, float]:
    """The average cost of each instruction's last five runs that reached the model, in
    one statement."""
    if not instruction_ids:
        return {}
    row = (await session.execute(select(*(_typical(i) for i in instruction_ids)))).one()
    return {i: float(value or 0.0) for i, value in zip(instruction_ids, row, strict=True)}


class UsageTotals(BaseModel):
    runs: int = 0
    model_calls: int = 0  # model turns outside runs (drafting)
    input_tokens: int = 0
    output_tokens: int = 0
    thought_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0

    @field_serializer("cost_usd")
    def _to_the_micro_dollar(self, value: float) -> float:
        # A sum of floats (0.021359999999999997): no price has more digits than this.
        return round(value, 6)


class DayUsage(UsageTotals):
    day: str  # YYYY-MM-DD in the user's time zone


class InstructionUsage(UsageTotals):
    instruction_id: uuid.UUID


class Usage(BaseModel):
    timezone: str
    days: list[DayUsage]
    instructions: list[InstructionUsage]
    total: UsageTotals


def _add(totals: UsageTotals, run: Run | ModelCall, cost: float | None = None) -> None:
    """Add the run (or model turn) with its tokens, and `cost` of its spend (all of it
    when None)."""
    if isinstance(run, Run):
        totals.runs += 1
    else:
        totals.model_calls += 1
    totals.input_tokens += run.input_tokens
    totals.output_tokens += run.output_tokens
    totals.thought_tokens += run.thought_tokens
    totals.cached_tokens += run.cached_tokens
    totals.cost_usd += run.cost_usd if cost is None else cost


async def usage(*, session: AsyncSession, user: User, days: int) -> Usage:
    """Tokens and cost of the user's runs over the last `days` days, by day (in the user's
    time zone) and by instruction; model turns outside runs (drafting) count in the days
    and the total. A run that spent money counts, with its tokens, on the day it was last
    charged (finished or not: waiting for the user, retrying); a free one on the day it
    finished. Its cost is split as the cap counted it: what it spent since its charges
    on earlier days on that day, and what it had spent by then (`charged_before_usd`) on
    the day of the last of those charges (`charged_before_at`; the day the run was
    created for runs charged before it was recorded). Runs charged on three days or more
    put all their earlier spend on the last of those days: no per-day rows are kept. A
    cost that falls before the first day is left out of the days, the instructions and
    the total alike.
    """
    zone = ZoneInfo(user.timezone)
    since = start_of_day(user, utcnow()) - timedelta(days=days - 1)
    # Two statements, each on its index: the runs that spent money (ix_runs_spend,
    # however old the run), and the free runs finished lately (ix_runs_user_id).
    runs = [
        *(await session.execute(select(Run).where(
            Run.user_id == user.id, _SPENT_MONEY, Run.charged_at >= since,
        ))).scalars(),
        *(await session.execute(select(Run).where(
            Run.user_id == user.id, Run.created_at >= since - timedelta(days=1),
            ~_SPENT_MONEY, Run.finished_at.is_not(None), Run.updated_at >= since,
        ))).scalars(),
    ]
    by_day: dict[str, DayUsage] = {}
    by_instruction: dict[uuid.UUID, InstructionUsage] = defaultdict(
        lambda: InstructionUsage(instruction_id=uuid.uuid4())
    )
    total = UsageTotals()
    for offset in range(days):
        day = (since + timedelta(days=offset)).date().isoformat()
        by_day[day] = DayUsage(day=day)
    first_day = since.date().isoformat()
    for run in runs:
        day = (run.charged_at or run.updated_at).astimezone(zone).date().isoformat()
        cost = run.cost_usd - run.charged_before_usd
        _add(by_day.setdefault(day, DayUsage(day=day)), run, cost)
        if run.charged_before_usd:
            before = (run.charged_before_at or run.created_at).astimezone(zone).date()
            if before.isoformat() >= first_day:
                by_day.setdefault(before.isoformat(), DayUsage(day=before.isoformat()))
                by_day[before.isoformat()].cost_usd += run.charged_before_usd
                cost = run.cost_usd
        entry = by_instruction[run.instruction_id]
        entry.instruction_id = run.instruction_id
        _add(entry, run, cost)
        _add(total, run, cost)
    calls = (
        await session.execute(
            select(ModelCall).where(ModelCall.user_id == user.id, ModelCall.created_at >= since)
        )
    ).scalars().all()
    for call in calls:
        day = call.created_at.astimezone(zone).date().isoformat()
        _add(by_day.setdefault(day, DayUsage(day=day)), call)
        _add(total, call)
    return Usage(
        timezone=user.timezone,
        days=sorted(by_day.values(), key=lambda d: d.day),
        instructions=sorted(by_instruction.values(), key=lambda i: -i.cost_usd),
        total=total,
    )
