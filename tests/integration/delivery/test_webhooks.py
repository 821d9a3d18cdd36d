"""Webhook deliveries to a real receiver on 127.0.0.1 that verifies Standard Webhooks signatures."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy import text as sql
from standardwebhooks.webhooks import Webhook as StandardWebhook

from app.channels import service as channels
from app.channels.models import Webhook
from app.channels.schemas import WebhookUpdate
from app.cli import _setup_logging
from app.core.crypto import secret_box
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.delivery.sender import DeliverySender
from app.delivery.webhooks import WebhookChannel
from app.notifications.models import Notification
from app.notifications.service import notify
from app.questions import service as questions
from app.runs.models import Run
from app.users.models import User
from tests import factories
from tests.integration.api.helpers import add_question, add_run
from tests.integration.delivery.conftest import (
    add_digest,
    add_webhook,
    deliveries,
    delivery,
    notifications,
    send_until_settled,
    with_settings,
)
from tests.integration.delivery.receivers import WebhookReceiver
from tests.integration.processes import free_port

DIGEST = {"summary": "All quiet.", "sections": [], "action_items": [], "notes": [],
          "model": "pilotlight-offline", "covers": {"start": None, "end": "2026-11-23T08:00:00Z"}}


async def _webhook(runtime: Runtime, webhook_id: uuid.UUID) -> Webhook:
    async with transaction(runtime.sessionmaker) as session:
        found = await session.get(Webhook, webhook_id)
        assert found is not None
        return found


async def test_a_digest_is_posted_signed_and_verified_by_an_independent_implementation(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, _ = await factories.user_with_token(runtime)
    webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)

    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    sent = next(d for d in rows if d.channel == "webhook")
    assert (sent.status, sent.attempts, sent.target) == ("sent", 1, str(webhook.id))
    assert sent.idempotency_key == f"{notification_id}:webhook:{webhook.id}"

    [request] = receiver.received
    assert request.verified, request.error
    assert request.path == "/hook"
    assert request.headers["webhook-id"] == sent.idempotency_key
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    body = request.json
    assert body["type"] == "digest.created"
    assert body["data"]["notification_id"] == str(notification_id)
    assert body["data"]["title"] == "Morning digest"
    assert body["data"]["digest"]["summary"] == "All quiet."
    assert receiver.processed == 1


async def test_the_url_is_stored_sealed_and_the_delivery_posts_to_all_of_it(
    runtime: Runtime, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A Slack-style URL's path and query are its credential: the row holds no part of
    them (read raw), and the delivery, decrypting it, posts to the whole URL."""
    user, _ = await factories.user_with_token(runtime)
    url = receiver.url + "/services/T0/B0/PATHSECRET?token=QUERYSECRET"
    webhook, receiver.secret = await add_webhook(runtime, user, url)
    async with runtime.engine.connect() as conn:
        [row] = (await conn.execute(sql("SELECT * FROM webhooks"))).mappings().all()
    assert "url" not in row
    assert row["url_shown"] == f"http://127.0.0.1:{receiver.port}/\u2026"
    for column, value in row.items():
        stored = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        assert "SECRET" not in stored, column
        assert "/services" not in stored, column
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)

    with caplog.at_level(logging.INFO, logger="app.delivery.sender"):
        rows = await send_until_settled(DeliverySender(runtime=runtime), runtime,
                                        notification_id)
    sent = next(d for d in rows if d.channel == "webhook")
    assert (sent.status, sent.target) == ("sent", str(webhook.id))
    [request] = receiver.received
    assert request.verified, request.error
    assert request.path == "/hook/services/T0/B0/PATHSECRET?token=QUERYSECRET"
    # At INFO the operator sees that it went out (httpx's request line is at DEBUG
    # only), by the delivery's id, with no part of the URL.
    said = [r.getMessage() for r in caplog.records if r.name == "app.delivery.sender"]
    assert f"delivery {sent.id} (webhook) sent, attempt 1" in said, said
    assert not [line for line in said if "SECRET" in line or "/services" in line]


@pytest.mark.parametrize("status", [503, 500, 429])
async def test_a_retry_sends_the_same_webhook_id(
    runtime: Runtime, receiver: WebhookReceiver, status: int
) -> None:
    receiver.answer(status)
    user, _ = await factories.user_with_token(runtime)
    _webhook_row, receiver.secret = await add_webhook(runtime, user, receiver.url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    sender = DeliverySender(runtime=runtime)

    await sender.run_once()
    waiting = await delivery(runtime, notification_id, "webhook")
    assert (waiting.status, waiting.attempts) == ("pending", 1)
    assert str(status) in (waiting.last_error or "")

    rows = await send_until_settled(sender, runtime, notification_id)
    sent = next(d for d in rows if d.channel == "webhook")
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 2, None)
    assert len(receiver.received) == 2
    assert all(r.verified for r in receiver.received), [r.error for r in receiver.received]
    assert {r.headers["webhook-id"] for r in receiver.received} == {sent.idempotency_key}
    assert receiver.processed == 1


async def test_retry_after_is_honoured(runtime: Runtime, receiver: WebhookReceiver) -> None:
    runtime = with_settings(runtime, delivery_retry_max_seconds=3600.0)
    receiver.answer((503, {"Retry-After": "120"}))
    user, _ = await factories.user_with_token(runtime)
    _webhook_row, receiver.secret = await add_webhook(runtime, user, receiver.url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)

    before = utcnow()
    await DeliverySender(runtime=runtime).run_once()
    waiting = await delivery(runtime, notification_id, "webhook")
    assert waiting.status == "pending"
    # The base delay is 0.1 s; the receiver asked for two minutes.
    assert waiting.next_attempt_at >= before + timedelta(seconds=120)
    assert waiting.next_attempt_at <= utcnow() + timedelta(seconds=121)


async def test_410_disables_the_webhook_and_tells_the_user_once(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """The delivery that got the 410 tells the user the webhook was turned off; the events
    after it are not sent to it, and do not each add a "Could not deliver by webhook"."""
    receiver.answer(410)  # once; it would take anything after
    user, _ = await factories.user_with_token(runtime)
    webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    sender = DeliverySender(runtime=runtime)

    await sender.run_once()
    gone = await delivery(runtime, notification_id, "webhook")
    assert (gone.status, gone.attempts) == ("failed", 1)
    assert (gone.last_error or "").endswith(
        "410 Gone: the endpoint is gone, so the webhook was disabled"), gone.last_error
    row = await _webhook(runtime, webhook.id)
    assert row.enabled is False
    assert "410" in (row.status_detail or "")
    [told] = [n for n in await notifications(runtime, user) if n.kind == "error"]
    assert told.key == f"delivery:{gone.id}:failed"
    assert "disabled" in told.body
    assert str(webhook.id) in told.body

    # Two more events for it, a digest and an immediate alert: nothing goes to it, and
    # nothing more is said.
    later = [await add_digest(runtime, user, channels=("webhook",), digest=DIGEST),
             await _alert(runtime, user, "Invoices: Invoice INV-1188 arrived")]
    for notification in later:
        rows = await send_until_settled(sender, runtime, notification)
        assert [(d.channel, d.status) for d in rows] == [("in_app", "sent")]
    assert len(receiver.received) == 1
    assert [n.id for n in await notifications(runtime, user) if n.kind == "error"] == [told.id]


async def test_deliveries_in_flight_when_the_webhook_answers_410_tell_the_user_once(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """Two deliveries sent to the webhook before either got its 410: the one that turned
    the webhook off tells the user; the other finds it off already and says nothing."""
    receiver.answer(410, 410)
    user, _ = await factories.user_with_token(runtime)
    webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    sent = [await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
            for _ in range(2)]

    await DeliverySender(runtime=runtime).run_once()
    assert len(receiver.received) == 2  # both were in flight
    for notification_id in sent:
        assert (await delivery(runtime, notification_id, "webhook")).status == "failed"
    assert (await _webhook(runtime, webhook.id)).enabled is False
    told = [n for n in await notifications(runtime, user) if n.kind == "error"]
    assert len(told) == 1
    assert "disabled" in told[0].body


async def test_a_webhook_turned_on_again_after_a_410_works_and_a_later_410_tells_again(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """Turning it on again (PATCH enabled true) clears the reason: the next event is
    posted, and a 410 after that turns it off and tells the user again."""
    receiver.answer(410, 200, 410)
    user, _ = await factories.user_with_token(runtime)
    webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    sender = DeliverySender(runtime=runtime)
    await send_until_settled(sender, runtime, await add_digest(
        runtime, user, channels=("webhook",), digest=DIGEST))
    assert (await _webhook(runtime, webhook.id)).enabled is False

    async with transaction(runtime.sessionmaker) as session:
        await channels.update_webhook(session=session, user=user, webhook_id=webhook.id,
                                      data=WebhookUpdate(enabled=True),
                                      settings=runtime.settings)
    again = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    await send_until_settled(sender, runtime, again)
    assert (await delivery(runtime, again, "webhook")).status == "sent"
    gone = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    await send_until_settled(sender, runtime, gone)
    assert (await delivery(runtime, gone, "webhook")).status == "failed"
    row = await _webhook(runtime, webhook.id)
    assert row.enabled is False
    assert "410" in (row.status_detail or "")
    told = [n for n in await notifications(runtime, user) if n.kind == "error"]
    assert len(told) == 2
    assert all("disabled" in n.body for n in told)


async def test_two_410s_failing_at_once_on_postgresql_tell_the_user_once(
    runtime: Runtime, receiver: WebhookReceiver, is_postgres: bool
) -> None:
    """Both deliveries' failures wait on the webhook's row (held here) and then go on
    together: the second `disable` sees the first one's commit, finds the webhook off
    and says nothing."""
    if not is_postgres:
        pytest.skip("SQLite runs one write transaction at a time")
    receiver.answer(410, 410)
    user, _ = await factories.user_with_token(runtime)
    webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    for _ in range(2):
        await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    async with runtime.sessionmaker() as holder:
        await holder.execute(select(Webhook).where(Webhook.id == webhook.id).with_for_update())
        sending = asyncio.create_task(DeliverySender(runtime=runtime).run_once())
        async with asyncio.timeout(60):  # a guard against hanging, not a timing check
            while await _waiting_on_locks(runtime) < 2:
                await asyncio.sleep(0.05)
        await holder.commit()
    await sending
    assert (await _webhook(runtime, webhook.id)).enabled is False
    told = [n for n in await notifications(runtime, user) if n.kind == "error"]
    assert len(told) == 1


async def test_a_410_from_the_old_address_leaves_a_webhook_moved_meanwhile_on(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """The user points the webhook at a new address while a delivery to the old one is
    on its way; the old address answers 410. That says the old endpoint is gone, not the
    new one: the webhook stays on, and nobody is told to turn it on again."""
    receiver.answer(410)
    receiver.go.clear()  # the old endpoint holds its answer until the webhook has moved
    user, _ = await factories.user_with_token(runtime)
    webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    sending = asyncio.create_task(DeliverySender(runtime=runtime).run_once())
    async with asyncio.timeout(60):  # a guard against hanging, not a timing check
        while not receiver.received:
            await asyncio.sleep(0.02)
    async with transaction(runtime.sessionmaker) as session:
        await channels.update_webhook(
            session=session, user=user, webhook_id=webhook.id,
            data=WebhookUpdate(url=receiver.url + "/v2"), settings=runtime.settings,
        )
    receiver.go.set()
    await sending

    failed = await delivery(runtime, notification_id, "webhook")
    # It said "so the webhook was disabled", of a webhook left on.
    assert failed.status == "failed"
    assert (failed.last_error or "").endswith(
        "410 Gone: the endpoint is gone; the webhook was not disabled: it had been moved or "
        "turned off meanwhile"), failed.last_error
    row = await _webhook(runtime, webhook.id)
    assert (row.enabled, row.status_detail) == (True, None)
    assert channels.url_of(row, secret_box(runtime.settings)) == receiver.url + "/v2"
    assert [n for n in await notifications(runtime, user) if n.kind == "error"] == []


async def _waiting_on_locks(runtime: Runtime) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(sql(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ))).scalar_one())


@pytest.mark.parametrize(("status", "fragment"), [(400, "400"), (404, "404"),
                                                  (302, "redirects are not followed")])
async def test_other_answers_fail_without_retry(
    runtime: Runtime, receiver: WebhookReceiver, status: int, fragment: str
) -> None:
    receiver.answer((status, {"Location": receiver.url + "/elsewhere"}))
    user, _ = await factories.user_with_token(runtime)
    _webhook_row, receiver.secret = await add_webhook(runtime, user, receiver.url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)

    await DeliverySender(runtime=runtime).run_once()
    failed = await delivery(runtime, notification_id, "webhook")
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert fragment in (failed.last_error or "")
    assert [r.path for r in receiver.received] == ["/hook"]  # a redirect is not followed


@pytest.mark.parametrize("refused", [False, True])
async def test_a_failing_webhook_leaves_the_secrets_of_its_url_out_of_logs_and_errors(
    runtime: Runtime, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture, refused: bool
) -> None:
    """Slack-style paths and ?token= queries are credentials: errors name the host only."""
    receiver.answer(503, 400)
    user, _ = await factories.user_with_token(runtime)
    url = receiver.url + "/services/T0/B0/PATHSECRET?token=QUERYSECRET"
    _webhook_row, receiver.secret = await add_webhook(runtime, user, url)
    if refused:  # now refused at delivery: the guard's own error names no URL either
        runtime = with_settings(runtime, webhook_allow_private=False)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    caplog.set_level(logging.INFO)

    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)

    failed = next(d for d in rows if d.channel == "webhook")
    assert failed.status == "failed"
    assert ("refused to call" if refused else "400") in (failed.last_error or "")
    assert f"http://127.0.0.1:{receiver.port}" in (failed.last_error or "")
    [told] = [n for n in await notifications(runtime, user) if n.kind == "error"]
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("app.")]
    assert any("failed" in m for m in logged), logged
    assert refused or any("retry in" in m for m in logged), logged
    for text in [failed.last_error or "", told.body, str(told.data), *logged]:
        assert "SECRET" not in text, text
        assert "/services" not in text, text


async def test_an_unreachable_webhook_leaves_the_secrets_of_its_url_out_of_every_log(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at the URL: httpx's error goes into each retry's reason, and the
    last one into the feed. With the logging that `pilotlight` sets up (httpx's request
    line cut to the origin), no logger, ours or a library's, at any level, writes the
    URL's path or query, from the webhook's creation to its failure, nor does the feed.
    (At DEBUG aiosqlite logs each statement with its parameters: the URL stored in plain
    text was in the INSERT's.)"""
    # As `pilotlight` sets logging up at its most telling level (httpx's request lines
    # are heard at DEBUG only).
    _setup_logging(runtime.settings.model_copy(update={"log_level": "DEBUG"}))
    caplog.set_level(logging.DEBUG)  # from its creation on
    port = free_port()  # nothing listens there
    user, _ = await factories.user_with_token(runtime)
    url = f"http://127.0.0.1:{port}/services/T0/B0/PATHSECRET?token=QUERYSECRET"
    await add_webhook(runtime, user, url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)

    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)

    failed = next(d for d in rows if d.channel == "webhook")
    assert failed.status == "failed"
    assert f"gave up after 4 attempts: POST http://127.0.0.1:{port} failed: ConnectError" in (
        failed.last_error or ""), failed.last_error
    [told] = [n for n in await notifications(runtime, user) if n.kind == "error"]
    logged = [r.getMessage() for r in caplog.records]
    assert sum("retry in" in m for m in logged) == 3, logged
    for text in [failed.last_error or "", told.body, str(told.data), caplog.text, *logged]:
        assert "SECRET" not in text, text
        assert "/services" not in text, text


async def test_after_max_attempts_the_delivery_fails_and_the_user_is_told(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    runtime = with_settings(runtime, delivery_max_attempts=3)
    receiver.answer(500, 502, 503, 504)
    user, _ = await factories.user_with_token(runtime)
    _webhook_row, receiver.secret = await add_webhook(runtime, user, receiver.url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)

    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    failed = next(d for d in rows if d.channel == "webhook")
    assert (failed.status, failed.attempts) == ("failed", 3)
    assert "gave up after 3 attempts" in (failed.last_error or "")
    assert len(receiver.received) == 3
    [told] = [n for n in await notifications(runtime, user) if n.kind == "error"]
    assert told.key == f"delivery:{failed.id}:failed"


async def test_one_delivery_per_subscribed_enabled_webhook(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, _ = await factories.user_with_token(runtime)
    other, _ = await factories.user_with_token(runtime)
    first, receiver.secret = await add_webhook(runtime, user, receiver.url)
    second, _ = await add_webhook(runtime, user, receiver.url + "?second",
                                  event_types=["digest.created"])
    await add_webhook(runtime, user, receiver.url, event_types=["question.asked"])
    await add_webhook(runtime, user, receiver.url, enabled=False)
    await add_webhook(runtime, other, receiver.url)  # someone else's

    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    rows = await deliveries(runtime, notification_id)
    assert sorted((d.channel, d.target) for d in rows) == sorted(
        [("in_app", ""), ("webhook", str(first.id)), ("webhook", str(second.id))]
    )

    # An immediate alert (notify_now) is alert.created: only the webhook that takes every
    # event subscribes to it.
    alert = await add_digest(runtime, user, channels=("webhook",), kind="alert")
    assert sorted((d.channel, d.target) for d in await deliveries(runtime, alert)) == [
        ("in_app", ""), ("webhook", str(first.id))]

    # A failed run is sent as run.failed (an error notification of a run).
    instruction = await factories.instruction(runtime, user)
    run: Run = await add_run(runtime, user, instruction, status="failed")
    failed_run = await add_digest(runtime, user, channels=("webhook",), kind="error",
                                  run_id=run.id)
    targets = [d.target for d in await deliveries(runtime, failed_run) if d.channel == "webhook"]
    assert targets == [str(first.id)]
    await send_until_settled(DeliverySender(runtime=runtime), runtime, alert)
    await send_until_settled(DeliverySender(runtime=runtime), runtime, failed_run)
    assert sorted(r.json["type"] for r in receiver.received) == [
        "alert.created", "digest.created", "digest.created", "run.failed"]
    # Each webhook signs with its own secret; the receiver knows the first one's.
    assert [r.verified for r in receiver.received] == [
        r.headers["webhook-id"].endswith(str(first.id)) for r in receiver.received]


async def _alert(runtime: Runtime, user: User, title: str) -> uuid.UUID:
    """An immediate alert as `notify_now` writes it (app/runs/steps.py), on an instruction
    whose channels include webhook."""
    instruction = await factories.instruction(runtime, user, channels=["in_app", "webhook"])
    run = await add_run(runtime, user, instruction, status="running")
    async with transaction(runtime.sessionmaker) as session:
        notification_id = await notify(
            session=session, user_id=user.id, key=f"run:{run.id}:notify:call_1", kind="alert",
            title=title, body="INV-1187 from Skyline, due Friday.",
            channels=instruction.channels["kinds"],
            data={"call_id": "call_1", "claim": "0123456789ab", "about": ["acc:message:m1"]},
            run_id=run.id, instruction_id=instruction.id,
        )
    assert notification_id is not None
    return notification_id


async def _instruction_of(runtime: Runtime, notification_id: uuid.UUID) -> uuid.UUID | None:
    async with transaction(runtime.sessionmaker) as session:
        found = await session.get(Notification, notification_id)
        assert found is not None
        return found.instruction_id


async def test_an_immediate_alert_is_posted_to_a_webhook_that_takes_every_event(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """"Tell me at once when an invoice arrives" by webhook: the alert is posted as
    alert.created, signed and keyed like every other event."""
    user, _ = await factories.user_with_token(runtime)
    webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)  # every event
    notification_id = await _alert(runtime, user, "Invoices: Invoice INV-1187 arrived")

    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    sent = next(d for d in rows if d.channel == "webhook")
    assert (sent.status, sent.target) == ("sent", str(webhook.id))
    assert sent.idempotency_key == f"{notification_id}:webhook:{webhook.id}"
    [request] = receiver.received
    assert request.verified, request.error
    assert request.headers["webhook-id"] == sent.idempotency_key
    body = request.json
    assert body["type"] == "alert.created"
    data = body["data"]
    assert (data["kind"], data["title"], data["body"]) == (
        "alert", "Invoices: Invoice INV-1187 arrived", "INV-1187 from Skyline, due Friday.")
    assert data["notification_id"] == str(notification_id)
    assert data["about"] == ["acc:message:m1"]
    # What the alert is about, not our bookkeeping (the model's call id, the claim).
    assert set(data) == {"notification_id", "kind", "title", "body", "about", "run_id",
                         "instruction_id", "created_at"}
    assert data["instruction_id"] == str(await _instruction_of(runtime, notification_id))
    assert [n.kind for n in await notifications(runtime, user)] == ["alert"]


async def test_a_webhook_that_chose_its_events_gets_alerts_only_if_it_chose_them(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, _ = await factories.user_with_token(runtime)
    await add_webhook(runtime, user, receiver.url + "?digests", event_types=["digest.created"])
    alerts, receiver.secret = await add_webhook(runtime, user, receiver.url + "?alerts",
                                                event_types=["alert.created"])
    notification_id = await _alert(runtime, user, "Invoices: Invoice INV-1187 arrived")

    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    assert [(d.channel, d.target, d.status) for d in rows] == [
        ("in_app", "", "sent"), ("webhook", str(alerts.id), "sent")]
    assert [(r.path, r.json["type"], r.verified) for r in receiver.received] == [
        ("/hook?alerts", "alert.created", True)]


async def _turned_off_by_the_user(runtime: Runtime, user: User, webhook: Webhook) -> None:
    async with transaction(runtime.sessionmaker) as session:
        await channels.update_webhook(session=session, user=user, webhook_id=webhook.id,
                                      data=WebhookUpdate(enabled=False),
                                      settings=runtime.settings)


async def _gone_for_another_event(runtime: Runtime, user: User, webhook: Webhook) -> None:
    async with transaction(runtime.sessionmaker) as session:
        assert await channels.disable(session=session, user_id=user.id, webhook_id=webhook.id,
                                      url_encrypted=webhook.url_encrypted,
                                      reason="answered 410 Gone")


@pytest.mark.parametrize("turned_off", [None, _turned_off_by_the_user, _gone_for_another_event],
                         ids=["takes-other-events", "turned-off-by-the-user",
                              "disabled-by-a-410-and-takes-other-events"])
async def test_an_event_the_users_webhooks_do_not_take_is_no_failure(
    runtime: Runtime, receiver: WebhookReceiver, turned_off: Any
) -> None:
    """The user chose which events their webhook gets, or turned it off: a question on an
    instruction whose channels include webhook goes nowhere by webhook, and nobody is told
    it "could not be delivered"."""
    user, _ = await factories.user_with_token(runtime)
    webhook, receiver.secret = await add_webhook(runtime, user, receiver.url,
                                                 event_types=["digest.created"])
    if turned_off is not None:
        await turned_off(runtime, user, webhook)
    instruction = await factories.instruction(runtime, user)
    run = await add_run(runtime, user, instruction, status="running")
    question = await add_digest(runtime, user, channels=("webhook",), kind="question",
                                title="Which project?", run_id=run.id)

    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, question)
    assert [d.channel for d in rows] == ["in_app"]
    assert receiver.received == []
    assert [n.kind for n in await notifications(runtime, user)] == ["question"]


async def test_a_user_without_any_webhook_is_told_the_event_reached_none(
    runtime: Runtime,
) -> None:
    """The instruction asks for a channel the user does not have: a failed delivery and a
    notice in the feed."""
    user, _ = await factories.user_with_token(runtime)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)

    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    nobody = next(d for d in rows if d.channel == "webhook")
    assert (nobody.status, nobody.target) == ("failed", "")
    assert "you had no webhook" in (nobody.last_error or "")
    [told] = [n for n in await notifications(runtime, user) if n.kind == "error"]
    assert told.key == f"delivery:{nobody.id}:failed"


async def test_a_deleted_webhook_gets_nothing_and_nobody_is_alarmed(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, _ = await factories.user_with_token(runtime)
    webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    async with transaction(runtime.sessionmaker) as session:
        await session.delete(await session.get(Webhook, webhook.id))

    await DeliverySender(runtime=runtime).run_once()
    dropped = await delivery(runtime, notification_id, "webhook")
    assert (dropped.status, dropped.last_error) == ("failed", "the webhook was deleted")
    assert receiver.received == []
    assert [n.kind for n in await notifications(runtime, user)] == ["digest"]


async def test_the_connection_goes_to_the_address_that_was_checked(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """A name is resolved once, checked, and the request pinned to that address: the Host
    header names the host, the socket goes to the address."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    user, _ = await factories.user_with_token(runtime)
    url = f"http://receiver.pilotlight.test:{receiver.port}/hook"
    _webhook_row, receiver.secret = await add_webhook(runtime, user, url)
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    sender = DeliverySender(runtime=runtime, channels={
        "webhook": WebhookChannel(runtime.settings, resolve=resolve)})

    await sender.run_once()
    assert (await delivery(runtime, notification_id, "webhook")).status == "sent"
    assert calls == ["receiver.pilotlight.test"]
    [request] = receiver.received
    assert request.headers["host"] == f"receiver.pilotlight.test:{receiver.port}"
    assert request.verified


async def test_after_a_new_secret_requests_verify_with_either_for_a_day_then_the_new_only(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, _ = await factories.user_with_token(runtime)
    webhook, old = await add_webhook(runtime, user, receiver.url)
    async with transaction(runtime.sessionmaker) as session:
        _, new = await channels.rotate_secret(session=session, user=user, webhook_id=webhook.id,
                                              settings=runtime.settings)
    receiver.secret = old  # the receiver has not moved to the new secret yet
    sender = DeliverySender(runtime=runtime)
    await send_until_settled(sender, runtime, await add_digest(
        runtime, user, channels=("webhook",), digest=DIGEST))
    [first] = receiver.received
    assert first.verified, first.error
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    StandardWebhook(new).verify(first.body, first.headers)  # and the new one verifies it

    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Webhook).where(Webhook.id == webhook.id).values(
            previous_secret_until=utcnow() - timedelta(seconds=1)))
    await send_until_settled(sender, runtime, await add_digest(
        runtime, user, channels=("webhook",), digest=DIGEST))
    second = receiver.received[1]
    assert not second.verified  # the old secret no longer signs
    assert len(second.headers["webhook-signature"].split(" ")) == 1
    StandardWebhook(new).verify(second.body, second.headers)


async def test_the_webhook_secret_is_stored_encrypted_only(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, _ = await factories.user_with_token(runtime)
    webhook, secret = await add_webhook(runtime, user, receiver.url)
    async with transaction(runtime.sessionmaker) as session:
        stored = (await session.execute(
            select(Webhook.secret_encrypted).where(Webhook.id == webhook.id))).scalar_one()
    assert secret.encode() not in stored
    assert secret.removeprefix("whsec_").encode() not in stored


async def test_a_question_answered_before_its_delivery_went_out_is_not_sent(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """With the receiver down, the user answered in the app; the retried delivery then
    went out asking what was no longer asked (an email too, asking for a reply)."""
    user, _ = await factories.user_with_token(runtime)
    _webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    instruction = await factories.instruction(runtime, user)
    run = await add_run(runtime, user, instruction, status="waiting_for_user")
    asked: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}
    for status in ("open", "answered"):
        question = await add_question(runtime, user, run, status=status,
                                      text=f"Which project ({status})?")
        async with transaction(runtime.sessionmaker) as session:
            notification_id = await notify(
                session=session, user_id=user.id, key=f"question:{question.id}",
                kind="question", title=question.text, body="", channels=("webhook",),
                data={"question_id": str(question.id), "choices": []}, run_id=run.id)
        assert notification_id is not None
        asked[status] = (question.id, notification_id)
    sender = DeliverySender(runtime=runtime)
    for _question_id, notification_id in asked.values():
        await send_until_settled(sender, runtime, notification_id)
    sent = [json.loads(r.body)["data"]["question_id"] for r in receiver.received]
    assert sent == [str(asked["open"][0])]
    stale = await delivery(runtime, asked["answered"][1], "webhook")
    assert (stale.status, stale.last_error) == (
        "failed", "not sent: the question was answered before it could be")
    assert [n.kind for n in await notifications(runtime, user)] == ["question", "question"]


async def test_a_question_cancelled_but_asked_again_by_a_later_run_is_still_sent(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """The later run's repeat was merged into the first question, so the first one's
    notice is the only one: once its run was cancelled, a delivery still waiting (its
    receiver down) was ended unsent, and the user never heard of the open repeat."""
    user, _ = await factories.user_with_token(runtime)
    _webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    instruction = await factories.instruction(runtime, user)
    told: dict[str, uuid.UUID] = {}
    for text in ("Which project?", "Which vendor?"):
        first_run = await add_run(runtime, user, instruction, status="waiting_for_user")
        first = await add_question(runtime, user, first_run, text=text)
        async with transaction(runtime.sessionmaker) as session:
            notification_id = await notify(
                session=session, user_id=user.id, key=f"question:{first.id}",
                kind="question", title=text, body="", channels=("webhook",),
                data={"question_id": str(first.id), "choices": []}, run_id=first_run.id)
        assert notification_id is not None
        told[text] = notification_id
        if text == "Which project?":  # asked again; "Which vendor?" is not
            later_run = await add_run(runtime, user, instruction, status="waiting_for_user")
            await add_question(runtime, user, later_run, text="which  PROJECT?")
        async with transaction(runtime.sessionmaker) as session:
            await questions.cancel_open_for_run(session=session, run_id=first_run.id)
    sender = DeliverySender(runtime=runtime)
    for notification_id in told.values():
        await send_until_settled(sender, runtime, notification_id)
    assert [r.json["data"]["title"] for r in receiver.received] == ["Which project?"]
    ended = await delivery(runtime, told["Which vendor?"], "webhook")
    assert (ended.status, ended.last_error) == (
        "failed", "not sent: the question was cancelled before it could be")
