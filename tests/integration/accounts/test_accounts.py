"""The accounts API, removing an account (revoked at Google), and a revoked grant found by
a run: the account disconnected, dependent instructions paused, the user told once."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from google.auth.exceptions import RefreshError
from sqlalchemy import select

from app.accounts.models import Account
from app.core.db import transaction
from app.core.runtime import Runtime
from app.google.accounts import mark_disconnected
from app.instructions.models import Instruction
from app.notifications.models import Notification
from app.users.models import User
from tests.factories import instruction, user_with_token
from tests.fakes.google import FakeGoogle
from tests.integration.accounts.conftest import (
    API,
    CONNECTED,
    PUBLIC_URL,
    add_google_account,
    connect,
    google_accounts,
    refresh,
)
from tests.integration.api.helpers import assert_error
from tests.integration.runs.helpers import get_run, make_worker, work_once
from tests.integration.runs.test_worker import run_now

RECONNECT = f"{PUBLIC_URL}/api/v1/google/connect"


async def watch_instruction(runtime: Runtime, user: User) -> Instruction:
    """A watch instruction, written as the watch trigger stores it (the API refuses them
    until Gmail watching lands)."""
    created = await instruction(runtime, user, title="Invoices")
    async with transaction(runtime.sessionmaker) as session:
        row = await session.get(Instruction, created.id)
        assert row is not None
        row.trigger = {"type": "watch", "gmail_query": "from:billing@example.com"}
        row.next_run_at = None
    return row


async def statuses(runtime: Runtime, *instructions: Instruction) -> list[str]:
    async with transaction(runtime.sessionmaker) as session:
        return [
            (await session.get(Instruction, i.id, populate_existing=True)).status  # type: ignore[union-attr]
            for i in instructions
        ]


async def notifications_of(runtime: Runtime, user: User) -> list[Notification]:
    async with transaction(runtime.sessionmaker) as session:
        return list((await session.execute(
            select(Notification).where(Notification.user_id == user.id)
        )).scalars())


async def test_accounts_lists_features_and_never_a_token(
    client: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime)  # with the sample account
    account = await add_google_account(runtime, fake_google, user)
    response = await client.get(f"{API}/accounts", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(a["kind"], a["status"], a["features"]) for a in body] == [
        ("sample", "active", {"gmail": True, "drive": True, "gmail_send": False}),
        ("google", "active", {"gmail": True, "drive": True, "gmail_send": False}),
    ]
    assert body[1]["email"] == "alice@example.com"
    assert set(body[1]) == {"id", "kind", "email", "status", "status_detail", "features",
                            "scopes", "created_at", "updated_at"}
    sealed = account.refresh_token_encrypted or b""
    assert sealed.decode(errors="ignore")[:20] not in response.text


async def test_deleting_a_google_account_revokes_the_grant_and_pauses_dependents(
    client: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await add_google_account(runtime, fake_google, user)
    digest = await instruction(runtime, user)
    refresh(account, runtime.settings)  # a live grant

    response = await client.delete(f"{API}/accounts/{account.id}", headers=headers)

    assert response.status_code == 204, response.text
    assert [r.path for r in fake_google.requests if r.method == "POST"][-1] == "/revoke"
    with pytest.raises(RefreshError, match="invalid_grant"):
        refresh(account, runtime.settings)  # Google forgot it
    assert await google_accounts(runtime) == []
    assert (await client.get(f"{API}/accounts", headers=headers)).json() == []
    assert await statuses(runtime, digest) == ["paused"]
    again = await client.delete(f"{API}/accounts/{account.id}", headers=headers)
    assert_error(again, 404, "AccountNotFound")


async def test_deleting_when_google_is_unreachable_still_removes_the_account(
    client: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime)
    account = await add_google_account(runtime, fake_google, user)
    fake_google.stop()  # best effort: the account goes whatever Google says

    response = await client.delete(f"{API}/accounts/{account.id}", headers=headers)

    assert response.status_code == 204, response.text
    assert await google_accounts(runtime) == []


async def test_a_revoked_grant_disconnects_pauses_and_tells_the_user_once(
    runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, _headers = await user_with_token(runtime)  # the sample account stays active
    account = await add_google_account(runtime, fake_google, user, email="alice@example.com")
    digest = await instruction(runtime, user, title="Digest")
    watch = await watch_instruction(runtime, user)
    fake_google.revoke("alice@example.com")
    worker = make_worker(runtime)  # the real agent reading the real Google source

    run_id = await run_now(runtime, digest)
    assert await work_once(worker) == 1

    run = await get_run(runtime, run_id)
    assert run.status == "failed"  # at once: no retry can bring a grant back
    assert run.attempt == 1
    assert "AccountDisconnected" in (run.error or "")
    assert await work_once(worker) == 0  # nothing re-queued
    assert [r.status for r in fake_google.requests if r.path == "/token"] == [400]
    (marked,) = await google_accounts(runtime, user)
    assert marked.status == "disconnected"
    assert "invalid_grant" in (marked.status_detail or "")
    assert RECONNECT in (marked.status_detail or "")
    # the watch needs Google; the digest still has the sample mailbox to read
    assert await statuses(runtime, digest, watch) == ["active", "paused"]
    async with transaction(runtime.sessionmaker) as session:
        paused = await session.get(Instruction, watch.id)
        assert paused is not None
        assert paused.next_run_at is None
        assert "alice@example.com was disconnected" in (paused.status_detail or "")
        still = await session.get(Instruction, digest.id)
        assert still is not None
        assert still.consecutive_failures == 0
    (told,) = await notifications_of(runtime, user)
    assert (told.kind, told.title) == ("alert", "Google account disconnected")
    assert RECONNECT in told.body
    assert told.data["reconnect_url"] == RECONNECT
    assert told.data["paused_instruction_ids"] == [str(watch.id)]

    # The next run reads the sample mailbox alone and tells nobody about Google again.
    fake_google.reset_counters()
    second = await run_now(runtime, digest)
    assert await work_once(worker) == 1
    assert (await get_run(runtime, second)).status == "succeeded"
    assert fake_google.requests == []
    alerts = [n for n in await notifications_of(runtime, user) if n.kind == "alert"]
    assert len(alerts) == 1
    # nor does any other caller that finds the grant gone
    async with transaction(runtime.sessionmaker) as session:
        assert not await mark_disconnected(
            session, account=account, reason="invalid_grant again", settings=runtime.settings
        )
    assert [n.id for n in await notifications_of(runtime, user) if n.kind == "alert"] == [
        told.id
    ]
    assert account.status == "disconnected"  # the caller's copy says so too


async def test_without_another_account_every_instruction_is_paused(
    runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, _headers = await user_with_token(runtime, sample=False)
    account = await add_google_account(runtime, fake_google, user)
    digest = await instruction(runtime, user, title="Digest")
    watch = await watch_instruction(runtime, user)
    other_user, _ = await user_with_token(runtime)  # reads the sample
    theirs = await instruction(runtime, other_user)

    results = []
    for _ in range(2):
        async with transaction(runtime.sessionmaker) as session:
            results.append(await mark_disconnected(
                session, account=account, reason="invalid_grant: Token has been revoked.",
                settings=runtime.settings,
            ))

    assert results == [True, False]
    assert await statuses(runtime, digest, watch, theirs) == ["paused", "paused", "active"]
    (told,) = await notifications_of(runtime, user)
    assert set(told.data["paused_instruction_ids"]) == {str(digest.id), str(watch.id)}
    assert await notifications_of(runtime, other_user) == []


async def test_concurrent_callers_tell_the_user_once(
    runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, _headers = await user_with_token(runtime, sample=False)
    account = await add_google_account(runtime, fake_google, user)

    async def mark() -> bool:
        async with transaction(runtime.sessionmaker) as session:
            copy = await session.get(Account, account.id)
            assert copy is not None
            return await mark_disconnected(
                session, account=copy, reason="invalid_grant", settings=runtime.settings
            )

    assert sorted(await asyncio.gather(*(mark() for _ in range(4)))) == [False] * 3 + [True]
    assert len(await notifications_of(runtime, user)) == 1


async def test_reconnecting_makes_the_account_active_again(
    runtime: Runtime, fake_google: FakeGoogle, browser: httpx.AsyncClient
) -> None:
    user, headers = await user_with_token(runtime)
    response = await connect(browser, headers)
    assert response.headers["location"] == CONNECTED
    (account,) = await google_accounts(runtime, user)
    async with transaction(runtime.sessionmaker) as session:
        await mark_disconnected(session, account=account, reason="invalid_grant",
                                settings=runtime.settings)

    response = await connect(browser, headers)

    assert response.headers["location"] == CONNECTED
    (again,) = await google_accounts(runtime, user)
    assert (again.id, again.status, again.status_detail) == (account.id, "active", None)
    refresh(again, runtime.settings)
