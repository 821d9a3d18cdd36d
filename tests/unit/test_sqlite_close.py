"""SQLite: a connection closed with a cursor still open gives up the write lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from app.core.db import create_engine


def other_writer_can_begin(path: Path) -> bool:
    other = sqlite3.connect(path, isolation_level=None, timeout=0.2)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return False
    finally:
        other.close()


async def test_a_connection_closed_mid_statement_holds_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as setup:
            await setup.execute(text("CREATE TABLE t (x INTEGER)"))
            await setup.execute(text("INSERT INTO t VALUES (1), (2), (3)"))
        async with engine.connect() as connection:
            await connection.begin()  # BEGIN IMMEDIATE: the write lock
            # A statement left in the middle (its cursor alive), as when a task is
            # cancelled between a query and the fetch of its rows ...
            rows = await connection.stream(text("SELECT x FROM t"))
            assert not other_writer_can_begin(path)
            # ... and the connection closed as SQLAlchemy closes a cancelled one.
            await connection.invalidate()
            assert other_writer_can_begin(path)
            del rows
    finally:
        await engine.dispose()
