"""The in-app event stream: what is new for a user since a cursor, and wake-ups.

The database is the source of events: notifications (questions are notifications
of kind "question") and run changes (a new run, a change of its status or reason).
Triggers (migration 0022) stamp each such row with `event_seq`, a number that no
row committed later can come below, once a reader takes only what is below its
watermark:

- PostgreSQL: the id of the writing transaction. Ids are handed out when a
  transaction first writes, not when it commits, so a reader only takes rows below
  its *watermark*, the oldest transaction id still running: every transaction
  below it has ended, so no row can appear there any more.
- SQLite: a counter taken inside the write transaction; SQLite runs one write
  transaction at a time, so the numbers follow commit order, and the watermark is
  the counter's next value.

A stream's cursor is the last row it passed, as (event_seq, kind, id): every row at
or below it is the client's, none above it is (but for the rows it lists that had
committed above the watermark when the stream opened, beside a long transaction), so
resuming from `Last-Event-ID` is one query, whatever the clocks said, however long a
transaction took and however many events there were. What a stream guarantees:

- Every notification, and each run as of each change of its status that it reads,
  is sent once, in event_seq order: the order in which their transactions first
  wrote on PostgreSQL (a row can wait for an older transaction that commits after
  its own), commit order on SQLite; rows of one transaction together. A run that
  changes twice between two reads is sent in its last state.
- A new stream sends what commits after it opened; rows committed before are the
  client's (it reads the feed for those).
- On PostgreSQL, an event waits for every write transaction older than its own to
  end, in any database of the server: a transaction left open delays the stream
  (never loses or repeats an event). Pilotlight's own transactions are short; set
  `idle_in_transaction_session_timeout` against clients that leave one open.
- An id of the older form (positions by timestamp, `n….r…`) still resumes, once:
  the rows stamped after its positions come, then the stream goes on by event_seq.
  A row stamped before those positions that committed after the client left is not
  sent (that form could not tell it from the rows the client had).

On PostgreSQL, writers `pg_notify` the user's id in the same transaction and one
LISTEN connection per process wakes that user's streams; streams poll as well, so
nothing depends on a notification arriving.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import BadRequest
from app.core.pubsub import EVENTS_CHANNEL, PgListener
from app.core.runtime import Runtime
from app.notifications.models import Notification
from app.runs.models import Run

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NIL = uuid.UUID(int=0)
BATCH = 100
# The kinds of row, in the order they sort within one event_seq; "~" is after both.
NOTIFICATIONS, RUNS, PAST = "n", "r", "~"
_MAX_SEQ = 2**63 - 1
_CURSOR = re.compile(r"x(\d{1,19})(?:_([nr])([0-9a-f]{32}))?((?:\.k\d{1,19}[nr][0-9a-f]{32})*)")
_SKIP = re.compile(r"\.k(\d{1,19})([nr][0-9a-f]{32})")
# The older form's list of received rows: digests of 8 characters each.
_DIGESTS = re.compile(r"(?:[A-Za-z0-9_-]{8})*")


class InvalidEventId(BadRequest):
    pass


# A row the client has above a cursor: (event_seq, kind and id).
Skip = tuple[int, str]


def _skip(seq: int, kind: str, row_id: uuid.UUID) -> Skip:
    return seq, f"{kind}{row_id.hex}"


@dataclass(frozen=True)
class Cursor:
    """After this row: the client has every row at or below (event_seq, kind, id), and
    the rows in `skip` above it.

    `skip` lists what had committed above the watermark when the stream opened (a
    transaction older than theirs was still open then): the client has those from
    the feed. It is empty unless a stream opened beside a long transaction, and
    shrinks as the stream passes them.
    """

    seq: int
    kind: str = PAST
    id: uuid.UUID = _NIL
    skip: tuple[Skip, ...] = ()

    def encode(self) -> str:
        value = f"x{self.seq}" if self.kind == PAST else f"x{self.seq}_{self.kind}{self.id.hex}"
        return value + "".join(f".k{seq}{row}" for seq, row in self.skip)

    def past(self, seq: int, kind: str, row_id: uuid.UUID) -> Cursor:
        """The cursor after this row; what it skips below the row is behind it for good."""
        skip = tuple(item for item in self.skip
                     if item[0] >= seq and item != _skip(seq, kind, row_id))
        return Cursor(seq, kind, row_id, skip)


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
class OlderCursor:
    """An event id of the older form: the last notification and the last run change the
    client had, by timestamp (a list of received rows after them is ignored)."""

    notifications: Position
    runs: Position

    def encode(self) -> str:
        return f"n{self.notifications.encode()}.r{self.runs.encode()}"


def decode(value: str) -> Cursor | OlderCursor:
    """The cursor of an event id, of either form."""
    try:
        if match := _CURSOR.fullmatch(value):
            seq, kind, hex_id, listed = match.groups()
            skip = tuple((int(at), row) for at, row in _SKIP.findall(listed))
            if max([int(seq), *(at for at, _ in skip)]) > _MAX_SEQ:
                raise ValueError(value)
            if kind is None:
                return Cursor(int(seq), skip=skip)
            return Cursor(int(seq), kind, uuid.UUID(hex=hex_id), skip)
        notifications, runs, *rest = value.split(".")
        if notifications[:1] != "n" or runs[:1] != "r" or len(rest) > 1:
            raise ValueError(value)
        if rest and (rest[0][:1] != "s" or not _DIGESTS.fullmatch(rest[0][1:])):
            raise ValueError(value)
        return OlderCursor(Position.decode(notifications[1:]), Position.decode(runs[1:]))
    except (ValueError, OverflowError) as exc:
        raise InvalidEventId(f"Last-Event-ID {value!r} is not an event of this stream") from exc


@dataclass(frozen=True)
class Event:
    name: str
    cursor: Cursor | OlderCursor
    data: dict[str, Any]

    def encode(self) -> str:
        """The event in SSE wire format."""
        payload = json.dumps(self.data, separators=(",", ":"))
        return f"id: {self.cursor.encode()}\nevent: {self.name}\ndata: {payload}\n\n"


@dataclass(frozen=True)
class Batch:
    events: list[Event]
    # After the last row read (the last event's, or a row the client had).
    cursor: Cursor
    # Rows of the user were seen above the watermark: they come once the older
    # transactions still running end, which nothing may announce (read again soon).
    held_back: bool


async def watermark(session: AsyncSession) -> int:
    """The lowest event_seq that may still appear: every row below it has committed."""
    if session.get_bind().dialect.name == "postgresql":
        # The oldest transaction id still running (or the next one, if none is).
        statement = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    else:
        statement = "SELECT coalesce((SELECT value FROM event_counter WHERE id = 1), 0) + 1"
    value = (await session.execute(text(statement))).scalar_one()
    return int(value)


async def highest_given(session: AsyncSession) -> int:
    """The highest event_seq this database can have given out by now: on PostgreSQL the
    last transaction id assigned, on SQLite the counter."""
    if session.get_bind().dialect.name == "postgresql":
        statement = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint - 1"
    else:
        statement = "SELECT coalesce((SELECT value FROM event_counter WHERE id = 1), 0)"
    return int((await session.execute(text(statement))).scalar_one())


async def _committed_above(
    session: AsyncSession, user_id: uuid.UUID, below: int, *, older: OlderCursor | None = None
) -> tuple[Skip, ...]:
    """The user's rows at or above `below` that have committed (an older transaction is
    still open), those at or before the positions of `older` if given."""
    skip = []
    for kind, model, column, position in (
        (NOTIFICATIONS, Notification, Notification.created_at,
         older.notifications if older else None),
        (RUNS, Run, Run.updated_at, older.runs if older else None),
    ):
        query = select(model.event_seq, model.id).where(
            model.user_id == user_id, model.event_seq >= below
        )
        if position is not None:
            query = query.where(~_since(column, model.id, position))
        for seq, row_id in await session.execute(query):
            skip.append(_skip(seq, kind, row_id))
    return tuple(sorted(skip))


async def start_cursor(*, session: AsyncSession, user_id: uuid.UUID) -> Cursor:
    """A cursor after every row committed by now: a new stream gets what comes from here on."""
    below = await watermark(session)
    return Cursor(below - 1, skip=await _committed_above(session, user_id, below))


def _after(kind: str, seq_column: Any, id_column: Any, cursor: Cursor) -> Any:
    """Rows of `kind` after `cursor`."""
    if kind < cursor.kind:
        return seq_column > cursor.seq
    if kind > cursor.kind:
        return seq_column >= cursor.seq
    return or_(seq_column > cursor.seq, and_(seq_column == cursor.seq, id_column > cursor.id))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _notification_event(n: Notification, cursor: Cursor | OlderCursor) -> Event:
    return Event("question" if n.kind == "question" else "notification", cursor, {
        "id": str(n.id), "kind": n.kind, "title": n.title, "body": n.body, "data": n.data,
        "run_id": str(n.run_id) if n.run_id else None,
        "instruction_id": str(n.instruction_id) if n.instruction_id else None,
        "created_at": _iso(n.created_at), "read_at": _iso(n.read_at),
    })


def _run_event(r: Any, cursor: Cursor | OlderCursor) -> Event:
    return Event("run", cursor, {
        "id": str(r.id), "instruction_id": str(r.instruction_id), "status": r.status,
        "reason": r.reason, "updated_at": _iso(r.updated_at),
    })


_RUN_COLUMNS = (Run.id, Run.instruction_id, Run.status, Run.reason, Run.updated_at, Run.event_seq)


async def _read(
    session: AsyncSession, user_id: uuid.UUID, cursor: Cursor, below: int
) -> tuple[list[Notification], list[Any], bool]:
    """The user's notifications and run changes after `cursor` and below `below`, each in
    event_seq order, and whether there are rows at or above `below`."""
    held_back = False
    notifications: list[Notification] = []
    after = cursor
    while True:  # page through: a client away for long may have much to catch up on
        page = (
            await session.execute(
                select(Notification)
                .where(Notification.user_id == user_id,
                       _after(NOTIFICATIONS, Notification.event_seq, Notification.id, after))
                .order_by(Notification.event_seq, Notification.id)
                .limit(BATCH)
            )
        ).scalars().all()
        notifications.extend(n for n in page if n.event_seq < below)
        if len(page) < BATCH or page[-1].event_seq >= below:
            held_back |= bool(page) and page[-1].event_seq >= below
            break
        after = Cursor(page[-1].event_seq, NOTIFICATIONS, page[-1].id)
    runs: list[Any] = []
    after = cursor
    while True:
        rows = (
            await session.execute(
                select(*_RUN_COLUMNS)
                .where(Run.user_id == user_id, _after(RUNS, Run.event_seq, Run.id, after))
                .order_by(Run.event_seq, Run.id)
                .limit(BATCH)
            )
        ).all()
        runs.extend(r for r in rows if r.event_seq < below)
        if len(rows) < BATCH or rows[-1].event_seq >= below:
            held_back |= bool(rows) and rows[-1].event_seq >= below
            break
        after = Cursor(rows[-1].event_seq, RUNS, rows[-1].id)
    return notifications, runs, held_back


async def new_events(*, session: AsyncSession, user_id: uuid.UUID, cursor: Cursor) -> Batch:
    """The user's events after `cursor` that can no longer be preceded by another, in
    event_seq order, each carrying the cursor after it."""
    # First the watermark, then the rows: every transaction below it has ended by the
    # time the rows are read, so the read sees all of its rows.
    below = await watermark(session)
    notifications, runs, held_back = await _read(session, user_id, cursor, below)
    found: list[tuple[int, str, uuid.UUID, Notification | Any]] = [
        (n.event_seq, NOTIFICATIONS, n.id, n) for n in notifications
    ] + [(r.event_seq, RUNS, r.id, r) for r in runs]
    found.sort(key=lambda item: item[:3])
    events = []
    for seq, kind, row_id, row in found:
        had = _skip(seq, kind, row_id) in cursor.skip
        cursor = cursor.past(seq, kind, row_id)
        if not had:
            events.append(
                _notification_event(row, cursor) if kind == NOTIFICATIONS
                else _run_event(row, cursor)
            )
    return Batch(events, cursor, held_back)


def _since(column_at: Any, column_id: Any, position: Position) -> Any:
    return or_(column_at > position.at, and_(column_at == position.at, column_id > position.id))


async def resume_older(
    *, session: AsyncSession, user_id: uuid.UUID, older: OlderCursor
) -> tuple[list[Event], Cursor]:
    """For an event id of the older form: the rows stamped after its positions that
    have committed (events with ids of that form, so that resuming from one of them
    works the same), and the cursor to go on from."""
    below = await watermark(session)
    notifications: Sequence[Notification] = (
        await session.execute(
            select(Notification)
            .where(Notification.user_id == user_id, Notification.event_seq < below,
                   _since(Notification.created_at, Notification.id, older.notifications))
            .order_by(Notification.created_at, Notification.id)
        )
    ).scalars().all()
    runs = (
        await session.execute(
            select(*_RUN_COLUMNS)
            .where(Run.user_id == user_id, Run.event_seq < below,
                   _since(Run.updated_at, Run.id, older.runs))
            .order_by(Run.updated_at, Run.id)
        )
    ).all()
    found: list[tuple[datetime, str, uuid.UUID, Any]] = [
        (n.created_at, NOTIFICATIONS, n.id, n) for n in notifications
    ] + [(r.updated_at, RUNS, r.id, r) for r in runs]
    found.sort(key=lambda item: (item[0], item[2]))
    events = []
    cursor = older
    for at, kind, row_id, row in found:
        if kind == NOTIFICATIONS:
            cursor = OlderCursor(Position(at, row_id), cursor.runs)
            events.append(_notification_event(row, cursor))
        else:
            cursor = OlderCursor(cursor.notifications, Position(at, row_id))
            events.append(_run_event(row, cursor))
    return events, Cursor(below - 1, skip=await _committed_above(
        session, user_id, below, older=older
    ))


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
