"""Watch triggers against the fake Google server: the real Google clients over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select

from app.accounts.models import Account
from app.core.config import Settings
from app.core.db import transaction
from app.core.runtime import Runtime
from app.google.credentials import seal_refresh_token
from app.google.scopes import READ_SCOPES
from app.google.watch import WatchPoller
from app.runs.models import Run
from app.users.models import User
from tests.fakes.google import FakeGoogle

EMAIL = "alice@example.com"
AUDIENCE = "https://pilotlight.test/api/v1/google/pubsub"
TOPIC = "projects/pilotlight-test/topics/gmail"


@pytest.fixture
def fake() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, fake: FakeGoogle) -> Settings:
    """The test settings pointed at the fake; every Google URL under its root."""
    return settings.model_copy(update={
        **fake.settings(),
        "secret_keys": [SecretStr(Fernet.generate_key().decode())],
        "google_pubsub_audience": AUDIENCE,
        "google_watch_poll_seconds": 3600.0,
        # Each version fires at once; the tests of settling set their own.
        "google_watch_settle_seconds": 0.0,
    })


async def google_account(
    runtime: Runtime, user: User, fake: FakeGoogle, *, email: str = EMAIL,
    scopes: Sequence[str] = READ_SCOPES,
) -> Account:
    """A connected Google account, its grant issued by the fake and sealed as the OAuth
    callback stores it."""
    refresh = fake.issue_refresh_token(email, list(scopes))
    async with transaction(runtime.sessionmaker) as session:
        account = Account(
            id=uuid.uuid4(), user_id=user.id, kind="google", email=email,
            scopes={"granted": list(scopes)}, sync_cursor={}, status="active",
            refresh_token_encrypted=seal_refresh_token(runtime.settings, refresh),
        )
        session.add(account)
    return account


def poller(runtime: Runtime) -> WatchPoller:
    return WatchPoller(
        sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups, settings=runtime.settings
    )


async def watch_runs(runtime: Runtime, instruction_id: uuid.UUID | str) -> list[Run]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            select(Run).where(Run.instruction_id == uuid.UUID(str(instruction_id)))
            .order_by(Run.scheduled_for)
        )
        return list(rows.scalars())


def fired_ids(runs: Sequence[Run]) -> list[str]:
    assert all(run.reason == "watch" and run.trigger_item for run in runs)
    return sorted(str(run.trigger_item["id"]) for run in runs if run.trigger_item)


def pdf() -> list[tuple[str, str, bytes]]:
    return [("invoice.pdf", "application/pdf", b"%PDF-1.4\n% a small invoice\n")]
