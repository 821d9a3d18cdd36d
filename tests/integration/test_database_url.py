"""PostgreSQL URLs as managed services hand them out: libpq's `sslmode` and
`connect_timeout` reach asyncpg as the arguments it takes, for the pool and for LISTEN."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.core.db import create_engine
from app.core.pubsub import PgListener


@pytest.fixture
def postgres_url(database_url: str, is_postgres: bool) -> str:
    if not is_postgres:
        pytest.skip("libpq's parameters are PostgreSQL's")
    return database_url


def with_query(url: str, query: str) -> str:
    return Settings(_env_file=None, database_url=f"{url}?{query}").database_url  # type: ignore[call-arg]


@pytest.mark.parametrize("null_pool", [False, True])
async def test_sslmode_and_connect_timeout_reach_asyncpg(
    postgres_url: str, null_pool: bool
) -> None:
    engine = create_engine(with_query(postgres_url, "sslmode=prefer&connect_timeout=5"),
                           null_pool=null_pool)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
    # Taken, not dropped: this server has no TLS, so a connection that must use it fails.
    engine = create_engine(with_query(postgres_url, "sslmode=require"), null_pool=null_pool)
    try:
        with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()


async def test_the_listen_connection_reads_them_too(postgres_url: str) -> None:
    heard = asyncio.Event()
    url = make_url(with_query(postgres_url, "sslmode=prefer&connect_timeout=5"))
    listener = PgListener(url, {"pilotlight_url_test": lambda: heard.set()})
    stop = asyncio.Event()
    listening = asyncio.create_task(listener.run(stop))
    engine = create_engine(str(url.render_as_string(hide_password=False)), null_pool=True)
    try:
        async with asyncio.timeout(10):
            await listener.connected.wait()
            heard.clear()  # told once on connecting, for what came before it listened
            async with engine.connect() as connection:
                await connection.execute(text("NOTIFY pilotlight_url_test"))
                await connection.commit()
            await heard.wait()
    finally:
        stop.set()
        await listening
        await engine.dispose()
