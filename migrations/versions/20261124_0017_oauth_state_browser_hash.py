"""oauth_states.browser_hash: the connect callback's browser binding

The Google connection's state cookie holds a random value, not the state itself
(which is public in the consent URL); the row keeps its SHA-256. Rows from before
have none, and no callback can use them (they expire within the state's TTL).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-24 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('oauth_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('browser_hash', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('oauth_states', schema=None) as batch_op:
        batch_op.drop_column('browser_hash')
