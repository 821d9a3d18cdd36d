"""runs.user_id without its foreign key

A run's user is its instruction's user (every run is written with the instruction's
user_id), and runs.instruction_id keeps its foreign key with ON DELETE CASCADE, which
instructions.user_id has too: deleting a user still deletes their runs. The second
check cost every new run a KEY SHARE lock on its user's row, about a quarter of what
PostgreSQL spends on inserting a run (see bench/README.md, the scheduler tick).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23 11:15:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_runs_user_id_users', type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_foreign_key(
            'fk_runs_user_id_users', 'users', ['user_id'], ['id'], ondelete='CASCADE'
        )
