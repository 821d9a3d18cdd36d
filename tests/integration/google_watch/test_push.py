"""Gmail push: the Pub/Sub endpoint checks the signed token before anything happens and
wakes the poller at once; users.watch is renewed, and a failed renewal alerts once."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import transaction
from app.core.runtime import Runtime
from app.google.renewal import PushRenewer, gmail_watch
from app.google.watch_models import WatchCursor
from app.instructions import service as instructions
from app.instructions.models import Instruction
from app.notifications.models import Notification
from app.users.models import User
from tests.factories import instruction_body, user_with_token
from tests.fakes.google import FakeGoogle
from tests.integration.google_watch.conftest import (
    AUDIENCE,
    EMAIL,
    TOPIC,
    fired_ids,
    google_account,
    pdf,
    poller,
    watch_runs,
)

PUSH = "/api/v1/google/pubsub"


def push_body(email: str = EMAIL, history_id: int = 12345) -> dict[str, Any]:
    data = json.dumps({"emailAddress": email, "historyId": history_id}).encode()
    return {
        "message": {"data": base64.b64encode(data).decode(), "messageId": "136969346945",
                    "publishTime": "2026-11-23T07:00:00Z"},
        "subscription": "projects/pilotlight-test/subscriptions/gmail-push",
    }


async def watched(client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle) -> str:
    user, headers = await user_with_token(runtime, sample=False)
    await google_account(runtime, user, fake)
    response = await client.post(
        "/api/v1/instructions", headers=headers,
        json=instruction_body(trigger={"type": "watch", "gmail_query": "has:attachment"}),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def next_poll_at(runtime: Runtime) -> Any:
    async with runtime.sessionmaker() as session:
        return (await session.execute(select(WatchCursor.next_poll_at))).scalar_one()


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        pytest.param(None, 401, id="no-token"),
        pytest.param("Basic YWxpY2U6c2VjcmV0", 401, id="not-bearer"),
        pytest.param("Bearer not-a-jwt", 403, id="garbage"),
        pytest.param("wrong-audience", 403, id="wrong-audience"),
        pytest.param("tampered", 403, id="tampered-signature"),
    ],
)
async def test_a_push_with_a_bad_token_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
    authorization: str | None, status: int,
) -> None:
    await watched(client, runtime, fake)
    await poller(runtime).run_once()
    due = await next_poll_at(runtime)
    if authorization == "wrong-audience":
        authorization = f"Bearer {fake.sign_pubsub_token('https://elsewhere.example/push')}"
    elif authorization == "tampered":
        header, claims, signature = fake.sign_pubsub_token(AUDIENCE).split(".")
        forged = json.loads(base64.urlsafe_b64decode(claims + "=="))
        forged["email"] = "mallory@example.com"
        claims = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
        authorization = f"Bearer {header}.{claims}.{signature}"
    headers = {"Authorization": authorization} if authorization else {}

    response = await client.post(PUSH, json=push_body(), headers=headers)

    assert response.status_code == status, response.text
    assert response.json()["error"] in ("PushTokenMissing", "PushRefused")
    assert await next_poll_at(runtime) == due


async def test_a_signed_push_wakes_the_poller_for_that_account_at_once(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    instruction_id = await watched(client, runtime, fake)
    watch = poller(runtime)  # polls every hour: only the push can make it look now
    stop = asyncio.Event()
    loop = asyncio.create_task(watch.run(stop))
    try:
        async def polled_once() -> None:
            while await _cursor_version(runtime) < 1:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(polled_once(), 30)
        invoice = fake.add_message(EMAIL, sender="billing@example.com", attachments=pdf())
        token = fake.sign_pubsub_token(AUDIENCE)

        response = await client.post(
            PUSH, json=push_body(history_id=fake.history_id(EMAIL)),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 204, response.text

        async def fired() -> None:
            while not await watch_runs(runtime, instruction_id):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(fired(), 30)
        assert fired_ids(await watch_runs(runtime, instruction_id)) == [invoice]
    finally:
        stop.set()
        await loop


async def _cursor_version(runtime: Runtime) -> int:
    async with runtime.sessionmaker() as session:
        version = (await session.execute(select(WatchCursor.version))).scalar_one_or_none()
    return version or 0


async def test_a_push_that_is_not_a_gmail_notification_is_a_422(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    token = fake.sign_pubsub_token(AUDIENCE)
    body = push_body()
    body["message"]["data"] = base64.b64encode(b"not json").decode()
    response = await client.post(PUSH, json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422
    assert response.json()["error"] == "PushMessageInvalid"


@pytest.fixture
def push_settings(runtime: Runtime) -> Settings:
    runtime.settings = runtime.settings.model_copy(update={"google_pubsub_topic": TOPIC})
    return runtime.settings


async def test_a_failed_renewal_alerts_once_and_polling_carries_on(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle, push_settings: Settings
) -> None:
    instruction_id = await watched(client, runtime, fake)
    watch = poller(runtime)
    await watch.run_once()
    renewer = PushRenewer(sessionmaker=runtime.sessionmaker, settings=push_settings,
                          register=gmail_watch)

    # Not retried (a topic Gmail may not publish to answers so): one call per renewal.
    fake.fail_next(path_contains="/watch", status=400, count=2)
    first = await renewer.run_once()
    second = await renewer.run_once()

    assert len(first.failed) == len(second.failed) == 1
    assert (len(first.alerted), len(second.alerted)) == (1, 0)
    async with runtime.sessionmaker() as session:
        alerts = (await session.execute(select(Notification))).scalars().all()
    assert [(a.kind, a.title) for a in alerts] == [("alert", "Gmail push could not be renewed")]
    assert fake.watches(EMAIL) == []
    # Polling carries on.
    invoice = fake.add_message(EMAIL, sender="billing@example.com", attachments=pdf())
    async with runtime.sessionmaker() as session:
        account_id = (await session.execute(select(WatchCursor.account_id))).scalar_one()
    await watch.poll_accounts([account_id])
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [invoice]

    renewed = await renewer.run_once()
    assert renewed.renewed == [account_id]
    assert [w["topic"] for w in fake.watches(EMAIL)] == [TOPIC]
    async with runtime.sessionmaker() as session:
        cursor = (await session.execute(select(WatchCursor))).scalar_one()
    assert cursor.push_failing_since is None
    assert cursor.push_expires_at is not None
    # Renewed just now: not due again until a day has passed.
    assert (await renewer.run_once()).renewed == []


async def test_push_is_stopped_once_an_account_has_no_mail_watch_left(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle, push_settings: Settings
) -> None:
    instruction_id = await watched(client, runtime, fake)
    await poller(runtime).run_once()
    renewer = PushRenewer(sessionmaker=runtime.sessionmaker, settings=push_settings,
                          register=gmail_watch)
    registered = await renewer.run_once()
    assert len(registered.renewed) == 1
    assert [w["topic"] for w in fake.watches(EMAIL)] == [TOPIC]
    assert (await renewer.run_once()).stopped == []  # still watched: nothing stops

    async with runtime.sessionmaker() as session:
        user_id = (await session.execute(select(Instruction.user_id))).scalar_one()
    async with transaction(runtime.sessionmaker) as session:
        user = await session.get(User, user_id)
        assert user is not None
        await instructions.delete(
            session=session, user=user, instruction_id=uuid.UUID(instruction_id)
        )
    stopped = await renewer.run_once()

    assert stopped.stopped == registered.renewed
    assert fake.watches(EMAIL) == []  # Gmail no longer pushes for this mailbox
    async with runtime.sessionmaker() as session:
        cursor = (await session.execute(select(WatchCursor))).scalar_one()
    assert (cursor.push_topic, cursor.push_expires_at) == (None, None)
    again = await renewer.run_once()
    assert (again.stopped, again.renewed) == ([], [])  # stopped once, not re-registered
