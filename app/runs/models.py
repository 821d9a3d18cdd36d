"""Runs of an instruction and the ordered steps of each."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdMixin, TimestampMixin, utcnow, uuid7

RUN_STATUSES = (
    "queued", "running", "waiting_for_user", "succeeded", "skipped", "failed", "cancelled",
)
FINAL_STATUSES = ("succeeded", "skipped", "failed", "cancelled")
# preview: a trial over a past window that changes nothing and tells nobody.
RUN_REASONS = ("schedule", "watch", "manual", "resume", "preview")


class Run(IdMixin, TimestampMixin, Base):
    __tablename__ = "runs"
    __table_args__ = (
        # One run per fire time, however many schedulers there are.
        UniqueConstraint("instruction_id", "scheduled_for"),
        Index(None, "user_id", "created_at"),
        Index(None, "instruction_id", "created_at"),
        # The runs that spent money, by when spend was last added: what counts against
        # the user's daily cost cap (app/runs/costs.py). Free runs are never in it.
        Index(
            "ix_runs_spend",
            "user_id",
            "charged_at",
            postgresql_where=text("cost_usd > 0"),
            sqlite_where=text("cost_usd > 0"),
        ),
        Index(
            "ix_runs_claimable",
            "available_at",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        # Runs of one instruction never overlap: two at once would both see the
        # same new items and tell the user twice.
        Index(
            "uq_runs_one_running_per_instruction",
            "instruction_id",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        # The event stream reads a user's run changes by event_seq (app/events/service.py).
        Index("ix_runs_user_id_event_seq", "user_id", "event_seq"),
        Index(
            "ix_runs_leased",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    # Time-ordered: a new run's key goes to the right edge of the primary key's index.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    # The instruction's user, kept here for per-user queries.
    user_id: Mapped[uuid.UUID] = mapped_column()
    # No foreign keys on either (migrations 0012, 0013): checking one locks the
    # referenced row for every new run, about a third of what PostgreSQL spends on
    # inserting a run. What they gave is kept: deleting an instruction (or a user, whose
    # instructions cascade) deletes its runs through the trigger
    # `instructions_delete_runs`; runs are only ever written for an instruction that
    # was just read; the app itself only soft-deletes instructions (deleted_at); and a
    # worker cancels a run whose instruction is gone.
    instruction_id: Mapped[uuid.UUID] = mapped_column()
    reason: Mapped[str] = mapped_column(String(16))
    # The event stream's position of the run's last change of status or reason: set
    # by triggers (migration 0022), see app/events/service.py.
    event_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    scheduled_for: Mapped[datetime] = mapped_column()
    # The span of time this run reports on: from the end of the last covered
    # window (or None on a first run) to the fire time.
    window_start: Mapped[datetime | None] = mapped_column(default=None)
    window_end: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempt: Mapped[int] = mapped_column(default=0)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The lease: only the holder of lease_token may write the outcome.
    lease_token: Mapped[uuid.UUID | None] = mapped_column(default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    worker_id: Mapped[str | None] = mapped_column(String(120), default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    model: Mapped[str | None] = mapped_column(String(64), default=None)
    interaction_ids: Mapped[dict[str, Any]] = mapped_column(default=dict)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    thought_tokens: Mapped[int] = mapped_column(default=0)
    cached_tokens: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(default=0.0)
    # Of cost_usd, what was charged on days (the user's) before the day of charged_at:
    # it counted against those days' cost caps, so not against charged_at's day.
    # (A server default: runs are also inserted by raw SQL that does not name it.)
    charged_before_usd: Mapped[float] = mapped_column(default=0.0, server_default=text("0"))
    # When spend was last added (a model turn with its step, or an attempt's ending;
    # set only then: cancelling, claiming or requeueing the run leaves it): the day
    # its spend since `charged_before_usd` counts on for the cost cap.
    charged_at: Mapped[datetime | None] = mapped_column(default=None)
    # The run's last charge on a day before the day of `charged_at`: the day /usage puts
    # `charged_before_usd` on (the cap counted it then, if all of it was charged that
    # day). None for runs charged on one day only, and for runs charged before 0023.
    charged_before_at: Mapped[datetime | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # A run paused on a question to the user: what resumes it (see app/runs/execute.py).
    agent_state: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # A watch run: the item that fired it, {"account_id", "kind": "message" | "file", "id"}.
    trigger_item: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class RunStep(IdMixin, Base):
    """One model turn or tool call of a run, in order."""

    __tablename__ = "run_steps"
    __table_args__ = (UniqueConstraint("run_id", "attempt", "seq"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column()
    seq: Mapped[int] = mapped_column()
    kind: Mapped[str] = mapped_column(String(16))  # model | tool
    name: Mapped[str] = mapped_column(String(120))
    arguments: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    result_excerpt: Mapped[str | None] = mapped_column(Text, default=None)
    interaction_id: Mapped[str | None] = mapped_column(String(200), default=None)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    thought_tokens: Mapped[int] = mapped_column(default=0)
    cached_tokens: Mapped[int] = mapped_column(default=0)
    duration_ms: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelCall(IdMixin, Base):
    """A model turn outside any run (drafting an instruction): its tokens and cost count
    toward the user's usage and daily cost cap like a run's."""

    __tablename__ = "model_calls"
    __table_args__ = (Index(None, "user_id", "created_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(16))  # draft
    model: Mapped[str] = mapped_column(String(120))
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    thought_tokens: Mapped[int] = mapped_column(default=0)
    cached_tokens: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
