"""A digest written by one process wakes the delivery sender of another (PostgreSQL NOTIFY)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from app.core.db import transaction
from app.core.runtime import Runtime
from app.delivery.sender import DeliverySender
from app.delivery.wakeup import DELIVERY_CHANNEL
from tests import factories
from tests.integration.delivery.conftest import (
    SECRET_KEY,
    add_digest,
    add_webhook,
    delivery,
    with_settings,
)
from tests.integration.delivery.receivers import MailHandler, WebhookReceiver
from tests.integration.processes import command, pilotlight_env, start, stop, stopped_cleanly
from tests.integration.runs.helpers import get_run, make_worker, work_once
from tests.integration.runs.test_crashes import eventually
from tests.integration.runs.test_worker import run_now

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


async def test_a_digest_email_written_by_a_run_wakes_the_sender_of_its_process(
    runtime: Runtime, smtp: tuple[MailHandler, int]
) -> None:
    """The worker writes successful outcomes in batches (not through `notify`); their
    emails must still wake the sender at once, not wait for its poll (60 s here)."""
    runtime = with_settings(runtime, smtp_host="127.0.0.1", smtp_port=smtp[1],
                            smtp_tls="none", delivery_poll_seconds=60)
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["email"])
    sender = DeliverySender(runtime=runtime)
    stop = asyncio.Event()
    sending = asyncio.create_task(sender.run(stop))
    try:
        await asyncio.sleep(0.5)  # its first claim (nothing due) is behind it; it sleeps
        run_id = await run_now(runtime, instruction)
        assert await work_once(make_worker(runtime)) == 1
        assert (await get_run(runtime, run_id)).status == "succeeded"

        async def mailed() -> bool:
            return len(smtp[0].messages) == 1

        await eventually(mailed, 30, "the digest's email (the sender's poll is 60 s away)")
    finally:
        stop.set()
        await sending
