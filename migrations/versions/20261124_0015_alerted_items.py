"""alerted_items: each item an instruction's notify_now alert was about

An alert names the messages and files it is about; the user is then alerted about
each once per instruction, whatever a retried attempt or a later run says.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-24 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('alerted_items',
    sa.Column('instruction_id', sa.Uuid(), nullable=False),
    sa.Column('item', sa.String(length=300), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['instruction_id'], ['instructions.id'], name=op.f('fk_alerted_items_instruction_id_instructions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('instruction_id', 'item', name=op.f('pk_alerted_items'))
    )


def downgrade() -> None:
    op.drop_table('alerted_items')
