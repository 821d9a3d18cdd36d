"""Create and upgrade the database schema with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.errors import DomainError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Any constant: concurrent `migrate` calls on PostgreSQL wait for each other.
_PG_LOCK_ID = 7_461_221


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


class SchemaFromNewerCode(DomainError):
    """The database was migrated by a newer release than this code (a rollback)."""


def _known(connection: Connection) -> tuple[str | None, str | None]:
    """(the database's revision, the code's newest); raises SchemaFromNewerCode when the
    code does not know the database's revision: no migration of its can help."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    current = MigrationContext.configure(connection).get_current_revision()
    if current is not None:
        try:
            known = script.get_revision(current) is not None
        except (ResolutionError, CommandError):  # its id is in none of the scripts
            known = False
        if not known:
            raise SchemaFromNewerCode(
                f"the database is at revision {current}, which this code (at {head}) does "
                "not know: a newer Pilotlight migrated it. Run that version, or restore the "
                "backup made before it")
    return current, head


def _upgrade(connection: Connection, settings: Settings | None) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    _known(connection)
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    # A migration that seals stored secrets encrypts with this process's keys.
    cfg.attributes["settings"] = settings
    command.upgrade(cfg, "head")


async def upgrade(engine: AsyncEngine, settings: Settings | None = None) -> None:
    """Bring the schema to the newest revision (creating it if empty); `settings` hold
    the secret keys a migration may need (else they are read from the environment)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, settings)


async def pending(engine: AsyncEngine) -> str | None:
    """A reason the schema is not at the newest revision (which `migrate` fixes), or None
    when it is; raises SchemaFromNewerCode when the database is newer than the code."""
    async with engine.connect() as conn:
        current, head = await conn.run_sync(_known)
    if current == head:
        return None
    if current is None:
        return "the database has no schema yet"
    return f"the database is at revision {current}, the code expects {head}"
