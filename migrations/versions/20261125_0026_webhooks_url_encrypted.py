"""webhooks: the URL is encrypted at rest, and shown masked

An incoming webhook's URL is its credential (Slack's /services/T/B/SECRET, Discord's
/api/webhooks/ID/SECRET, Zapier's /hooks/catch/ACCOUNT/SECRET/, ?token=): whoever reads
it in the database or a backup can post as the user's integration. It is sealed like
the webhook secrets (Fernet with PILOTLIGHT_SECRET_KEYS, a column named `*_encrypted`
that `pilotlight keys rotate` picks up), and beside it is kept what is shown of it:
scheme, host and port, the rest masked (`https://hooks.slack.com/…`), so that listing
webhooks needs no key. The rows there are encrypted here. That needs the keys when
there are rows: without them (PostgreSQL with no PILOTLIGHT_SECRET_KEYS) the migration
stops and changes nothing. Downgrading decrypts them back.

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-25 03:40:00.000000
"""

from collections.abc import Sequence
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import context, op

from app.core.config import Settings, get_settings
from app.core.crypto import SecretBox, SecretKeyError, secret_box

revision: str = '0026'
down_revision: str | None = '0025'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

webhooks = sa.table(
    'webhooks',
    sa.column('id', sa.Uuid()),
    sa.column('url', sa.String(2000)),
    sa.column('url_encrypted', sa.LargeBinary()),
    sa.column('url_shown', sa.String(2000)),
)


def _box() -> SecretBox:
    """The keys of the process that migrates (`app.core.migrate` hands its settings in)."""
    settings: Settings = context.config.attributes.get('settings') or get_settings()
    try:
        return secret_box(settings)
    except SecretKeyError as exc:
        raise SecretKeyError(
            'migration 0026 encrypts the webhook URLs stored in plain text, which needs '
            f'the secret keys: {exc.detail}'
        ) from exc


def _shown(url: str) -> str:
    """`scheme://host[:port]/…`, as `app.delivery.ssrf.masked` has it at this revision
    (copied: a migration does not change with the code after it)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or '', parts.port
    except ValueError:
        return 'a URL that cannot be read'
    if ':' in host:
        host = f'[{host}]'
    rest = '/\u2026' if parts.path.strip('/') or parts.query else '/'
    return f'{parts.scheme}://{host}' + (f':{port}' if port is not None else '') + rest


def upgrade() -> None:
    op.add_column('webhooks', sa.Column('url_encrypted', sa.LargeBinary(), nullable=True))
    op.add_column('webhooks', sa.Column('url_shown', sa.String(2000), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(webhooks.c.id, webhooks.c.url)).all()
    if rows:
        box = _box()
        for id_, url in rows:
            bind.execute(webhooks.update().where(webhooks.c.id == id_)
                         .values(url_encrypted=box.encrypt(url.encode()), url_shown=_shown(url)))
    with op.batch_alter_table('webhooks') as batch:
        batch.alter_column('url_encrypted', existing_type=sa.LargeBinary(), nullable=False)
        batch.alter_column('url_shown', existing_type=sa.String(2000), nullable=False)
        batch.drop_column('url')


def downgrade() -> None:
    op.add_column('webhooks', sa.Column('url', sa.String(2000), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(webhooks.c.id, webhooks.c.url_encrypted)).all()
    if rows:
        box = _box()
        for id_, sealed in rows:
            bind.execute(webhooks.update().where(webhooks.c.id == id_)
                         .values(url=box.decrypt(sealed).decode()))
    with op.batch_alter_table('webhooks') as batch:
        batch.alter_column('url', existing_type=sa.String(2000), nullable=False)
        batch.drop_column('url_shown')
        batch.drop_column('url_encrypted')
