"""runs: when the spend of a run charged on earlier days (charged_before_usd) was charged

/usage put all of a run's spend on the day it was last charged, while the cost cap
counts what it spent before that day (`charged_before_usd`) on the day it was charged
then: a run that paused on a question yesterday and went on today showed yesterday's
spend today. `charged_before_at` is the run's last charge on a day before the day of
`charged_at`: /usage puts `charged_before_usd` on its day. Existing runs start with
NULL: /usage puts their `charged_before_usd` on the day the run was created.

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-24 06:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0023'
down_revision: str | None = '0022'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: SQLite's batch mode would copy the table, which would drop
    # the triggers on runs (migrations 0013 and 0022).
    op.add_column('runs', sa.Column('charged_before_at', sa.DateTime(timezone=True),
                                    nullable=True))


def downgrade() -> None:
    op.drop_column('runs', 'charged_before_at')
