"""runs.instruction_id without its foreign key; a trigger deletes an instruction's runs

The foreign key's check cost every new run a KEY SHARE lock on its instruction's row
(about a third of what PostgreSQL spends on a scheduler tick's run inserts, see
bench/README.md). What it gave that the app relies on is kept by a trigger: deleting
an instruction, also through a user's deletion (instructions.user_id cascades), deletes
its runs, and with them their steps and questions (their foreign keys cascade). Runs
are written only for an instruction just read (the tick holds its row locked), and the
app never deletes an instruction's row (it sets deleted_at).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-23 15:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSTGRESQL = [
    """CREATE FUNCTION instructions_delete_runs() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM runs WHERE instruction_id IN (SELECT id FROM gone);
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER instructions_delete_runs AFTER DELETE ON instructions
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION instructions_delete_runs()""",
]
_SQLITE = [
    """CREATE TRIGGER instructions_delete_runs AFTER DELETE ON instructions FOR EACH ROW
    BEGIN
        DELETE FROM runs WHERE instruction_id = OLD.id;
    END""",
]


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_runs_instruction_id_instructions', type_='foreignkey')
    postgresql = op.get_bind().dialect.name == 'postgresql'
    for statement in _POSTGRESQL if postgresql else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    op.execute('DROP TRIGGER instructions_delete_runs' + (
        ' ON instructions' if op.get_bind().dialect.name == 'postgresql' else ''
    ))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION instructions_delete_runs()')
    op.execute('DELETE FROM runs WHERE instruction_id NOT IN (SELECT id FROM instructions)')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_foreign_key(
            'fk_runs_instruction_id_instructions', 'instructions', ['instruction_id'], ['id'],
            ondelete='CASCADE',
        )
