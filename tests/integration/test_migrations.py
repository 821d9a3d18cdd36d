"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import (
    Boolean,
    DateTime,
    LargeBinary,
    String,
    Uuid,
    column,
    insert,
    select,
    table,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import service as auth
from app.channels.models import Webhook
from app.core.config import Settings
from app.core.crypto import SecretKeyError, secret_box
from app.core.db import JSONType, utcnow, uuid7
from app.core.migrate import alembic_config, pending
from app.core.runtime import Runtime
from app.core.security import hash_token
from app.models import Base
from tests import factories
from tests.integration.web.helpers import browser, csrf_of


async def test_models_and_migrations_do_not_drift(engine: AsyncEngine) -> None:
    def diff(connection):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models and migrations differ; add a migration: {changes}"


async def test_schema_is_at_head(engine: AsyncEngine) -> None:
    assert await pending(engine) is None


def _to(revision: str, settings: Settings | None = None) -> Callable[[Connection], None]:
    def move(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        cfg.attributes["settings"] = settings
        if revision == "head":
            command.upgrade(cfg, revision)
        else:
            command.downgrade(cfg, revision)
    return move


def _with_a_key(runtime: Runtime) -> Settings:
    return runtime.settings.model_copy(
        update={"secret_keys": [SecretStr(Fernet.generate_key().decode())]})


# webhooks as revisions 0020 to 0025 have them (what later ones added left out): the URL
# in plain text.
_PLAIN_WEBHOOKS = table(
    "webhooks", column("id", Uuid()), column("user_id", Uuid()), column("url", String()),
    column("secret_encrypted", LargeBinary()), column("event_types", JSONType),
    column("enabled", Boolean()), column("created_at", DateTime(timezone=True)),
    column("updated_at", DateTime(timezone=True)),
)
_SEALED_WEBHOOKS = table("webhooks", column("id", Uuid()), column("url_encrypted", LargeBinary()),
                         column("url_shown", String()))


async def _event_types(runtime: Runtime, *webhooks: Webhook) -> list[list[str]]:
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(
            select(_PLAIN_WEBHOOKS.c.id, _PLAIN_WEBHOOKS.c.event_types)
            .where(_PLAIN_WEBHOOKS.c.id.in_([w.id for w in webhooks]))
        )).all()
    found = {row.id: row.event_types for row in rows}
    return [found[w.id]["types"] for w in webhooks]


async def test_a_webhook_that_took_every_event_is_given_alert_created(runtime: Runtime) -> None:
    """0021: alert.created came after the first three event types; a webhook that took
    them all (registered without choosing) takes it too, one that chose fewer does not."""
    settings = _with_a_key(runtime)  # 0026 seals the webhooks' URLs
    user, _ = await factories.user_with_token(runtime)
    every = ["digest.created", "question.asked", "run.failed"]
    async with runtime.engine.begin() as conn:
        await conn.run_sync(_to("0020", settings))
    try:
        took_all = Webhook(id=uuid7(), event_types={"types": every})
        chose = Webhook(id=uuid7(), event_types={"types": ["run.failed", "digest.created"]})
        async with runtime.engine.begin() as conn:
            for webhook in (took_all, chose):  # only the columns 0020 had
                await conn.execute(insert(_PLAIN_WEBHOOKS).values(
                    id=webhook.id, user_id=user.id, url=f"https://hooks.example.com/{webhook.id}",
                    secret_encrypted=b"sealed", event_types=webhook.event_types,
                    enabled=True, created_at=utcnow(), updated_at=utcnow()))
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", settings))
    assert await _event_types(runtime, took_all, chose) == [
        [*every, "alert.created"], ["run.failed", "digest.created"]]

    try:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("0020", settings))
        assert await _event_types(runtime, took_all, chose) == [
            every, ["run.failed", "digest.created"]]
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", settings))


# push_subscriptions as revision 0024 has it: the browser's auth secret in plain text.
_PLAIN_PUSH = table(
    "push_subscriptions", column("id", Uuid()), column("user_id", Uuid()),
    column("endpoint", String()), column("p256dh", String()), column("auth", String()),
    column("created_at", DateTime(timezone=True)), column("updated_at", DateTime(timezone=True)),
)
_SEALED_PUSH = table("push_subscriptions", column("id", Uuid()),
                     column("auth_encrypted", LargeBinary()))


async def test_push_subscriptions_auth_secrets_are_encrypted_and_back(runtime: Runtime) -> None:
    """0025: the auth secrets stored in plain text are encrypted with the keys of the
    process that migrates; a downgrade decrypts them again."""
    settings = runtime.settings.model_copy(
        update={"secret_keys": [SecretStr(Fernet.generate_key().decode())]})
    user, _ = await factories.user_with_token(runtime)
    secrets = {uuid7(): f"auth-secret-{n}-AAAAAAAA" for n in range(3)}
    async with runtime.engine.begin() as conn:
        await conn.run_sync(_to("0024"))
    try:
        async with runtime.engine.begin() as conn:
            for id_, auth in secrets.items():
                await conn.execute(insert(_PLAIN_PUSH).values(
                    id=id_, user_id=user.id, endpoint=f"https://push.example.com/{id_}",
                    p256dh="B" * 87, auth=auth, created_at=utcnow(), updated_at=utcnow()))
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", settings))
    async with runtime.engine.connect() as conn:
        sealed = {row.id: row.auth_encrypted
                  for row in await conn.execute(select(_SEALED_PUSH))}
    box = secret_box(settings)
    assert {id_: box.decrypt(token).decode() for id_, token in sealed.items()} == secrets
    assert not any(auth.encode() in sealed[id_] for id_, auth in secrets.items())

    try:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("0024", settings))
        async with runtime.engine.connect() as conn:
            plain = (await conn.execute(select(_PLAIN_PUSH.c.id, _PLAIN_PUSH.c.auth))).all()
        assert dict(plain) == secrets
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", settings))


async def test_without_keys_the_push_secrets_migration_stops_and_changes_nothing(
    runtime: Runtime,
) -> None:
    """With PostgreSQL no key is generated: rows to encrypt and no PILOTLIGHT_SECRET_KEYS
    stop the migration, its whole transaction rolled back (the secrets still readable)."""
    no_keys = runtime.settings.model_copy(update={
        "secret_keys": [], "database_url": "postgresql+asyncpg://u@127.0.0.1/none"})
    user, _ = await factories.user_with_token(runtime)
    id_ = uuid7()
    async with runtime.engine.begin() as conn:
        await conn.run_sync(_to("0024"))
    try:
        async with runtime.engine.begin() as conn:
            await conn.execute(insert(_PLAIN_PUSH).values(
                id=id_, user_id=user.id, endpoint="https://push.example.com/x",
                p256dh="B" * 87, auth="auth-secret", created_at=utcnow(),
                updated_at=utcnow()))
        with pytest.raises(SecretKeyError, match="migration 0025 encrypts"):
            async with runtime.engine.begin() as conn:
                await conn.run_sync(_to("head", no_keys))
        async with runtime.engine.connect() as conn:
            assert await pending(runtime.engine) == (
                "the database is at revision 0024, the code expects 0027")
            plain = (await conn.execute(select(_PLAIN_PUSH.c.id, _PLAIN_PUSH.c.auth))).all()
        assert plain == [(id_, "auth-secret")]
    finally:
        keys = no_keys.model_copy(update={
            "secret_keys": [SecretStr(Fernet.generate_key().decode())]})
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", keys))


_URLS = {
    "slack": ("https://hooks.slack.com/services/T0/B0/SLACKSECRET", "https://hooks.slack.com/\u2026"),
    "query": ("http://127.0.0.1:8080/in?token=QUERYSECRET", "http://127.0.0.1:8080/\u2026"),
    "bare": ("https://example.com", "https://example.com/"),
    "root": ("https://[2001:db8::1]:8443/", "https://[2001:db8::1]:8443/"),
}


async def _at_0025_with_plain_urls(runtime: Runtime, settings: Settings) -> dict[str, str]:
    """The schema at 0025 with a webhook for each of `_URLS`; their ids and URLs."""
    user, _ = await factories.user_with_token(runtime)
    urls = {str(uuid7()): url for url, _shown in _URLS.values()}
    async with runtime.engine.begin() as conn:
        await conn.run_sync(_to("0025", settings))
    async with runtime.engine.begin() as conn:
        for id_, url in urls.items():
            await conn.execute(insert(_PLAIN_WEBHOOKS).values(
                id=uuid.UUID(id_), user_id=user.id, url=url, secret_encrypted=b"sealed",
                event_types={"types": ["digest.created"]}, enabled=True,
                created_at=utcnow(), updated_at=utcnow()))
    return urls


async def test_webhook_urls_are_encrypted_and_back(runtime: Runtime) -> None:
    """0026: the URLs stored in plain text are encrypted with the keys of the process that
    migrates, with what is shown of them beside; a downgrade decrypts them again."""
    settings = _with_a_key(runtime)
    try:
        urls = await _at_0025_with_plain_urls(runtime, settings)
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", settings))
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(select(_SEALED_WEBHOOKS))).all()
        raw = (await conn.execute(text("SELECT * FROM webhooks"))).mappings().all()
    box = secret_box(settings)
    assert {str(row.id): box.decrypt(row.url_encrypted).decode() for row in rows} == urls
    shown = dict(_URLS.values())
    assert {str(row.id): row.url_shown for row in rows} == {
        id_: shown[url] for id_, url in urls.items()}
    for row in raw:
        assert "url" not in row
        for value in row.values():
            stored = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            assert "SECRET" not in stored

    try:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("0025", settings))
        async with runtime.engine.connect() as conn:
            plain = (await conn.execute(
                select(_PLAIN_WEBHOOKS.c.id, _PLAIN_WEBHOOKS.c.url))).all()
        assert {str(id_): url for id_, url in plain} == urls
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", settings))


async def test_without_keys_the_webhook_urls_migration_stops_and_changes_nothing(
    runtime: Runtime,
) -> None:
    """PostgreSQL with no PILOTLIGHT_SECRET_KEYS and webhooks to encrypt: the migration
    stops, its whole transaction rolled back (the URLs still there, in plain text)."""
    no_keys = runtime.settings.model_copy(update={
        "secret_keys": [], "database_url": "postgresql+asyncpg://u@127.0.0.1/none"})
    keys = _with_a_key(runtime)
    try:
        urls = await _at_0025_with_plain_urls(runtime, keys)
        with pytest.raises(SecretKeyError, match="migration 0026 encrypts the webhook URLs"):
            async with runtime.engine.begin() as conn:
                await conn.run_sync(_to("head", no_keys))
        assert await pending(runtime.engine) == (
            "the database is at revision 0025, the code expects 0027")
        async with runtime.engine.connect() as conn:
            plain = (await conn.execute(
                select(_PLAIN_WEBHOOKS.c.id, _PLAIN_WEBHOOKS.c.url))).all()
        assert {str(id_): url for id_, url in plain} == urls
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", keys))


_SESSIONS_WITH_CSRF = table(
    "web_sessions", column("id", Uuid()), column("user_id", Uuid()),
    column("token_hash", String()), column("csrf_token", String()), column("method", String()),
    column("created_at", DateTime(timezone=True)), column("last_seen_at", DateTime(timezone=True)),
    column("expires_at", DateTime(timezone=True)),
)


async def test_sessions_csrf_tokens_leave_the_database_and_sessions_stay(
    runtime: Runtime,
) -> None:
    """0027: the stored CSRF tokens are dropped; a session signed in before still is, its
    CSRF token now the one derived from its cookie. A downgrade gives each a new one."""
    user, _ = await factories.user_with_token(runtime)
    cookie, settings = "cookie-before-0027", _with_a_key(runtime)
    async with runtime.engine.begin() as conn:
        await conn.run_sync(_to("0026", settings))
    try:
        async with runtime.engine.begin() as conn:
            await conn.execute(insert(_SESSIONS_WITH_CSRF).values(
                id=uuid7(), user_id=user.id, token_hash=hash_token(cookie),
                csrf_token="OLDCSRFTOKEN", method="link", created_at=utcnow(),
                last_seen_at=utcnow(), expires_at=utcnow() + timedelta(days=1)))
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", settings))
    async with runtime.engine.connect() as conn:
        raw = (await conn.execute(text("SELECT * FROM web_sessions"))).mappings().all()
    assert len(raw) == 1
    assert "csrf_token" not in raw[0]
    assert "OLDCSRFTOKEN" not in " ".join(str(value) for value in raw[0].values())

    async with browser(runtime) as client:
        client.cookies.set("pilotlight_session", cookie)
        assert (await client.get("/")).status_code == 200
        assert await csrf_of(client) == auth.csrf_token(cookie)
        refused = await client.post("/feed/read", data={"csrf_token": "OLDCSRFTOKEN"})
        assert refused.status_code == 403
        marked = await client.post("/feed/read", data={"csrf_token": auth.csrf_token(cookie)})
        assert marked.status_code == 303

    try:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("0026", settings))
        async with runtime.engine.connect() as conn:
            [token] = (await conn.execute(select(_SESSIONS_WITH_CSRF.c.csrf_token))).scalars()
        assert token
        assert token != "OLDCSRFTOKEN"
    finally:
        async with runtime.engine.begin() as conn:
            await conn.run_sync(_to("head", settings))
