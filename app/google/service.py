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
from dataclasses import dataclass, field
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
from app.google.accounts import NO_MAILBOX, missing_scopes_detail
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
class StartedConnect:
    """A started connection: the consent URL to send the browser to, and the random value
    for the browser's state cookie (the row keeps only its hash)."""

    url: str
    browser_secret: str = field(repr=False)


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
) -> StartedConnect:
    """Google's consent URL for `user` (the dashboard and `GET /google/connect` send the
    browser there): offline access, incremental consent, PKCE, and a fresh single-use
    state stored hashed with its sealed code verifier; and a random browser secret for
    the state cookie, stored hashed too (see `consume_state`). No network call."""
    scopes = requested_scopes(gmail_send=gmail_send)
    state = secrets.token_urlsafe(32)
    browser_secret = secrets.token_urlsafe(32)
    url, verifier = oauth.consent_url(settings, scopes=scopes, state=state)
    now = utcnow()
    # Expired requests of this user are of no use any more; used ones are kept until
    # they expire, so that a replay is told "already used".
    await session.execute(
        delete(OAuthState).where(OAuthState.user_id == user.id, OAuthState.expires_at < now)
    )
    session.add(
        OAuthState(
            user_id=user.id, state_hash=_hash(state), browser_hash=_hash(browser_secret),
            code_verifier_encrypted=secret_box(settings).encrypt(verifier.encode()),
            scopes={"requested": scopes}, redirect_uri=oauth.redirect_uri(settings),
            created_at=now,
            expires_at=now + timedelta(seconds=settings.google_oauth_state_ttl_seconds),
        )
    )
    await session.flush()
    return StartedConnect(url=url, browser_secret=browser_secret)


async def consume_state(
    *, session: AsyncSession, state: str, browser_secret: str | None,
    signed_in_user_id: uuid.UUID | None, settings: Settings,
) -> PendingConsent:
    """Use up the state Google sent back; `OAuthStateInvalid` when it cannot be used.

    The grant goes to the user who started the connection (the row's `user_id`), so the
    callback must come back to that user's browser. Two checks, both before the state is
    used up (a refused callback leaves it usable in the right browser):

    - `signed_in_user_id`, the user of the browser's dashboard session (None when it has
      none): when the browser is signed in, it must be signed in as the starter. A browser
      signed in as Alice that carries a state cookie from Mallory's connection (planted
      from a sibling subdomain or over plain http) would otherwise store Alice's consent
      on Mallory's account, whose instructions would then read Alice's mail.
    - `browser_secret`, the state cookie: a random value handed to the client that opened
      `/connect` (with the starter's token or session), stored hashed on the row. It is
      not the `state`, which is public in the consent URL (browser history, proxy and
      Google's logs), so knowing a consent URL is not enough to finish it.

    A browser with no dashboard session is accepted on the cookie alone: connecting with a
    bearer token (`GET /api/v1/google/connect` from a client that keeps its cookies) has
    no session to check. There the cookie is the binding; with an https public URL it is
    a `__Host-` cookie, which a sibling subdomain or a plain-http page cannot set.
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
    if signed_in_user_id is not None and signed_in_user_id != row.user_id:
        raise OAuthStateInvalid(
            "this browser is signed in to Pilotlight as another user than the one who "
            "started this connection: nothing was stored. Sign in as the user whose Google "
            f"account you are connecting, then {START_AGAIN}"
        )
    if (browser_secret is None or row.browser_hash is None
            or not same_secret(row.browser_hash, _hash(browser_secret))):
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
    if not grant.mailbox:
        detail = " ".join(d for d in (NO_MAILBOX, detail) if d)
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
    if not grant.mailbox:
        account.scopes["mailbox"] = False
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
