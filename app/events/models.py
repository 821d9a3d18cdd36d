"""The event stream's counter on SQLite (PostgreSQL uses transaction ids instead)."""

from __future__ import annotations

from sqlalchemy import BigInteger
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class EventCounter(Base):
    """One row: the last `event_seq` given out, taken by triggers (migration 0022) inside
    the write transaction, so that on SQLite, which runs one write transaction at a
    time, the numbers follow commit order. Never written by the app."""

    __tablename__ = "event_counter"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)
