"""Delivery endpoints a user registers: browser push subscriptions and webhooks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, TimestampMixin


class PushSubscription(IdMixin, TimestampMixin, Base):
    __tablename__ = "push_subscriptions"
    __table_args__ = (Index(None, "user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(2000), unique=True)
    # The browser's public key, and its auth secret, encrypted at rest: with both, a
    # reader of the database could write pushes the browser takes as ours.
    p256dh: Mapped[str] = mapped_column(String(200))
    auth_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


class Webhook(IdMixin, TimestampMixin, Base):
    __tablename__ = "webhooks"
    __table_args__ = (Index(None, "user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The endpoint, encrypted at rest: an incoming webhook's URL is its credential (Slack's
    # /services/T/B/SECRET, Discord's /api/webhooks/ID/SECRET, ?token=), whoever has it
    # posts as the user's integration. What is shown of it: scheme, host and port, the
    # rest masked (`app.delivery.ssrf.masked`), kept beside it so that listing needs no key.
    url_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    url_shown: Mapped[str] = mapped_column(String(2000))
    # Encrypted at rest; shown to the user once, when created or rotated.
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # The secret before the last rotation: requests are signed with it too until then.
    previous_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    previous_secret_until: Mapped[datetime | None] = mapped_column(default=None)
    event_types: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    status_detail: Mapped[str | None] = mapped_column(Text, default=None)
