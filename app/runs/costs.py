"""What runs cost: today's spend against the cap, and usage over days and instructions."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.runs.models import Run
from app.users.models import User


def _start_of_day(user: User, now: datetime) -> datetime:
    zone = ZoneInfo(user.timezone)
    return datetime.combine(now.astimezone(zone).date(), time(), zone)


async def spent_today(*, session: AsyncSession, user: User) -> float:
    """USD the user's runs have cost since midnight in the user's time zone."""
    since = _start_of_day(user, utcnow())
    total = await session.scalar(
        select(func.coalesce(func.sum(Run.cost_usd), 0.0)).where(
            Run.user_id == user.id, Run.created_at >= since - timedelta(days=1),
            Run.finished_at >= since,
        )
    )
    return float(total or 0.0)


async def typical_cost(*, session: AsyncSession, instruction_id: uuid.UUID) -> float:
    """The average cost of the instruction's last five runs that reached the model."""
    recent = (
        select(Run.cost_usd)
        .where(Run.instruction_id == instruction_id, Run.status == "succeeded")
        .order_by(Run.created_at.desc())
        .limit(5)
        .subquery()
    )
    average = await session.scalar(select(func.avg(recent.c.cost_usd)))
    return float(average or 0.0)


class UsageTotals(BaseModel):
    runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    thought_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0


class DayUsage(UsageTotals):
    day: str  # YYYY-MM-DD in the user's time zone


class InstructionUsage(UsageTotals):
    instruction_id: uuid.UUID


class Usage(BaseModel):
    timezone: str
    days: list[DayUsage]
    instructions: list[InstructionUsage]
    total: UsageTotals


def _add(totals: UsageTotals, run: Run) -> None:
    totals.runs += 1
    totals.input_tokens += run.input_tokens
    totals.output_tokens += run.output_tokens
    totals.thought_tokens += run.thought_tokens
    totals.cached_tokens += run.cached_tokens
    totals.cost_usd += run.cost_usd


async def usage(*, session: AsyncSession, user: User, days: int) -> Usage:
    """Tokens and cost of the user's finished runs over the last `days` days, by day
    (in the user's time zone) and by instruction."""
    zone = ZoneInfo(user.timezone)
    since = _start_of_day(user, utcnow()) - timedelta(days=days - 1)
    runs = (
        await session.execute(
            select(Run).where(
                Run.user_id == user.id, Run.created_at >= since - timedelta(days=1),
                Run.finished_at >= since,
            )
        )
    ).scalars().all()
    by_day: dict[str, DayUsage] = {}
    by_instruction: dict[uuid.UUID, InstructionUsage] = defaultdict(
        lambda: InstructionUsage(instruction_id=uuid.uuid4())
    )
    total = UsageTotals()
    for offset in range(days):
        day = (since + timedelta(days=offset)).date().isoformat()
        by_day[day] = DayUsage(day=day)
    for run in runs:
        assert run.finished_at is not None
        day = run.finished_at.astimezone(zone).date().isoformat()
        _add(by_day.setdefault(day, DayUsage(day=day)), run)
        entry = by_instruction[run.instruction_id]
        entry.instruction_id = run.instruction_id
        _add(entry, run)
        _add(total, run)
    return Usage(
        timezone=user.timezone,
        days=sorted(by_day.values(), key=lambda d: d.day),
        instructions=sorted(by_instruction.values(), key=lambda i: -i.cost_usd),
        total=total,
    )
