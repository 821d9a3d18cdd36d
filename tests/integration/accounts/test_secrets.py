"""Refresh tokens and push auth secrets at rest: never in plaintext in the database, and
`pilotlight keys rotate` moving every sealed secret onto the newest key, failing closed on
one it cannot read."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from app.accounts.models import Account
from app.channels import push
from app.channels import service as channels
from app.channels.models import PushSubscription, Webhook
from app.channels.schemas import PushSubscriptionCreate, WebhookCreate
from app.core.crypto import SecretBox, secret_box
from app.core.db import transaction
from app.core.runtime import Runtime
from app.google import service as google_service
from app.google.models import OAuthState
from app.models import Base
from app.users import service as users
from app.users.models import User
from tests.factories import user_with_token
from tests.fakes.google import FakeGoogle
from tests.integration.accounts.conftest import (
    CONNECTED,
    SECRET_KEY,
    add_google_account,
    connect,
    refresh,
)
from tests.integration.processes import command, pilotlight_env


def _read_elsewhere(path: Path) -> bytes:
    """A file's bytes, read by another process: closing a descriptor of a SQLite file in
    this process would drop this process's POSIX locks on it, and with them SQLite's."""
    script = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
    return subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, check=True, timeout=60
    ).stdout


async def _database_holds(runtime: Runtime, database_url: str, secrets: list[str]) -> list[str]:
    """Where in the database any of `secrets` appears in plaintext (empty: nowhere)."""
    found = []
    needles = [s.encode() for s in secrets]
    if runtime.engine.dialect.name == "sqlite":
        database = Path(make_url(database_url).database or "")
        # the file and its write-ahead log, where recent pages live until a checkpoint
        for path in (database, Path(f"{database}-wal")):
            if path.exists():
                data = _read_elsewhere(path)
                found += [f"{path.name}: {n[:8]!r}…" for n in needles if n in data]
        return found
    # PostgreSQL: every column of every table, bytes compared as bytes
    async with runtime.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(text(f"SELECT * FROM {table.name}"))).all():
                for value in row:
                    raw = bytes(value) if isinstance(value, bytes | memoryview) else (
                        str(value).encode())
                    found += [f"{table.name}: {n[:8]!r}…" for n in needles if n in raw]
    pg_dump = shutil.which("pg_dump")
    if pg_dump:  # and what a backup would hold
        url = make_url(database_url).set(drivername="postgresql")
        dump = subprocess.run(
            [pg_dump, "--data-only", url.render_as_string(hide_password=False)],
            capture_output=True, timeout=120, check=False,
        )
        if dump.returncode == 0:
            found += [f"pg_dump: {n[:8]!r}…" for n in needles if n in dump.stdout]
        else:  # a pg_dump older than the server: the column scan above stands
            assert b"version mismatch" in dump.stderr, dump.stderr
    return found


async def test_a_database_dump_holds_no_plaintext_refresh_token(
    runtime: Runtime, database_url: str, browser: httpx.AsyncClient, fake_google: FakeGoogle
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await connect(browser, headers)
    assert response.headers["location"] == CONNECTED, response.text
    async with transaction(runtime.sessionmaker) as session:
        account = (
            await session.execute(select(Account).where(Account.kind == "google"))
        ).scalar_one()
        state = (await session.execute(select(OAuthState))).scalar_one()
    box = secret_box(runtime.settings)
    refresh_token = box.decrypt(account.refresh_token_encrypted or b"").decode()
    verifier = box.decrypt(state.code_verifier_encrypted).decode()
    assert len(refresh_token) >= 20

    assert await _database_holds(runtime, database_url, [refresh_token, verifier]) == []
    # the scan does find a secret that is there
    async with transaction(runtime.sessionmaker) as session:
        user = await users.create_user(session=session, email="canary@example.com",
                                       name=refresh_token)
    assert await _database_holds(runtime, database_url, [refresh_token]) != []
    assert user.name == refresh_token


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _browser_keys() -> tuple[str, str]:
    """A browser's push subscription keys: its P-256 public key and its auth secret."""
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return _b64url(point), _b64url(uuid.uuid4().bytes)


async def _subscribe_push(runtime: Runtime, user: User, auth: str | None = None) -> str:
    """Subscribe a browser of `user` as the API does; returns its auth secret."""
    p256dh, generated = _browser_keys()
    auth = auth or generated
    async with transaction(runtime.sessionmaker) as session:
        await push.subscribe(
            session=session, user=user, settings=runtime.settings,
            data=PushSubscriptionCreate.model_validate({
                "endpoint": f"https://push.example.com/{uuid.uuid4()}",
                "keys": {"p256dh": p256dh, "auth": auth},
            }),
        )
    return auth


async def test_a_database_dump_holds_no_plaintext_push_auth_secret(
    runtime: Runtime, database_url: str
) -> None:
    user, _headers = await user_with_token(runtime)
    auth = await _subscribe_push(runtime, user)
    assert await _database_holds(runtime, database_url, [auth]) == []
    # the scan does find one that is there
    async with transaction(runtime.sessionmaker) as session:
        await users.create_user(session=session, email="canary@example.com", name=auth)
    assert await _database_holds(runtime, database_url, [auth]) != []


def _rotate(
    database_url: str, tmp_path: Path, keys: list[str], *args: str
) -> subprocess.CompletedProcess[str]:
    env = pilotlight_env(
        data_dir=tmp_path / "data", database_url=database_url,
        PILOTLIGHT_SECRET_KEYS=",".join(keys),
    )
    return subprocess.run(
        command("keys", "rotate", *args), env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )


def _box(*keys: str) -> SecretBox:
    return SecretBox([key.encode() for key in keys])


async def _sealed(runtime: Runtime) -> dict[tuple[str, uuid.UUID], bytes]:
    """Every sealed value in the database, by (table, row id)."""
    async with transaction(runtime.sessionmaker) as session:
        accounts = (await session.execute(
            select(Account.id, Account.refresh_token_encrypted)
            .where(Account.refresh_token_encrypted.is_not(None)))).all()
        states = (await session.execute(
            select(OAuthState.id, OAuthState.code_verifier_encrypted))).all()
        hooks = (await session.execute(select(Webhook.id, Webhook.secret_encrypted))).all()
        hook_urls = (await session.execute(select(Webhook.id, Webhook.url_encrypted))).all()
        pushes = (await session.execute(
            select(PushSubscription.id, PushSubscription.auth_encrypted))).all()
    return {
        **{("push_subscriptions", i): v for i, v in pushes},
        **{("accounts", i): v for i, v in accounts if v is not None},
        **{("oauth_states", i): v for i, v in states},
        **{("webhooks", i): v for i, v in hooks},
        **{("webhooks.url", i): v for i, v in hook_urls},
    }


async def test_rotation_moves_every_secret_to_the_newest_key(
    runtime: Runtime, database_url: str, tmp_path: Path, fake_google: FakeGoogle
) -> None:
    old, new = SECRET_KEY, Fernet.generate_key().decode()
    users_ = [await user_with_token(runtime) for _ in range(3)]
    for n, (user, _headers) in enumerate(users_):
        await add_google_account(runtime, fake_google, user, email=f"u{n}@example.com")
    async with transaction(runtime.sessionmaker) as session:
        await google_service.start_connect(
            session=session, user=users_[0][0], settings=runtime.settings)
        _hook, webhook_secret = await channels.create(
            session=session, user=users_[0][0],
            data=WebhookCreate(url="https://hooks.example.com/x"), settings=runtime.settings,
        )
    push_auth = await _subscribe_push(runtime, users_[1][0])
    before = await _sealed(runtime)
    assert len(before) == 7
    plain = {key: _box(old).decrypt(value) for key, value in before.items()}

    rotated = _rotate(database_url, tmp_path, [new, old], "--batch-size", "2")

    assert rotated.returncode == 0, rotated.stderr
    assert "accounts.refresh_token_encrypted: 3 re-encrypted, 0 already" in rotated.stdout
    assert "oauth_states.code_verifier_encrypted: 1 re-encrypted" in rotated.stdout
    assert "webhooks.secret_encrypted: 1 re-encrypted" in rotated.stdout
    assert "push_subscriptions.auth_encrypted: 1 re-encrypted" in rotated.stdout
    assert "webhooks.url_encrypted: 1 re-encrypted" in rotated.stdout
    assert "7 secrets re-encrypted" in rotated.stderr
    after = await _sealed(runtime)
    assert set(after) == set(before)
    # The old key can go: the new one alone reads everything, and it is the same secret.
    for key, value in after.items():
        assert value != before[key]
        assert _box(new).decrypt(value) == plain[key]
    assert webhook_secret.encode() in plain.values()
    assert push_auth.encode() in plain.values()
    assert b"https://hooks.example.com/x" in plain.values()

    new_only = runtime.settings.model_copy(update={"secret_keys": [SecretStr(new)]})
    async with transaction(runtime.sessionmaker) as session:
        accounts = (await session.execute(
            select(Account).where(Account.kind == "google"))).scalars().all()
    for account in accounts:
        refresh(account, new_only)  # still a live grant at Google

    again = _rotate(database_url, tmp_path, [new])
    assert again.returncode == 0, again.stderr
    assert "accounts.refresh_token_encrypted: 0 re-encrypted, 3 already" in again.stdout
    assert await _sealed(runtime) == after


async def test_a_secret_no_key_reads_stops_rotation_and_its_batch_is_untouched(
    runtime: Runtime, database_url: str, tmp_path: Path, fake_google: FakeGoogle
) -> None:
    old, new, lost = SECRET_KEY, Fernet.generate_key().decode(), Fernet.generate_key().decode()
    ids = [uuid.UUID(int=n) for n in range(1, 5)]  # rotation goes in id order
    for n, account_id in enumerate(ids):
        user, _ = await user_with_token(runtime, sample=False)
        await add_google_account(runtime, fake_google, user, email=f"u{n}@example.com",
                                 id=account_id)
    unreadable = ids[3]  # in the second batch of two, after a readable row
    async with transaction(runtime.sessionmaker) as session:
        account = await session.get(Account, unreadable)
        assert account is not None
        account.refresh_token_encrypted = _box(lost).encrypt(b"1//sealed-with-a-lost-key")
    before = await _sealed(runtime)

    failed = _rotate(database_url, tmp_path, [new, old], "--batch-size", "2")

    assert failed.returncode == 2, (failed.stdout, failed.stderr)
    assert f"accounts.refresh_token_encrypted of row {unreadable}" in failed.stderr
    assert "cannot be decrypted" in failed.stderr
    assert "Traceback" not in failed.stderr
    after = await _sealed(runtime)
    # the first batch was rotated; nothing of the failing batch was, not even its good row
    for account_id in ids[:2]:
        assert _box(new).is_current(after[("accounts", account_id)])
    for account_id in ids[2:]:
        assert after[("accounts", account_id)] == before[("accounts", account_id)]

    # a key that reads nothing at all fails closed as well
    wrong = _rotate(database_url, tmp_path, [lost])
    assert wrong.returncode == 2
    assert "accounts.refresh_token_encrypted of row" in wrong.stderr
    assert await _sealed(runtime) == after


@pytest.mark.parametrize("keys", [[], [SECRET_KEY]], ids=["none", "one"])
async def test_rotating_with_one_key_checks_and_says_nothing_of_older_keys(
    runtime: Runtime, database_url: str, tmp_path: Path, keys: list[str], is_postgres: bool
) -> None:
    """With no key to move from, it said the older keys could now be removed."""
    result = _rotate(database_url, tmp_path, keys)
    if is_postgres and not keys:  # no key at all: nothing can be read
        assert result.returncode == 2
        assert result.stderr.startswith("error: PILOTLIGHT_SECRET_KEYS is not set: with "
                                        "PostgreSQL every process must use the same keys")
        return
    assert result.returncode == 0, result.stderr
    assert "done: every secret is sealed with the key in use, which reads them all" in (
        result.stderr)
    assert "older keys can now be removed" not in result.stderr
    assert ("To rotate, put a new key first in PILOTLIGHT_SECRET_KEYS" in result.stderr) == (
        not keys)


async def test_rotation_finds_every_sealed_column() -> None:
    from app.core.rotation import sealed_columns

    found = {(table.name, column.name) for table, column in sealed_columns(Base.metadata)}
    assert {
        ("accounts", "refresh_token_encrypted"), ("oauth_states", "code_verifier_encrypted"),
        ("webhooks", "secret_encrypted"), ("webhooks", "previous_secret_encrypted"),
        ("webhooks", "url_encrypted"), ("push_subscriptions", "auth_encrypted"),
    } <= found
