"""Wake delivery senders when deliveries are written, instead of waiting for their poll.

`announce(session)` is called in the transaction that writes pending deliveries. Once
it commits, every sender of this process is woken at once (the embedded service on
SQLite, or a worker that wrote a digest); on PostgreSQL a NOTIFY on `DELIVERY_CHANNEL`
also wakes the senders of every other process, which LISTEN. Senders still poll, so a
lost wake-up only delays a delivery by the poll interval.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import after_commit
from app.core.pubsub import EVENTS_CHANNEL

DELIVERY_CHANNEL = "pilotlight_deliveries"

_senders: list[Callable[[], None]] = []


def subscribe(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` when deliveries are committed in this process; returns the unsubscribe."""
    _senders.append(callback)

    def unsubscribe() -> None:
        if callback in _senders:
            _senders.remove(callback)

    return unsubscribe


def wake_here() -> None:
    """Wake this process's senders now (deliveries were committed)."""
    for callback in list(_senders):
        callback()


async def announce(session: AsyncSession, *, events_of: uuid.UUID | None = None) -> None:
    """Wake the senders once this transaction commits (here at once, elsewhere by NOTIFY).

    With `events_of`, the same statement also does what `publish_event(session, events_of)`
    does (wakes that user's event streams): one round trip for both NOTIFYs.
    """
    if session.get_bind().dialect.name == "postgresql":
        if events_of is None:
            await session.execute(text("SELECT pg_notify(:channel, '')"),
                                  {"channel": DELIVERY_CHANNEL})
        else:
            await session.execute(
                text("SELECT pg_notify(:events, :user_id), pg_notify(:channel, '')"),
                {"events": EVENTS_CHANNEL, "user_id": str(events_of),
                 "channel": DELIVERY_CHANNEL})
    if not any(wake_here is c for c in session.info.get("after_commit", [])):
        after_commit(session, wake_here)
