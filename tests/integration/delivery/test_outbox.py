"""The outbox's claims: leased, fenced, never sent by two senders at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.delivery import repository
from app.delivery.sender import DeliverySender
from app.notifications.models import Delivery
from tests import factories
from tests.integration.delivery.conftest import (
    add_digest,
    add_webhook,
    deliveries,
    delivery,
    with_settings,
)
from tests.integration.delivery.receivers import WebhookReceiver

CHANNELS = ("email", "webhook")


async def _claim(runtime: Runtime, limit: int = 10, lease: float = 60) -> list[repository.Claimed]:
    async with transaction(runtime.sessionmaker) as session:
        return await repository.claim(session=session, channels=CHANNELS, limit=limit,
                                      lease_seconds=lease)


async def test_a_claimed_delivery_is_leased_and_only_its_claim_can_mark_it(
    runtime: Runtime
) -> None:
    user, _ = await factories.user_with_token(runtime)
    notification_id = await add_digest(runtime, user, channels=("email",))

    [first] = await _claim(runtime)
    assert first.attempt == 1
    assert await _claim(runtime) == []  # leased: nobody else takes it meanwhile
    row = await delivery(runtime, notification_id, "email")
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.next_attempt_at > utcnow() + timedelta(seconds=50)

    # The first sender stalls past its lease; another claims the row again.
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Delivery).where(Delivery.id == first.id)
                              .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    [second] = await _claim(runtime)
    assert (second.id, second.attempt) == (first.id, 2)
    assert second.idempotency_key == first.idempotency_key

    async with transaction(runtime.sessionmaker) as session:
        assert not await repository.mark_sent(session=session, claimed=first)  # fenced
        assert not await repository.mark_failed(session=session, claimed=first, reason="x")
        assert await repository.mark_sent(session=session, claimed=second)
    row = await delivery(runtime, notification_id, "email")
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


async def test_push_waits_for_its_sender_and_in_app_is_never_claimed(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    notification_id = await add_digest(runtime, user, channels=("push", "in_app"))
    assert await DeliverySender(runtime=runtime, channels={}).run_once() == 0
    statuses = {d.channel: d.status for d in await deliveries(runtime, notification_id)}
    assert statuses == {"in_app": "sent", "push": "pending"}


async def test_two_senders_at_once_send_each_delivery_once(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    runtime = with_settings(runtime, delivery_batch_size=3)
    user, _ = await factories.user_with_token(runtime)
    _webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    ids = [await add_digest(runtime, user, channels=("webhook",)) for _ in range(12)]
    senders = [DeliverySender(runtime=runtime) for _ in range(2)]

    for _ in range(20):
        claimed = await asyncio.gather(*(s.run_once() for s in senders))
        if sum(claimed) == 0:
            break
    for notification_id in ids:
        assert (await delivery(runtime, notification_id, "webhook")).status == "sent"
    assert len(receiver.received) == 12  # not one request twice
    assert receiver.processed == 12
    assert all(r.verified for r in receiver.received)
