"""PostgreSQL LISTEN: turn NOTIFYs from any process into local wake-ups.

One dedicated connection per process listens; if it drops, it reconnects
with backoff, and polling carries on meanwhile, so nothing depends on a
notification arriving.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)


def asyncpg_dsn(url: URL) -> str:
    """The URL as asyncpg's DSN: it reads `sslmode` as libpq does, but would send
    `connect_timeout` to the server as a setting (see `connect_timeout`)."""
    query = {k: v for k, v in url.query.items() if k != "connect_timeout"}
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


def connect_timeout(url: URL) -> float:
    """The URL's `connect_timeout` (seconds), else asyncpg's default of 60."""
    value = url.query.get("connect_timeout")
    return float(value) if isinstance(value, str) else 60.0


def _set_on_call(event: asyncio.Event) -> Callable[[Any], None]:
    def set_event(_connection: Any) -> None:
        event.set()

    return set_event


class PgListener:
    """LISTEN on some channels and call a callback for each notification."""

    def __init__(
        self,
        url: URL,
        channels: dict[str, Callable[[], None]],
        payload_channels: dict[str, Callable[[str], None]] | None = None,
    ) -> None:
        self.dsn = asyncpg_dsn(url)
        self.timeout = connect_timeout(url)
        self.channels = channels
        # Channels whose callback is given each notification's payload.
        self.payload_channels = payload_channels or {}
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            connection: Any = None
            try:
                connection = await asyncpg.connect(self.dsn, timeout=self.timeout)
                lost = asyncio.Event()
                connection.add_termination_listener(_set_on_call(lost))
                for channel, callback in self.channels.items():
                    await connection.add_listener(channel, self._handler(callback))
                for channel, with_payload in self.payload_channels.items():
                    await connection.add_listener(channel, self._payload_handler(with_payload))
                self.connected.set()
                delay = 0.5
                # A notification may have been sent while we were not listening.
                for callback in self.channels.values():
                    callback()
                for with_payload in self.payload_channels.values():
                    with_payload("")
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("LISTEN connection failed (%s); polling meanwhile", exc)
            finally:
                self.connected.clear()
                if connection is not None and not connection.is_closed():
                    await connection.close(timeout=5)
            if not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30)

    @staticmethod
    def _handler(callback: Callable[[], None]) -> Callable[..., None]:
        def handle(_conn: Any, _pid: int, _channel: str, _payload: str) -> None:
            callback()

        return handle

    @staticmethod
    def _payload_handler(callback: Callable[[str], None]) -> Callable[..., None]:
        def handle(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        return handle


# PostgreSQL NOTIFY channel of the in-app event stream; the payload is a user id,
# or empty for "anyone" (a change whose user the writer does not have at hand).
EVENTS_CHANNEL = "pilotlight_events"


async def publish_event(session: AsyncSession, user_id: uuid.UUID | None = None) -> None:
    """Wake the event streams of `user_id` (everyone's if None) when this transaction commits.

    PostgreSQL only: on SQLite the streams poll.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": EVENTS_CHANNEL, "payload": str(user_id) if user_id else ""},
        )
