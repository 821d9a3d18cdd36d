"""What the user is told, and one outbox row per delivery channel."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, utcnow

NOTIFICATION_KINDS = ("digest", "question", "alert", "error")
CHANNELS = ("in_app", "email", "push", "webhook")
DELIVERY_STATUSES = ("pending", "sent", "failed")


class Notification(IdMixin, Base):
    __tablename__ = "notifications"
    __table_args__ = (
        # `key` makes writing a notification idempotent: a retried run cannot
        # tell the user twice.
        UniqueConstraint("user_id", "key"),
        Index(None, "user_id", "created_at"),
        Index("ix_notifications_user_id_event_seq", "user_id", "event_seq"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), default=None
    )
    instruction_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("instructions.id", ondelete="SET NULL"), default=None
    )
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(default=None)
    # The event stream's position: set by a trigger (migration 0022), see
    # app/events/service.py.
    event_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class Delivery(IdMixin, Base):
    """The outbox: one row per notification and channel (and target, for webhooks)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "channel", "target"),
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    notification_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(64), default="")
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertedItem(Base):
    """A message or file that an instruction's `notify_now` alert was about.

    The user is alerted about an item once per instruction: a retried attempt, or a
    later run that sees the same mail (one waiting for the user starts from the same
    cursors), cannot alert about it again, in whatever words (app/runs/steps.py).
    """

    __tablename__ = "alerted_items"

    instruction_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("instructions.id", ondelete="CASCADE"), primary_key=True
    )
    # "<account id>:<message | file>:<id>"
    item: Mapped[str] = mapped_column(String(300), primary_key=True)
    # The run that alerted (no foreign key: runs are deleted with their instruction).
    run_id: Mapped[uuid.UUID] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
