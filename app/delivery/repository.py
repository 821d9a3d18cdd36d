"""The outbox in SQL: claim due deliveries, then mark them sent, retried or failed (fenced).

A claim adds one to `attempts` and pushes `next_attempt_at` a short lease
ahead, so no other sender takes the row meanwhile; if this sender dies, the
row is due again when the lease runs out, and is sent again with the same
idempotency key. Every later write names the attempt it claimed, so a sender
whose lease ran out and was overtaken changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.models import PushSubscription, Webhook
from app.core.db import db_now
from app.delivery.base import Claimed, Job
from app.notifications.models import Delivery, Notification
from app.users.models import User


async def claim(
    *, session: AsyncSession, channels: Collection[str], limit: int, lease_seconds: float
) -> list[Claimed]:
    """Take up to `limit` due pending deliveries of these channels, the longest-waiting first."""
    now = await db_now(session)
    # FOR UPDATE SKIP LOCKED: concurrent senders take disjoint batches on PostgreSQL;
    # SQLite serialises writers (BEGIN IMMEDIATE) instead.
    due = (
        await session.execute(
            select(Delivery.id)
            .where(Delivery.status == "pending", Delivery.next_attempt_at <= now,
                   Delivery.channel.in_(list(channels)))
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).scalars().all()
    if not due:
        return []
    rows = (
        await session.execute(
            update(Delivery)
            .where(Delivery.id.in_(due), Delivery.status == "pending",
                   Delivery.next_attempt_at <= now)
            .values(attempts=Delivery.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=lease_seconds))
            .returning(Delivery.id, Delivery.user_id, Delivery.notification_id, Delivery.channel,
                       Delivery.target, Delivery.idempotency_key, Delivery.attempts)
            .execution_options(synchronize_session=False)
        )
    ).all()
    return [
        Claimed(id=r.id, user_id=r.user_id, notification_id=r.notification_id, channel=r.channel,
                target=r.target, idempotency_key=r.idempotency_key, attempt=r.attempts)
        for r in rows
    ]


async def load(*, session: AsyncSession, claimed: Claimed) -> Job | None:
    """What sending needs; None if the notification or its user is gone."""
    notification = await session.get(Notification, claimed.notification_id)
    user = await session.get(User, claimed.user_id)
    if notification is None or user is None:
        return None
    webhook = subscription = None
    try:
        target_id = uuid.UUID(claimed.target) if claimed.target else None
    except ValueError:
        target_id = None
    if claimed.channel == "webhook" and target_id is not None:
        webhook = (await session.execute(
            select(Webhook).where(Webhook.id == target_id, Webhook.user_id == claimed.user_id)
        )).scalar_one_or_none()
    if claimed.channel == "push" and target_id is not None:
        subscription = (await session.execute(
            select(PushSubscription).where(PushSubscription.id == target_id,
                                           PushSubscription.user_id == claimed.user_id)
        )).scalar_one_or_none()
    return Job(delivery=claimed, notification=notification, user=user, webhook=webhook,
               push_subscription=subscription)


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
    now = await db_now(session)
    return await _fenced(session, claimed, status="sent", sent_at=now, next_attempt_at=now,
                         last_error=None)


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
