"""The outbox's claims: leased, fenced, never sent by two senders at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

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
from tests.integration.delivery.receivers import MailHandler, WebhookReceiver
from tests.integration.runs.test_crashes import eventually

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


async def test_a_claim_takes_no_more_than_its_limit(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    for _ in range(12):
        await add_digest(runtime, user, channels=("email",))

    first = await _claim(runtime, limit=5)
    second = await _claim(runtime, limit=5)
    third = await _claim(runtime, limit=5)
    assert [len(first), len(second), len(third)] == [5, 5, 2]
    assert len({c.id for c in first + second + third}) == 12


async def test_a_released_claim_is_due_again_uncounted_and_a_stale_one_changes_nothing(
    runtime: Runtime
) -> None:
    user, _ = await factories.user_with_token(runtime)
    notification_id = await add_digest(runtime, user, channels=("email",))
    [claimed] = await _claim(runtime)

    stale = repository.Claimed(**{**claimed.__dict__, "attempt": claimed.attempt + 1})
    async with transaction(runtime.sessionmaker) as session:
        assert await repository.release_many(session=session, claims=[stale]) == 0
        assert await repository.release_many(session=session, claims=[claimed]) == 1
    row = await delivery(runtime, notification_id, "email")
    assert (row.status, row.attempts) == ("pending", 0)
    assert row.next_attempt_at <= utcnow()
    [again] = await _claim(runtime)
    assert (again.id, again.attempt) == (claimed.id, 1)


async def test_the_running_sender_is_woken_by_a_new_delivery_not_by_its_poll(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """The sender polls once a minute here; a digest written meanwhile is sent at once."""
    runtime = with_settings(runtime, delivery_poll_seconds=60)
    user, _ = await factories.user_with_token(runtime)
    _webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    sender = DeliverySender(runtime=runtime)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        await asyncio.sleep(0.5)  # its first claim (nothing due) is behind it; it sleeps
        ids = [await add_digest(runtime, user, channels=("webhook",)) for _ in range(3)]

        async def sent() -> bool:
            rows = [await delivery(runtime, i, "webhook") for i in ids]
            return all(r.status == "sent" for r in rows)

        await eventually(sent, 30, "the woken sender to send the deliveries")
    finally:
        stop.set()
        await running
    assert receiver.processed == 3


async def test_a_stopping_sender_finishes_what_it_sends_and_gives_back_the_rest(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    runtime = with_settings(runtime, delivery_concurrency=1, delivery_batch_size=5)
    user, _ = await factories.user_with_token(runtime)
    _webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    ids = [await add_digest(runtime, user, channels=("webhook",)) for _ in range(3)]
    receiver.go.clear()  # the endpoint takes its time
    sender = DeliverySender(runtime=runtime)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        await eventually(lambda: _true(len(receiver.received) == 1), 30, "the first request")
        assert len(sender.held) == 3  # one sending, two waiting for the slot
        stop.set()
        # The two waiting are given back at once; the one sending is let finish.
        await eventually(lambda: _true(len(sender.held) == 1), 30, "the waiting to be dropped")
    finally:
        receiver.go.set()
        stop.set()
        await running
    rows = [await delivery(runtime, i, "webhook") for i in ids]
    assert sorted((r.status, r.attempts) for r in rows) == [
        ("pending", 0), ("pending", 0), ("sent", 1)]
    assert all(r.next_attempt_at <= utcnow() for r in rows if r.status == "pending")
    assert len(receiver.received) == 1


async def _true(value: bool) -> bool:
    return value


async def test_claims_whose_read_failed_are_given_back_at_once(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """The database fails the read of what the claimed deliveries need (on PostgreSQL
    it comes after the claim has committed): they are due again at once, the attempt
    not counted, and the next claim sends them."""
    user, _ = await factories.user_with_token(runtime)
    _webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    ids = [await add_digest(runtime, user, channels=("webhook",)) for _ in range(2)]
    failures: list[str] = []

    def fail_the_read(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM notifications JOIN users" in statement and not failures:
            failures.append(statement)
            raise RuntimeError("the database went away")

    sender = DeliverySender(runtime=runtime)
    event.listen(runtime.engine.sync_engine, "before_cursor_execute", fail_the_read)
    try:
        with pytest.raises(Exception, match="the database went away"):
            await sender.run_once()
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", fail_the_read)
    assert failures
    assert not sender.held
    rows = [await delivery(runtime, i, "webhook") for i in ids]
    assert [(r.status, r.attempts) for r in rows] == [("pending", 0)] * 2
    assert all(r.next_attempt_at <= utcnow() for r in rows)

    assert await sender.run_once() == 2
    await sender.on_stop()
    rows = [await delivery(runtime, i, "webhook") for i in ids]
    assert [(r.status, r.attempts) for r in rows] == [("sent", 1)] * 2
    assert receiver.processed == 2


async def test_waiting_for_a_slot_uses_up_no_attempt(
    runtime: Runtime, receiver: WebhookReceiver, smtp: tuple[MailHandler, int]
) -> None:
    """One user's webhook hangs until the timeout, with a burst of deliveries queued ahead:
    another user's email, claimed and left waiting for the one slot past what its claim
    allows, is given back unsent, its attempt not counted, and is sent in the end (it
    used to fail 'gave up' without ever being tried)."""
    runtime = with_settings(
        runtime, smtp_host="127.0.0.1", smtp_port=smtp[1], smtp_tls="none",
        delivery_concurrency=1, delivery_claim_seconds=2.5, delivery_timeout_seconds=1,
        delivery_max_attempts=3, delivery_retry_base_seconds=0.1,
        delivery_retry_max_seconds=0.2, delivery_poll_seconds=0.1, delivery_batch_size=20)
    receiver.go.clear()  # each webhook send times out after 1 s
    alice, _ = await factories.user_with_token(runtime, "alice@example.com")
    await add_webhook(runtime, alice, receiver.url)
    for _ in range(12):
        await add_digest(runtime, alice, channels=("webhook",))
    bob, _ = await factories.user_with_token(runtime, "bob@example.com")
    email = await add_digest(runtime, bob, channels=("email",), title="Bob's digest")
    sender = DeliverySender(runtime=runtime)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        async def settled() -> bool:
            return (await delivery(runtime, email, "email")).status != "pending"

        await eventually(settled, 90, "Bob's email to be sent or failed")
    finally:
        stop.set()
        receiver.go.set()
        await running
    row = await delivery(runtime, email, "email")
    assert (row.status, row.last_error) == ("sent", None)
    assert row.attempts == 1
    assert len(smtp[0].messages) == 1
