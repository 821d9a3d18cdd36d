"""Email through Gmail send-to-self: the real google-api-python-client over HTTP to the
fake Google; SMTP (aiosmtpd) when the account cannot send, or its grant is revoked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from app.core.runtime import Runtime
from app.delivery.gmail import SENT_SCAN
from app.delivery.render import message_id
from app.delivery.sender import DeliverySender
from app.google import metrics
from app.google.scopes import READ_SCOPES
from tests import factories
from tests.fakes.google import FakeGoogle
from tests.integration.delivery.conftest import (
    add_digest,
    delivery,
    notifications,
    send_until_settled,
    with_settings,
)
from tests.integration.delivery.gmail_helpers import (
    ALICE,
    account_row,
    connect_google,
    mailbox_raw,
)
from tests.integration.delivery.receivers import MailHandler
from tests.integration.delivery.test_email import DIGEST, LINKS, _Html, _parts
from tests.integration.runs.test_crashes import eventually

FROM = "Pilotlight <digests@pilotlight.example>"


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle(seed=False) as fake:
        yield fake


def google_settings(fake: FakeGoogle, **more: Any) -> dict[str, Any]:
    return {
        **fake.settings(),
        "google_http_timeout_seconds": 10.0, "google_retry_max_seconds": 5.0,
        "google_retry_attempts": 1, "smtp_from": FROM, **more,
    }


@pytest.fixture
def gmail_runtime(runtime: Runtime, google: FakeGoogle,
                  smtp: tuple[MailHandler, int]) -> Runtime:
    """SMTP configured too: Gmail must win when the account can send."""
    google.reset(seed=False)
    return with_settings(runtime, **google_settings(
        google, smtp_host="127.0.0.1", smtp_port=smtp[1], smtp_tls="none"))


def _units(account_id: object) -> float:
    return metrics.QUOTA_UNITS.labels(str(account_id), "gmail")._value.get()


async def test_a_digest_goes_through_gmail_send_to_self(
    gmail_runtime: Runtime, google: FakeGoogle, smtp: tuple[MailHandler, int]
) -> None:
    runtime = gmail_runtime
    user, _ = await factories.user_with_token(runtime, "ada@example.com")
    account = await connect_google(runtime, google, user)
    notification_id = await add_digest(runtime, user, channels=("email",), digest=DIGEST)

    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    sent = next(d for d in rows if d.channel == "email")
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 1, None)
    assert smtp[0].messages == []  # not through SMTP

    [(labels, message)] = mailbox_raw(google, ALICE)
    assert set(labels) == {"SENT", "INBOX"}  # to oneself: in the inbox too
    assert message["From"] == f"Pilotlight <{ALICE}>"
    assert message["To"] == ALICE
    assert message["Subject"] == "Morning digest"
    # The Message-ID the SMTP path would give it: stable per delivery, whichever way it went.
    assert message["Message-ID"].strip() == message_id(sent.idempotency_key, FROM)
    text, html = _parts(message)  # type: ignore[arg-type]
    parsed = _Html()
    parsed.feed(html)
    assert set(parsed.hrefs) == LINKS
    assert "script" not in parsed.tags
    assert "Budget review moved to Friday" in text

    assert google.quota_units(ALICE) == 100
    assert [(r.method, r.path) for r in google.requests if "/gmail/" in r.path] == [
        ("POST", "/gmail/v1/users/me/messages/send")]
    assert _units(account.id) == 100  # charged by the client layer too


async def test_without_gmail_send_the_digest_goes_through_smtp(
    gmail_runtime: Runtime, google: FakeGoogle, smtp: tuple[MailHandler, int]
) -> None:
    runtime = gmail_runtime
    user, _ = await factories.user_with_token(runtime, "ada@example.com")
    await connect_google(runtime, google, user, scopes=READ_SCOPES)
    notification_id = await add_digest(runtime, user, channels=("email",), digest=DIGEST)

    await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)

    assert (await delivery(runtime, notification_id, "email")).status == "sent"
    [mail] = smtp[0].messages
    assert mail.recipients == ["ada@example.com"]
    assert mail.message["From"] == FROM
    assert google.requests == []
    assert mailbox_raw(google, ALICE) == []


async def test_a_revoked_grant_disconnects_the_account_and_falls_back_to_smtp(
    gmail_runtime: Runtime, google: FakeGoogle, smtp: tuple[MailHandler, int]
) -> None:
    runtime = gmail_runtime
    user, _ = await factories.user_with_token(runtime, "ada@example.com")
    account = await connect_google(runtime, google, user)
    google.revoke(ALICE)
    notification_id = await add_digest(runtime, user, channels=("email",), digest=DIGEST)

    await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)

    assert (await delivery(runtime, notification_id, "email")).status == "sent"
    [mail] = smtp[0].messages
    assert mail.message["Subject"] == "Morning digest"
    row = await account_row(runtime, account)
    assert row.status == "disconnected"
    assert row.status_detail is not None
    assert "invalid_grant" in row.status_detail
    assert mailbox_raw(google, ALICE) == []

    # The next email does not try Gmail again.
    google.reset_counters()
    second = await add_digest(runtime, user, channels=("email",), digest=DIGEST)
    await send_until_settled(DeliverySender(runtime=runtime), runtime, second)
    assert len(smtp[0].messages) == 2
    assert google.requests == []


@pytest.mark.parametrize("gone", ["grant revoked", "Gmail turned off"])
async def test_gmail_gone_without_smtp_fails_the_delivery_saying_why(
    runtime: Runtime, google: FakeGoogle, gone: str
) -> None:
    """A revoked grant disconnects the account; Gmail turned off records it as
    mailbox-less. Either way, with no SMTP to fall back on, the delivery fails at once
    saying both why, and the user is told."""
    google.reset(seed=False)
    runtime = with_settings(runtime, **google_settings(google))
    user, _ = await factories.user_with_token(runtime, "ada@example.com")
    account = await connect_google(runtime, google, user)
    revoked = gone == "grant revoked"
    if revoked:
        google.revoke(ALICE)
    else:
        google.disable_gmail(ALICE)
    notification_id = await add_digest(runtime, user, channels=("email",), digest=DIGEST)

    await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)

    failed = await delivery(runtime, notification_id, "email")
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.last_error is not None
    assert ("invalid_grant" if revoked else "Mail service not enabled") in failed.last_error
    assert "SMTP is not configured" in failed.last_error
    row = await account_row(runtime, account)
    if revoked:
        assert row.status == "disconnected"
    else:
        assert row.scopes.get("mailbox") is False
    told = [n for n in await notifications(runtime, user) if n.kind == "error"]
    assert [n.title for n in told] == ["Could not deliver by email"]


async def test_gmail_turned_off_records_the_account_and_the_email_goes_through_smtp(
    gmail_runtime: Runtime, google: FakeGoogle, smtp: tuple[MailHandler, int]
) -> None:
    """An administrator turned Gmail off for the account after it granted gmail.send: the
    send gets "Mail service not enabled". Not retried (every try would get it again): the
    account is recorded as mailbox-less, the user told once, this email goes through SMTP
    on its first attempt, and later ones do not try Gmail."""
    runtime = gmail_runtime
    user, _ = await factories.user_with_token(runtime, "ada@example.com")
    account = await connect_google(runtime, google, user)
    google.disable_gmail(ALICE)
    notification_id = await add_digest(runtime, user, channels=("email",), digest=DIGEST)

    await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)

    sent = await delivery(runtime, notification_id, "email")
    assert (sent.status, sent.attempts) == ("sent", 1)
    [mail] = smtp[0].messages
    assert mail.message["Subject"] == "Morning digest"
    row = await account_row(runtime, account)
    assert (row.status, row.scopes.get("mailbox")) == ("active", False)
    (alert,) = [n for n in await notifications(runtime, user) if n.kind == "alert"]
    assert "Gmail is not enabled" in alert.body

    google.reset_counters()
    second = await add_digest(runtime, user, channels=("email",), digest=DIGEST)
    await send_until_settled(DeliverySender(runtime=runtime), runtime, second)
    assert len(smtp[0].messages) == 2
    assert google.requests == []
    assert len([n for n in await notifications(runtime, user) if n.kind == "alert"]) == 1




async def test_gmail_rate_limited_retries_the_delivery_after_retry_after(
    runtime: Runtime, google: FakeGoogle
) -> None:
    google.reset(seed=False)
    runtime = with_settings(runtime, **google_settings(google, google_retry_attempts=0))
    user, _ = await factories.user_with_token(runtime, "ada@example.com")
    await connect_google(runtime, google, user)
    google.fail_next(path_contains="/messages/send", status=429, count=1, retry_after=3)
    notification_id = await add_digest(runtime, user, channels=("email",), digest=DIGEST)
    sender = DeliverySender(runtime=runtime)

    assert await sender.run_once() == 1
    waiting = await delivery(runtime, notification_id, "email")
    assert (waiting.status, waiting.attempts) == ("pending", 1)
    assert waiting.last_error is not None
    assert "429" in waiting.last_error
    assert waiting.sent_at is None
    # Retry-After (3 s) is longer than the backoff of a first retry (at most 0.1 s here).
    assert waiting.next_attempt_at - waiting.created_at >= timedelta(seconds=2.9)
    assert mailbox_raw(google, ALICE) == []


def _digests_in(google: FakeGoogle) -> list[Any]:
    return [m for _label, m in mailbox_raw(google, ALICE) if m["Subject"] == "Morning digest"]


@pytest.mark.parametrize("gmail_keeps_the_message_id", [True, False])
async def test_a_send_whose_answer_was_lost_is_not_sent_again(
    runtime: Runtime, google: FakeGoogle, gmail_keeps_the_message_id: bool
) -> None:
    """Gmail takes the message and answers after the socket timeout: the client must not
    send it again, and the outbox's next attempt finds it: by its Message-ID, or by the
    notification it carries when Gmail gave it a Message-ID of its own."""
    google.reset(seed=False)
    google.account(ALICE).mailbox.replaces_message_ids = not gmail_keeps_the_message_id
    runtime = with_settings(runtime, **google_settings(
        google, google_http_timeout_seconds=1.0, google_retry_attempts=3,
        google_retry_max_seconds=0.2))
    user, _ = await factories.user_with_token(runtime, "ada@example.com")
    await connect_google(runtime, google, user)
    sender = DeliverySender(runtime=runtime)
    warm = await add_digest(runtime, user, channels=("email",), title="Warm-up")
    await send_until_settled(sender, runtime, warm)  # the access token is cached now
    notification_id = await add_digest(runtime, user, channels=("email",), digest=DIGEST)

    google.latency_seconds = 1.5
    try:
        assert await sender.run_once() == 1
    finally:
        google.latency_seconds = 0
    waiting = await delivery(runtime, notification_id, "email")
    assert (waiting.status, waiting.attempts) == ("pending", 1)
    assert len(_digests_in(google)) == 1  # taken once, its answer lost
    # Before the retry, the account sends itself more than one scan reads (other
    # instructions' notifications): the retry still finds it among those with its subject.
    for n in range(SENT_SCAN + 5):
        google.add_message(ALICE, sender=ALICE, to=[ALICE], subject=f"Other digest {n}",
                           text="Another instruction's digest.", labels=("SENT", "INBOX"))

    rows = await send_until_settled(sender, runtime, notification_id)
    (done,) = [row for row in rows if row.channel == "email"]
    assert (done.status, done.attempts) == ("sent", 2)
    assert len(_digests_in(google)) == 1
    sends = [r for r in google.requests if r.path.endswith("/messages/send")]
    assert len(sends) == 2  # the warm-up's and the digest's: none repeated


async def test_a_slow_gmail_send_ends_within_the_delivery_timeout(
    runtime: Runtime, google: FakeGoogle
) -> None:
    """Gmail slower than the delivery's claim: the send gives up within the delivery
    timeout (less than the claim), so no other sender claims it and sends it meanwhile."""
    google.reset(seed=False)
    runtime = with_settings(runtime, **google_settings(
        google, google_http_timeout_seconds=10.0, google_retry_attempts=0),
        delivery_claim_seconds=3, delivery_timeout_seconds=1, delivery_poll_seconds=0.2,
        delivery_max_attempts=50)
    user, _ = await factories.user_with_token(runtime, "ada@example.com")
    await connect_google(runtime, google, user)
    sender = DeliverySender(runtime=runtime)
    warm = await add_digest(runtime, user, channels=("email",), title="Warm-up")
    await send_until_settled(sender, runtime, warm)
    notification_id = await add_digest(runtime, user, channels=("email",), digest=DIGEST)

    google.latency_seconds = 4.0  # longer than the claim
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    try:
        await asyncio.sleep(5)
    finally:
        google.latency_seconds = 0
    try:
        async def settled() -> bool:
            return (await delivery(runtime, notification_id, "email")).status == "sent"

        await eventually(settled, 30, "the digest to be marked sent")
    finally:
        stop.set()
        await running
    assert len(_digests_in(google)) == 1
