"""Connecting a Google account, the database side: the single-use `state` of a consent
request, and the grant stored on the user's `google` account.

The HTTP side (consent URL, code exchange, address) is `app.google.oauth`; the
callback router runs it between `consume_state` and `store_grant`, outside any
transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.core.config import Settings
from app.core.crypto import secret_box
from app.core.db import utcnow
from app.core.errors import DomainError
from app.core.security import same_secret
from app.google import oauth
from app.google.accounts import missing_scopes_detail
from app.google.credentials import seal_refresh_token
from app.google.models import OAuthState
from app.google.scopes import GMAIL_SEND, READ_SCOPES
from app.instructions.models import Instruction
from app.users.models import User

START_AGAIN = "start again from /api/v1/google/connect"


class OAuthStateInvalid(DomainError):
    """The callback's `state` is unknown, already used or expired: nothing is stored."""

    status_code = 400


class NoRefreshToken(oauth.GoogleUnavailable):
    """Google granted access without a refresh token, and none is stored from before."""


@dataclass(frozen=True)
class PendingConsent:
    """A consent request the callback may complete (its state is now used)."""

    user_id: uuid.UUID
    scopes: list[str]
    code_verifier: str
    redirect_uri: str

    def __repr__(self) -> str:  # the verifier stays out of logs
        return f"PendingConsent(user_id={self.user_id}, scopes={self.scopes})"


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def requested_scopes(*, gmail_send: bool) -> list[str]:
    """Gmail and Drive read access, and sending only when the user turns it on."""
    return [*READ_SCOPES, GMAIL_SEND] if gmail_send else list(READ_SCOPES)


async def start_connect(
    *, session: AsyncSession, user: User, settings: Settings, gmail_send: bool = False
) -> str:
    """Google's consent URL for `user` (the dashboard and `GET /google/connect` send the
    browser there): offline access, incremental consent, PKCE, and a fresh single-use
    state stored hashed with its sealed code verifier. No network call."""
    scopes = requested_scopes(gmail_send=gmail_send)
    state = secrets.token_urlsafe(32)
    url, verifier = oauth.consent_url(settings, scopes=scopes, state=state)
    now = utcnow()
    # Expired requests of this user are of no use any more; used ones are kept until
    # they expire, so that a replay is told "already used".
    await session.execute(
        delete(OAuthState).where(OAuthState.user_id == user.id, OAuthState.expires_at < now)
    )
    session.add(
        OAuthState(
            user_id=user.id, state_hash=_hash(state),
            code_verifier_encrypted=secret_box(settings).encrypt(verifier.encode()),
            scopes={"requested": scopes}, redirect_uri=oauth.redirect_uri(settings),
            created_at=now,
            expires_at=now + timedelta(seconds=settings.google_oauth_state_ttl_seconds),
        )
    )
    await session.flush()
    return url


async def consume_state(
    *, session: AsyncSession, state: str, browser_state: str | None, settings: Settings
) -> PendingConsent:
    """Use up the state Google sent back; `OAuthStateInvalid` when it cannot be used.

    `browser_state` is the state cookie of the browser that came back: a connection
    completes only in the browser that started it, so a consent link started by one user
    and opened by another (who would hand over their Google grant) is refused.
    """
    if not state:
        raise OAuthStateInvalid(f"the callback has no state parameter; {START_AGAIN}")
    row = (
        await session.execute(
            select(OAuthState).where(OAuthState.state_hash == _hash(state)).with_for_update()
        )
    ).scalar_one_or_none()
    now = utcnow()
    if row is None:
        raise OAuthStateInvalid(
            "unknown state: this callback does not belong to a connection started here "
            f"(or it expired long ago); {START_AGAIN}"
        )
    if row.used_at is not None:
        raise OAuthStateInvalid(f"this state was already used; {START_AGAIN}")
    if row.expires_at <= now:
        raise OAuthStateInvalid(
            f"this state expired {settings.google_oauth_state_ttl_seconds} seconds after the "
            f"connection was started; {START_AGAIN}"
        )
    if browser_state is None or not same_secret(browser_state, state):
        raise OAuthStateInvalid(
            "this connection was started in another browser (or its cookie was refused): "
            "finish it in the browser that started it, or start again there; nothing was "
            f"stored. {START_AGAIN[:1].upper()}{START_AGAIN[1:]}"
        )
    row.used_at = now
    verifier = secret_box(settings).decrypt(row.code_verifier_encrypted).decode()
    await session.flush()
    return PendingConsent(
        user_id=row.user_id, scopes=list(row.scopes.get("requested", [])),
        code_verifier=verifier, redirect_uri=row.redirect_uri,
    )


async def store_grant(
    *, session: AsyncSession, pending: PendingConsent, grant: oauth.Grant, settings: Settings
) -> Account:
    """Create or update the user's `google` account with the grant: address, granted
    scopes, sealed refresh token, status active, and a message naming any feature the
    grant leaves off."""
    # One connection at a time per user: the user's row is the lock.
    user = (
        await session.execute(select(User).where(User.id == pending.user_id).with_for_update())
    ).scalar_one()
    account = (
        await session.execute(
            select(Account).where(Account.user_id == user.id, Account.kind == "google")
            .order_by(Account.created_at).limit(1)
        )
    ).scalar_one_or_none()
    if grant.refresh_token:
        sealed = seal_refresh_token(settings, grant.refresh_token)
    elif account is not None and account.refresh_token_encrypted is not None:
        sealed = account.refresh_token_encrypted  # Google kept the grant it gave before
    else:
        raise NoRefreshToken(
            f"Google granted access without a refresh token, so runs could not read while "
            f"you are away; revoke Pilotlight's access in your Google account, then {START_AGAIN}"
        )
    detail = missing_scopes_detail(grant.scopes, pending.scopes)
    now = utcnow()
    if account is None:
        account = Account(
            id=uuid.uuid4(), user_id=user.id, kind="google", sync_cursor={},
            created_at=now,
        )
        session.add(account)
    elif grant.email and account.email and grant.email.lower() != account.email.lower():
        # Another Google address: what was seen in the old mailbox means nothing here.
        account.sync_cursor = {}
        await _forget_cursors(session, user_id=user.id, account_id=account.id)
    account.email = grant.email or account.email or ""
    account.scopes = {"granted": sorted(grant.scopes)}
    account.refresh_token_encrypted = sealed
    account.status = "active"
    account.status_detail = detail
    account.updated_at = now
    await session.flush()
    return account


async def _forget_cursors(
    session: AsyncSession, *, user_id: uuid.UUID, account_id: uuid.UUID
) -> None:
    key = str(account_id)
    instructions = (
        await session.execute(select(Instruction).where(Instruction.user_id == user_id))
    ).scalars().all()
    for instruction in instructions:
        if key in (instruction.cursor or {}):
            instruction.cursor = {k: v for k, v in instruction.cursor.items() if k != key}
