"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.channels.models import Webhook
from app.core.db import transaction, uuid7
from app.core.migrate import alembic_config, pending
from app.core.runtime import Runtime
from app.models import Base
from tests import factories


async def test_models_and_migrations_do_not_drift(engine: AsyncEngine) -> None:
    def diff(connection):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models and migrations differ; add a migration: {changes}"


async def test_schema_is_at_head(engine: AsyncEngine) -> None:
    assert await pending(engine) is None


def _to(revision: str) -> Callable[[Connection], None]:
    def move(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        if revision == "head":
            command.upgrade(cfg, revision)
        else:
            command.downgrade(cfg, revision)
    return move


async def _event_types(runtime: Runtime, *webhooks: Webhook) -> list[list[str]]:
    async with transaction(runtime.sessionmaker) as session:
        rows = (await session.execute(
            select(Webhook.id, Webhook.event_types)
            .where(Webhook.id.in_([w.id for w in webhooks]))
        )).all()
    found = {row.id: row.event_types for row in rows}
    return [found[w.id]["types"] for w in webhooks]


async def test_a_webhook_that_took_every_event_is_given_alert_created(runtime: Runtime) -> None:
    """0021: alert.created came after the first three event types; a webhook that took
    them all (registered without choosing) takes it too, one that chose fewer does not."""
    user, _ = await factories.user_with_token(runtime)
    every = ["digest.created", "question.asked", "run.failed"]
    async with runtime.engine.begin() as conn:
        await conn.run_sync(_to("0020"))
    try:
        took_all = Webhook(user_id=user.id, url="https://hooks.example.com/all",
                           secret_encrypted=b"sealed", event_types={"types": every})
        chose = Webhook(user_id=user.id, url="https://hooks.example.com/digests",
                        secret_encrypted=b"sealed",
                        event_types={"types": ["run.failed", "digest.created"]})
        async with transaction(runtime.sessionmaker) as session:
            for webhook in (took_all, chose):  # only the columns 0020 had
                webhook.id = uuid7()
                await session.execute(insert(Webhook).values(
                    id=webhook.id, user_id=user.id, url=webhook.url,
                    secret_encrypted=b"sealed", event_types=webhook.event_types,
                    enabled=True))
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head"))
    assert await _event_types(runtime, took_all, chose) == [
        [*every, "alert.created"], ["run.failed", "digest.created"]]

    try:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("0020"))
        assert await _event_types(runtime, took_all, chose) == [
            every, ["run.failed", "digest.created"]]
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head"))
