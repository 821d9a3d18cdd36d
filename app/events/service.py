"""The in-app event stream: what is new for a user since a cursor, and wake-ups.

The database is the source of events: notifications (questions are
notifications of kind "question") ordered by (created_at, id), and run status
changes ordered by (updated_at, id). An event's id is the stream's cursor
after it, one position in each sequence, so resuming from `Last-Event-ID` is
just a query. On PostgreSQL, writers `pg_notify` the user's id in the same
transaction and one LISTEN connection per process wakes that user's streams;
streams poll as well, so nothing depends on a notification arriving.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import db_now
from app.core.errors import BadRequest
from app.core.pubsub import EVENTS_CHANNEL, PgListener
from app.core.runtime import Runtime
from app.notifications.models import Notification
from app.runs.models import Run

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NIL = uuid.UUID(int=0)
# A row is stamped before its transaction commits, so it can appear a little
# after rows stamped later; a live stream looks this far back (and skips what
# it already sent) so that such a row is not lost.
LOOKBACK = timedelta(seconds=10)
BATCH = 100


class InvalidEventId(BadRequest):
    pass


@dataclass(frozen=True)
class Position:
    at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        return f"{(self.at - _EPOCH) // _MICROSECOND}_{self.id.hex}"

    @classmethod
    def decode(cls, value: str) -> Position:
        micros, hex_id = value.split("_")
        if int(micros) < 0:  # the stream never had a position before 1970
            raise ValueError(value)
        # OverflowError past the year 9999.
        return cls(_EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex=hex_id))


@dataclass(frozen=True)
class Cursor:
    """Where a stream is: the last notification and the last run change it has passed."""

    notifications: Position
    runs: Position

    def encode(self) -> str:
        return f"n{self.notifications.encode()}.r{self.runs.encode()}"

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            notifications, runs = value.split(".")
            if notifications[:1] != "n" or runs[:1] != "r":
                raise ValueError(value)
            return cls(Position.decode(notifications[1:]), Position.decode(runs[1:]))
        except (ValueError, OverflowError) as exc:
            raise InvalidEventId(f"Last-Event-ID {value!r} is not an event of this stream") from exc


@dataclass(frozen=True)
class Event:
    name: str
    cursor: Cursor
    data: dict[str, Any]

    def encode(self) -> str:
        """The event in SSE wire format."""
        payload = json.dumps(self.data, separators=(",", ":"))
        return f"id: {self.cursor.encode()}\nevent: {self.name}\ndata: {payload}\n\n"


async def start_cursor(*, session: AsyncSession) -> Cursor:
    """A cursor at the database's now: a new stream gets only what happens from here on."""
    now = await db_now(session)
    return Cursor(Position(now, _NIL), Position(now, _NIL))


def _after(column_at: Any, column_id: Any, position: Position) -> Any:
    return or_(column_at > position.at, and_(column_at == position.at, column_id > position.id))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _notification_data(n: Notification) -> dict[str, Any]:
    return {
        "id": str(n.id), "kind": n.kind, "title": n.title, "body": n.body, "data": n.data,
        "run_id": str(n.run_id) if n.run_id else None,
        "instruction_id": str(n.instruction_id) if n.instruction_id else None,
        "created_at": _iso(n.created_at), "read_at": _iso(n.read_at),
    }


async def new_events(
    *, session: AsyncSession, user_id: uuid.UUID, cursor: Cursor, since: Cursor | None = None,
    seen: set[tuple[str, uuid.UUID, datetime]] | None = None,
) -> list[Event]:
    """The user's events after `cursor`, oldest first, each carrying the cursor after it.

    With `since` (earlier than `cursor`) rows from there on are read too, except
    those in `seen`: a live stream's look back for rows that committed late.
    """
    start = since or cursor
    notifications: list[Notification] = []
    position = start.notifications
    while True:  # page through: a look back may hold more than a batch already sent
        page = (
            await session.execute(
                select(Notification)
                .where(Notification.user_id == user_id,
                       _after(Notification.created_at, Notification.id, position))
                .order_by(Notification.created_at, Notification.id)
                .limit(BATCH)
            )
        ).scalars().all()
        notifications.extend(page)
        if len(page) < BATCH:
            break
        position = Position(page[-1].created_at, page[-1].id)
    runs: list[Any] = []
    position = start.runs
    while True:
        rows = (
            await session.execute(
                select(Run.id, Run.instruction_id, Run.status, Run.reason, Run.updated_at)
                .where(Run.user_id == user_id, _after(Run.updated_at, Run.id, position))
                .order_by(Run.updated_at, Run.id)
                .limit(BATCH)
            )
        ).all()
        runs.extend(rows)
        if len(rows) < BATCH:
            break
        position = Position(rows[-1].updated_at, rows[-1].id)
    found: list[tuple[datetime, str, uuid.UUID, dict[str, Any]]] = []
    for n in notifications:
        name = "question" if n.kind == "question" else "notification"
        found.append((n.created_at, name, n.id, _notification_data(n)))
    for r in runs:
        found.append((r.updated_at, "run", r.id, {
            "id": str(r.id), "instruction_id": str(r.instruction_id), "status": r.status,
            "reason": r.reason, "updated_at": _iso(r.updated_at),
        }))
    found.sort(key=lambda row: (row[0], row[2]))
    events = []
    for at, name, row_id, data in found:
        kind = "r" if name == "run" else "n"
        if seen is not None:
            if (kind, row_id, at) in seen:
                continue
            seen.add((kind, row_id, at))
        position = Position(at, row_id)
        if kind == "r":
            cursor = Cursor(cursor.notifications, max(cursor.runs, position, key=_key))
        else:
            cursor = Cursor(max(cursor.notifications, position, key=_key), cursor.runs)
        events.append(Event(name, cursor, data))
    return events


def _key(position: Position) -> tuple[datetime, uuid.UUID]:
    return position.at, position.id


def lookback(cursor: Cursor, floor: Cursor) -> Cursor:
    """Where a live stream reads from: a little before its cursor, never before `floor`.

    `floor` is where the stream started: what is older was the client's before it came.
    """
    return Cursor(
        max(Position(cursor.notifications.at - LOOKBACK, _NIL), floor.notifications, key=_key),
        max(Position(cursor.runs.at - LOOKBACK, _NIL), floor.runs, key=_key),
    )


def prune(seen: set[tuple[str, uuid.UUID, datetime]], cursor: Cursor) -> None:
    """Forget what is older than the look back: it is behind the cursor for good."""
    oldest = min(cursor.notifications.at, cursor.runs.at) - LOOKBACK
    for item in [item for item in seen if item[2] < oldest]:
        seen.discard(item)


class EventHub:
    """Per process: one LISTEN connection (PostgreSQL) fanned out to the open streams."""

    def __init__(self) -> None:
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._listener: PgListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        # Set when the process is stopping: open streams end so that the server can.
        self.closing = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.connected.is_set()

    def start(self, runtime: Runtime) -> None:
        """Listen, once per process, if the database is PostgreSQL."""
        if self._task is not None or runtime.engine.dialect.name != "postgresql":
            return
        self._listener = PgListener(
            runtime.engine.url, {}, payload_channels={EVENTS_CHANNEL: self.wake}
        )
        self._task = asyncio.create_task(self._listener.run(self._stop), name="events-listener")

    def end_streams(self) -> None:
        """End every open stream (the server is stopping); clients reconnect with
        Last-Event-ID, to this server when it is back or to another replica."""
        self.closing.set()
        self.wake("")

    async def close(self) -> None:
        self.end_streams()
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self, payload: str) -> None:
        """Wake the streams of the user in `payload`, or every stream if it names none."""
        try:
            users: Any = [uuid.UUID(payload)] if payload else list(self._waiters)
        except ValueError:
            users = list(self._waiters)
        for user_id in users:
            for event in self._waiters.get(user_id, ()):
                event.set()

    def subscribe(self, user_id: uuid.UUID) -> tuple[asyncio.Event, Callable[[], None]]:
        event = asyncio.Event()
        self._waiters.setdefault(user_id, set()).add(event)

        def unsubscribe() -> None:
            waiters = self._waiters.get(user_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[user_id]

        return event, unsubscribe
