"""PostgreSQL: the pool's check of a connection on checkout (`pool_pre_ping`), and the
connections each role keeps out of the pool."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import cli
from app.agent.offline import OfflineModel
from app.core.db import create_engine
from app.core.runtime import Runtime
from app.runs.batching import HeldConnection


@pytest.fixture
async def one_connection(database_url: str, is_postgres: bool) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds one connection, so every checkout is that one."""
    if not is_postgres:
        pytest.skip("the ping is asyncpg's; a SQLite connection is a file in this process")
    engine = create_engine(database_url, pool_size=1)
    try:
        yield engine
    finally:
        await engine.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_checkout_checks_the_connection_in_one_round_trip(
    one_connection: AsyncEngine,
) -> None:
    engine = one_connection
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    sent: list[str] = []

    def record(query: Any) -> None:
        sent.append(query.query.strip())

    raw.add_query_logger(record)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 42"))
            await connection.rollback()
    finally:
        raw.remove_query_logger(record)
    # The ping, then the work's BEGIN and its rollback (the logger does not see what
    # SQLAlchemy runs as a prepared statement, the SELECT 42). The dialect's own ping is
    # BEGIN, `;` and ROLLBACK: two round trips more on every checkout of every request.
    assert sent == ["SELECT 1", "BEGIN;", "ROLLBACK;"]


async def test_a_connection_the_server_dropped_is_replaced_on_checkout(
    one_connection: AsyncEngine, engine: AsyncEngine
) -> None:
    first = await backend_pid(one_connection)
    async with engine.connect() as other:  # as a server restart or an idle timeout would
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    # The ping finds it gone: the pool connects again and the work goes through.
    second = await backend_pid(one_connection)
    assert second != first


def _held(runtime: Runtime) -> list[HeldConnection]:
    """The HeldConnections built on the runtime's engine."""
    return [
        held for held in gc.get_objects()
        if isinstance(held, HeldConnection) and held.engine is runtime.engine
    ]


@pytest.mark.parametrize(
    ("scheduler", "worker", "keeps"),
    [
        pytest.param(False, True, cli.WORKER_KEEPS, id="worker"),
        pytest.param(True, False, cli.SCHEDULER_KEEPS, id="scheduler"),
        pytest.param(True, True, cli.WORKER_KEEPS + cli.SCHEDULER_KEEPS, id="serve"),
    ],
)
async def test_the_pool_minimum_counts_the_connections_each_role_keeps(
    runtime: Runtime, is_postgres: bool, scheduler: bool, worker: bool, keeps: int
) -> None:
    # The CLI refuses a pool smaller than a role's kept connections and one more: a loop
    # that keeps another connection must raise its role's count, or that role's other
    # work waits for a connection that never comes.
    before = _held(runtime)  # earlier tests' loops on this session's engine
    loops = cli._loops(runtime, scheduler=scheduler, worker=worker, llm=OfflineModel())
    kept = sum(
        len(held._connections) for held in _held(runtime)
        if not any(held is earlier for earlier in before)
    )
    assert kept == (keeps if is_postgres else 0)
    assert loops
