"""Fixtures of the Google connection: the fake Google server, settings pointing at it,
and a browser.

The browser is a real httpx client: requests to the app's public address go to
the app over ASGI, every other URL (the fake's consent screen) over real HTTP, and
it follows redirects, so the consent dance is the one a user's browser does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import google.auth.transport.requests
import httpx
import pytest
import requests
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select

from app.accounts.models import Account
from app.core.config import Settings
from app.core.db import transaction
from app.core.runtime import Runtime
from app.google.credentials import credentials_for, seal_refresh_token
from app.google.scopes import READ_SCOPES
from app.main import create_app
from app.users.models import User
from tests.fakes.google import FakeGoogle
from tests.integration.processes import free_port

# Google accepts plain http redirect URIs on loopback only (so does the fake); nothing
# listens on this port: the browser fixture routes it to the app over ASGI.
PUBLIC_URL = f"http://127.0.0.1:{free_port()}"
CONNECTED = f"{PUBLIC_URL}/settings?google=connected"
SECRET_KEY = Fernet.generate_key().decode()
API = "/api/v1"


@pytest.fixture
def fake_google() -> Iterator[FakeGoogle]:
    with FakeGoogle(seed=False) as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, fake_google: FakeGoogle) -> Settings:
    return settings.model_copy(update={
        **fake_google.settings(),
        "secret_keys": [SecretStr(SECRET_KEY)],
        "public_url": PUBLIC_URL,
    })


@pytest.fixture
async def browser(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime)
    async with httpx.AsyncClient(
        mounts={PUBLIC_URL: httpx.ASGITransport(app=app)}, base_url=PUBLIC_URL,
        follow_redirects=True, timeout=30,
    ) as client:
        yield client


def refresh(account: Account, settings: Settings) -> str:
    """Refresh the account's access token at (fake) Google with the real google-auth, as
    the sources do: raises `RefreshError` for a grant that is gone."""
    credentials = credentials_for(account, settings)
    with requests.Session() as session:
        credentials.refresh(google.auth.transport.requests.Request(session=session))
    assert credentials.token
    return str(credentials.token)


async def connect(
    browser: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> httpx.Response:
    """What a user's browser does: open connect (with the user's token), consent at the
    fake, come back to the callback. Returns the callback's answer, with the earlier hops
    as its history; the dashboard it sends the browser on to is not under test here."""
    response = await browser.get(
        f"{API}/google/connect", params=params, headers=headers, follow_redirects=False
    )
    history = []
    while response.is_redirect and response.request.url.path != "/oauth/google/callback":
        history.append(response)
        response = await browser.get(response.headers["location"], follow_redirects=False)
    response.history = history
    return response


def query(url: httpx.URL | str) -> dict[str, str]:
    """A URL's query parameters, one value each."""
    return {key: values[0] for key, values in parse_qs(urlsplit(str(url)).query).items()}


async def google_accounts(runtime: Runtime, user: User | None = None) -> list[Account]:
    async with transaction(runtime.sessionmaker) as session:
        stmt = select(Account).where(Account.kind == "google")
        if user is not None:
            stmt = stmt.where(Account.user_id == user.id)
        return list((await session.execute(stmt.order_by(Account.created_at))).scalars())


async def add_google_account(
    runtime: Runtime, fake: FakeGoogle, user: User, email: str = "alice@example.com",
    scopes: tuple[str, ...] = READ_SCOPES, **fields: Any,
) -> Account:
    """A connected account whose grant the fake issued (without the consent dance)."""
    token = fake.issue_refresh_token(email, list(scopes))
    account = Account(
        id=fields.pop("id", uuid.uuid4()), user_id=user.id, kind="google", email=email,
        scopes={"granted": sorted(scopes)}, sync_cursor={}, status="active",
        refresh_token_encrypted=seal_refresh_token(runtime.settings, token), **fields,
    )
    async with transaction(runtime.sessionmaker) as session:
        session.add(account)
    return account
