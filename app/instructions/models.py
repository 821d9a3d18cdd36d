"""Standing instructions: what to do, when, over which sources, told where."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, TimestampMixin

INSTRUCTION_STATUSES = ("active", "paused", "error")


class Instruction(IdMixin, TimestampMixin, Base):
    __tablename__ = "instructions"
    __table_args__ = (
        Index(None, "user_id", "created_at"),
        # The scheduler tick reads only this index: its cost grows with what
        # is due, not with the number of instructions.
        Index(
            "ix_instructions_due",
            "next_run_at",
            postgresql_where=text("status = 'active' AND deleted_at IS NULL"),
            sqlite_where=text("status = 'active' AND deleted_at IS NULL"),
        ),
        # The watch poller's look-up: active instructions without fire times (watches).
        Index(
            "ix_instructions_unscheduled",
            "user_id",
            postgresql_where=text(
                "status = 'active' AND deleted_at IS NULL AND next_run_at IS NULL"
            ),
            sqlite_where=text("status = 'active' AND deleted_at IS NULL AND next_run_at IS NULL"),
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    trigger: Mapped[dict[str, Any]] = mapped_column()
    sources: Mapped[dict[str, Any]] = mapped_column()  # {"kinds": ["gmail", "drive"]}
    channels: Mapped[dict[str, Any]] = mapped_column()  # {"kinds": ["in_app", ...]}
    thinking_level: Mapped[str] = mapped_column(String(16), default="medium")
    max_tool_calls: Mapped[int] = mapped_column(default=10)
    only_new: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_detail: Mapped[str | None] = mapped_column(Text, default=None)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    next_run_at: Mapped[datetime | None] = mapped_column(default=None)
    # What the instruction has already seen, per account: stored only when a
    # run succeeds, so a failed or killed run sees the same items again.
    cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    covered_until: Mapped[datetime | None] = mapped_column(default=None)
    # A watch trigger fires for items that arrive from this moment on: set when the
    # watch is created, changed or resumed (mail that came while paused never fires).
    watch_since: Mapped[datetime | None] = mapped_column(default=None)
    last_run_at: Mapped[datetime | None] = mapped_column(default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)
