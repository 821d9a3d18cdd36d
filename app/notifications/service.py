"""Notifications (the in-app feed) and their outbox rows, one per channel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels import push as push_service
from app.channels import service as channels_service
from app.core.db import insert_ignore, utcnow
from app.core.errors import NotFound
from app.core.pagination import newest_first
from app.core.pubsub import publish_event
from app.delivery import wakeup as delivery_wakeup
from app.notifications.models import Delivery, Notification
from app.users.models import User


class NotificationNotFound(NotFound):
    pass


async def notify(
    *,
    session: AsyncSession,
    user_id: uuid.UUID,
    key: str,
    kind: str,
    title: str,
    body: str,
    channels: Sequence[str],
    data: dict[str, Any] | None = None,
    run_id: uuid.UUID | None = None,
    instruction_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Write a notification and its deliveries once per `key`; None if it already exists.

    The in-app delivery is the feed row itself, so it is sent at once; the
    other channels wait in the outbox for the delivery sender.
    """
    now = utcnow()
    notification_id = uuid.uuid4()
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        insert_ignore(session, Notification, ["user_id", "key"]).values(
            id=notification_id, user_id=user_id, key=key, kind=kind, title=title[:300],
            body=body, data=data or {}, run_id=run_id, instruction_id=instruction_id,
            created_at=now,
        )
    )
    if result.rowcount != 1:
        return None
    outbox = False
    rows: list[dict[str, Any]] = []
    for channel in dict.fromkeys(["in_app", *channels]):
        in_app = channel == "in_app"
        targets = [""]
        if channel == "webhook":
            if channels_service.event_type(kind, run_id) is None:
                continue  # webhooks are not sent this kind of notification
            # One per subscribed webhook. With none, one without a target that fails and
            # so tells the user that nothing received it; but only when they have no
            # webhook at all: not when that was their choice (their webhooks take other
            # events, or they turned them off), nor when a 410 turned them off (they were
            # told once, by the delivery that got the 410).
            found = await channels_service.targets(
                session=session, user_id=user_id, kind=kind, run_id=run_id
            )
            if not found.ids and not found.missing:
                continue
            targets = [str(target) for target in found.ids] or [""]
        elif channel == "push":
            # One per browser subscription; with none, one without a target that fails
            # and tells the user, as for webhooks.
            subscribed = await push_service.targets(session=session, user_id=user_id)
            targets = [str(target) for target in subscribed] or [""]
        for target in targets:
            outbox = outbox or not in_app
            rows.append(dict(
                id=uuid.uuid4(), user_id=user_id, notification_id=notification_id,
                channel=channel, target=target,
                idempotency_key=":".join(filter(None, (str(notification_id), channel, target))),
                status="sent" if in_app else "pending", attempts=1 if in_app else 0,
                next_attempt_at=now, last_error=None, sent_at=now if in_app else None,
                created_at=now,
            ))
    # Core, with the rows as parameters (a cached statement; no unit of work to build for
    # objects nobody reads here).
    await session.execute(insert(cast(Table, Delivery.__table__)), rows)
    if outbox:
        # The event streams and the senders, woken by one statement (two NOTIFYs).
        await delivery_wakeup.announce(session, events_of=user_id)
    else:
        await publish_event(session, user_id)
    return notification_id


async def list_page(
    *, session: AsyncSession, user: User, unread: bool, cursor: str | None, limit: int
) -> tuple[Sequence[Notification], dict[uuid.UUID, list[Delivery]], bool]:
    stmt = select(Notification).where(Notification.user_id == user.id)
    if unread:
        stmt = stmt.where(Notification.read_at.is_(None))
    stmt = newest_first(stmt, Notification.created_at, Notification.id, cursor=cursor, limit=limit)
    rows = (await session.execute(stmt)).scalars().all()
    page = rows[:limit]
    deliveries: dict[uuid.UUID, list[Delivery]] = {n.id: [] for n in page}
    if page:
        found = await session.execute(
            select(Delivery)
            .where(Delivery.user_id == user.id, Delivery.notification_id.in_(deliveries))
            .order_by(Delivery.channel)
        )
        for delivery in found.scalars():
            deliveries[delivery.notification_id].append(delivery)
    return page, deliveries, len(rows) > limit


async def mark_read(
    *, session: AsyncSession, user: User, notification_id: uuid.UUID
) -> tuple[Notification, list[Delivery]]:
    notification = (
        await session.execute(
            select(Notification).where(
                Notification.id == notification_id, Notification.user_id == user.id
            )
        )
    ).scalar_one_or_none()
    if notification is None:
        raise NotificationNotFound(f"notification {notification_id} not found")
    if notification.read_at is None:
        notification.read_at = utcnow()
        await session.flush()
    deliveries = (
        await session.execute(
            select(Delivery).where(Delivery.notification_id == notification.id)
            .order_by(Delivery.channel)
        )
    ).scalars().all()
    return notification, list(deliveries)


async def mark_all_read(*, session: AsyncSession, user: User, before: datetime) -> int:
    result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        update(Notification)
        .where(Notification.user_id == user.id, Notification.read_at.is_(None),
               Notification.created_at <= before)
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount
