"""Web push to a real "push service" on 127.0.0.1: the test is the browser and decrypts."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
import uuid
from typing import Any

import http_ece
import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pydantic import SecretStr
from sqlalchemy import select

from app.channels import push
from app.channels.models import PushSubscription
from app.channels.schemas import PushSubscriptionCreate
from app.cli import _setup_logging
from app.core.config import Settings
from app.core.crypto import secret_box
from app.core.db import transaction
from app.core.runtime import Runtime
from app.delivery.push import MAX_PAYLOAD_BYTES, PushChannel
from app.delivery.sender import DeliverySender
from app.notifications.service import notify
from tests import factories
from tests.integration.api.helpers import API, assert_error
from tests.integration.delivery.conftest import (
    add_digest,
    notifications,
    send_until_settled,
    with_settings,
)
from tests.integration.delivery.receivers import Received, WebhookReceiver

SERVER_KEY = ec.generate_private_key(ec.SECP256R1())
SERVER_PEM = SERVER_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


class Browser:
    """A browser's push subscription keys (RFC 8291): an ECDH P-256 pair and an auth secret."""

    def __init__(self, endpoint: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.endpoint = endpoint

    def subscription(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": b64url(point(self.key.public_key())),
                         "auth": b64url(self.auth)}}

    def plaintext(self, request: Received) -> bytes:
        assert request.headers["content-encoding"] == "aes128gcm"
        plain: bytes = http_ece.decrypt(request.body, private_key=self.key,
                                        auth_secret=self.auth, version="aes128gcm")
        return plain

    def decrypt(self, request: Received) -> Any:
        return json.loads(self.plaintext(request))


def verify_vapid(authorization: str, audience: str) -> dict[str, Any]:
    """Check the RFC 8292 header independently: `vapid t=<JWT ES256>,k=<server key>`."""
    scheme, _, params = authorization.partition(" ")
    assert scheme == "vapid"
    parts = dict(p.split("=", 1) for p in params.split(","))
    assert unb64url(parts["k"]) == point(SERVER_KEY.public_key())
    header, claims, signature = parts["t"].split(".")
    assert json.loads(unb64url(header))["alg"] == "ES256"
    raw = unb64url(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    SERVER_KEY.public_key().verify(der, f"{header}.{claims}".encode(),
                                   ec.ECDSA(hashes.SHA256()))  # raises when forged
    decoded: dict[str, Any] = json.loads(unb64url(claims))
    assert decoded["aud"] == audience
    assert decoded["sub"] == "mailto:ops@example.com"
    assert time.time() < decoded["exp"] <= time.time() + 24 * 3600
    return decoded


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"vapid_private_key": SecretStr(SERVER_PEM),
                                       "vapid_subject": "mailto:ops@example.com"})


async def _subscribe(client: httpx.AsyncClient, headers: dict[str, str],
                     browser: Browser) -> dict[str, Any]:
    response = await client.post(f"{API}/push/subscriptions", json=browser.subscription(),
                                 headers=headers)
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()
    return found


async def _subscriptions(runtime: Runtime) -> list[PushSubscription]:
    async with transaction(runtime.sessionmaker) as session:
        return list((await session.execute(select(PushSubscription))).scalars())


async def test_a_digest_is_pushed_encrypted_and_signed_with_vapid(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, headers = await factories.user_with_token(runtime)
    browser = Browser(receiver.url)
    subscription = await _subscribe(client, headers, browser)
    key = (await client.get(f"{API}/push/vapid-public-key", headers=headers)).json()
    assert unb64url(key["public_key"]) == point(SERVER_KEY.public_key())

    notification_id = await add_digest(runtime, user, channels=("push",))
    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    [sent] = [d for d in rows if d.channel == "push"]
    assert (sent.status, sent.target) == ("sent", subscription["id"])

    [request] = receiver.received
    assert request.path == "/hook"
    verify_vapid(request.headers["authorization"], f"http://127.0.0.1:{receiver.port}")
    assert int(request.headers["ttl"]) == runtime.settings.push_ttl_seconds
    assert request.headers["urgency"] == "normal"
    body = browser.decrypt(request)
    assert body["title"] == "Morning digest"
    assert body["body"] == "The summary."
    assert body["url"] == "/"
    assert body["actions"] == []
    assert body["notification_id"] == str(notification_id)


def _subject(request: Received) -> str:
    """The `sub` claim of a push request's VAPID token."""
    params = request.headers["authorization"].partition(" ")[2]
    token = dict(p.split("=", 1) for p in params.split(","))["t"]
    subject: str = json.loads(unb64url(token.split(".")[1]))["sub"]
    return subject


async def test_by_default_push_is_signed_with_the_public_https_url_as_subject(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """Apple's push service answers 403 BadJwtToken to a subject at localhost, the
    fallback, so an https public URL is the default subject (VAPID allows https: ones)."""
    runtime = with_settings(runtime, vapid_subject=Settings.model_fields["vapid_subject"].default,
                            public_url="https://pilot.example.com/")
    user, headers = await factories.user_with_token(runtime)
    await _subscribe(client, headers, Browser(receiver.url))
    notification_id = await add_digest(runtime, user, channels=("push",))
    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    assert [d.status for d in rows if d.channel == "push"] == ["sent"]
    [request] = receiver.received
    assert _subject(request) == "https://pilot.example.com"


async def test_question_choices_become_actions_and_each_browser_gets_one(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, headers = await factories.user_with_token(runtime)
    browsers = [Browser(receiver.url + "/a"), Browser(receiver.url + "/b")]
    for browser in browsers:
        await _subscribe(client, headers, browser)
    question_id = uuid.uuid4()
    async with transaction(runtime.sessionmaker) as session:
        notification_id = await notify(
            session=session, user_id=user.id, key=f"test:{uuid.uuid4()}", kind="question",
            title="Which folder?", body="Two candidates.", channels=["push"],
            data={"question_id": str(question_id), "choices": ["Invoices", "Receipts"]},
        )
    assert notification_id is not None
    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    assert sorted(d.status for d in rows if d.channel == "push") == ["sent", "sent"]

    by_path = {r.path: r for r in receiver.received}
    assert set(by_path) == {"/hook/a", "/hook/b"}
    for browser in browsers:
        request = by_path[browser.endpoint.removeprefix(receiver.url[:-len("/hook")])]
        assert request.headers["urgency"] == "high"
        body = browser.decrypt(request)
        assert body["url"] == f"/questions/{question_id}"
        assert body["question_id"] == str(question_id)
        assert body["actions"] == [{"action": "choice:0", "title": "Invoices"},
                                   {"action": "choice:1", "title": "Receipts"}]


async def test_japanese_and_emoji_are_cut_to_what_push_services_take(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """Push services refuse more than 4096 bytes of encrypted payload with 413, which fails
    the delivery for good. Japanese takes 3 bytes a character in UTF-8, emoji 4: a
    question with a long title, body and choices is cut to fit (the body first, then the
    choices), and pushed. It used to be cut at 1000 characters of body only, and refused."""
    receiver.max_body = 4096
    user, headers = await factories.user_with_token(runtime)
    browser = Browser(receiver.url)
    await _subscribe(client, headers, browser)
    title = ("来週の会議の日程について確認させてください。" * 20)[:300]
    body = "会議の資料を準備しました🎉" * 200
    choices = ["はい、その日程で問題ありません🙆" * 10, "いいえ、別の日にしてください🙅" * 10,
               "👍" * 100]
    async with transaction(runtime.sessionmaker) as session:
        notification_id = await notify(
            session=session, user_id=user.id, key=f"test:{uuid.uuid4()}", kind="question",
            title=title, body=body, channels=["push"],
            data={"question_id": str(uuid.uuid4()), "choices": choices},
        )
    assert notification_id is not None
    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    [sent] = [d for d in rows if d.channel == "push"]
    assert (sent.status, sent.last_error) == ("sent", None)

    [request] = receiver.received
    assert len(request.body) <= 4096
    plain = browser.plaintext(request)
    assert len(plain) <= MAX_PAYLOAD_BYTES
    pushed = json.loads(plain)
    assert pushed["title"] == title
    assert pushed["body"].endswith("…")
    assert body.startswith(pushed["body"].removesuffix("…"))
    assert [a["action"] for a in pushed["actions"]] == ["choice:0", "choice:1", "choice:2"]
    for action, choice in zip(pushed["actions"], choices, strict=True):
        assert action["title"].endswith("…")
        assert choice.startswith(action["title"].removesuffix("…"))


@pytest.mark.parametrize("status", [404, 410])
async def test_a_gone_subscription_is_removed_without_telling_the_user(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver, status: int
) -> None:
    user, headers = await factories.user_with_token(runtime)
    await _subscribe(client, headers, Browser(receiver.url))
    receiver.answer(status)
    notification_id = await add_digest(runtime, user, channels=("push",))
    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    [failed] = [d for d in rows if d.channel == "push"]
    assert failed.status == "failed"
    assert str(status) in (failed.last_error or "")
    assert await _subscriptions(runtime) == []
    assert [n.kind for n in await notifications(runtime, user)] == ["digest"]  # no error


async def test_429_and_5xx_are_retried(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, headers = await factories.user_with_token(runtime)
    await _subscribe(client, headers, Browser(receiver.url))
    receiver.answer(429, 503)
    notification_id = await add_digest(runtime, user, channels=("push",))
    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    [sent] = [d for d in rows if d.channel == "push"]
    assert (sent.status, sent.attempts) == ("sent", 3)
    assert len(await _subscriptions(runtime)) == 1


async def test_a_refused_endpoint_is_named_by_its_host_only(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """A push endpoint is a capability URL: its path must not reach errors (logged)."""
    user, headers = await factories.user_with_token(runtime)
    await _subscribe(client, headers, Browser(receiver.url + "/CAPABILITYSECRET"))
    runtime = with_settings(runtime, webhook_allow_private=False)
    notification_id = await add_digest(runtime, user, channels=("push",))
    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    [failed] = [d for d in rows if d.channel == "push"]
    assert failed.status == "failed"
    assert f"refused to call the push service http://127.0.0.1:{receiver.port}:" in (
        failed.last_error or "")
    assert "SECRET" not in (failed.last_error or "")


async def test_no_log_at_any_level_holds_a_push_endpoints_path(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A push endpoint is a capability URL, stored as given (see README, Connecting
    Google). With the logging `pilotlight` sets up, at DEBUG, subscribing, a push and
    unsubscribing log no part of its path: aiosqlite logged each statement with its
    parameters at DEBUG, the endpoint among them."""
    # As `pilotlight` sets logging up at its most telling level (httpx's request lines
    # are heard at DEBUG only).
    _setup_logging(runtime.settings.model_copy(update={"log_level": "DEBUG"}))
    caplog.set_level(logging.DEBUG)
    user, headers = await factories.user_with_token(runtime)
    browser = Browser(receiver.url + "/CAPABILITYSECRET")
    await _subscribe(client, headers, browser)
    notification_id = await add_digest(runtime, user, channels=("push",))
    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    assert [d.status for d in rows if d.channel == "push"] == ["sent"]
    gone = await client.request("DELETE", f"{API}/push/subscriptions",
                                json={"endpoint": browser.endpoint}, headers=headers)
    assert gone.status_code == 204

    assert [r.path for r in receiver.received] == ["/hook/CAPABILITYSECRET"]
    assert any(r.name == "httpx" for r in caplog.records)  # the log was heard
    assert "CAPABILITYSECRET" not in caplog.text


async def _resolve_push_service(host: str, port: int) -> list[str]:
    assert host == "push.example"
    return ["127.0.0.1"]


async def test_a_refusing_push_service_is_named_by_its_endpoints_host_not_the_pinned_address(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver
) -> None:
    """The request goes to the address the host resolved to (pinned); the failure, in the
    delivery and the user's feed, names the push service as the endpoint does."""
    user, headers = await factories.user_with_token(runtime)
    await _subscribe(client, headers,
                     Browser(f"http://push.example:{receiver.port}/CAPABILITYSECRET"))
    receiver.answer(400)
    notification_id = await add_digest(runtime, user, channels=("push",))
    sender = DeliverySender(runtime=runtime, channels={
        "push": PushChannel(runtime.settings, resolve=_resolve_push_service)})
    rows = await send_until_settled(sender, runtime, notification_id)
    [failed] = [d for d in rows if d.channel == "push"]
    assert failed.status == "failed"
    assert len(receiver.received) == 1  # it did reach the pinned address
    assert (f"the push service http://push.example:{receiver.port} answered 400"
            in (failed.last_error or "")), failed.last_error
    told = [n.body for n in await notifications(runtime, user) if n.kind == "error"]
    assert len(told) == 1
    assert f"http://push.example:{receiver.port} answered 400" in told[0], told
    assert "127.0.0.1" not in told[0] + (failed.last_error or "")
    assert "SECRET" not in told[0] + (failed.last_error or "")


async def test_push_without_a_subscription_fails_and_tells_the_user(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    notification_id = await add_digest(runtime, user, channels=("push",))
    rows = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    [failed] = [d for d in rows if d.channel == "push"]
    assert failed.status == "failed"
    assert "no browser is subscribed" in (failed.last_error or "")
    assert [n.kind for n in await notifications(runtime, user)] == ["digest", "error"]


async def test_subscribe_upserts_by_endpoint_and_unsubscribes(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await factories.user_with_token(runtime)
    browser = Browser("https://push.example.com/send/abc")
    first = await _subscribe(client, headers, browser)
    browser.auth = os.urandom(16)
    again = await _subscribe(client, headers, browser)
    assert again["id"] == first["id"]
    [row] = await _subscriptions(runtime)
    # The browser's auth secret is stored encrypted, and the newest one is kept.
    assert b64url(browser.auth).encode() not in row.auth_encrypted
    assert push.auth_of(row, secret_box(runtime.settings)) == b64url(browser.auth)

    response = await client.request("DELETE", f"{API}/push/subscriptions",
                                     json={"endpoint": browser.endpoint}, headers=headers)
    assert response.status_code == 204, response.text
    assert await _subscriptions(runtime) == []
    response = await client.request("DELETE", f"{API}/push/subscriptions",
                                    json={"endpoint": browser.endpoint}, headers=headers)
    assert_error(response, 404, "PushSubscriptionNotFound")

    created = await _subscribe(client, headers, browser)
    response = await client.delete(f"{API}/push/subscriptions/{created['id']}", headers=headers)
    assert response.status_code == 204


async def test_a_push_whose_auth_secret_no_key_reads_is_not_sent(
    client: httpx.AsyncClient, runtime: Runtime, receiver: WebhookReceiver
) -> None:
    user, headers = await factories.user_with_token(runtime)
    await _subscribe(client, headers, Browser(receiver.url))
    other_key = with_settings(runtime, secret_keys=[SecretStr(Fernet.generate_key().decode())])
    notification_id = await add_digest(other_key, user, channels=("push",))
    rows = await send_until_settled(DeliverySender(runtime=other_key), other_key,
                                    notification_id)
    [failed] = [d for d in rows if d.channel == "push"]
    assert failed.status == "failed"
    assert "cannot be decrypted" in (failed.last_error or "")
    assert receiver.received == []


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"endpoint": "not a url"}, id="bad-endpoint"),
        pytest.param({"endpoint": "ftp://push.example.com/x"}, id="ftp"),
        pytest.param({"keys": {"auth": "A" * 22}}, id="no-p256dh"),
        pytest.param({"keys": {"p256dh": "B" * 87}}, id="no-auth"),
        pytest.param({"keys": None}, id="no-keys"),
    ],
)
async def test_a_bad_subscription_is_422(
    client: httpx.AsyncClient, runtime: Runtime, change: dict[str, Any]
) -> None:
    _user, headers = await factories.user_with_token(runtime)
    body = {**Browser("https://push.example.com/x").subscription(), **change}
    if body["keys"] is None:
        del body["keys"]
    response = await client.post(f"{API}/push/subscriptions", json=body, headers=headers)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(("keys", "fragment"), [
    pytest.param({"p256dh": "B" * 87}, "not a P-256 public key", id="not-a-point"),
    pytest.param({"p256dh": "BA" + "A" * 85}, "not a P-256 public key", id="off-the-curve"),
    pytest.param({"auth": "A" * 30}, "16 bytes", id="auth-too-long"),
])
async def test_keys_no_push_could_use_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, keys: dict[str, str], fragment: str
) -> None:
    """Taken, every push to such a subscription would fail when it is encrypted."""
    _user, headers = await factories.user_with_token(runtime)
    body = Browser("https://push.example.com/x").subscription()
    body["keys"] = {**body["keys"], **keys}
    response = await client.post(f"{API}/push/subscriptions", json=body, headers=headers)
    assert_error(response, 422, "ValidationError", f"keys.{next(iter(keys))}", fragment)
    assert await _subscriptions(runtime) == []


async def test_unsubscribing_an_endpoint_with_nul_is_422(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await factories.user_with_token(runtime)
    response = await client.request("DELETE", f"{API}/push/subscriptions",
                                    json={"endpoint": "https://x/\u0000"}, headers=headers)
    assert_error(response, 422, "ValidationError", "endpoint", "NUL")


async def test_a_private_endpoint_is_refused_unless_allowed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.settings.webhook_allow_private = False
    try:
        _user, headers = await factories.user_with_token(runtime)
        for endpoint in ("https://127.0.0.1/push", "http://push.example.com/x"):
            response = await client.post(f"{API}/push/subscriptions",
                                         json=Browser(endpoint).subscription(), headers=headers)
            assert_error(response, 422, "PushEndpointRefused")
    finally:
        runtime.settings.webhook_allow_private = True


async def test_another_users_subscription_is_404(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _a, headers_a = await factories.user_with_token(runtime)
    _b, headers_b = await factories.user_with_token(runtime)
    browser = Browser("https://push.example.com/send/a")
    created = await _subscribe(client, headers_a, browser)
    response = await client.delete(f"{API}/push/subscriptions/{created['id']}",
                                   headers=headers_b)
    assert_error(response, 404, "PushSubscriptionNotFound")
    response = await client.request("DELETE", f"{API}/push/subscriptions",
                                    json={"endpoint": browser.endpoint}, headers=headers_b)
    assert_error(response, 404, "PushSubscriptionNotFound")
    assert (await client.get(f"{API}/push/subscriptions", headers=headers_b)).json() == []
    assert len(await _subscriptions(runtime)) == 1


async def test_subscriptions_at_once_never_pass_the_limit(runtime: Runtime) -> None:
    """On PostgreSQL ten subscribes at once, with 45 subscriptions there, made 51."""
    user, _ = await factories.user_with_token(runtime)

    async def subscribe(n: int) -> bool:
        data = PushSubscriptionCreate.model_validate(
            Browser(f"https://push.example.net/send/{n}").subscription())
        try:
            async with transaction(runtime.sessionmaker) as session:
                await push.subscribe(session=session, user=user, data=data,
                                     settings=runtime.settings)
        except push.TooManyPushSubscriptions:
            return False
        return True

    for n in range(push.MAX_SUBSCRIPTIONS_PER_USER - 5):
        assert await subscribe(n)
    made = await asyncio.gather(*(subscribe(1000 + n) for n in range(10)))
    assert sum(made) == 5
    async with transaction(runtime.sessionmaker) as session:
        assert len(await push.list_for(session=session, user=user)) == (
            push.MAX_SUBSCRIPTIONS_PER_USER)
