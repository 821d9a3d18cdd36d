"""notifications and runs: event_seq, the position of a row in the in-app event stream

A trigger stamps each new notification, each new run and each change of a run's status
or reason with a number that no row committed later can come below, once a reader
takes only what is below its watermark (app/events/service.py):

- PostgreSQL: the writing transaction's id (`pg_current_xact_id()`). A reader treats
  ids below the oldest transaction still running (its snapshot's xmin) as final.
- SQLite: one counter (`event_counter`) taken inside the write transaction; SQLite
  runs one write transaction at a time, so the counter follows commit order.

Existing rows get 0: a stream starts after them. A SQLite migration that recreates
`notifications` or `runs` (alembic batch mode) drops these triggers and must create
them again (`create_triggers` here).

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-24 06:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0022'
down_revision: str | None = '0021'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUN_CHANGED = "OLD.status IS DISTINCT FROM NEW.status OR OLD.reason IS DISTINCT FROM NEW.reason"

POSTGRESQL = [
    """CREATE FUNCTION pilotlight_event_seq() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.event_seq := pg_current_xact_id()::text::bigint;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER notifications_event_seq BEFORE INSERT ON notifications
    FOR EACH ROW EXECUTE FUNCTION pilotlight_event_seq()""",
    """CREATE TRIGGER runs_event_seq_insert BEFORE INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION pilotlight_event_seq()""",
    f"""CREATE TRIGGER runs_event_seq_update BEFORE UPDATE ON runs
    FOR EACH ROW WHEN ({_RUN_CHANGED}) EXECUTE FUNCTION pilotlight_event_seq()""",
]

_NEXT = "INSERT INTO event_counter (id, value) VALUES (1, 1) " \
    "ON CONFLICT (id) DO UPDATE SET value = value + 1"


def _sqlite_trigger(name: str, when: str, table: str, condition: str = "") -> str:
    return f"""CREATE TRIGGER {name} AFTER {when} ON {table} {condition}
    BEGIN
        {_NEXT};
        UPDATE {table} SET event_seq = (SELECT value FROM event_counter WHERE id = 1)
        WHERE rowid = NEW.rowid;
    END"""


SQLITE = [
    _sqlite_trigger("notifications_event_seq", "INSERT", "notifications"),
    _sqlite_trigger("runs_event_seq_insert", "INSERT", "runs"),
    _sqlite_trigger(
        "runs_event_seq_update", "UPDATE", "runs",
        "WHEN " + _RUN_CHANGED.replace("IS DISTINCT FROM", "IS NOT"),
    ),
]


def create_triggers() -> None:
    for statement in POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)


def upgrade() -> None:
    op.create_table('event_counter',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_counter'))
    )
    for table in ('notifications', 'runs'):
        op.add_column(table, sa.Column(
            'event_seq', sa.BigInteger(), server_default=sa.text('0'), nullable=False
        ))
        op.create_index(op.f(f'ix_{table}_user_id_event_seq'), table,
                        ['user_id', 'event_seq'], unique=False)
    create_triggers()


def downgrade() -> None:
    for name, table in (('notifications_event_seq', 'notifications'),
                        ('runs_event_seq_insert', 'runs'), ('runs_event_seq_update', 'runs')):
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER {name} ON {table}")
        else:
            op.execute(f"DROP TRIGGER {name}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION pilotlight_event_seq()")
    for table in ('notifications', 'runs'):
        op.drop_index(op.f(f'ix_{table}_user_id_event_seq'), table_name=table)
        # Not batch mode: recreating `runs` on SQLite breaks instructions_delete_runs.
        op.drop_column(table, 'event_seq')
    op.drop_table('event_counter')
