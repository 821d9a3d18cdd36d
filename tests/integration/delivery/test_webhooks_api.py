"""The webhooks API: the secret shown once and stored encrypted, one user's webhooks only."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text

from app.channels import service as channels
from app.channels.models import Webhook
from app.channels.schemas import WebhookCreate, WebhookUpdate
from app.core import crypto
from app.core.crypto import SecretKeyError, secret_box
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.delivery.sender import DeliverySender
from app.models import Base
from tests import factories
from tests.integration.api.helpers import API, add_notification, assert_error
from tests.integration.delivery.conftest import (
    SECRET_KEY,
    add_digest,
    add_webhook,
    delivery,
    with_settings,
)
from tests.integration.delivery.receivers import WebhookReceiver

URL = "https://hooks.example.com/pilotlight"
SHOWN = "https://hooks.example.com/\u2026"


async def test_create_shows_the_secret_once_and_stores_it_encrypted(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await factories.user_with_token(runtime)
    response = await client.post(f"{API}/webhooks", json={"url": URL}, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 24
    assert created["url"] == URL
    assert created["event_types"] == [
        "digest.created", "question.asked", "run.failed", "alert.created"]
    assert (created["enabled"], created["status_detail"]) == (True, None)

    listed = (await client.get(f"{API}/webhooks", headers=headers)).json()
    assert [w["id"] for w in listed] == [created["id"]]
    one = (await client.get(f"{API}/webhooks/{created['id']}", headers=headers)).json()
    for shown in (listed[0], one):
        assert "secret" not in shown
        assert secret not in str(shown)

    key = secret.removeprefix("whsec_")
    async with runtime.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(text(f"SELECT * FROM {table.name}"))).all():
                for value in row:
                    shown = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    assert key not in shown, table.name
                    assert secret not in shown, table.name
    async with transaction(runtime.sessionmaker) as session:
        webhook = await session.get(Webhook, uuid.UUID(created["id"]))
        assert webhook is not None
        assert channels.secret_of(webhook, secret_box(runtime.settings)) == secret


SLACK = "https://hooks.slack.com/services/T0AAAA/B0BBBB/PATHSECRET?token=QUERYSECRET"


async def test_the_url_is_stored_encrypted_and_shown_masked_after_creation(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """An incoming webhook's URL is its credential: the database holds it only sealed,
    and after the answer that creates it the API shows scheme and host, the rest masked."""
    _user, headers = await factories.user_with_token(runtime)
    response = await client.post(f"{API}/webhooks", json={"url": SLACK}, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["url"] == SLACK  # once, like the secret beside it
    path = f"{API}/webhooks/{created['id']}"

    listed = (await client.get(f"{API}/webhooks", headers=headers)).json()
    one = (await client.get(path, headers=headers)).json()
    changed = (await client.patch(path, json={"enabled": False}, headers=headers)).json()
    rotated = (await client.post(f"{path}/secret", headers=headers)).json()
    moved = (await client.patch(path, json={"url": SLACK.replace("PATH", "NEW")},
                                headers=headers)).json()
    for shown in (*listed, one, changed, rotated, moved):
        assert shown["url"] == "https://hooks.slack.com/\u2026", shown
        assert "SECRET" not in str(shown)
        assert "/services" not in str(shown)

    async with runtime.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(text(f"SELECT * FROM {table.name}"))).all():
                for value in row:
                    stored = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    assert "SECRET" not in stored, table.name
                    assert "/services" not in stored, table.name
    async with transaction(runtime.sessionmaker) as session:
        webhook = await session.get(Webhook, uuid.UUID(created["id"]))
        assert webhook is not None
        assert channels.url_of(webhook, secret_box(runtime.settings)) == SLACK.replace(
            "PATH", "NEW")


async def test_the_same_url_again_keeps_its_sealed_bytes(runtime: Runtime) -> None:
    """A PATCH with the URL the webhook already has changes nothing of it: a delivery on
    its way tells by the sealed bytes whether the webhook moved (`disable`)."""
    user, _ = await factories.user_with_token(runtime)
    webhook, _secret = await add_webhook(runtime, user, URL)
    async with transaction(runtime.sessionmaker) as session:
        again = await channels.update_webhook(
            session=session, user=user, webhook_id=webhook.id,
            data=WebhookUpdate(url=URL), settings=runtime.settings)
        assert again.url_encrypted == webhook.url_encrypted
        assert await channels.disable(session=session, user_id=user.id, webhook_id=webhook.id,
                                      url_encrypted=webhook.url_encrypted, reason="410 Gone")


async def test_change_turn_off_and_on_and_delete(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await factories.user_with_token(runtime)
    created = (await client.post(f"{API}/webhooks", json={
        "url": URL, "event_types": ["run.failed", "run.failed"]}, headers=headers)).json()
    assert created["event_types"] == ["run.failed"]
    path = f"{API}/webhooks/{created['id']}"

    changed = await client.patch(path, json={"url": URL + "/v2", "enabled": False,
                                             "event_types": ["digest.created"]}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["url"], changed.json()["enabled"]) == (SHOWN, False)
    assert changed.json()["event_types"] == ["digest.created"]

    async with transaction(runtime.sessionmaker) as session:
        webhook = await session.get(Webhook, uuid.UUID(created["id"]))
        assert webhook is not None
        assert channels.url_of(webhook, secret_box(runtime.settings)) == URL + "/v2"
        await channels.disable(session=session, user_id=_user.id, webhook_id=webhook.id,
                               url_encrypted=webhook.url_encrypted,
                               reason="410 Gone")  # no-op: already off
    on = await client.patch(path, json={"enabled": True}, headers=headers)
    assert (on.json()["enabled"], on.json()["status_detail"]) == (True, None)

    for body in ({"secret": "mine"}, {"event_types": []}, {"event_types": ["nope"]},
                 {"url": "file:///etc/passwd"}):
        response = await client.patch(path, json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
    # Null would silently change nothing: a field is changed, or left out.
    for body in ({"url": None}, {"enabled": None}, {"event_types": None}):
        assert_error(await client.patch(path, json=body, headers=headers), 422,
                     "ValidationError", "cannot be null")
    assert (await client.get(path, headers=headers)).json() == on.json()

    assert (await client.delete(path, headers=headers)).status_code == 204
    assert_error(await client.get(path, headers=headers), 404, "WebhookNotFound")
    assert_error(await client.delete(path, headers=headers), 404, "WebhookNotFound")


async def test_a_new_secret_is_shown_once_and_the_one_before_it_signs_for_a_day(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await factories.user_with_token(runtime)
    created = (await client.post(f"{API}/webhooks", json={"url": URL}, headers=headers)).json()
    assert created["previous_secret_until"] is None
    path = f"{API}/webhooks/{created['id']}"

    response = await client.post(f"{path}/secret", headers=headers)
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    until = datetime.fromisoformat(rotated["previous_secret_until"])
    assert timedelta(hours=23) < until - utcnow() <= timedelta(hours=24)
    shown = (await client.get(path, headers=headers)).json()
    assert shown["previous_secret_until"] == rotated["previous_secret_until"]
    assert "secret" not in shown

    # A second rotation: the newest two sign; the first secret no longer does.
    again = (await client.post(f"{path}/secret", headers=headers)).json()
    async with transaction(runtime.sessionmaker) as session:
        webhook = await session.get(Webhook, uuid.UUID(created["id"]))
        assert webhook is not None
        box = secret_box(runtime.settings)
        assert channels.secret_of(webhook, box) == again["secret"]
        assert channels.previous_secret_of(webhook, box, utcnow()) == rotated["secret"]
        for secret in (created["secret"], rotated["secret"], again["secret"]):
            for sealed in (webhook.secret_encrypted, webhook.previous_secret_encrypted):
                assert sealed is not None
                assert secret.removeprefix("whsec_").encode() not in sealed
        # Once its day is over it signs nothing, and the API says so.
        webhook.previous_secret_until = utcnow() - timedelta(seconds=1)
        assert channels.previous_secret_of(webhook, box, utcnow()) is None
    assert (await client.get(path, headers=headers)).json()["previous_secret_until"] is None

    assert_error(await client.post(f"{API}/webhooks/{uuid.uuid4()}/secret", headers=headers),
                 404, "WebhookNotFound")


async def test_another_users_webhook_is_not_found(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _a, headers_a = await factories.user_with_token(runtime)
    _b, headers_b = await factories.user_with_token(runtime)
    created = (await client.post(f"{API}/webhooks", json={"url": URL},
                                 headers=headers_a)).json()
    path = f"{API}/webhooks/{created['id']}"
    assert_error(await client.get(path, headers=headers_b), 404, "WebhookNotFound")
    assert_error(await client.patch(path, json={"enabled": False}, headers=headers_b), 404,
                 "WebhookNotFound")
    assert_error(await client.delete(path, headers=headers_b), 404, "WebhookNotFound")
    assert (await client.get(f"{API}/webhooks", headers=headers_b)).json() == []
    mine = (await client.get(path, headers=headers_a)).json()
    assert (mine["enabled"], mine["url"]) == (True, SHOWN)


async def test_a_user_has_at_most_twenty(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await factories.user_with_token(runtime)
    for n in range(channels.MAX_WEBHOOKS_PER_USER):
        response = await client.post(f"{API}/webhooks", json={"url": f"{URL}/{n}"},
                                     headers=headers)
        assert response.status_code == 201
    response = await client.post(f"{API}/webhooks", json={"url": URL}, headers=headers)
    assert_error(response, 409, "TooManyWebhooks")


async def test_requests_at_once_never_pass_the_limit(runtime: Runtime) -> None:
    """On PostgreSQL ten creates at once, with 15 webhooks there, made 21: each counted
    before any of the others had added its own."""
    user, _ = await factories.user_with_token(runtime)
    for n in range(15):
        async with transaction(runtime.sessionmaker) as session:
            await channels.create(session=session, user=user, settings=runtime.settings,
                                  data=WebhookCreate(url=f"{URL}/{n}"))

    async def create(n: int) -> bool:
        try:
            async with transaction(runtime.sessionmaker) as session:
                await channels.create(session=session, user=user, settings=runtime.settings,
                                      data=WebhookCreate(url=f"{URL}/more-{n}"))
        except channels.TooManyWebhooks:
            return False
        return True

    made = await asyncio.gather(*(create(n) for n in range(10)))
    assert sum(made) == 5
    async with transaction(runtime.sessionmaker) as session:
        assert len(await channels.list_for(session=session, user=user)) == 20


async def test_each_delivery_names_the_webhook_it_goes_to(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """With two webhooks, the deliveries did not say which one had failed."""
    user, headers = await factories.user_with_token(runtime)
    made = []
    for n in range(2):
        async with transaction(runtime.sessionmaker) as session:
            webhook, _secret = await channels.create(
                session=session, user=user, settings=runtime.settings,
                data=WebhookCreate(url=f"https://hooks.example.com/{n}"))
            made.append(str(webhook.id))
    notification_id = await add_notification(runtime, user, channels=("email", "webhook"))
    [body] = (await client.get(f"{API}/notifications", headers=headers)).json()["items"]
    assert body["id"] == str(notification_id)
    assert sorted((d["channel"], d["target"]) for d in body["deliveries"]) == sorted(
        [("email", None), ("in_app", None), *(("webhook", w) for w in made)])


# --- the keys -----------------------------------------------------------------------------


async def test_rotation_and_a_wrong_key_failing_closed(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, _ = await factories.user_with_token(runtime)
    _webhook, receiver.secret = await add_webhook(runtime, user, receiver.url)
    newer = Fernet.generate_key().decode()

    # A new key in front: old secrets still decrypt, and are sent.
    rotated = with_settings(runtime, secret_keys=[SecretStr(newer), SecretStr(SECRET_KEY)])
    sent = await add_digest(rotated, user, channels=("webhook",))
    await DeliverySender(runtime=rotated).run_once()
    assert (await delivery(rotated, sent, "webhook")).status == "sent"
    assert receiver.received[-1].verified

    # The old key gone: the secret cannot be read, so nothing is sent, and the user is told.
    wrong = with_settings(runtime, secret_keys=[SecretStr(newer)])
    refused = await add_digest(wrong, user, channels=("webhook",))
    await DeliverySender(runtime=wrong).run_once()
    failed = await delivery(wrong, refused, "webhook")
    assert failed.status == "failed"
    assert "cannot be decrypted" in (failed.last_error or "")
    assert len(receiver.received) == 1


async def test_with_postgresql_and_no_keys_nothing_is_generated(runtime: Runtime) -> None:
    settings = runtime.settings.model_copy(update={
        "secret_keys": [], "database_url": "postgresql+asyncpg://u@127.0.0.1/none"})
    with pytest.raises(SecretKeyError, match="PILOTLIGHT_SECRET_KEYS is not set"):
        secret_box(settings)
    assert not (settings.data_dir / "secret.key").exists()


async def test_embedded_a_key_is_generated_once_and_kept_private(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    settings = runtime.settings.model_copy(update={
        "secret_keys": [], "database_url": "sqlite+aiosqlite:///x.db"})
    path = settings.data_dir / "secret.key"
    assert not path.exists()
    with caplog.at_level("WARNING"):
        token = secret_box(settings).encrypt(b"whsec_x")
    assert path.stat().st_mode & 0o777 == 0o600
    assert "generated a secret key" in caplog.text
    key = path.read_bytes()

    crypto._boxes.clear()  # as a new process: the key is read back, not made again
    assert secret_box(settings).decrypt(token) == b"whsec_x"
    assert path.read_bytes() == key
    assert Fernet(key.strip()).decrypt(token) == b"whsec_x"
