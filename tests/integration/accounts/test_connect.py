"""Connecting a Google account: the consent dance through the real API, the real
google-auth-oauthlib and googleapiclient, against the fake Google over HTTP."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.accounts.models import Account
from app.auth import service as auth
from app.core.config import Settings
from app.core.crypto import secret_box
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.google.accounts import mark_no_mailbox
from app.google.models import OAuthState
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY, GMAIL_SEND, READ_SCOPES
from app.google.source import GoogleSource
from app.instructions.models import Instruction
from app.main import create_app
from app.sources.base import NoMailbox
from app.sources.registry import readable
from app.users.models import User
from tests import factories
from tests.factories import user_with_token
from tests.fakes.google import FakeGoogle
from tests.integration.accounts.conftest import (
    API,
    CONNECTED,
    PUBLIC_URL,
    connect,
    google_accounts,
    query,
    refresh,
)
from tests.integration.api.helpers import assert_error


def hops(response: httpx.Response) -> list[str]:
    return [str(r.url) for r in [*response.history, response]]


async def test_connect_stores_the_account_with_its_address_and_scopes(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime)
    fake_google.consent_email = "alice@example.com"

    response = await connect(browser, headers)

    # connect -> Google's consent -> our callback -> the dashboard's settings
    urls = hops(response)
    assert [r.status_code for r in [*response.history, response]] == [302, 302, 302], urls
    assert urls[0] == f"{PUBLIC_URL}{API}/google/connect"
    assert urls[1].startswith(f"{fake_google.url}/o/oauth2/auth?")
    assert urls[2].startswith(f"{PUBLIC_URL}/oauth/google/callback?")
    assert response.headers["location"] == CONNECTED
    consent = query(urls[1])
    assert consent["client_id"] == FakeGoogle.CLIENT_ID
    assert consent["redirect_uri"] == f"{PUBLIC_URL}/oauth/google/callback"
    assert consent["response_type"] == "code"
    assert set(consent["scope"].split()) == set(READ_SCOPES)
    assert consent["access_type"] == "offline"
    assert consent["include_granted_scopes"] == "true"
    assert consent["prompt"] == "consent"
    assert consent["code_challenge_method"] == "S256"
    assert len(consent["state"]) >= 32

    (account,) = await google_accounts(runtime, user)
    assert account.email == "alice@example.com"  # from Gmail's users.getProfile
    assert set(account.scopes["granted"]) == set(READ_SCOPES)
    assert account.status == "active"
    assert account.status_detail is None
    # the sealed refresh token is a live grant at Google
    refresh(account, runtime.settings)
    assert any(r.path.endswith("/profile") for r in fake_google.requests)

    # the state is stored only as a hash, used once
    async with transaction(runtime.sessionmaker) as session:
        (state,) = (await session.execute(select(OAuthState))).scalars().all()
    assert state.user_id == user.id
    assert state.state_hash == hashlib.sha256(consent["state"].encode()).hexdigest()
    assert state.used_at is not None
    assert consent["state"].encode() not in state.code_verifier_encrypted
    verifier = secret_box(runtime.settings).decrypt(state.code_verifier_encrypted).decode()
    assert 43 <= len(verifier) <= 128

    listed = await browser.get(f"{API}/accounts", headers=headers)
    assert listed.status_code == 200, listed.text
    google_rows = [a for a in listed.json() if a["kind"] == "google"]
    assert google_rows == [{
        "id": str(account.id), "kind": "google", "email": "alice@example.com",
        "status": "active", "status_detail": None,
        "features": {"gmail": True, "drive": True, "gmail_send": False},
        "scopes": sorted(READ_SCOPES),
        "created_at": google_rows[0]["created_at"], "updated_at": google_rows[0]["updated_at"],
    }]
    refresh_token = secret_box(runtime.settings).decrypt(
        account.refresh_token_encrypted or b"").decode()
    assert refresh_token not in listed.text


async def test_gmail_send_is_added_by_incremental_consent_to_the_same_account(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime)
    first = await connect(browser, headers)
    assert first.headers["location"] == CONNECTED
    (before,) = await google_accounts(runtime, user)

    again = await connect(browser, headers, gmail_send="true")
    assert again.headers["location"] == CONNECTED
    asked = set(query(again.history[1].url)["scope"].split())
    assert asked == {*READ_SCOPES, GMAIL_SEND}
    assert query(again.history[1].url)["include_granted_scopes"] == "true"

    (after,) = await google_accounts(runtime, user)  # updated, not a second account
    assert after.id == before.id
    assert set(after.scopes["granted"]) == {*READ_SCOPES, GMAIL_SEND}
    listed = (await browser.get(f"{API}/accounts", headers=headers)).json()
    assert [a["features"] for a in listed if a["kind"] == "google"] == [
        {"gmail": True, "drive": True, "gmail_send": True}
    ]


@pytest.mark.parametrize(
    ("granted", "off", "message"),
    [
        pytest.param({GMAIL_READONLY}, "drive", "Drive is off", id="no-drive"),
        pytest.param({DRIVE_READONLY}, "gmail", "Gmail is off", id="no-gmail"),
    ],
)
async def test_a_scope_not_granted_turns_its_feature_off_with_a_message(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle,
    granted: set[str], off: str, message: str,
) -> None:
    user, headers = await user_with_token(runtime)
    fake_google.granted_scopes = granted

    response = await connect(browser, headers)

    assert response.headers["location"] == CONNECTED
    (account,) = await google_accounts(runtime, user)
    assert set(account.scopes["granted"]) == granted
    assert message in (account.status_detail or "")
    (shown,) = [a for a in (await browser.get(f"{API}/accounts", headers=headers)).json()
                if a["kind"] == "google"]
    assert shown["features"][off] is False
    assert shown["status"] == "active"
    assert message in shown["status_detail"]
    assert "Connect Google again" in shown["status_detail"]
    other = ({"gmail", "drive"} - {off}).pop()
    assert shown["features"][other] is True
    if off == "gmail":  # no Gmail, no getProfile: the address is Drive's
        assert not any(r.path.endswith("/profile") for r in fake_google.requests)
        assert account.email == fake_google.consent_email


async def test_a_google_account_without_gmail_connects_with_drive_only(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle, settings: Settings
) -> None:
    """Gmail answers 400 failedPrecondition "Mail service not enabled" for a Google account
    that has no Gmail (one made with another address), even with gmail.readonly granted:
    the account connects with Drive, Gmail off and saying why, instead of the connection
    failing on users.getProfile."""
    user, headers = await user_with_token(runtime)
    fake_google.consent_email = "dana@example.org"
    fake_google.disable_gmail("dana@example.org")

    response = await connect(browser, headers)

    assert response.headers["location"] == CONNECTED, response.text
    (account,) = await google_accounts(runtime, user)
    assert set(account.scopes["granted"]) == set(READ_SCOPES)  # what Google granted
    (shown,) = [a for a in (await browser.get(f"{API}/accounts", headers=headers)).json()
                if a["kind"] == "google"]
    assert shown["status"] == "active"
    assert shown["features"] == {"gmail": False, "drive": True, "gmail_send": False}
    assert "no Gmail" in shown["status_detail"]
    source = GoogleSource(account, settings)
    assert (source.reads_mail, source.reads_files) == (False, True)
    assert readable(account)
    # The address is Drive's (about.get), asked for with the fields it requires.
    assert account.email == shown["email"] == "dana@example.org"
    (about,) = [r for r in fake_google.requests if r.method_id == "drive.about.get"]
    assert (about.status, about.query["fields"]) == (200, "user(emailAddress)")


@pytest.mark.parametrize("gmail", [False, True], ids=["to-gmail-less", "to-gmail"])
async def test_reconnecting_a_gmail_less_account_as_another_google_account_is_noticed(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle, gmail: bool
) -> None:
    """A Google account without Gmail has its address from Drive, so connecting another
    Google account in its place is told apart from reconnecting the same one: what the
    instructions saw in the old account's Drive is forgotten, not taken for the new one's."""
    user, headers = await user_with_token(runtime)
    fake_google.consent_email = "dana@example.org"
    fake_google.disable_gmail("dana@example.org")
    assert (await connect(browser, headers)).headers["location"] == CONNECTED
    (account,) = await google_accounts(runtime, user)
    seen = {str(account.id): {"drive": {"page_token": "41"}}}
    instruction = await factories.instruction(runtime, user)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Instruction).where(Instruction.id == instruction.id)
                              .values(cursor=seen))
        await session.execute(update(Account).where(Account.id == account.id)
                              .values(sync_cursor={"drive": {"page_token": "41"}}))

    # The same account again: nothing is forgotten.
    assert (await connect(browser, headers)).headers["location"] == CONNECTED
    assert await _cursor(runtime, instruction.id) == seen

    fake_google.consent_email = "erin@example.org"
    if not gmail:
        fake_google.disable_gmail("erin@example.org")
    assert (await connect(browser, headers)).headers["location"] == CONNECTED

    (after,) = await google_accounts(runtime, user)
    assert after.id == account.id
    assert after.email == "erin@example.org"
    assert after.sync_cursor == {}
    assert await _cursor(runtime, instruction.id) == {}


async def test_a_passing_precondition_failure_of_gmail_does_not_connect_without_it(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """Gmail's passing 400 failedPrecondition "Precondition check failed." (the reason of
    "Mail service not enabled", another message) to users.getProfile fails the connection,
    to be tried again, rather than storing an account with Gmail off until it is
    reconnected."""
    user, headers = await user_with_token(runtime)
    fake_google.fail_next("/profile", precondition=True)

    response = await connect(browser, headers)

    assert response.status_code == 502, response.text
    assert await google_accounts(runtime, user) == []
    assert (await connect(browser, headers)).headers["location"] == CONNECTED
    (account,) = await google_accounts(runtime, user)
    assert "mailbox" not in account.scopes


async def test_reconnecting_once_gmail_is_back_turns_it_on_again(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle, settings: Settings
) -> None:
    """An account recorded as mailbox-less when its Gmail was turned off reads mail again
    once Gmail is back and it is reconnected: the connection reads Gmail afresh."""
    user, headers = await user_with_token(runtime)
    fake_google.consent_email = "alice@example.com"
    assert (await connect(browser, headers)).headers["location"] == CONNECTED
    (account,) = await google_accounts(runtime, user)
    fake_google.disable_gmail("alice@example.com")
    with pytest.raises(NoMailbox):
        await GoogleSource(account, settings).mail_changes(None)
    async with transaction(runtime.sessionmaker) as session:
        assert await mark_no_mailbox(session, account=account, settings=settings)
    (shown,) = [a for a in (await browser.get(f"{API}/accounts", headers=headers)).json()
                if a["kind"] == "google"]
    assert shown["features"]["gmail"] is False
    assert "not enabled any more" in shown["status_detail"]

    fake_google.enable_gmail("alice@example.com")
    assert (await connect(browser, headers)).headers["location"] == CONNECTED

    (after,) = await google_accounts(runtime, user)
    assert "mailbox" not in after.scopes
    (shown,) = [a for a in (await browser.get(f"{API}/accounts", headers=headers)).json()
                if a["kind"] == "google"]
    assert shown["features"] == {"gmail": True, "drive": True, "gmail_send": False}
    assert shown["status_detail"] is None
    assert GoogleSource(after, settings).reads_mail


async def _cursor(runtime: Runtime, instruction_id: uuid.UUID) -> dict[str, Any]:
    async with runtime.sessionmaker() as session:
        return dict((await session.get_one(Instruction, instruction_id)).cursor)


async def _started_state(
    browser: httpx.AsyncClient, headers: dict[str, str]
) -> tuple[str, str]:
    """Start a connection without following it: the consent URL's state and the URL."""
    started = await browser.get(f"{API}/google/connect", headers=headers, follow_redirects=False)
    assert started.status_code == 302, started.text
    location = started.headers["location"]
    return query(location)["state"], location


async def test_a_wrong_state_is_refused_and_nothing_is_stored(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime)
    state, _ = await _started_state(browser, headers)
    code = fake_google.issue_code(
        "alice@example.com", list(READ_SCOPES), f"{PUBLIC_URL}/oauth/google/callback"
    )

    for params, fragment in [
        ({"state": state[:-2] + "xx", "code": code}, "unknown state"),
        ({"code": code}, "no state"),
        ({"state": "", "code": code}, "no state"),
    ]:
        response = await browser.get("/oauth/google/callback", params=params)
        assert_error(response, 400, "OAuthStateInvalid", fragment, "/api/v1/google/connect")
    assert await google_accounts(runtime) == []
    assert not any(r.path == "/token" for r in fake_google.requests)

    # the right state still works: the refusals did not use it up
    response = await browser.get(
        "/oauth/google/callback", params={"state": state, "code": code}, follow_redirects=False
    )
    assert response.headers["location"] == CONNECTED
    assert [a.user_id for a in await google_accounts(runtime)] == [user.id]


async def test_a_state_cookie_that_is_not_ascii_is_refused_not_a_crash(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    _user, headers = await user_with_token(runtime)
    state, _ = await _started_state(browser, headers)

    response = await browser.get(
        "/oauth/google/callback", params={"state": state, "code": "x"},
        headers={"cookie": "pilotlight_google_state=é".encode()},
    )

    assert_error(response, 400, "OAuthStateInvalid", "another browser")
    assert await google_accounts(runtime) == []


async def test_a_used_state_is_refused(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime)
    response = await connect(browser, headers)
    callback = response.url
    (account,) = await google_accounts(runtime, user)

    replay = await browser.get(str(callback))

    assert_error(replay, 400, "OAuthStateInvalid", "already used")
    (still,) = await google_accounts(runtime, user)
    assert still.refresh_token_encrypted == account.refresh_token_encrypted
    assert still.updated_at == account.updated_at


async def test_an_expired_state_is_refused(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    _user, headers = await user_with_token(runtime)
    state, consent_url = await _started_state(browser, headers)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(OAuthState).values(expires_at=utcnow() - timedelta(seconds=1)))

    response = await browser.get(consent_url)  # the user took too long at Google

    assert str(response.url).startswith(f"{PUBLIC_URL}/oauth/google/callback?")
    assert query(response.url)["state"] == state
    assert_error(response, 400, "OAuthStateInvalid", "expired", "start again")
    assert await google_accounts(runtime) == []
    assert not any(r.path == "/token" for r in fake_google.requests)


async def test_a_refused_code_is_a_clear_400(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    _user, headers = await user_with_token(runtime)
    state, _ = await _started_state(browser, headers)

    response = await browser.get(
        "/oauth/google/callback", params={"state": state, "code": "not-a-code-google-gave"}
    )

    assert_error(response, 400, "CodeRejected", "invalid_grant", "start again")
    assert await google_accounts(runtime) == []


async def test_without_a_google_client_the_routes_say_how_to_configure_it(
    runtime: Runtime,
) -> None:
    unconfigured = Runtime(
        runtime.settings.model_copy(update={"google_client_id": "", "google_client_secret": None}),
        runtime.engine, runtime.sessionmaker, runtime.wakeups,
    )
    _user, headers = await user_with_token(runtime)
    transport = httpx.ASGITransport(app=create_app(unconfigured))
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
        responses = [
            await client.get(f"{API}/google/connect", headers=headers),
            await client.get("/oauth/google/callback", params={"state": "s", "code": "c"}),
        ]
    for response in responses:
        assert_error(
            response, 409, "GoogleNotConfigured", "PILOTLIGHT_GOOGLE_CLIENT_ID",
            f"{PUBLIC_URL}/oauth/google/callback",
        )


async def test_consent_refused_at_google_is_a_clear_400_and_uses_up_the_state(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    _user, headers = await user_with_token(runtime)
    fake_google.oauth.consent_denied = True  # the user clicks "Cancel"

    response = await connect(browser, headers)

    assert query(response.url)["error"] == "access_denied"
    assert_error(response, 400, "ConsentRefused", "access_denied", "nothing was stored")
    assert await google_accounts(runtime) == []
    replay = await browser.get(str(response.url))
    assert_error(replay, 400, "OAuthStateInvalid", "already used")


async def test_a_consent_link_opened_in_another_browser_is_refused(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """Mallory starts a connection and sends the consent link to Alice: Alice's grant must
    not land in Mallory's account. The callback completes only in the starting browser."""
    mallory, headers = await user_with_token(runtime)
    state, consent_url = await _started_state(browser, headers)
    fake_google.consent_email = "alice@example.com"
    app = create_app(runtime)
    async with httpx.AsyncClient(
        mounts={PUBLIC_URL: httpx.ASGITransport(app=app)}, base_url=PUBLIC_URL,
        follow_redirects=True, timeout=30,
    ) as alices_browser:
        response = await alices_browser.get(consent_url)

    assert str(response.url).startswith(f"{PUBLIC_URL}/oauth/google/callback?")
    assert_error(response, 400, "OAuthStateInvalid", "another browser", "start again")
    assert await google_accounts(runtime) == []
    assert not any(r.path == "/token" for r in fake_google.requests)

    # the state was not used up: the browser that started it can still finish
    code = fake_google.issue_code(
        "mallory@example.com", list(READ_SCOPES), f"{PUBLIC_URL}/oauth/google/callback"
    )
    finished = await browser.get(
        "/oauth/google/callback", params={"state": state, "code": code}, follow_redirects=False
    )
    assert finished.headers["location"] == CONNECTED
    assert [a.user_id for a in await google_accounts(runtime)] == [mallory.id]
    assert "pilotlight_google_state" not in browser.cookies


async def _signed_in_browser(runtime: Runtime, user: User) -> tuple[httpx.AsyncClient, str]:
    """A second browser, with a dashboard session of `user`: the client and the cookie."""
    async with transaction(runtime.sessionmaker) as session:
        _row, cookie = await auth.start_session(
            session=session, user=user, method="link", ttl_seconds=3600,
            max_age_seconds=86400)
    client = httpx.AsyncClient(
        mounts={PUBLIC_URL: httpx.ASGITransport(app=create_app(runtime))}, base_url=PUBLIC_URL,
        follow_redirects=True, timeout=30,
    )
    client.cookies.set(auth.SESSION_COOKIE, cookie)
    return client, cookie


async def test_a_callback_in_a_browser_signed_in_as_another_user_is_refused(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """Mallory starts a connection and plants her state cookie in Alice's browser (from a
    sibling subdomain, or over plain http). Alice, signed in to the dashboard as herself,
    consents: her grant must not land on Mallory's account, whose instructions would then
    read Alice's mail. The state stays usable for Mallory's own browser."""
    mallory, mallory_headers = await user_with_token(runtime, "mallory@example.com")
    alice, _ = await user_with_token(runtime, "alice@example.com")
    state, consent_url = await _started_state(browser, mallory_headers)
    planted = browser.cookies["pilotlight_google_state"]
    fake_google.consent_email = "alice@example.com"

    alices_browser, _cookie = await _signed_in_browser(runtime, alice)
    async with alices_browser:
        alices_browser.cookies.set("pilotlight_google_state", planted,
                                   path="/oauth/google/callback")
        response = await alices_browser.get(consent_url)

    assert str(response.url).startswith(f"{PUBLIC_URL}/oauth/google/callback?")
    assert_error(response, 400, "OAuthStateInvalid", "signed in to Pilotlight as another user",
                 "nothing was stored")
    assert await google_accounts(runtime) == []
    assert not any(r.path == "/token" for r in fake_google.requests)

    # refused before the state was used up: Mallory's own browser can still finish
    code = fake_google.issue_code(
        "mallory@example.com", list(READ_SCOPES), f"{PUBLIC_URL}/oauth/google/callback"
    )
    finished = await browser.get(
        "/oauth/google/callback", params={"state": state, "code": code}, follow_redirects=False
    )
    assert finished.headers["location"] == CONNECTED
    assert [(a.user_id, a.email) for a in await google_accounts(runtime)] == [
        (mallory.id, "mallory@example.com")
    ]


async def test_the_state_cookie_is_a_random_value_not_the_public_state(
    browser: httpx.AsyncClient, runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """The state is in the consent URL for anyone who sees it; the cookie that binds the
    callback to the browser is not derived from it, and the row keeps only its hash."""
    _user, headers = await user_with_token(runtime)
    state, consent_url = await _started_state(browser, headers)
    cookie = browser.cookies["pilotlight_google_state"]
    assert cookie != state
    assert len(cookie) >= 43
    async with transaction(runtime.sessionmaker) as session:
        (row,) = (await session.execute(select(OAuthState))).scalars()
    assert row.browser_hash == hashlib.sha256(cookie.encode()).hexdigest()

    # a browser whose cookie is the state itself (the URL's) is another browser
    async with httpx.AsyncClient(
        mounts={PUBLIC_URL: httpx.ASGITransport(app=create_app(runtime))}, base_url=PUBLIC_URL,
        follow_redirects=True, timeout=30,
    ) as other:
        other.cookies.set("pilotlight_google_state", state, path="/oauth/google/callback")
        response = await other.get(consent_url)
    assert_error(response, 400, "OAuthStateInvalid", "another browser")
    assert await google_accounts(runtime) == []


async def test_connect_from_a_signed_in_browser_completes_for_that_user(
    runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """The dashboard's "Connect Google": the browser opens /connect with its session cookie
    (no token) and comes back to the callback signed in as the same user."""
    user, _headers = await user_with_token(runtime, "alice@example.com")
    client, _cookie = await _signed_in_browser(runtime, user)
    async with client:
        response = await connect(client, {})
    assert response.headers["location"] == CONNECTED
    assert [a.user_id for a in await google_accounts(runtime)] == [user.id]


async def test_with_an_https_public_url_the_state_cookie_is_a_host_only_secure_cookie(
    runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """`__Host-`: only this host, over https, with Path=/ and no Domain, can set it, so a
    sibling subdomain or a plain-http page cannot plant one; the callback reads it."""
    https_url = PUBLIC_URL.replace("http://", "https://")
    settings = runtime.settings.model_copy(update={"public_url": https_url})
    https = Runtime(settings, runtime.engine, runtime.sessionmaker, runtime.wakeups)
    user, headers = await user_with_token(runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(https)), base_url=https_url,
    ) as client:
        started = await client.get(f"{API}/google/connect", headers=headers)
        set_cookie = started.headers["set-cookie"]
        assert set_cookie.startswith("__Host-pilotlight_google_state=")
        for attribute in ("Path=/;", "Secure", "HttpOnly", "SameSite=lax"):
            assert attribute in set_cookie, set_cookie
        assert "Domain" not in set_cookie
        state = query(started.headers["location"])["state"]
        code = fake_google.issue_code(
            "alice@example.com", list(READ_SCOPES), f"{https_url}/oauth/google/callback"
        )
        # the plain name is not read on https: a cookie planted under it is no binding
        planted = client.cookies["__Host-pilotlight_google_state"]
        client.cookies.set("pilotlight_google_state", planted)
        client.cookies.delete("__Host-pilotlight_google_state")
        refused = await client.get("/oauth/google/callback",
                                   params={"state": state, "code": code})
        assert_error(refused, 400, "OAuthStateInvalid", "another browser")
        client.cookies.set("__Host-pilotlight_google_state", planted)
        finished = await client.get("/oauth/google/callback",
                                    params={"state": state, "code": code})
    assert finished.headers["location"] == f"{https_url}/settings?google=connected"
    assert 'Max-Age=0' in finished.headers["set-cookie"]
    assert [a.user_id for a in await google_accounts(runtime)] == [user.id]


async def test_with_an_https_public_url_the_callback_reads_the_host_only_session(
    runtime: Runtime, fake_google: FakeGoogle
) -> None:
    """On https the dashboard's session is `__Host-pilotlight_session`: the callback reads
    that one to refuse a browser signed in as another user than the one who started."""
    https_url = PUBLIC_URL.replace("http://", "https://")
    settings = runtime.settings.model_copy(update={"public_url": https_url})
    https = Runtime(settings, runtime.engine, runtime.sessionmaker, runtime.wakeups)
    _mallory, mallory_headers = await user_with_token(runtime, "mallory@example.com")
    alice, _ = await user_with_token(runtime, "alice@example.com")
    async with transaction(runtime.sessionmaker) as session:
        _row, alices_session = await auth.start_session(
            session=session, user=alice, method="link", ttl_seconds=3600,
            max_age_seconds=86400)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(https)), base_url=https_url,
    ) as client:
        # Mallory's connection, its state cookie now in Alice's browser (planted).
        started = await client.get(f"{API}/google/connect", headers=mallory_headers)
        state = query(started.headers["location"])["state"]
        code = fake_google.issue_code(
            "alice@example.com", list(READ_SCOPES), f"{https_url}/oauth/google/callback"
        )
        client.cookies.set("__Host-pilotlight_session", alices_session)
        refused = await client.get("/oauth/google/callback",
                                   params={"state": state, "code": code})
    assert_error(refused, 400, "OAuthStateInvalid", "signed in to Pilotlight as another user")
    assert await google_accounts(runtime) == []
