"""web_sessions: the CSRF token is no longer stored

A session's CSRF token was kept in plain text beside the SHA-256 of its cookie: whoever
read the database (a backup) could forge the dashboard's forms in the user's browser,
from a page the SameSite=Lax cookie still goes with. It is now an HMAC of the cookie's
token, worked out on each request (`app.auth.service.csrf_token`), and the column goes.

Sessions stay signed in: their cookie still finds them, and their CSRF token is the
new one from the next page on (a page opened before the upgrade has its forms refused
once, "reload the page and try again"). Downgrading gives each session a new random
token, which the pages it opens from then on carry.

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-25 04:20:00.000000
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0027'
down_revision: str | None = '0026'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.drop_column('csrf_token')


def downgrade() -> None:
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('csrf_token', sa.String(length=64), nullable=True))
    web_sessions = sa.table('web_sessions', sa.column('id', sa.Uuid()),
                            sa.column('csrf_token', sa.String(64)))
    bind = op.get_bind()
    for (id_,) in bind.execute(sa.select(web_sessions.c.id)).all():
        bind.execute(sa.update(web_sessions).where(web_sessions.c.id == id_)
                     .values(csrf_token=secrets.token_urlsafe(32)))
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.alter_column('csrf_token', existing_type=sa.String(length=64),
                              nullable=False)
