"""A fake Google for the email channel: settings pointed at it, a Google account row."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser

from sqlalchemy import select

from app.accounts.models import Account
from app.core.db import transaction
from app.core.runtime import Runtime
from app.google.credentials import seal_refresh_token
from app.google.scopes import GMAIL_SEND, READ_SCOPES
from app.users.models import User
from tests.fakes.google import FakeGoogle

ALICE = "alice@example.com"
WITH_SEND = (*READ_SCOPES, GMAIL_SEND)


def point_at_google(runtime: Runtime, fake: FakeGoogle) -> None:
    """The runtime's settings pointed at the fake (one retry inside the client, fast)."""
    s = runtime.settings
    for name, value in fake.settings().items():
        setattr(s, name, value)
    s.google_http_timeout_seconds = 10.0
    s.google_retry_max_seconds = 5.0
    s.google_retry_attempts = 1


async def connect_google(
    runtime: Runtime, fake: FakeGoogle, user: User, *, scopes: tuple[str, ...] = WITH_SEND,
    email: str = ALICE,
) -> Account:
    """The account row the OAuth flow stores for a grant of `scopes`."""
    refresh = fake.issue_refresh_token(email, list(scopes))
    async with transaction(runtime.sessionmaker) as session:
        account = Account(
            user_id=user.id, kind="google", email=email, scopes={"granted": list(scopes)},
            refresh_token_encrypted=seal_refresh_token(runtime.settings, refresh),
            sync_cursor={}, status="active",
        )
        session.add(account)
        await session.flush()
        return account


async def account_row(runtime: Runtime, account: Account) -> Account:
    async with transaction(runtime.sessionmaker) as session:
        return (await session.execute(select(Account).where(Account.id == account.id))).scalar_one()


def mailbox_raw(fake: FakeGoogle, email: str) -> list[tuple[list[str], EmailMessage]]:
    """Every message in the fake mailbox: (label ids, parsed RFC 5322 message)."""
    box = fake.account(email).mailbox
    parser = BytesParser(policy=email_policy())
    return [(list(m.label_ids), parser.parsebytes(m.raw))  # type: ignore[misc]
            for m in box.messages.values()]


def email_policy() -> email.policy.EmailPolicy:
    return email.policy.default
