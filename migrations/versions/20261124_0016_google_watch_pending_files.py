"""google_watch_pending_files: Drive file versions waiting to settle

A Drive folder watch fires for a new version of a file once it has rested for
google_watch_settle_seconds (a doc being written autosaves at every poll); the
waiting version, one per (instruction, file), is kept here across restarts.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-24 03:06:37
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('google_watch_pending_files',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('instruction_id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('file_id', sa.String(length=300), nullable=False),
    sa.Column('version', sa.String(length=300), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_google_watch_pending_files_account_id_accounts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['instruction_id'], ['instructions.id'], name=op.f('fk_google_watch_pending_files_instruction_id_instructions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_google_watch_pending_files_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_google_watch_pending_files')),
    sa.UniqueConstraint('instruction_id', 'file_id', name=op.f('uq_google_watch_pending_files_instruction_id_file_id'))
    )


def downgrade() -> None:
    op.drop_table('google_watch_pending_files')
