"""Follow-up questions the agent asked the user."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, TimestampMixin, utcnow

# cancelled: its run was cancelled or its instruction deleted before an answer came.
QUESTION_STATUSES = ("open", "answered", "expired", "cancelled")


class Question(IdMixin, TimestampMixin, Base):
    __tablename__ = "questions"
    __table_args__ = (
        Index(None, "user_id", "status"),
        Index(None, "run_id"),
        # Repeated questions are merged among the open ones of an instruction.
        Index(None, "instruction_id", "status"),
        Index(
            "ix_questions_expiring",
            "expires_at",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    instruction_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("instructions.id", ondelete="CASCADE")
    )
    interaction_id: Mapped[str] = mapped_column(String(200))
    call_id: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    choices: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"choices": [...]}
    status: Mapped[str] = mapped_column(String(16), default="open")
    answer: Mapped[str | None] = mapped_column(Text, default=None)
    answered_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)


class QuestionEmail(IdMixin, Base):
    """A question's email, whose replies (in the user's Gmail) answer the question.

    `message_id` is the email's own Message-ID (stable across retries of its delivery);
    `account_id` is the Google account whose Gmail sees the reply, and `history_id`
    where the reply poller reads that Gmail's history from (the historyId taken before
    the email was sent, then advanced by each poll).
    """

    __tablename__ = "question_emails"
    __table_args__ = (Index(None, "account_id"), Index(None, "question_id"))

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    question_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("questions.id", ondelete="CASCADE")
    )
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE")
    )
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    history_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailReply(IdMixin, Base):
    """A reply the poller has handled: written with its outcome, so it answers at most once
    (also across restarts and two pollers: the unique key is the Gmail message)."""

    __tablename__ = "email_replies"
    __table_args__ = (UniqueConstraint("account_id", "gmail_message_id"),)

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    gmail_message_id: Mapped[str] = mapped_column(String(200))
    question_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("questions.id", ondelete="SET NULL"), default=None
    )
    outcome: Mapped[str] = mapped_column(String(16))  # answered / ignored
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
