"""The in-app event stream: what is new for a user since a cursor, and wake-ups.

The database is the source of events: notifications (questions are
notifications of kind "question") ordered by (created_at, id), and run status
changes ordered by (updated_at, id). An event's id is the stream's cursor
after it, one position in each sequence, so resuming from `Last-Event-ID` is
a query. On PostgreSQL, writers `pg_notify` the user's id in the same
transaction and one LISTEN connection per process wakes that user's streams;
streams poll as well, so nothing depends on a notification arriving.

A row is stamped before its transaction commits, so it can become visible after
rows stamped later. The stream counts on that delay being under `LOOKBACK`, and
every query looks back that far from the cursor, skipping what was sent. What a
stream guarantees:

- Every notification, and each run's status as of each time it is read, is sent
  once, in order of its timestamp, except that a row committed late comes when it
  commits. A run that changes twice between two reads is sent in its last state.
- A new stream sends what commits after it opened, including rows stamped up to
  `LOOKBACK` before it opened; rows already committed then are the client's (it
  reads the feed for those).
- An event's id also lists (as short digests) the rows the client has that fall
  in the look-back window below that event, so a stream resumed with it sends
  what the client lacks, rows stamped earlier but committed later included, and
  nothing the client had. Only if more than `MAX_LISTED` rows fall in the window
  may the oldest of them come again (an event carries the row's id: clients can
  drop repeats).
- An id of the older form, without that list, still resumes: the rows committed
  in its window by the time of the reconnect count as the client's.
- A row whose commit lags its timestamp by more than `LOOKBACK` may be missed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
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
# At most this many received rows are listed in an event id (8 characters each).
MAX_LISTED = 64
_DIGEST_CHARS = 8
_DIGESTS = re.compile(rf"(?:[A-Za-z0-9_-]{{{_DIGEST_CHARS}}})*")

# What a stream has sent (or counts as the client's): ("n" or "r", row id, timestamp).
Seen = set[tuple[str, uuid.UUID, datetime]]


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
    """Where a stream is: the last notification and the last run change it has passed,
    and the digests of the rows the client has in the look-back window below them
    (None: not known, from a new stream or an id of the older form)."""

    notifications: Position
    runs: Position
    received: tuple[str, ...] | None = None

    def encode(self) -> str:
        value = f"n{self.notifications.encode()}.r{self.runs.encode()}"
        return value if self.received is None else f"{value}.s{''.join(self.received)}"

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            notifications, runs, *rest = value.split(".")
            if notifications[:1] != "n" or runs[:1] != "r" or len(rest) > 1:
                raise ValueError(value)
            received = None
            if rest:
                listed = rest[0]
                if listed[:1] != "s" or not _DIGESTS.fullmatch(listed[1:]):
                    raise ValueError(value)
                received = tuple(
                    listed[i:i + _DIGEST_CHARS] for i in range(1, len(listed), _DIGEST_CHARS)
                )
            return cls(Position.decode(notifications[1:]), Position.decode(runs[1:]), received)
        except (ValueError, OverflowError) as exc:
            raise InvalidEventId(f"Last-Event-ID {value!r} is not an event of this stream") from exc


def _digest(item: tuple[str, uuid.UUID, datetime]) -> str:
    """A short name for a received row, to list it in an event id."""
    kind, row_id, at = item
    raw = f"{kind}:{row_id.hex}:{(at - _EPOCH) // _MICROSECOND}".encode()
    digest = hashlib.blake2b(raw, digest_size=_DIGEST_CHARS * 3 // 4).digest()
    return base64.urlsafe_b64encode(digest).decode()


def _window(position: Position) -> Position:
    """Where the look back below `position` starts."""
    return Position(position.at - LOOKBACK, _NIL)


def _listed(seen: Seen, notifications: Position, runs: Position) -> tuple[str, ...]:
    """The digests of the rows in `seen` inside the look-back windows of these positions,
    the newest `MAX_LISTED`."""
    starts = {"n": _window(notifications), "r": _window(runs)}
    inside = [item for item in seen if _key(Position(item[2], item[1])) > _key(starts[item[0]])]
    inside.sort(key=lambda item: (item[2], item[1]), reverse=True)
    return tuple(_digest(item) for item in inside[:MAX_LISTED])


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
    *, session: AsyncSession, user_id: uuid.UUID, cursor: Cursor, seen: Seen,
    since: Cursor | None = None,
) -> list[Event]:
    """The user's events after `cursor` not in `seen`, oldest first, each carrying the
    cursor after it; they are added to `seen`.

    With `since` (earlier than `cursor`) rows from there on are read too: the look
    back for rows that committed late.
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
        if (kind, row_id, at) in seen:
            continue
        seen.add((kind, row_id, at))
        position = Position(at, row_id)
        last_n, last_r = cursor.notifications, cursor.runs
        if kind == "r":
            last_r = max(last_r, position, key=_key)
        else:
            last_n = max(last_n, position, key=_key)
        cursor = Cursor(last_n, last_r, _listed(seen, last_n, last_r))
        events.append(Event(name, cursor, data))
    return events


async def received_in_window(*, session: AsyncSession, user_id: uuid.UUID, cursor: Cursor) -> Seen:
    """What a stream opening at `cursor` counts as the client's in the look-back window:
    the rows its id lists, or, when it lists none (a new stream, an id of the older
    form), every row committed there by now."""
    seen: Seen = set()
    for kind, model, column, position in (
        ("n", Notification, Notification.created_at, cursor.notifications),
        ("r", Run, Run.updated_at, cursor.runs),
    ):
        rows = await session.execute(
            select(column, model.id).where(
                model.user_id == user_id, _after(column, model.id, _window(position)),
                or_(column < position.at, and_(column == position.at, model.id <= position.id)),
            )
        )
        for at, row_id in rows:
            item = (kind, row_id, at)
            if cursor.received is None or _digest(item) in cursor.received:
                seen.add(item)
    return seen


def _key(position: Position) -> tuple[datetime, uuid.UUID]:
    return position.at, position.id


def lookback(cursor: Cursor) -> Cursor:
    """Where a stream reads from: `LOOKBACK` before its cursor, for rows that committed late."""
    return Cursor(_window(cursor.notifications), _window(cursor.runs))


def prune(seen: Seen, cursor: Cursor) -> None:
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
