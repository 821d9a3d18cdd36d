"""A started Google connection: the OAuth `state` it sent, waiting for the callback."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, utcnow


class OAuthState(IdMixin, Base):
    """One consent request. The `state` is stored only as a SHA-256 hash, the PKCE code
    verifier sealed by the secret box; the callback uses the row once, before it expires."""

    __tablename__ = "oauth_states"
    __table_args__ = (Index(None, "user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # SHA-256 of the random value in the starting browser's state cookie (None on rows
    # from before it existed, which no callback can use).
    browser_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    code_verifier_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # {"requested": [scope, ...]}: what the consent screen asked for.
    scopes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    redirect_uri: Mapped[str] = mapped_column(String(2100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)
