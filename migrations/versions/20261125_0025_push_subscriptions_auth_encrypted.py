"""push_subscriptions: the browser's auth secret is encrypted at rest

A push subscription's `auth` is the browser's 16-byte secret: with it and the public
`p256dh` key, whoever reads the database could write pushes the browser decrypts as
ours. It is sealed like the webhook secrets (Fernet with PILOTLIGHT_SECRET_KEYS, a
column named `*_encrypted` that `pilotlight keys rotate` picks up), and the rows there
are encrypted here. That needs the keys when there are rows: without them (PostgreSQL
with no PILOTLIGHT_SECRET_KEYS) the migration stops and changes nothing. Downgrading
decrypts them back.

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-25 00:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from app.core.config import Settings, get_settings
from app.core.crypto import SecretBox, SecretKeyError, secret_box

revision: str = '0025'
down_revision: str | None = '0024'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

subscriptions = sa.table(
    'push_subscriptions',
    sa.column('id', sa.Uuid()),
    sa.column('auth', sa.String(200)),
    sa.column('auth_encrypted', sa.LargeBinary()),
)


def _box() -> SecretBox:
    """The keys of the process that migrates (`app.core.migrate` hands its settings in)."""
    settings: Settings = context.config.attributes.get('settings') or get_settings()
    try:
        return secret_box(settings)
    except SecretKeyError as exc:
        raise SecretKeyError(
            'migration 0025 encrypts the auth secrets of the web push subscriptions '
            f'stored in plain text, which needs the secret keys: {exc.detail}'
        ) from exc


def upgrade() -> None:
    op.add_column('push_subscriptions',
                  sa.Column('auth_encrypted', sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(subscriptions.c.id, subscriptions.c.auth)).all()
    if rows:
        box = _box()
        for id_, auth in rows:
            bind.execute(subscriptions.update().where(subscriptions.c.id == id_)
                         .values(auth_encrypted=box.encrypt(auth.encode())))
    with op.batch_alter_table('push_subscriptions') as batch:
        batch.alter_column('auth_encrypted', existing_type=sa.LargeBinary(), nullable=False)
        batch.drop_column('auth')


def downgrade() -> None:
    op.add_column('push_subscriptions', sa.Column('auth', sa.String(200), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(subscriptions.c.id, subscriptions.c.auth_encrypted)).all()
    if rows:
        box = _box()
        for id_, sealed in rows:
            bind.execute(subscriptions.update().where(subscriptions.c.id == id_)
                         .values(auth=box.decrypt(sealed).decode()))
    with op.batch_alter_table('push_subscriptions') as batch:
        batch.alter_column('auth', existing_type=sa.String(200), nullable=False)
        batch.drop_column('auth_encrypted')
