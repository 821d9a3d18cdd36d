"""sign_in_failures: failed sign-ins per client address, for the sign-in limit

Each wrong login link or refused Google sign-in is a row (the client's address and
the database's time, never a token); an address with too many in the window is
refused with 429 by every api process alike. The sign-in purge deletes them.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-24 03:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sign_in_failures',
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sign_in_failures'))
    )
    with op.batch_alter_table('sign_in_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sign_in_failures_client'), ['client', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_sign_in_failures_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sign_in_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sign_in_failures_created_at'))
        batch_op.drop_index(batch_op.f('ix_sign_in_failures_client'))
    op.drop_table('sign_in_failures')
