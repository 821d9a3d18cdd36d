"""A digest written by one process wakes the delivery sender of another (PostgreSQL NOTIFY)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from app.core.db import transaction
from app.core.runtime import Runtime
from app.delivery.wakeup import DELIVERY_CHANNEL
from tests import factories
from tests.integration.delivery.conftest import SECRET_KEY, add_digest, add_webhook, delivery
from tests.integration.delivery.receivers import WebhookReceiver
from tests.integration.processes import command, pilotlight_env, start, stop, stopped_cleanly
from tests.integration.runs.test_crashes import eventually

pytestmark = pytest.mark.slow


async def test_a_worker_polling_once_a_minute_sends_a_digest_written_elsewhere_at_once(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path,
    receiver: WebhookReceiver,
) -> None:
    if not is_postgres:
        pytest.skip("on SQLite only senders in the writing process are woken; others poll")
    user, _ = await factories.user_with_token(runtime)
    _webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    env = pilotlight_env(
        data_dir=tmp_path / "data", database_url=database_url,
        PILOTLIGHT_DELIVERY_POLL_SECONDS="60", PILOTLIGHT_SECRET_KEYS=SECRET_KEY,
        PILOTLIGHT_WEBHOOK_ALLOW_PRIVATE="true",
    )
    log = tmp_path / "worker.log"
    worker = start(command("worker"), env, tmp_path, log)
    try:
        async def listening() -> bool:
            async with transaction(runtime.sessionmaker) as session:
                found = await session.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = :listen"
                ), {"listen": f'LISTEN "{DELIVERY_CHANNEL}"'})
                return bool(found.scalar_one())

        await eventually(listening, 30, "the worker's sender to LISTEN")
        await asyncio.sleep(1)  # its claim on connecting (nothing due) is done; it sleeps
        notification_id = await add_digest(runtime, user, channels=("webhook",))

        async def sent() -> bool:
            return (await delivery(runtime, notification_id, "webhook")).status == "sent"

        await eventually(sent, 30, "the NOTIFY to wake the sender (its poll is 60 s away)")
    finally:
        assert stopped_cleanly(stop(worker), log), log.read_text()
    assert receiver.processed == 1
