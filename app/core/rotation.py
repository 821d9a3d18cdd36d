"""`pilotlight keys rotate`: re-encrypt every sealed secret with the newest key.

A sealed column is one whose name ends in `_encrypted` (see `app.core.crypto`),
found in the metadata so that a new one is rotated without being listed here.
Rows are read in primary-key order, one batch per transaction, locked. A row that no
configured key can read stops the rotation, fail closed: its batch is rolled back
whole, and the error names the table, column and row. Batches before it stay
rotated, which is safe: every configured key still reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Column, MetaData, Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.crypto import SecretKeyError, secret_box
from app.core.db import transaction

SUFFIX = "_encrypted"


class UnreadableSecret(SecretKeyError):
    """A stored secret that no configured key can read: rotation stopped there."""


@dataclass
class ColumnCount:
    table: str
    column: str
    rotated: int = 0
    current: int = 0

    def line(self) -> str:
        return (
            f"{self.table}.{self.column}: {self.rotated} re-encrypted, {self.current} already "
            "on the newest key"
        )


def sealed_columns(metadata: MetaData) -> Iterator[tuple[Table, Column[bytes]]]:
    for table in metadata.sorted_tables:
        for column in table.columns:
            if column.name.endswith(SUFFIX):
                yield table, column


async def rotate_all(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    metadata: MetaData,
    *,
    batch_size: int = 500,
    report: Callable[[ColumnCount], None] = lambda _count: None,
) -> list[ColumnCount]:
    """Re-encrypt every sealed column's rows that the newest key does not read yet."""
    box = secret_box(settings)
    counts = []
    for table, column in sealed_columns(metadata):
        count = ColumnCount(table.name, column.name)
        (key,) = table.primary_key.columns
        after = None
        while True:
            rotated = current = 0
            async with transaction(sessionmaker) as session:
                stmt = select(key, column).where(column.is_not(None))
                if after is not None:
                    stmt = stmt.where(key > after)
                rows = (
                    await session.execute(stmt.order_by(key).limit(batch_size).with_for_update())
                ).all()
                for row_id, token in rows:
                    if box.is_current(token):
                        current += 1
                        continue
                    try:
                        sealed = box.rotate(token)
                    except SecretKeyError:
                        raise UnreadableSecret(
                            f"{table.name}.{column.name} of row {row_id} cannot be decrypted "
                            "with any key of PILOTLIGHT_SECRET_KEYS (or DATA_DIR/secret.key): "
                            f"nothing of its batch was changed ({count.rotated} earlier rows of "
                            "this column were). Add the key it was sealed with (after the new "
                            "one) and run `pilotlight keys rotate` again"
                        ) from None
                    await session.execute(
                        update(table).where(key == row_id).values({column.name: sealed})
                    )
                    rotated += 1
            count.rotated += rotated
            count.current += current
            if not rows:
                break
            after = rows[-1][0]
        report(count)
        counts.append(count)
    return counts
