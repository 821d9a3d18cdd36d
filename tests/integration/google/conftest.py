"""Fixtures for the Google source: a fake Google on 127.0.0.1 and accounts granted on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.accounts.models import Account
from app.core.config import Settings
from app.google.credentials import seal_refresh_token
from app.google.scopes import READ_SCOPES
from app.google.source import GoogleSource
from tests.fakes.google import FakeGoogle

ALICE = "alice@example.com"


@pytest.fixture
def fake() -> Iterator[FakeGoogle]:
    with FakeGoogle(seed=False) as server:
        yield server


@pytest.fixture
def google_settings(settings: Settings, fake: FakeGoogle) -> Settings:
    """The test settings pointed at the fake, with fast retries."""
    return settings.model_copy(update={
        **fake.settings(),
        "secret_keys": [SecretStr(Fernet.generate_key().decode())],
        "google_http_timeout_seconds": 10.0,
        "google_retry_max_seconds": 5.0,
    })


def google_account(
    fake: FakeGoogle, settings: Settings, email: str = ALICE,
    scopes: tuple[str, ...] = READ_SCOPES, user_id: uuid.UUID | None = None,
) -> Account:
    """An account row as the OAuth flow stores it (not saved: the source needs no database)."""
    refresh = fake.issue_refresh_token(email, list(scopes))
    return Account(
        id=uuid.uuid4(), user_id=user_id or uuid.uuid4(), kind="google", email=email,
        scopes={"granted": list(scopes)},
        refresh_token_encrypted=seal_refresh_token(settings, refresh),
        sync_cursor={}, status="active",
    )


@pytest.fixture
def source(fake: FakeGoogle, google_settings: Settings) -> GoogleSource:
    return GoogleSource(google_account(fake, google_settings), google_settings)
