from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from app.core.db import utcnow
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.core.pagination import PAGE_LIMIT, InvalidCursor, encode_cursor
from app.notifications import service
from app.notifications.models import Delivery, Notification
from app.notifications.schemas import DeliveryOut, NotificationOut, NotificationPage
from app.notifications.service import NotificationNotFound
from app.users.deps import CurrentUser
from app.users.service import InvalidToken

router = APIRouter(
    prefix="/notifications", tags=["notifications"], responses=error_responses(InvalidToken)
)


class MarkedRead(BaseModel):
    marked: int


def _out(notification: Notification, deliveries: list[Delivery]) -> NotificationOut:
    return NotificationOut(
        id=notification.id, kind=notification.kind, title=notification.title,
        body=notification.body, data=notification.data, run_id=notification.run_id,
        instruction_id=notification.instruction_id, created_at=notification.created_at,
        read_at=notification.read_at,
        deliveries=[DeliveryOut.model_validate(d) for d in deliveries],
    )


@router.get("", response_model=NotificationPage, responses=error_responses(InvalidCursor))
async def list_notifications(
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    unread: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description=PAGE_LIMIT)] = 50,
) -> NotificationPage:
    """The in-app feed, newest first."""
    limit = min(limit, runtime.settings.api_page_size_max)
    rows, deliveries, more = await service.list_page(
        session=session, user=user, unread=unread, cursor=cursor, limit=limit
    )
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return NotificationPage(
        items=[_out(n, deliveries[n.id]) for n in rows], next_cursor=next_cursor
    )


@router.post(
    "/{notification_id}/read", response_model=NotificationOut,
    responses=error_responses(NotificationNotFound),
)
async def mark_notification_read(
    notification_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> NotificationOut:
    notification, deliveries = await service.mark_read(
        session=session, user=user, notification_id=notification_id
    )
    return _out(notification, deliveries)


@router.post("/read", response_model=MarkedRead)
async def mark_all_notifications_read(user: CurrentUser, session: SessionDep) -> MarkedRead:
    """Mark everything in the feed up to now as read."""
    marked = await service.mark_all_read(session=session, user=user, before=utcnow())
    return MarkedRead(marked=marked)
