"""Engine, sessions and the declarative base shared by every domain.

Transactions live at the edge: a request (`get_session`) or a background task
(`transaction`) owns its session and commits or rolls back once; services and
repositories only flush. Callbacks registered with `after_commit` run once the
transaction has committed and are dropped on rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, event, text
from sqlalchemy import util as sa_util
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp on every database (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        # asyncpg decodes timestamptz as an aware datetime in UTC already (from the binary
        # protocol, whatever the session's TimeZone): no call per value, on hot paths
        # that read tens of timestamps per row.
        if dialect.name == "postgresql" and dialect.driver == "asyncpg":
            return None
        return super().result_processor(dialect, coltype)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType}


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


_VERSION_7 = 0x7 << 76
_VARIANT = 0x2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62))
_VERSION_BITS = _VERSION_7 | _VARIANT
_new_uuid = object.__new__
_set = object.__setattr__


def uuid7s(count: int) -> list[uuid.UUID]:
    """`count` time-ordered UUIDs (version 7, RFC 9562): 48 bits of Unix milliseconds,
    then 74 random bits from one read of urandom.

    For the keys of rows written at a high rate (runs): each new key sorts after the
    keys written before it, so its primary-key entry lands on the index's rightmost
    page instead of a random one (fewer pages touched and dirtied per insert). The
    random bits keep keys unguessable; what they reveal is the creation time, which
    the row shows anyway.
    """
    stamp = (time.time_ns() // 1_000_000) << 80
    data = os.urandom(10 * count)
    ids = []
    for i in range(0, 10 * count, 10):
        # What UUID(int=...) ends with, without its argument checks (a third of the
        # cost; a tick makes hundreds): the value is in range by construction.
        value = _new_uuid(uuid.UUID)
        _set(value, "int", (stamp | int.from_bytes(data[i:i + 10])) & _KEEP | _VERSION_BITS)
        _set(value, "is_safe", uuid.SafeUUID.unknown)
        ids.append(value)
    return ids


def uuid7() -> uuid.UUID:
    return uuid7s(1)[0]


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class _RollbackOnClose(sqlite3.Connection):
    """A SQLite connection that ends its transaction when it is closed.

    SQLAlchemy closes a connection whose task was cancelled in the middle of a statement
    (a worker stopping, a lease lost). If that statement's cursor is still alive, in
    a traceback that only the cycle collector frees, `close()` leaves the connection
    open until the cursor goes, with its BEGIN IMMEDIATE still holding the write lock:
    every other writer, in every process, waited out its busy timeout and failed.
    ROLLBACK ends the transaction whatever cursors are still open.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _SQLITE_CONNECTIONS.add(self)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.rollback()
        super().close()


_SQLITE_CONNECTIONS: weakref.WeakSet[_RollbackOnClose] = weakref.WeakSet()


def sqlite_transaction_open() -> bool:
    """Whether a SQLite connection of this process is inside a transaction (so holds,
    with BEGIN IMMEDIATE, the database's write lock)."""
    for connection in list(_SQLITE_CONNECTIONS):
        with contextlib.suppress(sqlite3.Error):
            if connection.in_transaction:
                return True
    return False


def create_engine(url: str, *, pool_size: int = 10, null_pool: bool = False) -> AsyncEngine:
    """Create an engine; SQLite gets WAL, a busy timeout and write-ahead BEGIN IMMEDIATE.

    Its errors never show a statement's parameters (`hide_parameters`): they are logged
    (a failed run, a crashed delivery, a 500) and a run's error is shown to its user and
    sent to their webhooks, and parameters hold mail text, capability URLs and tokens.
    """
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": 30, "factory": _RollbackOnClose},
            hide_parameters=True,
        )
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take the write lock at BEGIN: a deferred transaction that reads
            # and then writes can fail at once with "database is locked" when
            # another connection wrote in between, whatever the busy timeout.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if null_pool:
        return _libpq_parameters(
            create_async_engine(url, poolclass=NullPool, hide_parameters=True)
        )
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True, hide_parameters=True
    )
    if engine.dialect.driver == "asyncpg":
        ping = _one_round_trip_ping(engine.dialect.do_ping)
        engine.dialect.do_ping = ping  # type: ignore[method-assign,assignment]
    return _libpq_parameters(engine)


def _libpq_parameters(engine: AsyncEngine) -> AsyncEngine:
    """PostgreSQL: a URL's libpq parameters, as managed services hand them out
    (`?sslmode=require`, `connect_timeout=10`), given to asyncpg's connect() as the
    arguments it takes (`ssl`, `timeout`): as they are, it refuses them. The URL keeps
    them for the LISTEN connection, whose DSN asyncpg reads as libpq does."""
    if engine.dialect.driver != "asyncpg":
        return engine

    @event.listens_for(engine.sync_engine, "do_connect")
    def _translate(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        if "sslmode" in cparams:
            cparams["ssl"] = cparams.pop("sslmode")
        if "connect_timeout" in cparams:
            cparams["timeout"] = float(cparams.pop("connect_timeout"))

    return engine


# SQLAlchemy 2.1 calls it `await_`; `await_only`, the 2.0 name, is to go in 2.2.
_await: Callable[[Any], Any] = getattr(sa_util, "await_", None) or sa_util.await_only


def _one_round_trip_ping(dialect_ping: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """The pool's check on checkout, as one `SELECT 1` in the simple query protocol.

    The asyncpg dialect sends it as BEGIN, a prepared `;` and ROLLBACK (for pgbouncer's
    transaction mode, where a prepared statement outside a transaction can fail): three
    round trips before every checkout's own work, every API request's. A simple query
    prepares nothing, so one does (`;` alone is an empty query, whose answer asyncpg's
    simple protocol cannot read). Errors go through the dialect's own translation, so
    the pool still tells a dropped connection (reconnect) from another error (raise).
    Should SQLAlchemy's adapted connection change its insides, the dialect's ping is used.
    """

    def ping(adapted: Any) -> bool:
        connection = getattr(adapted, "_connection", None)
        translate = getattr(adapted, "_handle_exception", None)
        if connection is None or translate is None:
            return dialect_ping(adapted)
        try:
            _await(connection.execute("SELECT 1"))
        except Exception as error:
            translate(error)
        return True

    return ping


class DatabaseUnreachable(Exception):
    """The database cannot be connected to: one line, with its URL's password hidden."""

    def __init__(self, url: str | URL, cause: BaseException) -> None:
        parsed = make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        reason = _reason(cause)
        if parsed.password:  # in case a driver ever repeats it
            reason = reason.replace(str(parsed.password), "***")
        super().__init__(f"cannot reach the database at {shown}: {reason}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig  # the driver's own message, without SQLAlchemy's decoration
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running, on that host and port?)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def ensure_reachable(engine: AsyncEngine) -> None:
    """Connect once, or raise `DatabaseUnreachable` saying why."""
    try:
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            # Opened with sqlite3 first: when aiosqlite fails to connect, its worker thread
            # can outlive the event loop of a command that then exits, and print a
            # traceback of its own ("Event loop is closed") after our one line.
            await asyncio.to_thread(_open_sqlite, database)
        async with engine.connect():
            pass
    except Exception as exc:  # whatever stops the connection is the answer
        raise DatabaseUnreachable(engine.url, exc) from exc


def _open_sqlite(database: str) -> None:
    sqlite3.connect(database, timeout=30).close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def db_now(session: AsyncSession) -> datetime:
    """The database's clock: leases and due times are judged by it, not by the worker's.

    SQLite runs in this process, so its clock is this machine's.
    """
    if session.get_bind().dialect.name == "postgresql":
        value = (await session.execute(text("SELECT clock_timestamp()"))).scalar_one()
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    return utcnow()


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's transaction has committed; drop it on rollback."""
    session.info.setdefault("after_commit", []).append(callback)


async def commit(session: AsyncSession) -> None:
    """Commit, then run the callbacks queued with `after_commit`."""
    await session.commit()
    for callback in session.info.pop("after_commit", []):
        callback()


@asynccontextmanager
async def transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A task's unit of work: commit on success, roll back on error."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            session.info.pop("after_commit", None)
            await session.rollback()
            raise
        await commit(session)


def insert_ignore(session: AsyncSession, model: type[Base], conflict: list[str]) -> Any:
    """An INSERT that does nothing when a row with the same unique key exists."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model).on_conflict_do_nothing(index_elements=conflict)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model).on_conflict_do_nothing(index_elements=conflict)
