"""What a run writes while its agent works: each step, and each `notify_now` alert.

Each write is its own transaction and is fenced by the run's lease like the
outcome: a worker that lost the run raises `LeaseLost` and writes nothing.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import CursorResult, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agent.llm import Usage
from app.agent.runner import StepRecord
from app.agent.tools import Alert
from app.core.db import insert_ignore, transaction, utcnow
from app.core.faults import FaultPoints
from app.instructions.models import Instruction
from app.notifications import service as notifications
from app.notifications.models import AlertedItem, Notification
from app.runs import queue
from app.runs.models import Run, RunStep

_NOT_A_WORD = re.compile(r"[\W_]+")


def _words(text: str) -> str:
    """The text without case, punctuation or spacing: "Invoice due!" is "invoice due"."""
    return _NOT_A_WORD.sub(" ", text.casefold()).strip()


def _same_words(title: str, message: str, sent: Sequence[Any]) -> bool:
    """Whether one of the alerts `sent` ((title, message) rows) has the title's words
    or the message's."""
    title, message = _words(title), _words(message)
    return any(_words(t) == title or _words(b) == message for t, b in sent)


def without_nul(value: Any) -> Any:
    """`value` with NUL characters dropped from every string in it.

    Model output can hold them, and PostgreSQL text and JSONB cannot.
    """
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


class LeaseLost(Exception):
    """Another worker (or a cancel) took the run: this worker must not write its outcome."""


class StepWriter:
    """Writes each step of the agent as it happens, numbered within the attempt.

    A model turn is charged to the run with its step, in the same transaction (its
    tokens and their cost, `charge` giving the values of `queue.spent`): once that
    commits, the turn is on the run, whatever happens to the worker after (a SIGKILL,
    a lost lease). `usage` adds up all the attempt's turns; `unbilled` those that were
    billed by the model but are not on the run (their step could not be written: the
    lease was lost, the database failed), which the attempt's ending adds.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        claim: queue.Claim,
        run: Run,
        fault: FaultPoints,
        charge: Callable[[Usage], dict[str, Any]],
    ) -> None:
        self.sessionmaker = sessionmaker
        self.claim = claim
        self.run = run
        self.fault = fault
        self.charge = charge
        self.seq = 0
        self.usage = Usage()
        self.unbilled = Usage()

    async def __call__(self, step: StepRecord) -> None:
        self.seq += 1
        if step.kind == "model":
            self.usage += step.usage
        try:
            try:
                await self._write(step)
            except IntegrityError:
                # A run given back uncounted (a rejected API key, a shutdown) claims the
                # same attempt number again: its steps go on after those already written.
                async with transaction(self.sessionmaker) as session:
                    last = await session.scalar(select(func.max(RunStep.seq)).where(
                        RunStep.run_id == self.run.id,
                        RunStep.attempt == self.claim.attempt))
                self.seq = (last or 0) + 1
                await self._write(step)
        except BaseException:
            # Paid for, not on the run: the attempt's ending adds it. (Cancelled while
            # its commit was under way, a turn may be on the run and added again: rather
            # counted twice than never.)
            if step.kind == "model":
                self.unbilled += step.usage
            raise
        if step.kind == "model":
            await self.fault.reached("model_answered")

    async def _write(self, step: StepRecord) -> None:
        async with transaction(self.sessionmaker) as session:
            # Fenced like the outcome: a worker that lost the run stops here.
            if step.kind == "model":
                held = await queue.charge_held(
                    session=session, claim=self.claim, values=self.charge(step.usage))
            else:
                held = await queue.still_held(session=session, claim=self.claim)
            if not held:
                raise LeaseLost()
            session.add(
                RunStep(
                    user_id=self.run.user_id, run_id=self.run.id, attempt=self.claim.attempt,
                    seq=self.seq, kind=step.kind, name=without_nul(step.name[:120]),
                    arguments=without_nul(step.arguments),
                    result_excerpt=without_nul(step.result_excerpt),
                    interaction_id=step.interaction_id,
                    input_tokens=step.usage.input_tokens, output_tokens=step.usage.output_tokens,
                    thought_tokens=step.usage.thought_tokens,
                    cached_tokens=step.usage.cached_tokens,
                    duration_ms=step.duration_ms, error=without_nul(step.error),
                )
            )


class Alerter:
    """notify_now: one alert notification, in its own transaction, fenced like a step.

    What makes two alerts "the same" must hold across attempts: a retried attempt
    (a retried resume too) starts a new conversation, and the model gives its calls
    new ids and its alerts new words. So:

    - An alert that names the items it is about (`about`) is sent only if one of them
      was never alerted about by the instruction (`alerted_items`), whatever its words
      and whichever run sends it.
    - An alert that names no items has only its words: it is not sent if an earlier
      attempt of this run (an earlier claim: a retry, a resume, a run given back) sent
      an alert with the same title or the same message, compared without case,
      punctuation or spacing. Within one attempt, alerts that differ are all sent (two
      invoices may both be "New invoice").
    - In any case, not one whose title and message were both sent by this run, or
      whose call id was (the notification's key).

    The retried attempt is also shown what was sent (`sent`), so it seldom tries.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        claim: queue.Claim,
        user_id: uuid.UUID,
        instruction: Instruction,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.claim = claim
        self.user_id = user_id
        self.instruction = instruction

    def _title(self, alert_title: str) -> str:
        return f"{self.instruction.title}: {alert_title}"

    async def sent(self) -> list[dict[str, str]]:
        """The alerts this run has sent so far (by earlier attempts), oldest first, as
        the model wrote them."""
        prefix = self._title("")
        async with transaction(self.sessionmaker) as session:
            rows = (await session.execute(
                select(Notification.title, Notification.body).where(
                    Notification.user_id == self.user_id,
                    Notification.run_id == self.claim.run_id,
                    Notification.kind == "alert",
                ).order_by(Notification.created_at, Notification.id)
            )).all()
        return [{"title": title.removeprefix(prefix), "message": body} for title, body in rows]

    async def __call__(self, alert: Alert) -> bool:
        instruction = self.instruction
        title = self._title(alert.title)
        async with transaction(self.sessionmaker) as session:
            if not await queue.still_held(session=session, claim=self.claim):
                raise LeaseLost()
            rows = (await session.execute(
                select(Notification.title, Notification.body, Notification.data).where(
                    Notification.user_id == self.user_id,
                    Notification.run_id == self.claim.run_id,
                    Notification.kind == "alert",
                )
            )).all()
            if (title[:300], alert.message) in {(t, b) for t, b, _data in rows}:
                return False
            # Which claim sent an alert: a digest of its lease token (not the token).
            claim = hashlib.sha256(str(self.claim.lease_token).encode()).hexdigest()[:12]
            before = [(t, b) for t, b, data in rows
                      if not isinstance(data, dict) or data.get("claim") != claim]
            if not alert.items and _same_words(title[:300], alert.message, before):
                return False
            if alert.items and not await self._first_time(session, alert.items):
                return False
            created = await notifications.notify(
                session=session, user_id=self.user_id,
                key=f"run:{self.claim.run_id}:notify:{alert.call_id}", kind="alert",
                title=title, body=alert.message, channels=instruction.channels.get("kinds", []),
                data={"call_id": alert.call_id, "claim": claim,
                      **({"about": list(alert.items)} if alert.items else {})},
                run_id=self.claim.run_id,
                instruction_id=instruction.id,
            )
        return created is not None

    async def _first_time(self, session: AsyncSession, items: tuple[str, ...]) -> bool:
        """Record the items as alerted about; False if every one of them already was."""
        now = utcnow()
        result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
            insert_ignore(session, AlertedItem, ["instruction_id", "item"]).values([
                {"instruction_id": self.instruction.id, "item": item,
                 "run_id": self.claim.run_id, "created_at": now}
                for item in items
            ])
        )
        return result.rowcount > 0
