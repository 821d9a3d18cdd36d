"""Watch triggers' state: each Google account's change cursors, and the items that fired.

`WatchCursor` is the account's position in Gmail's history and Drive's change list as
the watch poller last read them; it moves only by compare-and-set on `version`, so two
schedulers polling the same account at once never move it back. `WatchHit` holds one
row per (instruction, item) that fired: its unique key is what makes a message or file
fire at most one run, across restarts and any number of schedulers. A Drive folder watch
also keeps there, without a run, the files it knows to be in its folder
(`watch_service.MEMBER`), and `WatchPendingFile` the file versions waiting to settle.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, utcnow


class WatchCursor(Base):
    __tablename__ = "google_watch_cursors"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    history_id: Mapped[str | None] = mapped_column(String(64), default=None)
    drive_page_token: Mapped[str | None] = mapped_column(String(500), default=None)
    # Bumped by every write: the compare-and-set key.
    version: Mapped[int] = mapped_column(default=0)
    # The last poll that read the changes (a resync looks no further back than this).
    polled_at: Mapped[datetime | None] = mapped_column(default=None)
    # When the account is next due; a Pub/Sub push sets it to now.
    next_poll_at: Mapped[datetime | None] = mapped_column(default=None)
    # Gmail push (users.watch): when the registration lapses, and a failing renewal.
    push_topic: Mapped[str | None] = mapped_column(String(300), default=None)
    push_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    push_renewed_at: Mapped[datetime | None] = mapped_column(default=None)
    push_failing_since: Mapped[datetime | None] = mapped_column(default=None)
    push_error: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WatchHit(IdMixin, Base):
    """One message or file that fired a watch instruction, and the run it queued."""

    __tablename__ = "google_watch_hits"
    __table_args__ = (
        UniqueConstraint("instruction_id", "item_id"),
        Index(None, "user_id", "created_at"),
        Index(None, "run_id"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    instruction_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("instructions.id", ondelete="CASCADE")
    )
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # message | file | member | snapshot
    # A Gmail message id, or a Drive file id with its modifiedTime (each version fires).
    item_id: Mapped[str] = mapped_column(String(300))
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WatchPendingFile(IdMixin, Base):
    """A Drive file's version waiting to settle before it fires a folder watch (its
    modifiedTime not yet `google_watch_settle_seconds` old); a newer version replaces it.
    In the database, so a version seen before a restart still fires after it."""

    __tablename__ = "google_watch_pending_files"
    __table_args__ = (UniqueConstraint("instruction_id", "file_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    instruction_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("instructions.id", ondelete="CASCADE")
    )
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    file_id: Mapped[str] = mapped_column(String(300))
    # The hit's item id it fires with: the file id with its modifiedTime.
    version: Mapped[str] = mapped_column(String(300))
    due_at: Mapped[datetime] = mapped_column()
    # When the poller saw this version: one seen before the watch was paused and resumed
    # (or changed) does not fire.
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
