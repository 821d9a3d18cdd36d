"""Signing in to the dashboard with Google: OpenID Connect on the connection's OAuth client.

`GET /login/google` asks Google for `openid email` only (online access, PKCE) and binds
the request to the browser with a sealed cookie; the callback exchanges the code,
verifies the `id_token` (Google's signature from its certificates, audience = our
client id, issuer, a verified address) and signs in the existing user with that address.
Nobody is signed up here.

Before Google answers there is no user, and `oauth_states.user_id` is required, so the
pending request lives in the cookie: state, PKCE verifier, `next` and expiry, sealed by
the secret box (an edited cookie does not open). Single use: a successful sign-in
records the state's hash in `oauth_states` (used, for the user it signed in), whose
unique hash refuses a second use; a failed one used up Google's single-use code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import id_token as google_id_token
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.crypto import SecretKeyError, secret_box
from app.core.db import utcnow
from app.core.errors import DomainError, Forbidden, Unauthorized
from app.core.security import same_secret
from app.google import oauth
from app.google.endpoints import google_endpoints
from app.google.models import OAuthState
from app.users import service as users
from app.users.models import User

CALLBACK_PATH = "/login/google/callback"
STATE_COOKIE = "pilotlight_google_login"
SCOPES = ["openid", "email"]
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
START_AGAIN = "sign in again from /login"


class SignInStateInvalid(DomainError):
    """The callback's state is missing, not this browser's, used or expired."""

    status_code = 400


class IdTokenInvalid(Unauthorized):
    """Google's id_token did not verify: signature, audience, issuer, expiry or address."""


class UnknownUser(Forbidden):
    """Google vouched for an address no user of this Pilotlight has."""


@dataclass(frozen=True)
class Pending:
    state: str
    code_verifier: str
    next: str
    expires_at: datetime

    def __repr__(self) -> str:  # the verifier stays out of logs
        return f"Pending(next={self.next!r})"


def state_cookie(settings: Settings) -> tuple[str, str, bool]:
    """The sign-in state cookie's name, path and Secure flag for this public URL; on
    https a sibling subdomain cannot plant its own sealed state and have the victim's
    browser finish the attacker's sign-in (login CSRF)."""
    return settings.cookie(STATE_COOKIE, CALLBACK_PATH)


def redirect_uri(settings: Settings) -> str:
    """Register this too in the OAuth client, next to the connection's callback."""
    return f"{settings.effective_public_url}{CALLBACK_PATH}"


def start(settings: Settings, *, next_path: str) -> tuple[str, str]:
    """Google's consent URL and the sealed cookie value that binds it to this browser."""
    state = secrets.token_urlsafe(32)
    url, verifier = oauth.consent_url(
        settings, scopes=SCOPES, state=state, redirect=redirect_uri(settings), offline=False
    )
    sealed = secret_box(settings).encrypt(json.dumps({
        "state": state, "verifier": verifier, "next": next_path,
        "exp": time.time() + settings.google_oauth_state_ttl_seconds,
    }).encode())
    return url, sealed.decode()


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


async def check_state(
    *, session: AsyncSession, settings: Settings, state: str, cookie: str | None
) -> Pending:
    """The pending sign-in of this browser for `state`; `SignInStateInvalid` otherwise."""
    if not cookie:
        raise SignInStateInvalid(
            "this sign-in was started in another browser (or its cookie was refused): "
            f"nobody was signed in; {START_AGAIN}"
        )
    try:
        data: dict[str, Any] = json.loads(secret_box(settings).decrypt(cookie.encode()))
    except (SecretKeyError, ValueError):
        raise SignInStateInvalid(f"the sign-in cookie cannot be read; {START_AGAIN}") from None
    if not state or not same_secret(str(data.get("state", "")), state):
        raise SignInStateInvalid(
            "the state Google sent back does not belong to the sign-in this browser started: "
            f"nobody was signed in; {START_AGAIN}"
        )
    expires = float(data.get("exp", 0))
    if expires <= time.time():
        raise SignInStateInvalid(
            f"this sign-in expired {settings.google_oauth_state_ttl_seconds} seconds after it "
            f"was started; {START_AGAIN}"
        )
    used = await session.execute(
        select(OAuthState.id).where(OAuthState.state_hash == _hash(state))
    )
    if used.first() is not None:
        raise SignInStateInvalid(f"this sign-in was already used; {START_AGAIN}")
    return Pending(
        state=state, code_verifier=str(data["verifier"]), next=str(data["next"]),
        expires_at=datetime.fromtimestamp(expires, UTC),
    )


def _verify(settings: Settings, token: str) -> dict[str, Any]:
    endpoints = google_endpoints(settings)
    with requests.Session() as http:
        try:
            claims = dict(google_id_token.verify_token(
                token, google.auth.transport.requests.Request(session=http),
                audience=settings.google_client_id, certs_url=endpoints.certs,
            ))
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            # Bad signature, wrong audience, expired: google-auth says which.
            raise IdTokenInvalid(f"Google's id_token was refused: {exc}"[:300]) from None
    issuers = set(GOOGLE_ISSUERS)
    if settings.google_endpoint_root:
        issuers.add(settings.google_endpoint_root.rstrip("/"))
    if claims.get("iss") not in issuers:
        raise IdTokenInvalid(f"Google's id_token has an unexpected issuer {claims.get('iss')!r}")
    if claims.get("email_verified") is not True or not claims.get("email"):
        raise IdTokenInvalid("Google did not vouch for the account's address (not verified)")
    return claims


async def verified_email(settings: Settings, token: str) -> str:
    """The address a Google id_token vouches for, after checking everything about it."""
    claims = await asyncio.to_thread(_verify, settings, token)
    return str(claims["email"])


async def sign_in_code(settings: Settings, *, pending: Pending, code: str) -> str:
    """Exchange the code (with the PKCE verifier) and return the verified address."""
    token = await oauth.exchange_code(
        settings, code=code, code_verifier=pending.code_verifier, scopes=SCOPES,
        redirect=redirect_uri(settings),
    )
    raw = token.get("id_token")
    if not raw:
        raise IdTokenInvalid("Google answered without an id_token (was `openid` granted?)")
    return await verified_email(settings, str(raw))


async def finish(
    *, session: AsyncSession, settings: Settings, pending: Pending, email: str
) -> User:
    """The existing user with `email`, and the state recorded as used for them (a second
    use of the same state fails the unique hash: the caller refuses it)."""
    user = await users.get_by_email(session=session, email=email)
    if user is None:
        raise UnknownUser(
            f"{email} has no account on this Pilotlight: Google sign-in only opens existing "
            "accounts; ask whoever runs it to create yours (`pilotlight user create EMAIL`)"
        )
    now = utcnow()
    session.add(OAuthState(
        user_id=user.id, state_hash=_hash(pending.state),
        code_verifier_encrypted=secret_box(settings).encrypt(pending.code_verifier.encode()),
        scopes={"requested": SCOPES, "purpose": "sign-in"}, redirect_uri=redirect_uri(settings),
        created_at=now, expires_at=pending.expires_at, used_at=now,
    ))
    await session.flush()
    return user
