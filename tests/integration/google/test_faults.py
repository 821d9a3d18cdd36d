"""Faults through the real client against the fake: 429, 5xx, 401, a revoked grant and a
Gmail turned off."""

from __future__ import annotations

import pytest

from app.core.config import Settings
from app.google.client import GoogleApiError
from app.google.source import GoogleSource
from app.sources.base import AccountDisconnected, NoMailbox, SourceError
from tests.fakes.google import FakeGoogle
from tests.integration.google.conftest import ALICE, google_account


def statuses(fake: FakeGoogle, path: str) -> list[int]:
    return [r.status for r in fake.requests if r.path == path]


async def test_429_with_retry_after_is_retried(fake: FakeGoogle, source: GoogleSource) -> None:
    mid = fake.add_message(ALICE, sender="Bob <bob@example.com>", to=[ALICE], subject="Hi",
                           text="Hi")
    fake.fail_next(path_contains=f"/messages/{mid}", status=429, count=1, retry_after=1)
    message = await source.read_message(mid)
    assert message.id == mid
    assert statuses(fake, f"/gmail/v1/users/me/messages/{mid}") == [429, 200]


async def test_5xx_backs_off_and_retries(fake: FakeGoogle, source: GoogleSource) -> None:
    fake.fail_next(path_contains="/profile", status=503, count=1)
    start = await source.mail_changes(None)
    assert statuses(fake, "/gmail/v1/users/me/profile") == [503, 200]
    fake.fail_next(path_contains="/history", status=500, count=2)
    changes = await source.mail_changes(start.history_id)
    assert changes.added_message_ids == []
    assert statuses(fake, "/gmail/v1/users/me/history") == [500, 500, 200]


async def test_retries_are_bounded(fake: FakeGoogle, google_settings: Settings) -> None:
    once = google_settings.model_copy(update={"google_retry_attempts": 1})
    source = GoogleSource(google_account(fake, once), once)
    start = await source.mail_changes(None)
    fake.fail_next(path_contains="/history", status=503, count=5)
    with pytest.raises(SourceError):
        await source.mail_changes(start.history_id)
    assert statuses(fake, "/gmail/v1/users/me/history") == [503, 503]


async def test_a_retry_after_longer_than_the_bound_is_not_waited_for(
    fake: FakeGoogle, source: GoogleSource, google_settings: Settings
) -> None:
    start = await source.mail_changes(None)
    wait = int(google_settings.google_retry_max_seconds) + 60
    fake.fail_next(path_contains="/history", status=429, count=1, retry_after=wait)
    with pytest.raises(SourceError):
        await source.mail_changes(start.history_id)
    assert statuses(fake, "/gmail/v1/users/me/history") == [429]


async def test_401_refreshes_the_token_and_retries_once(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    start = await source.mail_changes(None)
    tokens_before = len([r for r in fake.requests if r.path == "/token"])
    assert tokens_before == 1  # the access token is reused across calls
    fake.fail_next(path_contains="/history", status=401, count=1)
    await source.mail_changes(start.history_id)
    assert len([r for r in fake.requests if r.path == "/token"]) == 2
    assert statuses(fake, "/gmail/v1/users/me/history") == [401, 200]

    fake.fail_next(path_contains="/history", status=401, count=2)
    with pytest.raises(SourceError):
        await source.mail_changes(start.history_id)
    assert statuses(fake, "/gmail/v1/users/me/history")[2:] == [401, 401]


async def test_an_expired_access_token_is_refreshed_before_the_call(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    start = await source.mail_changes(None)
    fake.expire_access_tokens()
    await source.mail_changes(start.history_id)
    assert statuses(fake, "/gmail/v1/users/me/history") in ([200], [401, 200])


async def test_a_revoked_grant_disconnects_the_account(
    fake: FakeGoogle, google_settings: Settings
) -> None:
    account = google_account(fake, google_settings)
    source = GoogleSource(account, google_settings)
    start = await source.mail_changes(None)  # an access token is cached now
    fake.revoke(ALICE)
    with pytest.raises(AccountDisconnected):  # 401, then the refresh gets invalid_grant
        await source.mail_changes(start.history_id)
    with pytest.raises(AccountDisconnected):  # no cached token: the first refresh fails
        await GoogleSource(account, google_settings).delta(None)


async def test_a_batch_whose_token_expired_is_refreshed_and_sent_again(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    start = await source.delta(None, files=False, limit=5)
    ids = [fake.add_message(ALICE, sender="Bob <bob@example.com>", to=[ALICE],
                            subject=f"Note {n}", text="Hi") for n in range(3)]
    fake.expire_access_tokens()
    delta = await source.delta(start.cursor, files=False, limit=5)
    assert [c.id for c in delta.messages] == list(reversed(ids))


async def test_a_failed_batch_part_is_retried_alone(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    start = await source.delta(None, files=False, limit=5)
    ids = [fake.add_message(ALICE, sender="Bob <bob@example.com>", to=[ALICE],
                            subject=f"Note {n}", text="Hi") for n in range(3)]
    fake.fail_next(path_contains=f"/messages/{ids[1]}", status=503, count=1)
    fake.reset_counters()
    delta = await source.delta(start.cursor, files=False, limit=5)
    assert [c.id for c in delta.messages] == list(reversed(ids))
    assert fake.batch_sizes == [3, 1]


async def test_a_token_endpoint_that_fails_for_a_moment_is_retried(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    fake.fail_next(path_contains="/token", status=503, count=1)
    start = await source.mail_changes(None)
    assert start.history_id
    assert statuses(fake, "/token") == [503, 200]


async def test_a_gmail_turned_off_raises_no_mailbox_once_and_drive_goes_on(
    fake: FakeGoogle, source: GoogleSource, google_settings: Settings
) -> None:
    """An administrator turns Gmail off after the account was connected: Gmail answers 400
    failedPrecondition "Mail service not enabled" to every call. That is `NoMailbox` (no
    retry can help), for a call and for a batch; the source then reads no mail and asks
    Gmail no more, and Drive is read as before."""
    fake.add_message(ALICE, sender="Bob <bob@example.com>", to=[ALICE], subject="Hi", text="Hi")
    plan = fake.add_file(ALICE, name="Plan", content="The plan.")
    ids = await source.gmail.list_ids(query="", limit=10)
    fake.disable_gmail(ALICE)

    with pytest.raises(NoMailbox) as caught:
        await source.delta(None)
    assert caught.value.account_id == source.client.account_id
    assert source.mailbox_gone()
    assert not source.reads_mail
    fake.reset_counters()
    delta = await source.delta(None)
    assert [f.id for f in delta.files] == [plan]
    # A mail tool says why, rather than that no mail matches or a message seen is gone.
    with pytest.raises(NoMailbox):
        await source.search_mail("Hi")
    with pytest.raises(NoMailbox):
        await source.read_message(ids[0])
    assert not [r for r in fake.requests if "/gmail/" in r.path]

    other = GoogleSource(google_account(fake, google_settings), google_settings)
    with pytest.raises(NoMailbox):
        await other.gmail.metadata(ids)  # a batch: each of its parts answers it
    assert other.mailbox_gone()


async def test_a_passing_precondition_failure_is_no_lost_mailbox(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    """Gmail also answers a passing 400 failedPrecondition, "Precondition check failed.",
    that the same call gets past later: it fails the call like any other error, and the
    mailbox is not taken for gone."""
    fake.fail_next(path_contains="/profile", precondition=True)
    with pytest.raises(GoogleApiError) as caught:
        await source.mail_changes(None)
    assert (caught.value.status, caught.value.reason) == (400, "failedPrecondition")
    assert not source.mailbox_gone()
    assert source.reads_mail
    assert (await source.mail_changes(None)).history_id
