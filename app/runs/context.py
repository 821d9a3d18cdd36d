"""What a claimed run works with: its row, instruction, user and accounts (read with the
claim on PostgreSQL), what a paused run resumes with, and how the instruction's cursors
and window move on after a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.accounts.models import Account
from app.agent.llm import Usage
from app.agent.resume import ResumeState
from app.instructions.models import Instruction
from app.questions.models import Question
from app.runs import queue
from app.runs.models import Run
from app.runs.steps import StepWriter
from app.users.models import User


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


CLAIM_AND_LOAD = _claim_and_load()


@dataclass
class RunContext:
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
    # The attempt's step writer: what the attempt has spent so far, and what of it is
    # not on the run yet.
    steps: StepWriter | None = None
    # When the attempt read its sources: what its digest covers up to.
    read_at: datetime | None = None

    def covered_until(self) -> datetime | None:
        """Where the instruction's window moves to: when the sources were read, which is
        later than the fire time for a run that waited (a catch-up after downtime)."""
        return later(self.run.window_end, self.read_at)

    def spent(self) -> Usage:
        """The tokens of the attempt's model turns that are not on the run yet: every
        turn whose step was written was charged with it (app/runs/steps.py)."""
        return self.steps.unbilled if self.steps is not None else Usage()

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


async def load_resume(session: AsyncSession, ctx: RunContext, agent_state: dict[str, Any]) -> None:
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


def advance(
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


async def lock_instruction(session: AsyncSession, instruction: Instruction) -> Instruction:
    found = (
        await session.execute(
            select(Instruction).where(Instruction.id == instruction.id).with_for_update()
        )
    ).scalar_one()
    return found


def later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
