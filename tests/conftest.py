"""Shared fixtures: the network guard, the database (SQLite or TEST_DATABASE_URL), the app.

Every test runs against a real database: a fresh SQLite file, or PostgreSQL
when TEST_DATABASE_URL is set. The schema is built by the real migrations once
per session, and every table is emptied before each test that uses it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.core.migrate import upgrade
from app.core.runtime import Runtime, Wakeups
from app.main import create_app
from app.models import Base

_violations: list[str] = []


def _is_loopback(address: object) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and the like never leave the machine
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a name to resolve: not allowed, it could be anything


def _resolves_locally(host: object) -> bool:
    """A name whose lookup never leaves the machine: none, localhost, or an address."""
    if host is None:
        return True
    name = (host.decode() if isinstance(host, bytes) else str(host)).rstrip(".").lower()
    if name in ("", "localhost") or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False  # a DNS query: it could reach the machine's resolver and beyond
    return True  # a literal address: connecting to it is judged by `connect`


@pytest.fixture(autouse=True)
def _no_external_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any test that opens a connection to an address other than loopback, or that
    looks up a name other than localhost (a DNS query leaves the machine too)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname = socket.gethostbyname
    real_gethostbyname_ex = socket.gethostbyname_ex

    def lookup_guard(host: object) -> None:
        if not _resolves_locally(host):
            _violations.append(f"lookup of {host!r}")
            raise socket.gaierror(socket.EAI_NONAME,
                                  f"test tried to look up {host!r}: only localhost allowed")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        lookup_guard(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host: str) -> str:
        lookup_guard(host)
        return real_gethostbyname(host)

    def gethostbyname_ex(host: str) -> Any:
        lookup_guard(host)
        return real_gethostbyname_ex(host)

    def guard(address: object) -> None:
        if not _is_loopback(address):
            _violations.append(repr(address))
            raise ConnectionRefusedError(f"test tried to reach {address!r}: only loopback allowed")

    def connect(self: socket.socket, address: object) -> None:
        guard(address)
        real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        guard(address)
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyname", gethostbyname)
    monkeypatch.setattr(socket, "gethostbyname_ex", gethostbyname_ex)
    start = len(_violations)
    yield
    # Code under test may swallow the refusal; the test fails all the same.
    assert _violations[start:] == [], (
        f"non-loopback connections or lookups attempted: {_violations[start:]}")


def _database_url(tmp_dir: Path) -> str:
    url = os.environ.get("TEST_DATABASE_URL", "")
    if url:
        return Settings(database_url=url, _env_file=None).effective_database_url  # type: ignore[call-arg]
    return f"sqlite+aiosqlite:///{(tmp_dir / 'test.db').as_posix()}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _database_url(tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


async def _reset_schema(engine: AsyncEngine) -> None:
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    await _reset_schema(engine)
    await upgrade(engine)
    yield engine
    await engine.dispose()


# What holds a lock in the test database, for the error when emptying the tables waits.
_LOCK_HOLDERS = text(
    "SELECT a.pid, a.application_name, a.state, a.xact_start, left(a.query, 200) AS query"
    " FROM pg_stat_activity a WHERE a.datname = current_database()"
    " AND a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL ORDER BY a.xact_start"
)


async def empty_tables(engine: AsyncEngine) -> None:
    tables = [t.name for t in Base.metadata.sorted_tables]
    if engine.dialect.name == "postgresql":
        # TRUNCATE waits for every open transaction on these tables; one left open by
        # an earlier test (a session never closed, a process never stopped) would
        # hang the suite until CI's budget runs out. Fail here instead, naming it.
        try:
            async with engine.begin() as conn:
                await conn.execute(text("SET LOCAL lock_timeout = '30s'"))
                await conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        except DBAPIError as error:
            async with engine.connect() as conn:
                holders = (await conn.execute(_LOCK_HOLDERS)).all()
            raise AssertionError(
                f"emptying the tables waited 30 s on open transactions: {holders}"
            ) from error
        return
    async with engine.begin() as conn:
        for name in reversed(tables):
            await conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=database_url,
        data_dir=tmp_path / "data",
        worker_poll_seconds=0.05,
        scheduler_tick_seconds=0.05,
        worker_retry_base_seconds=0.1,
        timezone="Europe/Berlin",
    )


@pytest.fixture
async def runtime(engine: AsyncEngine, settings: Settings) -> Runtime:
    await empty_tables(engine)
    return Runtime(settings, engine, create_sessionmaker(engine), Wakeups())


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pilotlight.test") as c:
        yield c
