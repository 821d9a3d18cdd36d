"""webhooks: the secret before the last rotation, and until when it still signs

`POST /webhooks/{id}/secret` gives a webhook a new signing secret. For a day after, each
request carries two signatures (Standard Webhooks allows several, space-separated): one
with the new secret and one with the old, so a receiver can move to the new secret
without refusing a request meanwhile. The old secret is encrypted at rest like the new.

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-24 22:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0024'
down_revision: str | None = '0023'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('webhooks', sa.Column('previous_secret_encrypted', sa.LargeBinary(),
                                        nullable=True))
    op.add_column('webhooks', sa.Column('previous_secret_until', sa.DateTime(timezone=True),
                                        nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('webhooks') as batch:
        batch.drop_column('previous_secret_until')
        batch.drop_column('previous_secret_encrypted')
