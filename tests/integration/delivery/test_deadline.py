"""Every send has one deadline (the delivery timeout), shorter than the claim: a slow
endpoint cannot hold a send past its claim, so no other sender sends it meanwhile, and
a stopping sender does not wait on it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.delivery.sender import DeliverySender
from app.google.scopes import READ_SCOPES
from app.notifications.models import Delivery
from tests import factories
from tests.fakes.google import FakeGoogle
from tests.integration.delivery.conftest import (
    add_digest,
    add_webhook,
    delivery,
    send_until_settled,
    with_settings,
)
from tests.integration.delivery.gmail_helpers import ALICE, connect_google
from tests.integration.delivery.receivers import DripServer, MailHandler, start_drip_server
from tests.integration.delivery.test_email_replies import _asked_by_email
from tests.integration.delivery.test_gmail_send import google_settings
from tests.integration.runs.test_crashes import eventually

CUT_OFF = "took longer than"


@pytest.fixture
def drip() -> Iterator[DripServer]:
    """Answers the first POST with 8 body bytes, one every 0.6 s (4.8 s in all)."""
    drip, server = start_drip_server(length=8, interval=0.6)
    try:
        yield drip
    finally:
        drip.closing.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle(seed=False) as fake:
        yield fake


async def test_a_webhook_dripping_its_answer_past_the_claim_is_posted_once(
    runtime: Runtime, drip: DripServer
) -> None:
    """Each read of the answer is quick, the whole answer takes longer than the claim: the
    send is cut off at the delivery timeout and retried later, so a second sender that
    looks after the claim would have run out finds nothing to send (it used to claim the
    delivery and POST it again while the first was still reading)."""
    runtime = with_settings(runtime, delivery_timeout_seconds=1.0, delivery_claim_seconds=2.0,
                            delivery_retry_base_seconds=4.0)
    user, _ = await factories.user_with_token(runtime)
    await add_webhook(runtime, user, drip.url)
    notification_id = await add_digest(runtime, user, channels=("webhook",))
    first, second = DeliverySender(runtime=runtime), DeliverySender(runtime=runtime)

    sending = asyncio.create_task(first.run_once())
    await asyncio.sleep(2.5)
    claimed_by_second = await second.run_once()
    assert await sending == 1
    assert claimed_by_second == 0
    assert len(drip.requests) == 1
    row = await delivery(runtime, notification_id, "webhook")
    assert (row.status, row.attempts) == ("pending", 1)
    assert CUT_OFF in (row.last_error or "")
    assert row.next_attempt_at > utcnow()

    # Retried later, with the same webhook-id (the endpoint answers at once now).
    rows = await send_until_settled(first, runtime, notification_id, rounds=400)
    assert [(r.status, r.attempts) for r in rows if r.channel == "webhook"] == [
        ("sent", 2)]
    assert len(drip.requests) == 2
    assert drip.requests[0]["webhook-id"] == drip.requests[1]["webhook-id"]
    await first.on_stop()
    await second.on_stop()


async def test_a_stopping_sender_does_not_wait_on_a_dripping_send(
    runtime: Runtime
) -> None:
    """An endpoint that would take ten minutes to answer: the sender stops once the
    delivery timeout cuts the send off, and the delivery is left to be retried."""
    drip, server = start_drip_server(length=1000, interval=0.6)
    try:
        runtime = with_settings(runtime, delivery_timeout_seconds=1.0,
                                delivery_claim_seconds=2.0, delivery_poll_seconds=0.1)
        user, _ = await factories.user_with_token(runtime)
        await add_webhook(runtime, user, drip.url)
        notification_id = await add_digest(runtime, user, channels=("webhook",))
        sender = DeliverySender(runtime=runtime)
        stop = asyncio.Event()
        running = asyncio.create_task(sender.run(stop))

        async def posted() -> bool:
            return len(drip.requests) == 1

        try:
            await eventually(posted, 30, "the POST")
        finally:
            stop.set()
        await asyncio.wait_for(running, 30)  # it used to wait for the whole answer
    finally:
        drip.closing.set()
        server.shutdown()
        server.server_close()
    row = await delivery(runtime, notification_id, "webhook")
    assert (row.status, row.attempts) == ("pending", 1)
    assert CUT_OFF in (row.last_error or "")


async def test_an_emails_calls_share_one_deadline(
    runtime: Runtime, google: FakeGoogle, smtp: tuple[MailHandler, int]
) -> None:
    """A question's email through SMTP, its reply to be read in Gmail: Gmail (the token,
    then the historyId) and the SMTP server each answer within the delivery timeout, but
    not all of them together, which outlasts the claim. The calls share the timeout, so
    the send ends within it and no second sender takes the delivery meanwhile (it used
    to, and sent the question again)."""
    google.reset(seed=False)
    runtime = with_settings(runtime, **google_settings(
        google, smtp_host="127.0.0.1", smtp_port=smtp[1], smtp_tls="none"),
        delivery_timeout_seconds=1.5, delivery_claim_seconds=2.0,
        delivery_retry_base_seconds=4.0)
    user, _ = await factories.user_with_token(runtime, ALICE)
    await connect_google(runtime, google, user, scopes=READ_SCOPES)  # reads, cannot send
    await _asked_by_email(runtime, user)
    first, second = DeliverySender(runtime=runtime), DeliverySender(runtime=runtime)

    google.latency_seconds = 1.3
    smtp[0].delay = 1.3
    try:
        sending = asyncio.create_task(first.run_once())
        await asyncio.sleep(2.4)
        claimed_by_second = await second.run_once()
        assert await sending == 1
    finally:
        google.latency_seconds = 0
        smtp[0].delay = 0
    assert claimed_by_second == 0
    assert len(smtp[0].messages) <= 1

    rows = await send_until_settled(first, runtime, await _email_of(runtime),
                                    rounds=400)
    assert [(r.status, r.attempts) for r in rows if r.channel == "email"] == [("sent", 2)]
    await first.on_stop()
    await second.on_stop()


async def _email_of(runtime: Runtime) -> uuid.UUID:
    """The notification of the one email delivery."""
    async with transaction(runtime.sessionmaker) as session:
        return (await session.execute(
            select(Delivery.notification_id).where(Delivery.channel == "email"))).scalar_one()
