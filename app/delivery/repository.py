"""The outbox in SQL: claim due deliveries, then mark them sent, retried or failed (fenced).

A claim adds one to `attempts` and pushes `next_attempt_at` a short lease
ahead, so no other sender takes the row meanwhile; if this sender dies, the
row is due again when the lease runs out, and is sent again with the same
idempotency key. Every later write names the attempt it claimed, so a sender
whose lease ran out and was overtaken changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import CursorResult, DateTime, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.channels.models import PushSubscription, Webhook
from app.core.db import db_now, utcnow
from app.delivery.base import Claimed, Job
from app.notifications.models import Delivery, Notification
from app.questions.models import Question
from app.questions.service import asked_again
from app.users.models import User

# Where the outbox statements run: a session, or (the sender on PostgreSQL) a connection it
# keeps, in autocommit mode, for statements that are each atomic on their own.
Executor = AsyncSession | AsyncConnection


def _dialect(db: Executor) -> str:
    return db.get_bind().dialect.name if isinstance(db, AsyncSession) else db.dialect.name


def _now(db: Executor) -> Any:
    """The database's clock, read in the statement itself on PostgreSQL (no round trip of
    its own); on SQLite, which runs in this process, this machine's clock."""
    if _dialect(db) == "postgresql":
        return func.statement_timestamp(type_=DateTime(timezone=True))
    return utcnow()


_CLAIMED = (Delivery.id, Delivery.user_id, Delivery.notification_id, Delivery.channel,
            Delivery.target, Delivery.idempotency_key, Delivery.attempts)


async def claim(
    *, session: Executor, channels: Collection[str], limit: int, lease_seconds: float
) -> list[Claimed]:
    """Take up to `limit` due pending deliveries of these channels, the longest-waiting first.

    On PostgreSQL one statement (atomic without a transaction around it): the due rows are
    chosen and locked (`FOR UPDATE SKIP LOCKED`, so concurrent senders take disjoint
    batches) in a MATERIALIZED CTE, evaluated once, and the UPDATE takes exactly those.
    (An UPDATE with the SELECT as a plain subquery could run it again per row, and with
    SKIP LOCKED each run finds other rows, so far more than `limit` would be taken.) SQLite
    serialises writers (BEGIN IMMEDIATE) instead, and runs the SELECT and the UPDATE apart.
    """
    now = _now(session)
    due = (
        select(Delivery.id)
        .where(Delivery.status == "pending", Delivery.next_attempt_at <= now,
               Delivery.channel.in_(list(channels)))
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    take = update(Delivery).values(attempts=Delivery.attempts + 1,
                                   next_attempt_at=now + timedelta(seconds=lease_seconds))
    if _dialect(session) == "postgresql":
        chosen = due.cte("due").prefix_with("MATERIALIZED")
        stmt = take.where(Delivery.id == chosen.c.id, Delivery.status == "pending")
    else:
        ids = (await session.execute(due)).scalars().all()
        if not ids:
            return []
        stmt = take.where(Delivery.id.in_(ids), Delivery.status == "pending")
    rows = (
        await session.execute(
            stmt.returning(*_CLAIMED).execution_options(synchronize_session=False)
        )
    ).all()
    return [
        Claimed(id=r.id, user_id=r.user_id, notification_id=r.notification_id, channel=r.channel,
                target=r.target, idempotency_key=r.idempotency_key, attempt=r.attempts)
        for r in rows
    ]


def _target_id(claimed: Claimed) -> uuid.UUID | None:
    try:
        return uuid.UUID(claimed.target) if claimed.target else None
    except ValueError:
        return None


async def load(*, session: AsyncSession, claimed: Claimed) -> Job | None:
    """What sending needs; None if the notification or its user is gone."""
    return (await load_many(session=session, claims=[claimed]))[claimed.id]


async def load_many(
    *, session: AsyncSession, claims: Sequence[Claimed]
) -> dict[uuid.UUID, Job | None]:
    """What sending each claimed delivery needs, in one query per table (not per delivery);
    None for a delivery whose notification or user is gone."""
    if not claims:
        return {}

    async def by_id(model: Any, ids: set[uuid.UUID], *where: Any) -> dict[uuid.UUID, Any]:
        if not ids:
            return {}
        rows = await session.execute(select(model).where(model.id.in_(ids), *where))
        return {row.id: row for row in rows.scalars()}

    user_ids = {c.user_id for c in claims}
    notifications: dict[uuid.UUID, Notification] = {}
    users: dict[uuid.UUID, User] = {}
    found = await session.execute(
        select(Notification, User).join(User, User.id == Notification.user_id)
        .where(Notification.id.in_({c.notification_id for c in claims}))
    )
    for found_notification, found_user in found:
        notifications[found_notification.id] = found_notification
        users[found_user.id] = found_user
    targets: dict[str, set[uuid.UUID]] = {c.channel: set() for c in claims}
    for c in claims:
        target = _target_id(c)
        if target is not None:
            targets[c.channel].add(target)
    webhooks = await by_id(Webhook, targets.get("webhook", set()), Webhook.user_id.in_(user_ids))
    subscriptions = await by_id(PushSubscription, targets.get("push", set()),
                                PushSubscription.user_id.in_(user_ids))
    asked = {n.id: _question_id(n) for n in notifications.values()}
    questions = await by_id(Question, {q for q in asked.values() if q is not None},
                            Question.user_id.in_(user_ids))
    # A notice of a question whose run was cancelled stands for the repeat a later run
    # asked (merged into it, so never told): it still goes out, and answers the repeat.
    status = {question_id: "open" if await asked_again(session, question) else question.status
              for question_id, question in questions.items()}
    jobs: dict[uuid.UUID, Job | None] = {}
    for c in claims:
        notification, user = notifications.get(c.notification_id), users.get(c.user_id)
        if notification is None or user is None:
            jobs[c.id] = None
            continue
        target = _target_id(c)
        # A target of another user is no target at all.
        webhook = webhooks.get(target) if c.channel == "webhook" and target else None
        if webhook is not None and webhook.user_id != c.user_id:
            webhook = None
        subscription = subscriptions.get(target) if c.channel == "push" and target else None
        if subscription is not None and subscription.user_id != c.user_id:
            subscription = None
        question_id = asked.get(notification.id)
        jobs[c.id] = Job(delivery=c, notification=notification, user=user, webhook=webhook,
                         push_subscription=subscription,
                         question_status=status.get(question_id) if question_id else None)
    return jobs


def _question_id(notification: Notification) -> uuid.UUID | None:
    data = notification.data if isinstance(notification.data, dict) else {}
    try:
        return uuid.UUID(str(data["question_id"])) if data.get("question_id") else None
    except ValueError:
        return None


async def _fenced(session: AsyncSession, claimed: Claimed, **values: Any) -> bool:
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Delivery)
        .where(Delivery.id == claimed.id, Delivery.status == "pending",
               Delivery.attempts == claimed.attempt)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def mark_sent(*, session: AsyncSession, claimed: Claimed) -> bool:
    """Sent, if this claim still holds the delivery."""
    return await mark_sent_many(session=session, claims=[claimed]) == 1


async def mark_sent_many(*, session: Executor, claims: Sequence[Claimed]) -> int:
    """Mark these deliveries sent in one statement, each only if its claim still holds it
    (the same attempt, still pending); returns how many were."""
    if not claims:
        return 0
    now = _now(session)
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Delivery)
        .where(tuple_(Delivery.id, Delivery.attempts).in_([(c.id, c.attempt) for c in claims]),
               Delivery.status == "pending")
        .values(status="sent", sent_at=now, next_attempt_at=now, last_error=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


async def release_many(*, session: AsyncSession, claims: Sequence[Claimed]) -> int:
    """Give back claims that were never sent (a sender stopping): due again at once, and the
    attempt not counted. Fenced like every write: a claim already taken over stays as is."""
    if not claims:
        return 0
    now = await db_now(session)
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Delivery)
        .where(tuple_(Delivery.id, Delivery.attempts).in_([(c.id, c.attempt) for c in claims]),
               Delivery.status == "pending")
        .values(attempts=Delivery.attempts - 1, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


async def retry_later(
    *, session: AsyncSession, claimed: Claimed, delay_seconds: float, reason: str
) -> bool:
    now = await db_now(session)
    return await _fenced(session, claimed, next_attempt_at=now + timedelta(seconds=delay_seconds),
                         last_error=reason[:2000])


async def mark_failed(*, session: AsyncSession, claimed: Claimed, reason: str) -> bool:
    now = await db_now(session)
    return await _fenced(session, claimed, status="failed", next_attempt_at=now,
                         last_error=reason[:2000])
