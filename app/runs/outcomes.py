"""Successful outcomes of many runs in one transaction (the executor's hot path).

Runs that end together are written together. On PostgreSQL that is one statement
(app/runs/outcomes_sql.py). Elsewhere (SQLite) one transaction: their instructions are
locked in one statement (in id order, so two workers cannot deadlock), their outcomes
written fenced row by row by each claim's lease token (`queue.finish_many`), the
instructions moved on, and their digests' notifications and in-app deliveries inserted
with one statement each. A run whose lease was lost gets `LeaseLost`; the others are
written. The effects are those of `RunExecutor._succeeded_one`, which a lone run (on
SQLite), or every run of a batch that failed as a whole, still goes through.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.agent.runner import AgentOutcome
from app.core.db import after_commit, insert_ignore, transaction, utcnow
from app.core.pubsub import EVENTS_CHANNEL
from app.delivery import wakeup as delivery_wakeup
from app.instructions.models import Instruction
from app.notifications import service as notifications
from app.notifications.models import Delivery, Notification
from app.runs import metrics, queue
from app.runs.context import RunContext, advance, later
from app.runs.steps import LeaseLost, without_nul

if TYPE_CHECKING:
    from app.runs.execute import RunExecutor

# Channels whose deliveries need no look-up (webhooks and push have one per target).
_PLAIN_CHANNELS = frozenset({"in_app", "email"})

_PUBLISH_TO_USERS = text(
    "SELECT pg_notify(:channel, u) FROM unnest(CAST(:users AS text[])) AS u"
).bindparams(bindparam("users", type_=ARRAY(String())))


@dataclass
class Success:
    claim: queue.Claim
    ctx: RunContext
    outcome: AgentOutcome


@dataclass
class _Note:
    user_id: uuid.UUID
    key: str
    title: str
    body: str
    channels: list[str]
    data: dict[str, Any]
    run_id: uuid.UUID
    instruction_id: uuid.UUID


async def write_successes(
    executor: RunExecutor, items: list[Success]
) -> list[None | BaseException]:
    """Each item's answer: None once written, or the error its run's caller gets."""
    if len(items) > 1 or executor.writes is not None:
        try:
            return await _write_many(executor, items)
        except Exception:
            pass  # one run's trouble must not fail the others: each on its own
    answers: list[None | BaseException] = []
    for item in items:
        try:
            await executor._succeeded_one(item.claim, item.ctx, item.outcome)
            answers.append(None)
        except Exception as exc:
            answers.append(exc)
    return answers


async def _write_many(executor: RunExecutor, items: list[Success]) -> list[None | BaseException]:
    if executor.writes is not None:
        from app.runs.outcomes_sql import write_postgresql

        return await write_postgresql(executor, items)
    now = utcnow()
    answers: list[None | BaseException] = [None] * len(items)
    async with transaction(executor.sessionmaker) as session:
        # Locked first: a delete that commits meanwhile waits, or is seen here.
        ids = sorted({item.ctx.instruction.id for item in items})
        locked = {
            instruction.id: instruction
            for instruction in (
                await session.execute(
                    select(Instruction).where(Instruction.id.in_(ids))
                    .order_by(Instruction.id).with_for_update()
                )
            ).scalars()
        }
        live: list[int] = []
        for n, item in enumerate(items):
            if locked[item.ctx.instruction.id].deleted_at is not None:
                if not await queue.finish(
                    session=session, claim=item.claim, status="cancelled", finished_at=now,
                    error="the instruction was deleted while the run was running",
                    **queue.spent(executor._spent(item.ctx)),
                ):
                    answers[n] = LeaseLost()
            else:
                live.append(n)
        digests = {n: _digest(items[n].outcome) for n in live}
        written = await queue.finish_many(
            session=session,
            outcomes=[(items[n].claim, _values(executor, items[n], digests[n], now)) for n in live],
        )
        done = [n for n in live if items[n].claim.run_id in written]
        for n in live:
            if items[n].claim.run_id not in written:
                answers[n] = LeaseLost()
        if not done:
            return answers
        executor.fault("digest_written")
        notes: list[_Note] = []
        for n in done:
            item = items[n]
            after_commit(session, metrics.RUNS_FINISHED.labels(item.outcome.status).inc)
            if item.ctx.run.reason == "preview":
                continue  # the digest is on the run; nothing else changes
            notes += _move_on(item, locked[item.ctx.instruction.id], digests[n], now)
        if notes:
            await _notify(session, notes)
            executor.fault("notification_written")
    executor.fault("outcome_committed")
    return answers


def _digest(outcome: AgentOutcome) -> dict[str, Any] | None:
    # Model text: PostgreSQL cannot store a NUL in it.
    return without_nul(outcome.digest.model_dump(mode="json")) if outcome.digest else None


def _values(
    executor: RunExecutor, item: Success, digest: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    outcome = item.outcome
    error = (
        "Nothing dated in this window."
        if item.ctx.run.reason == "preview" and outcome.status == "skipped"
        else outcome.skipped_reason
    )
    return {
        "status": outcome.status, "finished_at": now, "result": digest,
        "model": executor.llm.name, "error": error,
        "interaction_ids": {"ids": outcome.interaction_ids}, "agent_state": None,
        **executor._spent(item.ctx),  # added to the run's
    }


def _move_on(
    item: Success, instruction: Instruction, digest: dict[str, Any] | None, now: datetime
) -> list[_Note]:
    """The instruction after its run (as `_succeeded_one`), and the digest to tell."""
    ctx, outcome = item.ctx, item.outcome
    instruction.cursor = advance(instruction.cursor, outcome.cursors, ctx.cursors_from)
    instruction.covered_until = later(instruction.covered_until, ctx.covered_until())
    instruction.last_run_at = now
    instruction.consecutive_failures = 0
    if outcome.digest is None:
        return []
    return [_note(item, instruction, digest)]


def _note(item: Success, instruction: Instruction, digest: dict[str, Any] | None) -> _Note:
    assert item.outcome.digest is not None
    return _Note(
        user_id=item.ctx.user.id, key=f"run:{item.claim.run_id}:digest",
        title=instruction.title, body=without_nul(item.outcome.digest.summary),
        channels=instruction.channels.get("kinds", []), data={"digest": digest},
        run_id=item.claim.run_id, instruction_id=instruction.id,
    )


async def _notify(session: AsyncSession, notes: Sequence[_Note]) -> None:
    """`notifications.notify(kind="digest")` for each note, the plain ones in bulk.

    A note to webhooks or push needs their targets looked up: it goes through `notify`.
    """
    plain = [note for note in notes if set(note.channels) <= _PLAIN_CHANNELS]
    for note in notes:
        if not set(note.channels) <= _PLAIN_CHANNELS:
            await notifications.notify(
                session=session, user_id=note.user_id, key=note.key, kind="digest",
                title=note.title, body=note.body, channels=note.channels, data=note.data,
                run_id=note.run_id, instruction_id=note.instruction_id,
            )
    if not plain:
        return
    now = utcnow()
    rows = [
        {
            "id": uuid.uuid4(), "user_id": note.user_id, "key": note.key, "kind": "digest",
            "title": note.title[:300], "body": note.body, "data": note.data,
            "run_id": note.run_id, "instruction_id": note.instruction_id, "created_at": now,
        }
        for note in plain
    ]
    # Once per key, as `notify`: a note whose key exists already tells nobody again.
    new = set(
        (
            await session.execute(
                insert_ignore(session, Notification, ["user_id", "key"])
                .returning(Notification.id),
                rows,
            )
        ).scalars()
    )
    deliveries = []
    for row, note in zip(rows, plain, strict=True):
        if row["id"] not in new:
            continue
        for channel in dict.fromkeys(["in_app", *note.channels]):
            in_app = channel == "in_app"
            deliveries.append({
                "id": uuid.uuid4(), "user_id": note.user_id, "notification_id": row["id"],
                "channel": channel, "target": "", "idempotency_key": f"{row['id']}:{channel}",
                "status": "sent" if in_app else "pending", "attempts": 1 if in_app else 0,
                "sent_at": now if in_app else None, "next_attempt_at": now, "created_at": now,
                "last_error": None,
            })
    if deliveries:
        await session.execute(insert(Delivery), deliveries)
        if any(d["status"] == "pending" for d in deliveries):
            await delivery_wakeup.announce(session)  # senders wake once this commits
    users = sorted({str(note.user_id) for row, note in zip(rows, plain, strict=True)
                    if row["id"] in new})
    if users and session.get_bind().dialect.name == "postgresql":
        # `publish_event(session, user_id)` for every user told, in one statement.
        await session.execute(_PUBLISH_TO_USERS, {"channel": EVENTS_CHANNEL, "users": users})
