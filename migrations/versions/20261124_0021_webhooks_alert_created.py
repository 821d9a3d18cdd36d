"""webhooks: a webhook that takes every event also takes alert.created

`alert.created` (an instruction's immediate alert, `notify_now`) is a new event type.
A webhook registered without choosing its events took all there were, which were
digest.created, question.asked and run.failed: it is given alert.created as well, as a
webhook registered now would be. One that chose fewer keeps its choice.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-24 06:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0021'
down_revision: str | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ALERT = 'alert.created'
BEFORE = ('digest.created', 'question.asked', 'run.failed')

webhooks = sa.table(
    'webhooks',
    sa.column('id', sa.Uuid()),
    sa.column('event_types', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')),
)


def _change(add: bool) -> None:
    bind = op.get_bind()
    for id_, event_types in bind.execute(sa.select(webhooks.c.id, webhooks.c.event_types)).all():
        types = list((event_types or {}).get('types', []))
        if add and ALERT not in types and all(t in types for t in BEFORE):
            changed = [*types, ALERT]
        elif not add and ALERT in types:
            changed = [t for t in types if t != ALERT]
        else:
            continue
        bind.execute(webhooks.update().where(webhooks.c.id == id_)
                     .values(event_types={**event_types, 'types': changed}))


def upgrade() -> None:
    _change(add=True)


def downgrade() -> None:
    # The code before this revision knows no alert.created (its schema refuses it).
    _change(add=False)
