"""Browser sessions and one-time login links, both stored only as hashes (a session's
CSRF token not at all)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, utcnow


class WebSession(IdMixin, Base):
    """A signed-in browser: the cookie holds a random token, the row only its SHA-256."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index(None, "user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # No CSRF token: it is derived from the cookie (`app.auth.service.csrf_token`), so
    # what the row holds gives none.
    # How the browser signed in: local (loopback, embedded), link, google.
    method: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginLink(IdMixin, Base):
    """A one-time sign-in link printed by `pilotlight login-link EMAIL`."""

    __tablename__ = "login_links"
    __table_args__ = (Index(None, "user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class SignInFailure(IdMixin, Base):
    """One failed sign-in (a wrong login link, a refused Google callback) from a client
    address: the rows of the last window decide whether that address may try again."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index(None, "client", "created_at"), Index(None, "created_at"))

    # The client's address (an IPv6 address as its /64 network), never a token.
    client: Mapped[str] = mapped_column(String(64))
    # Which sign-in failed: link, google.
    method: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column()
