"""A worker killed between sending a webhook and marking it sent loses nothing, doubles nothing."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from app.core.runtime import Runtime
from tests import factories
from tests.integration.delivery.conftest import SECRET_KEY, add_webhook, deliveries, notifications
from tests.integration.delivery.receivers import WebhookReceiver
from tests.integration.processes import command, pilotlight_env, start, stop, stopped_cleanly
from tests.integration.runs.test_crashes import eventually
from tests.integration.runs.test_worker import run_now

pytestmark = pytest.mark.slow


async def test_killed_after_sending_the_retry_has_the_same_webhook_id_and_counts_once(
    runtime: Runtime, database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    user, _ = await factories.user_with_token(runtime)
    _webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    instruction = await factories.instruction(runtime, user, channels=["in_app", "webhook"])
    await run_now(runtime, instruction)
    env = pilotlight_env(
        data_dir=tmp_path / "data", database_url=database_url,
        PILOTLIGHT_WORKER_POLL_SECONDS="0.2", PILOTLIGHT_DELIVERY_POLL_SECONDS="0.2",
        PILOTLIGHT_DELIVERY_CLAIM_SECONDS="2", PILOTLIGHT_DELIVERY_TIMEOUT_SECONDS="1",
        PILOTLIGHT_SECRET_KEYS=SECRET_KEY, PILOTLIGHT_WEBHOOK_ALLOW_PRIVATE="true",
    )

    victim_log = tmp_path / "victim.log"
    victim = start(command("worker"), {**env, "PILOTLIGHT_TEST_FAULT": "kill:delivery_sent"},
                   tmp_path, victim_log)
    assert victim.wait(60) == -signal.SIGKILL, victim_log.read_text()
    assert "test fault: kill at delivery_sent" in victim_log.read_text()
    [digest] = [n for n in await notifications(runtime, user) if n.kind == "digest"]
    [hook] = [d for d in await deliveries(runtime, digest.id) if d.channel == "webhook"]
    assert (hook.status, hook.attempts) == ("pending", 1)  # sent, but not marked
    assert len(receiver.received) == 1

    survivor_log = tmp_path / "survivor.log"
    survivor = start(command("worker"), env, tmp_path, survivor_log)
    try:
        async def sent() -> bool:
            rows = await deliveries(runtime, digest.id)
            return [d.status for d in rows if d.channel == "webhook"] == ["sent"]

        await eventually(sent, 30, "the survivor to send the delivery again")
    finally:
        assert stopped_cleanly(stop(survivor), survivor_log), survivor_log.read_text()

    rows = [d for d in await deliveries(runtime, digest.id) if d.channel == "webhook"]
    assert len(rows) == 1  # the same Delivery, never a second one
    assert (rows[0].status, rows[0].attempts) == ("sent", 2)
    assert len(receiver.received) == 2  # sent twice at most ...
    assert {r.headers["webhook-id"] for r in receiver.received} == {rows[0].idempotency_key}
    assert all(r.verified for r in receiver.received), [r.error for r in receiver.received]
    assert receiver.processed == 1  # ... and counted once
