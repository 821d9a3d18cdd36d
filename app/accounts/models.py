"""Source accounts: the bundled sample, or a Google account (Gmail and Drive)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, TimestampMixin

ACCOUNT_KINDS = ("sample", "google")
ACCOUNT_STATUSES = ("active", "disconnected")


class Account(IdMixin, TimestampMixin, Base):
    __tablename__ = "accounts"
    __table_args__ = (Index(None, "user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    email: Mapped[str] = mapped_column(String(320), default="")
    scopes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Encrypted at rest (issue 6 adds the Google flow and key rotation).
    refresh_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # Account-level sync cursors: Gmail historyId, Drive page token.
    sync_cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_detail: Mapped[str | None] = mapped_column(Text, default=None)
