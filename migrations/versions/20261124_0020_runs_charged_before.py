"""runs: what of a run's spend was charged on earlier days than its last charge

A run that paused on a question on one day and went on on another counted its spend
before the pause against the first day's cost cap and, all of it again, against the
day it went on (a run's spend counted on the day it was last charged). The cap now
counts `cost_usd - charged_before_usd` of the runs charged today. Existing runs
start with 0: as before, all their spend is on the day they were last charged.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-24 06:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0020'
down_revision: str | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (a constant default): SQLite's batch mode would copy the table,
    # which the trigger instructions_delete_runs refers to.
    op.add_column('runs', sa.Column('charged_before_usd', sa.Double(), nullable=False,
                                    server_default=sa.text('0')))


def downgrade() -> None:
    op.drop_column('runs', 'charged_before_usd')
