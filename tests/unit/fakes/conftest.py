"""Fixtures for the fake Google server's own tests: the fake, its endpoints, real clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build

from app.core.config import Settings
from app.google.endpoints import GoogleEndpoints, google_endpoints
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY, GMAIL_SEND
from tests.fakes.google import FakeGoogle

ALICE = "alice@example.com"
SCOPES = [GMAIL_READONLY, DRIVE_READONLY, GMAIL_SEND]


@pytest.fixture(scope="module")
def _running() -> Iterator[FakeGoogle]:
    with FakeGoogle() as running:
        yield running


@pytest.fixture
def fake(_running: FakeGoogle) -> FakeGoogle:
    """The running fake, reset to a freshly seeded state for each test."""
    _running.reset(seed=True)
    return _running


@pytest.fixture
def endpoints(fake: FakeGoogle) -> GoogleEndpoints:
    return google_endpoints(Settings(google_endpoint_root=fake.url, _env_file=None))


def credentials(fake: FakeGoogle, endpoints: GoogleEndpoints, email: str = ALICE,
                scopes: list[str] | None = None) -> Credentials:
    """Credentials holding only a refresh token: google-auth refreshes at the fake."""
    scopes = scopes or SCOPES
    return Credentials(
        token=None, refresh_token=fake.issue_refresh_token(email, scopes),
        token_uri=endpoints.token_uri, client_id=FakeGoogle.CLIENT_ID,
        client_secret=FakeGoogle.CLIENT_SECRET, scopes=scopes,
    )


@pytest.fixture
def creds(fake: FakeGoogle, endpoints: GoogleEndpoints) -> Credentials:
    return credentials(fake, endpoints)


@pytest.fixture
def service(endpoints: GoogleEndpoints) -> Iterator[Callable[..., Any]]:
    """build() for Gmail or Drive against the fake; every client is closed afterwards."""
    built: list[Any] = []

    def make(name: str, creds: Any) -> Any:
        version, endpoint = {"gmail": ("v1", endpoints.gmail_api),
                             "drive": ("v3", endpoints.drive_api)}[name]
        client = build(name, version, credentials=creds, static_discovery=True,
                       client_options={"api_endpoint": endpoint})
        built.append(client)
        return client

    yield make
    for client in built:
        client.close()


@pytest.fixture
def gmail(creds: Credentials, service: Callable[..., Any]) -> Any:
    return service("gmail", creds)


@pytest.fixture
def drive(creds: Credentials, service: Callable[..., Any]) -> Any:
    return service("drive", creds)


@pytest.fixture
def auth_request() -> Iterator[Request]:
    """google-auth's transport for explicit refreshes and token checks (session closed)."""
    with requests.Session() as session:
        yield Request(session)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """One plain HTTP client for raw calls (what the real clients would never send)."""
    with httpx.Client() as client:
        yield client
