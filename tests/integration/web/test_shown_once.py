"""A new API token or webhook secret, shown once on the settings page after a redirect:
a reload posts nothing again and shows it no more; the cookie that carries it is sealed."""

from __future__ import annotations

import json
import re
import time

import httpx
from cryptography.fernet import Fernet

from app.channels import service as webhooks
from app.channels.schemas import WebhookCreate
from app.core.crypto import secret_box
from app.core.db import transaction
from app.core.runtime import Runtime
from app.users import service as users
from app.users.models import User
from tests import factories
from tests.integration.web.helpers import browser, sign_in

COOKIE = "pilotlight_shown_once"
TOKEN = re.compile(r'<code id="new-token">(plt_[^<]+)</code>')
SECRET = re.compile(r'<code id="new-webhook-secret">(whsec_[^<]+)</code>')


def _set_cookie(response: httpx.Response) -> str:
    """The Set-Cookie header of the shown-once cookie."""
    (header,) = [h for h in response.headers.get_list("set-cookie")
                 if h.startswith(f"{COOKIE}=")]
    return header


async def _token_count(runtime: Runtime, user: User) -> int:
    async with transaction(runtime.sessionmaker) as session:
        return len(await users.list_tokens(session=session, user=user))


async def _stored_secret(runtime: Runtime, user: User) -> list[str]:
    async with transaction(runtime.sessionmaker) as session:
        return [webhooks.secret_of(w, secret_box(runtime.settings))
                for w in await webhooks.list_for(session=session, user=user)]


async def test_a_new_token_is_shown_once_after_a_redirect_and_a_reload_creates_none(
    runtime: Runtime,
) -> None:
    """"Create token" answered the POST with the page showing the token: a reload posted
    the form again and made a second token."""
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        created = await client.post("/settings/tokens", data={"csrf_token": csrf,
                                                              "name": "laptop"})
        assert created.status_code == 303, created.text
        assert created.headers["location"] == "/settings#tokens"
        attributes = _set_cookie(created).lower()
        for attribute in ("httponly", "samesite=strict", "path=/settings", "max-age=120"):
            assert attribute in attributes, attributes
        raw = client.cookies[COOKIE]

        shown = await client.get("/settings")
        assert shown.status_code == 200
        assert shown.headers["cache-control"] == "no-store"
        tokens = TOKEN.findall(shown.text)
        assert len(tokens) == 1, shown.text
        assert "Token “laptop” created" in shown.text
        # Read once: the answer deletes the cookie, and what it held is not in it in clear.
        assert "max-age=0" in _set_cookie(shown).lower()
        assert COOKIE not in client.cookies
        assert tokens[0] not in raw
        assert tokens[0][len("plt_"):][:12] not in raw
        assert "laptop" not in raw

        for _reload in range(2):
            again = await client.get("/settings")
            assert again.status_code == 200
            assert tokens[0] not in again.text
            assert 'id="new-token"' not in again.text
            assert "shown only this once" not in again.text
        me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens[0]}"})
        assert me.status_code == 200
    assert await _token_count(runtime, user) == 2  # the fixture's and this one


async def test_a_new_webhook_and_a_new_secret_are_shown_once_and_a_reload_changes_nothing(
    runtime: Runtime,
) -> None:
    """"Add webhook" and "New secret" answered with the page showing the secret: a reload
    added a second webhook, or replaced the secret just copied with another."""
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        created = await client.post("/settings/webhooks", data={
            "csrf_token": csrf, "url": "http://127.0.0.1:9/hooks/abc",
            "event_types": "digest.created"})
        assert created.status_code == 303, created.text
        assert created.headers["location"] == "/settings#webhooks"
        raw = client.cookies[COOKIE]
        shown = await client.get("/settings")
        secrets = SECRET.findall(shown.text)
        assert len(secrets) == 1
        assert re.search(r"Webhook for http://127\.0\.0\.1:9/\u2026 \(id [0-9a-f]{8}\) created",
                         shown.text), shown.text
        assert secrets[0] not in raw
        assert secrets[0].removeprefix("whsec_")[:12] not in raw
        assert "hooks/abc" not in raw
        for _reload in range(2):
            again = await client.get("/settings")
            assert "whsec_" not in again.text
            assert "shown only this once" not in again.text
        assert await _stored_secret(runtime, user) == secrets

        async with transaction(runtime.sessionmaker) as session:
            (webhook,) = await webhooks.list_for(session=session, user=user)
        rotated = await client.post(f"/settings/webhooks/{webhook.id}/secret",
                                    data={"csrf_token": csrf})
        assert rotated.status_code == 303, rotated.text
        assert rotated.headers["location"] == "/settings#webhooks"
        shown = await client.get("/settings")
        new = SECRET.findall(shown.text)
        assert len(new) == 1
        assert new != secrets
        assert "each request is signed with the secret before it too" in shown.text
        for _reload in range(2):
            again = await client.get("/settings")
            assert "whsec_" not in again.text
            assert "signed with the secret before it" not in again.text
    # The reloads replaced nothing: the secret shown is the one that signs.
    assert await _stored_secret(runtime, user) == new


async def test_a_forged_expired_or_stale_cookie_shows_nothing(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    box = secret_box(runtime.settings)

    async def post_token(client: httpx.AsyncClient, csrf: str) -> dict[str, object]:
        created = await client.post("/settings/tokens", data={"csrf_token": csrf})
        assert created.status_code == 303
        sealed = client.cookies[COOKIE]
        client.cookies.delete(COOKIE)
        payload: dict[str, object] = json.loads(box.decrypt(sealed.encode()))
        return payload

    async def shows(client: httpx.AsyncClient, value: str) -> str:
        client.cookies.set(COOKIE, value, domain="127.0.0.1", path="/settings")
        page = await client.get("/settings")
        assert page.status_code == 200
        assert "max-age=0" in _set_cookie(page).lower()  # deleted all the same
        client.cookies.delete(COOKIE)
        return page.text

    def seal(payload: dict[str, object], key: Fernet | None = None) -> str:
        data = json.dumps(payload).encode()
        return (key.encrypt(data) if key else box.encrypt(data)).decode()

    async with browser(runtime) as client, browser(runtime) as elsewhere:
        csrf = await sign_in(runtime, client, user)
        await sign_in(runtime, elsewhere, user)
        payload = await post_token(client, csrf)
        secret = str(payload["secret"])
        # Not sealed, sealed with another key, expired, from another session of the user.
        for value in ("forged", json.dumps(payload),
                      seal(payload, Fernet(Fernet.generate_key())),
                      seal({**payload, "exp": time.time() - 1}),
                      seal({**payload, "kind": "password"})):
            text = await shows(client, value)
            assert secret not in text, value[:20]
            assert 'id="new-token"' not in text
        assert secret not in await shows(elsewhere, seal(payload))
        # The real one, to the browser that made it, is shown (once).
        assert TOKEN.findall(await shows(client, seal(payload))) == [secret]

        # A token revoked before the page is read shows nothing.
        revoked = await post_token(client, csrf)
        async with transaction(runtime.sessionmaker) as session:
            tokens = await users.list_tokens(session=session, user=user)
            (token,) = [t for t in tokens if str(t.id) == revoked["id"]]
            await users.revoke_token(session=session, user=user, token_id=token.id)
        assert str(revoked["secret"]) not in await shows(client, seal(revoked))

        # A webhook secret replaced since (through the API, say) shows nothing.
        async with transaction(runtime.sessionmaker) as session:
            webhook, old = await webhooks.create(
                session=session, user=user, settings=runtime.settings,
                data=WebhookCreate(url="http://127.0.0.1:9/hooks"))
        replaced = {**payload, "kind": "webhook", "id": str(webhook.id), "secret": old}
        assert old in await shows(client, seal(replaced))
        async with transaction(runtime.sessionmaker) as session:
            await webhooks.rotate_secret(session=session, user=user, webhook_id=webhook.id,
                                         settings=runtime.settings)
        assert "whsec_" not in await shows(client, seal(replaced))


async def test_without_a_key_to_seal_it_no_token_is_created(runtime: Runtime) -> None:
    """A token that could not be carried to the page would be made and never shown."""
    user, _ = await factories.user_with_token(runtime)
    # No key configured, and the generated one (SQLite) is unreadable: none can seal.
    runtime.settings.data_dir.mkdir(parents=True, exist_ok=True)
    (runtime.settings.data_dir / "secret.key").write_bytes(b"")
    keyless = Runtime(runtime.settings.model_copy(update={"secret_keys": []}),
                      runtime.engine, runtime.sessionmaker, runtime.wakeups)
    async with browser(keyless) as client:
        csrf = await sign_in(keyless, client, user)
        refused = await client.post("/settings/tokens", data={"csrf_token": csrf})
        assert refused.status_code == 503, refused.text
        tokens = refused.text[refused.text.index('id="tokens"'):]
        assert re.search(r'<p class="problem" role="alert">[^<]*(secret\.key|SECRET_KEYS)',
                         tokens), tokens[:400]
        assert COOKIE not in client.cookies
    assert await _token_count(runtime, user) == 1  # the fixture's only


async def test_on_https_the_cookie_is_host_only_and_secure(runtime: Runtime) -> None:
    """As the session cookie: `__Host-` at /, Secure, so a sibling subdomain cannot plant
    one (and the deleting answer is Secure too, else a browser keeps the cookie)."""
    runtime.settings.public_url = "https://pilot.example.com"
    user, _ = await factories.user_with_token(runtime)
    async with browser(runtime, base_url=runtime.settings.effective_public_url) as client:
        csrf = await sign_in(runtime, client, user)
        created = await client.post("/settings/tokens", data={"csrf_token": csrf})
        assert created.status_code == 303
        (set_cookie,) = [h for h in created.headers.get_list("set-cookie")
                         if h.startswith(f"__Host-{COOKIE}=")]
        for attribute in ("path=/;", "httponly", "samesite=strict", "; secure"):
            assert attribute in set_cookie.lower(), set_cookie
        assert "domain" not in set_cookie.lower()
        shown = await client.get("/settings")
        assert len(TOKEN.findall(shown.text)) == 1
        (deleted,) = [h for h in shown.headers.get_list("set-cookie")
                      if h.startswith(f"__Host-{COOKIE}=")]
        assert "max-age=0" in deleted.lower()
        assert "; secure" in deleted.lower()
        assert "path=/;" in deleted.lower()
        assert not TOKEN.findall((await client.get("/settings")).text)
