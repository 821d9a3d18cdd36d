"""Keyset pagination: newest first, with an opaque cursor of (created_at, id)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from app.core.encoding import unbase64url
from app.core.errors import BadRequest

T = TypeVar("T", bound=Any)
# The `limit` parameter of the list endpoints, as the OpenAPI document tells it.
PAGE_LIMIT = (
    "Items per page, 1 to 1000. A value above PILOTLIGHT_API_PAGE_SIZE_MAX (200 by "
    "default) gets that many; follow next_cursor for the rest."
)


class InvalidCursor(BadRequest):
    pass


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = unbase64url(cursor).decode()
        stamp, row_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("cursor timestamp without a UTC offset")
        # In UTC as the columns hold it; past year 9999 or before year 1 it overflows.
        return created_at.astimezone(UTC), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise InvalidCursor("invalid page cursor") from exc


def newest_first(
    stmt: Select[T],
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[uuid.UUID],
    *,
    cursor: str | None,
    limit: int,
) -> Select[T]:
    """Order newest first and start after `cursor`; fetches limit + 1 to tell if more follow."""
    if cursor:
        stamp, last_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(created_at < stamp, and_(created_at == stamp, row_id < last_id))
        )
    return stmt.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)
