"""Login links (single use, expiring) and browser sessions (server-side rows).

Both tokens carry 256 random bits and are stored as SHA-256 hashes, like API
tokens: a copy of the database signs nobody in.

A session's CSRF token is not stored either: it is an HMAC of the cookie's token, worked
out again on each request from the cookie the request carries. A stored one let whoever
read the database (a backup) forge the dashboard's forms in the user's browser from a
page the SameSite=Lax cookie still goes with (a sibling subdomain), or in a browser
that ignores SameSite; from the SHA-256 in the row nobody can work it out. (With the
cookie itself, the token gives nothing more: `/session/csrf` hands it out.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import LoginLink, WebSession
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Unauthorized
from app.core.security import hash_token, same_secret
from app.users.models import User

LINK_PATH = "/login/link"
SESSION_COOKIE = "pilotlight_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
# Record activity at most this often, so page views don't each cost a write.
SEEN_EVERY = timedelta(minutes=5)


def session_cookie(settings: Settings) -> tuple[str, bool]:
    """The session cookie's name and Secure flag for this public URL (its path is `/`).

    Only that name is read: on https a plain `pilotlight_session` is no session."""
    name, _path, secure = settings.cookie(SESSION_COOKIE, "/")
    return name, secure


class LoginLinkInvalid(Unauthorized):
    """The link is unknown, used or expired."""


class LoginLinkUserGone(LoginLinkInvalid):
    """The link's user was deleted."""


async def create_login_link(
    *, session: AsyncSession, user: User, ttl_seconds: int, public_url: str
) -> tuple[LoginLink, str]:
    """A single-use sign-in link for the user; the URL is returned once and never stored."""
    token = secrets.token_urlsafe(32)
    link = LoginLink(
        user_id=user.id, token_hash=hash_token(token),
        expires_at=utcnow() + timedelta(seconds=ttl_seconds),
    )
    session.add(link)
    await session.flush()
    return link, f"{public_url}{LINK_PATH}?token={token}"


LINK_UNUSABLE = (
    "this sign-in link is unknown, already used or expired: ask for a new one with "
    "`pilotlight login-link EMAIL`"
)
LINK_USER_GONE = "the user of this sign-in link no longer exists"


def _usable_link(token: str, now: datetime) -> Any:
    """The link of this token, if it is unused and unexpired."""
    return and_(LoginLink.token_hash == hash_token(token), LoginLink.used_at.is_(None),
                LoginLink.expires_at > now)


async def login_link_user(*, session: AsyncSession, token: str) -> User:
    """Whom a link would sign in, without using it (the page that asks first)."""
    user_id = await session.scalar(select(LoginLink.user_id).where(_usable_link(token, utcnow())))
    user = None if user_id is None else await session.get(User, user_id)
    if user is None:
        raise LoginLinkInvalid(LINK_UNUSABLE)
    return user


async def redeem_login_link(*, session: AsyncSession, token: str) -> User:
    """Use a link once: the first caller gets its user, every later one LoginLinkInvalid."""
    now = utcnow()
    # One conditional UPDATE: two browsers opening the link at once cannot both win.
    result: CursorResult[tuple[uuid.UUID]] = await session.execute(  # type: ignore[assignment]
        update(LoginLink)
        .where(_usable_link(token, now))
        .values(used_at=now)
        .returning(LoginLink.user_id)
    )
    user_id = result.scalar_one_or_none()
    if user_id is None:
        raise LoginLinkInvalid(LINK_UNUSABLE)
    user = await session.get(User, user_id)
    if user is None:
        raise LoginLinkUserGone(LINK_USER_GONE)
    return user


async def start_session(
    *, session: AsyncSession, user: User, method: str, ttl_seconds: int, max_age_seconds: int
) -> tuple[WebSession, str]:
    """A new browser session; returns it and the cookie value (shown to the browser only)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = WebSession(
        user_id=user.id, token_hash=hash_token(token),
        method=method, created_at=now, last_seen_at=now,
        expires_at=now + timedelta(seconds=min(ttl_seconds, max_age_seconds)),
    )
    session.add(row)
    await session.flush()
    return row, token


async def live_session(
    *, session: AsyncSession, token: str, now: datetime, max_age_seconds: int
) -> tuple[WebSession, User] | None:
    """The session and user of a cookie if it is still signed in at `now`, else None;
    records nothing (an open event stream checks again with it).

    A session older than `max_age_seconds` is over however recently it was used: the
    bound is read from when it signed in, so it holds for sessions whose `expires_at`
    slid on before it was set (or lowered)."""
    row = (
        await session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.token_hash == hash_token(token), WebSession.revoked_at.is_(None),
                   WebSession.expires_at > now,
                   WebSession.created_at > now - timedelta(seconds=max_age_seconds))
        )
    ).one_or_none()
    if row is None:
        return None
    web_session, user = row
    return web_session, user


async def resolve_session(
    *, session: AsyncSession, token: str, ttl_seconds: int, max_age_seconds: int
) -> tuple[WebSession, User] | None:
    """The live session and user of a cookie, or None; active sessions slide forward,
    never past `max_age_seconds` after they signed in."""
    now = utcnow()
    found = await live_session(
        session=session, token=token, now=now, max_age_seconds=max_age_seconds
    )
    if found is None:
        return None
    web_session, user = found
    last = web_session.created_at + timedelta(seconds=max_age_seconds)
    if now - web_session.last_seen_at > SEEN_EVERY or web_session.expires_at > last:
        web_session.last_seen_at = now
        web_session.expires_at = min(now + timedelta(seconds=ttl_seconds), last)
        await session.flush()
    return web_session, user


async def end_session(*, session: AsyncSession, web_session: WebSession) -> None:
    """Sign a browser out: its cookie stops working at once."""
    web_session.revoked_at = utcnow()
    await session.flush()


def csrf_token(cookie: str) -> str:
    """The CSRF token of the session whose cookie holds `cookie`: an HMAC keyed with it
    (256 random bits), which the stored SHA-256 of the cookie does not give."""
    digest = hmac.new(cookie.encode(), b"pilotlight csrf token", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_matches(cookie: str, token: str | None) -> bool:
    """Whether `token` is the CSRF token of the session whose cookie holds `cookie`."""
    return bool(token) and same_secret(csrf_token(cookie), token or "")
