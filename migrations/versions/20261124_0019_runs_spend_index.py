"""runs: when a run's spend was last added (charged_at), and an index of the runs that
spent money by user and that time

What counts against a user's daily cost cap is the spend of the runs charged since
the user's midnight (app/runs/costs.py): a run that waits for the user, or resumes
days after it was created, is found through it. Free runs (the offline model) are
never in it. Existing runs that spent money are dated by their last change.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-24 03:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('charged_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE runs SET charged_at = updated_at WHERE cost_usd > 0")
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_spend', ['user_id', 'charged_at'], unique=False, postgresql_where=sa.text('cost_usd > 0'), sqlite_where=sa.text('cost_usd > 0'))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_spend', postgresql_where=sa.text('cost_usd > 0'), sqlite_where=sa.text('cost_usd > 0'))
        batch_op.drop_column('charged_at')
