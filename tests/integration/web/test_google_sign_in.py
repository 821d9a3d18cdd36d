"""Signing in to the dashboard with Google: the app over ASGI, the fake Google over real
HTTP, a browser that keeps cookies and follows redirects, the real google-auth-oauthlib
and google-auth verifying the id_token against the fake's certificates."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt
from sqlalchemy import func, select

from app.auth.models import SignInFailure, WebSession
from app.core.config import Settings
from app.core.crypto import secret_box
from app.core.db import transaction
from app.core.runtime import Runtime
from app.google import sign_in
from app.main import create_app
from tests import factories
from tests.fakes.google import FakeGoogle
from tests.fakes.google.oauth import sign_jwt, signing
from tests.integration.processes import free_port

PUBLIC_URL = f"http://127.0.0.1:{free_port()}"  # routed to the app over ASGI
CALLBACK = f"{PUBLIC_URL}/login/google/callback"


@pytest.fixture
def fake_google() -> Iterator[FakeGoogle]:
    with FakeGoogle(seed=False) as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, fake_google: FakeGoogle) -> Settings:
    return settings.model_copy(update={**fake_google.settings(), "public_url": PUBLIC_URL})


def new_browser(runtime: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        mounts={PUBLIC_URL: httpx.ASGITransport(app=create_app(runtime))}, base_url=PUBLIC_URL,
        follow_redirects=True, timeout=30,
    )


@pytest.fixture
async def browser(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with new_browser(runtime) as client:
        yield client


def query(url: httpx.URL | str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(str(url)).query).items()}


async def consent(browser: httpx.AsyncClient, next_path: str = "/") -> tuple[str, str]:
    """Start a sign-in and pass Google's consent screen; (consent URL, callback URL)."""
    start = await browser.get("/login/google", params={"next": next_path},
                              follow_redirects=False)
    assert start.status_code == 302, start.text
    consent_url = start.headers["location"]
    at_google = await browser.get(consent_url, follow_redirects=False)
    assert at_google.status_code == 302, at_google.text
    callback = at_google.headers["location"]
    assert callback.startswith(f"{CALLBACK}?")
    return consent_url, callback


async def sessions(runtime: Runtime) -> list[WebSession]:
    async with transaction(runtime.sessionmaker) as session:
        return list((await session.execute(select(WebSession))).scalars())


async def test_a_known_user_signs_in_with_google_and_lands_on_next(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, _headers = await factories.user_with_token(runtime, "alice@example.com")
    fake_google.consent_email = "Alice@Example.com"  # addresses match case-insensitively

    response = await browser.get("/login/google", params={"next": "/instructions/new"})

    hops = [*response.history, response]
    assert [r.status_code for r in hops] == [302, 302, 303, 200], [str(r.url) for r in hops]
    assert str(hops[1].url).startswith(f"{fake_google.url}/o/oauth2/auth?")
    asked = query(hops[1].url)
    assert asked["scope"] == "openid email"
    assert asked["redirect_uri"] == CALLBACK
    assert asked["code_challenge_method"] == "S256"
    assert asked["access_type"] == "online"
    assert "include_granted_scopes" not in asked
    state_cookie = hops[0].headers["set-cookie"]
    assert "pilotlight_google_login=" in state_cookie
    assert "HttpOnly" in state_cookie
    assert "samesite=lax" in state_cookie.lower()
    assert "Path=/login/google/callback" in state_cookie
    assert asked["state"] not in state_cookie  # sealed, not readable
    session_cookie = hops[2].headers.get_list("set-cookie")
    assert any("pilotlight_session=" in c and "HttpOnly" in c and "samesite=lax" in c.lower()
               for c in session_cookie)
    assert str(response.url) == f"{PUBLIC_URL}/instructions/new"
    assert "pilotlight_google_login" not in browser.cookies
    assert (await browser.get("/")).status_code == 200  # the session opens the dashboard
    (web_session,) = await sessions(runtime)
    assert (web_session.user_id, web_session.method) == (user.id, "google")
    token_calls = [r for r in fake_google.requests if r.path == "/token"]
    assert len(token_calls) == 1


async def test_an_unknown_address_is_refused_and_nobody_is_signed_up(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    await factories.user_with_token(runtime, "alice@example.com")
    fake_google.consent_email = "mallory@example.com"

    response = await browser.get("/login/google")

    assert response.status_code == 403
    assert "mallory@example.com has no account" in response.text
    assert "pilotlight_session" not in browser.cookies
    assert await sessions(runtime) == []
    assert (await browser.get("/", follow_redirects=False)).status_code == 303


async def test_a_tampered_state_is_refused_before_google_is_asked(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    await factories.user_with_token(runtime, "alice@example.com")

    for tamper in (lambda state: state[:-2] + "xx", lambda state: "é"):
        _consent_url, callback = await consent(browser)  # a refusal drops the cookie
        params = query(callback)
        tampered = await browser.get(
            "/login/google/callback", params={**params, "state": tamper(params["state"])}
        )
        assert tampered.status_code == 400
        assert "does not belong to the sign-in this browser started" in tampered.text
    assert not any(r.path == "/token" for r in fake_google.requests)
    assert await sessions(runtime) == []


async def test_a_callback_opened_in_another_browser_is_refused(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """Login CSRF: Mallory starts a sign-in and sends the consent link to Alice; Alice's
    browser must not end up signed in (as anyone)."""
    await factories.user_with_token(runtime, "alice@example.com")
    start = await browser.get("/login/google", follow_redirects=False)

    async with new_browser(runtime) as alices_browser:
        response = await alices_browser.get(start.headers["location"])
        assert str(response.url).startswith(f"{CALLBACK}?")
        assert response.status_code == 400
        assert "started in another browser" in response.text
        assert "pilotlight_session" not in alices_browser.cookies
    assert not any(r.path == "/token" for r in fake_google.requests)
    assert await sessions(runtime) == []


async def test_a_used_state_is_refused_even_with_its_cookie(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    await factories.user_with_token(runtime, "alice@example.com")
    start = await browser.get("/login/google", follow_redirects=False)
    sealed = start.cookies[sign_in.STATE_COOKIE]
    first = await browser.get(start.headers["location"])
    assert first.status_code == 200
    callback = str(first.history[-1].url)
    fake_google.reset_counters()

    async with new_browser(runtime) as replayer:  # kept a copy of the cookie
        replayer.cookies.set(sign_in.STATE_COOKIE, sealed, path="/login/google/callback")
        replay = await replayer.get(callback)

    assert replay.status_code == 400
    assert "already used" in replay.text
    assert not any(r.path == "/token" for r in fake_google.requests)
    assert len(await sessions(runtime)) == 1


async def test_an_expired_sign_in_is_refused(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    await factories.user_with_token(runtime, "alice@example.com")
    _consent_url, callback = await consent(browser)
    # The same cookie as the browser holds, but issued an hour ago (the test has the key).
    expired = secret_box(runtime.settings).encrypt(
        b'{"state": "%s", "verifier": "v", "next": "/", "exp": %d}'
        % (query(callback)["state"].encode(), int(time.time()) - 3600)
    ).decode()
    async with new_browser(runtime) as later:
        later.cookies.set(sign_in.STATE_COOKIE, expired, path="/login/google/callback")
        response = await later.get(callback)

    assert response.status_code == 400
    assert "expired" in response.text
    assert await sessions(runtime) == []


async def test_without_an_oauth_client_the_button_and_route_are_off(runtime: Runtime) -> None:
    runtime.settings.google_client_id = ""
    async with new_browser(runtime) as client:
        assert "Sign in with Google" not in (await client.get("/login")).text
        response = await client.get("/login/google")
    assert response.status_code == 409
    assert "PILOTLIGHT_GOOGLE_CLIENT_ID" in response.text


# --- the id_token checks, against the fake's served certificates ------------------------

def _claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    return {"iss": "https://accounts.google.com", "aud": FakeGoogle.CLIENT_ID,
            "sub": "1234", "email": "alice@example.com", "email_verified": True,
            "iat": now, "exp": now + 600, **changes}


async def test_a_good_id_token_gives_its_address(runtime: Runtime) -> None:
    assert await sign_in.verified_email(runtime.settings, sign_jwt(_claims())) == (
        "alice@example.com")


# The claims are made when the test runs (not when the tests are collected): a token
# made at collection would expire during a long run of the suite.
@pytest.mark.parametrize(("changes", "reason"), [
    (lambda now: {"aud": "another-client.apps.googleusercontent.com"}, "audience"),
    (lambda now: {"email_verified": False}, "not verified"),
    (lambda now: {"iss": "https://evil.example"}, "issuer"),
    (lambda now: {"exp": now - 3600, "iat": now - 7200}, "expired"),
])
async def test_an_id_token_google_did_not_vouch_for_is_refused(
    runtime: Runtime, changes: Callable[[int], dict[str, object]], reason: str
) -> None:
    claims = _claims(**changes(int(time.time())))
    with pytest.raises(sign_in.IdTokenInvalid, match=reason):
        await sign_in.verified_email(runtime.settings, sign_jwt(claims))


async def test_an_id_token_signed_with_another_key_is_refused(runtime: Runtime) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = forger.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    signer = crypt.RSASigner.from_string(pem, key_id=signing().key_id)  # Google's key id
    forged = jwt.encode(signer, _claims()).decode()
    with pytest.raises(sign_in.IdTokenInvalid, match="signature"):
        await sign_in.verified_email(runtime.settings, forged)


async def test_the_login_page_button_carries_next(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/login", params={"next": "/runs"})
    assert 'href="/login/google?next=/runs"' in page.text


async def test_refused_google_sign_ins_count_towards_the_limit_and_cancel_does_not(
    runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """Bogus callbacks and unknown addresses are failed sign-ins of the client's address;
    past the limit even a good sign-in from it is refused with 429 (before Google is
    asked). The user's own "Cancel" on Google's screen is not a failure."""
    await factories.user_with_token(runtime, "alice@example.com")
    limited = runtime.settings.model_copy(update={"web_sign_in_max_failures": 3})
    strict = Runtime(limited, runtime.engine, runtime.sessionmaker, runtime.wakeups)

    async def failures() -> int:
        async with transaction(runtime.sessionmaker) as session:
            return int(await session.scalar(select(func.count()).select_from(SignInFailure)))

    async with new_browser(strict) as browser:
        fake_google.oauth.consent_denied = True
        cancelled = await browser.get("/login/google")
        assert cancelled.status_code == 400
        assert await failures() == 0
        fake_google.oauth.consent_denied = False

        for state in ("made-up", "another"):
            bogus = await browser.get("/login/google/callback",
                                      params={"state": state, "code": "x"})
            assert bogus.status_code == 400
        fake_google.consent_email = "mallory@example.com"
        assert (await browser.get("/login/google")).status_code == 403
        assert await failures() == 3

        fake_google.consent_email = "alice@example.com"
        tokens_before = sum(r.path == "/token" for r in fake_google.requests)
        refused = await browser.get("/login/google")
        assert str(refused.url).startswith(f"{CALLBACK}?")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert "too many failed sign-ins" in refused.text
        assert sum(r.path == "/token" for r in fake_google.requests) == tokens_before
        assert "pilotlight_session" not in browser.cookies
    assert await failures() == 3


async def test_with_an_https_public_url_the_state_cookie_is_host_only(
    runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """On https the sign-in's state cookie is `__Host-pilotlight_google_login` (Secure,
    Path=/): a sibling subdomain can set a plain `pilotlight_google_login` for the whole
    domain, with a sealed state of its own sign-in, so that one is not read."""
    https_url = PUBLIC_URL.replace("http://", "https://")
    https = Runtime(runtime.settings.model_copy(update={"public_url": https_url}),
                    runtime.engine, runtime.sessionmaker, runtime.wakeups)
    fake_google.redirect_uris = {f"{https_url}/login/google/callback"}
    user, _headers = await factories.user_with_token(runtime, "alice@example.com")
    app = create_app(https)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=https_url) as browser:
        start = await browser.get("/login/google")
        assert start.status_code == 302, start.text
        set_cookie = start.headers["set-cookie"]
        assert set_cookie.startswith("__Host-pilotlight_google_login=")
        assert "Path=/;" in set_cookie
        assert "Secure" in set_cookie
        assert "Domain" not in set_cookie
        sealed = browser.cookies["__Host-pilotlight_google_login"]
        async with httpx.AsyncClient(timeout=30) as google:
            at_google = await google.get(start.headers["location"])
        callback = urlsplit(at_google.headers["location"])
        assert f"{callback.scheme}://{callback.netloc}" == https_url

        # The same sealed state under the plain name, as a sibling subdomain sets it.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=https_url) as tossed:
            tossed.cookies.set("pilotlight_google_login", sealed)
            refused = await tossed.get(f"{callback.path}?{callback.query}")
        assert refused.status_code == 400, refused.text
        assert "pilotlight_session" not in str(tossed.cookies)

        signed_in = await browser.get(f"{callback.path}?{callback.query}")
        assert signed_in.status_code == 303, signed_in.text
        cleared = [c for c in signed_in.headers.get_list("set-cookie")
                   if c.startswith("__Host-pilotlight_google_login=")]
        assert cleared
        assert "Max-Age=0" in cleared[0]
        assert "Path=/" in cleared[0]
    (web_session,) = await sessions(runtime)
    assert web_session.user_id == user.id
