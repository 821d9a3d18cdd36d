"""An idle event stream, served in this process so that its statements can be counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app.core.runtime import Runtime
from app.events import router as events_router
from app.main import create_app
from tests import factories
from tests.integration.api.helpers import add_notification
from tests.integration.events.test_events import EVENTS, WAIT, Stream
from tests.integration.processes import free_port
from tests.integration.serving import serving

pytestmark = pytest.mark.slow


@asynccontextmanager
async def served(runtime: Runtime) -> AsyncIterator[str]:
    """The app on a real uvicorn server on 127.0.0.1; yields its base URL."""
    async with serving(create_app(runtime), free_port()) as base:
        yield base


async def test_an_idle_stream_checks_its_sign_in_without_reading_events(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, is_postgres: bool
) -> None:
    # Sign-in checks come often; the fallback poll never comes within the test.
    monkeypatch.setattr(events_router, "CHECK_SECONDS", 0.05)
    monkeypatch.setattr(events_router, "POLL_SECONDS", 3600.0)
    monkeypatch.setattr(events_router, "LISTENING_POLL_SECONDS", 3600.0)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    user, headers = await factories.user_with_token(runtime)
    event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with (
            served(runtime) as base,
            httpx.AsyncClient(base_url=base, timeout=WAIT) as client,
            client.stream("GET", EVENTS, headers=headers) as response,
        ):
            assert response.status_code == 200
            stream = Stream(response)
            assert (await stream.next()).comment == "connected"
            # Idle: let it check its sign-in a few times.
            def checks() -> list[int]:
                return [i for i, s in enumerate(statements) if "FROM api_tokens" in s]

            seen = len(checks())
            while len(checks()) < seen + 3:
                await asyncio.sleep(0.05)  # waiting for the checks to happen, not timing them
            # Between its last checks it read no events: nothing woke it, no poll was due.
            between = statements[checks()[-3] + 1:checks()[-1]]
            assert not [s for s in between if "FROM notifications" in s or "FROM runs" in s], (
                between)
            if is_postgres:
                # Idle is not deaf: NOTIFY wakes it for what is new.
                marker = await add_notification(runtime, user, title="marker")
                assert (await stream.next_event()).data["id"] == str(marker)
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
