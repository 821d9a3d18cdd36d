"""The `pilotlight` command against a real database."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import make_url
from uvicorn.logging import AccessFormatter

from app.channels.models import Webhook
from app.cli import _setup_logging
from app.core.db import transaction
from app.core.runtime import Runtime
from app.events.server import server
from app.main import create_app
from app.users import service as users
from tests.fakes.gemini import FakeGemini
from tests.integration.processes import (
    command,
    free_port,
    pilotlight_env,
    start,
    stop,
    wait_healthy,
    wait_logged,
)


def cli(
    database_url: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**pilotlight_env(data_dir=tmp_path / "data", database_url=database_url),
           **(env or {})}
    return subprocess.run(
        command(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


async def test_user_and_token_create(runtime: Runtime, database_url: str, tmp_path: Path) -> None:
    created = cli(database_url, tmp_path, "user", "create", "Ada@Example.com", "--timezone",
                  "Europe/London")
    assert created.returncode == 0, created.stderr
    assert "created user ada@example.com" in created.stdout

    again = cli(database_url, tmp_path, "user", "create", "ada@example.com")
    assert again.returncode == 2
    assert "already exists" in again.stderr

    token = cli(database_url, tmp_path, "token", "create", "ada@example.com")
    assert token.returncode == 0, token.stderr
    plaintext = token.stdout.strip()
    assert plaintext.startswith("plt_")
    assert "shown once" in token.stderr
    async with transaction(runtime.sessionmaker) as session:
        user = await users.authenticate(session=session, token=plaintext)
        assert user.email == "ada@example.com"
        assert user.timezone == "Europe/London"


async def test_a_user_created_with_the_sample_can_have_instructions_without_google(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """A deployment without Google: every instruction of a created user was refused with
    NothingToRead, and nothing could give the user something to read."""
    for email, sample in (("demo@example.com", True), ("plain@example.com", False)):
        created = cli(database_url, tmp_path, "user", "create", email,
                      *(["--sample"] if sample else []))
        assert created.returncode == 0, created.stderr
        assert created.stdout.strip().endswith("with the sample mailbox") == sample
        token = cli(database_url, tmp_path, "token", "create", email).stdout.strip()
        app = create_app(runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1") as client:
            made = await client.post(
                "/api/v1/instructions", headers={"Authorization": f"Bearer {token}"},
                json={"title": "Digest", "text": "Digest my mail.",
                      "trigger": {"type": "cron", "cron": "0 8 * * *", "timezone": "UTC"}})
        assert made.status_code == (201 if sample else 422), made.text


async def test_user_list(runtime: Runtime, database_url: str, tmp_path: Path) -> None:
    empty = cli(database_url, tmp_path, "user", "list")
    assert (empty.returncode, empty.stdout) == (0, "")
    assert "no users yet" in empty.stderr
    for args in (("bo@example.com", "--name", "Bo Lind"),
                 ("ada@example.com", "--timezone", "Europe/London")):
        assert cli(database_url, tmp_path, "user", "create", *args).returncode == 0
    listed = cli(database_url, tmp_path, "user", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(r[0], r[1], r[2], r[4:]) for r in rows] == [
        ("ada@example.com", "Europe/London", "1 USD/day", []),
        ("bo@example.com", "UTC", "1 USD/day", ["Bo Lind"]),
    ]


async def test_a_changed_local_user_address_is_refused_until_a_user_has_it(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """Set after a first start, PILOTLIGHT_LOCAL_USER_EMAIL made a second, empty local
    user at the next start, and the instructions stayed with the old address."""
    async with transaction(runtime.sessionmaker) as session:
        local = await users.create_user(session=session, email="me@localhost")
        _token, plaintext = await users.create_token(session=session, user=local)
    moved = {"PILOTLIGHT_LOCAL_USER_EMAIL": "Ada@Example.com"}
    refused = cli(database_url, tmp_path, "serve", "--port", str(free_port()), env=moved)
    assert one_error(refused) == (
        "error: PILOTLIGHT_LOCAL_USER_EMAIL is Ada@Example.com, which no user has, and the "
        "database has other users (me@localhost): set it to one of them, give one of them "
        "this address with `pilotlight user email OLD Ada@Example.com`, or create the user "
        "with `pilotlight user create Ada@Example.com`")
    async with transaction(runtime.sessionmaker) as session:
        assert await users.get_by_email(session=session, email="ada@example.com") is None

    renamed = cli(database_url, tmp_path, "user", "email", "me@localhost", "Ada@Example.com")
    assert renamed.returncode == 0, renamed.stderr
    assert renamed.stdout == "user me@localhost is now ada@example.com\n"
    assert "set PILOTLIGHT_LOCAL_USER_EMAIL=ada@example.com before the next start" in (
        renamed.stderr)
    async with transaction(runtime.sessionmaker) as session:
        assert (await users.authenticate(session=session, token=plaintext)).id == local.id
        assert (await users.get_by_email(session=session, email="ada@example.com")) is not None

    taken = cli(database_url, tmp_path, "user", "create", "bo@example.com")
    assert taken.returncode == 0, taken.stderr
    for args, error in [
        (("ada@example.com", "bo@example.com"), "a user with email bo@example.com already exists"),
        (("ada@example.com", "not-an-email"), "'not-an-email' is not an email address"),
        (("nobody@example.com", "x@example.com"),
         "no user nobody@example.com (`pilotlight user list` lists them)"),
    ]:
        assert one_error(cli(database_url, tmp_path, "user", "email", *args)) == (
            f"error: {error}")


async def test_bad_input_is_a_clear_error(
    runtime: Runtime, database_url: str, tmp_path: Path, is_postgres: bool
) -> None:
    bad_email = cli(database_url, tmp_path, "user", "create", "not-an-email")
    assert bad_email.returncode == 2
    assert "not an email address" in bad_email.stderr
    bad_zone = cli(database_url, tmp_path, "user", "create", "a@b.example", "--timezone", "Mars/X")
    assert bad_zone.returncode == 2
    assert "unknown time zone" in bad_zone.stderr

    nobody = cli(database_url, tmp_path, "token", "create", "nobody@example.com")
    assert nobody.returncode == 2
    assert "pilotlight user create" in nobody.stderr
    no_local = cli(database_url, tmp_path, "token", "create")
    assert no_local.returncode == 2
    # `serve` makes the local user with SQLite; with PostgreSQL the roles run apart.
    assert ("create it with `pilotlight user create EMAIL`, then run `pilotlight token create "
            "EMAIL`" if is_postgres else "start `pilotlight serve` once") in no_local.stderr
    assert "Traceback" not in no_local.stderr + nobody.stderr + bad_email.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["user", "create", "a@b.example", "--name", "n" * 201],
      "error: name: at most 200 characters"),
     (["user", "create", "a" * 311 + "@b.example"],
      "error: an email address has at most 320 characters"),
     (["token", "create", "ada@example.com", "--name", "n" * 201],
      "error: token name: at most 200 characters")],
    ids=["user-name", "email", "token-name"],
)
async def test_a_name_or_address_longer_than_its_column_is_a_clear_error(
    runtime: Runtime, database_url: str, tmp_path: Path, args: list[str], expected: str
) -> None:
    """PostgreSQL refused them on write and the command printed a 40-line traceback;
    SQLite kept them."""
    assert cli(database_url, tmp_path, "user", "create", "ada@example.com").returncode == 0
    assert one_error(cli(database_url, tmp_path, *args)) == expected


async def test_a_database_from_a_newer_release_is_one_line_saying_so(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """Code rolled back under a migrated database: migrate and serve printed a traceback,
    the roles advised `pilotlight migrate`, which cannot help."""
    async with transaction(runtime.sessionmaker) as session:
        kept = (await session.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one()
        await session.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    try:
        expected = ("error: the database is at revision 0999, which this code (at "
                    f"{kept}) does not know: a newer Pilotlight migrated it. Run that version, "
                    "or restore the backup made before it")
        for role in ("migrate", "worker"):
            assert one_error(cli(database_url, tmp_path, role)) == expected, role
        checked = cli(database_url, tmp_path, "check")
        assert checked.returncode == 1
        assert "Traceback" not in checked.stdout + checked.stderr
        assert expected.removeprefix("error: ") in checked.stdout
    finally:
        async with transaction(runtime.sessionmaker) as session:
            await session.execute(text("UPDATE alembic_version SET version_num = :v"),
                                  {"v": kept})


async def test_a_metrics_port_in_use_is_one_line_naming_its_setting(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """Two schedulers given one metrics port: the second printed a 159-line traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(database_url, tmp_path, "scheduler",
                     env={"PILOTLIGHT_METRICS_PORT": str(port)})
    assert one_error(result).startswith(
        f"error: PILOTLIGHT_METRICS_PORT: cannot listen on 127.0.0.1:{port} (Address already "
        "in use)")


async def test_the_api_says_where_it_listens(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """uvicorn names its address only when it binds the socket itself: the api, which binds
    it first, started with no word of where it listened."""
    port = free_port()
    env = pilotlight_env(data_dir=tmp_path / "data", database_url=database_url,
                         PILOTLIGHT_PORT=str(port))
    log = tmp_path / "api.log"
    process = start(command("api"), env, tmp_path, log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log)
    finally:
        stop(process, log=log)
    assert f"pilotlight: listening on http://127.0.0.1:{port}\n" in log.read_text()


@pytest.mark.parametrize("role", ["serve", "api"])
def test_an_address_that_cannot_be_listened_on_stops_the_role_before_it_does_anything(
    tmp_path: Path, role: str
) -> None:
    """A second `make run` on the same port migrated, started its loops and ran the
    example instruction before uvicorn found the port taken."""
    fresh = tmp_path / "fresh.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(f"sqlite:///{fresh}", tmp_path, role, "--port", str(port))
    assert one_error(result) == (
        f"error: cannot listen on 127.0.0.1:{port} (PILOTLIGHT_HOST and PILOTLIGHT_PORT, or "
        "--host and --port): Address already in use")
    with sqlite3.connect(fresh) as db:  # not migrated, nobody created
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
    # An address of no interface here (TEST-NET-1: binding sends nothing, no name is looked
    # up), as PILOTLIGHT_HOST copied from another machine.
    elsewhere = cli(f"sqlite:///{fresh}", tmp_path, role, "--host", "192.0.2.1")
    assert one_error(elsewhere).startswith(
        "error: cannot listen on 192.0.2.1:8000 (PILOTLIGHT_HOST and PILOTLIGHT_PORT, or "
        "--host and --port): 192.0.2.1 is not an address of this machine")


def one_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one line a command that was refused printed: `check` on stdout, others on stderr."""
    assert result.returncode == code, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["migrate"], {"PILOTLIGHT_SECRET_KEYS": "abc"},
         "error: PILOTLIGHT_SECRET_KEYS: key 1 is not a Fernet key (32 url-safe base64 bytes)"),
        (["token", "create"], {"PILOTLIGHT_SECRET_KEYS": "[abc"},
         "error: PILOTLIGHT_SECRET_KEYS: starts with [ but is not a JSON list"),
        (["serve"], {"PILOTLIGHT_PORT": "abc"},
         "error: PILOTLIGHT_PORT: Input should be a valid integer"),
        (["worker"], {"PILOTLIGHT_GEMINI_PRICES": "{bad"},
         "error: PILOTLIGHT_GEMINI_PRICES: not valid JSON"),
        (["migrate"], {"PILOTLIGHT_DATABASE_URL": "not a url"},
         "error: PILOTLIGHT_DATABASE_URL: not a database URL: use sqlite:///PATH (aiosqlite) "
         "or postgresql://USER:PASSWORD@HOST:PORT/DATABASE (asyncpg"),
        (["serve"], {"PILOTLIGHT_LOG_LEVEL": "LOUD"},
         "error: PILOTLIGHT_LOG_LEVEL: not a log level: use DEBUG, INFO, WARNING, ERROR, "
         "CRITICAL (any case)"),
        (["serve"], {"PILOTLIGHT_TIMEZONE": "Europe/berlin"},
         "error: PILOTLIGHT_TIMEZONE: unknown time zone: use an IANA name such as Europe/Berlin "
         "or UTC (exact case), or leave it empty for the machine's; did you mean Europe/Berlin?"),
        (["api"], {"PILOTLIGHT_DELIVERY_TIMEOUT_SECONDS": "100"},
         "error: PILOTLIGHT_DELIVERY_CLAIM_SECONDS must be longer than "
         "PILOTLIGHT_DELIVERY_TIMEOUT_SECONDS"),
    ],
    ids=["fernet-key", "keys-json", "port", "prices-json", "not-a-url", "log-level",
         "timezone", "claim-vs-timeout"],
)
def test_a_bad_setting_is_one_line_naming_its_variable(
    database_url: str, tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    result = cli(database_url, tmp_path, *args, env=env)
    assert one_error(result).startswith(expected)
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before anything was done


@pytest.mark.parametrize(("role", "need"), [("worker", 6), ("scheduler", 2), ("serve", 7)])
def test_a_pool_the_role_would_use_up_is_refused_at_start(
    tmp_path: Path, role: str, need: int
) -> None:
    """A worker with PILOTLIGHT_DATABASE_POOL_SIZE=5 kept all five for its loops: it started,
    then its rescuer and its runs waited 30 s for a connection and failed, traceback after
    traceback (each run a failed attempt); a scheduler with 1 stopped polling watches."""
    url, _shown = closed_port_url()  # refused before the database is asked anything
    small = cli(url, tmp_path, role, env={"PILOTLIGHT_DATABASE_POOL_SIZE": str(need - 1)})
    assert one_error(small) == (
        f"error: PILOTLIGHT_DATABASE_POOL_SIZE is {need - 1}, and `{role}` on PostgreSQL "
        f"keeps {need - 1} connection{'s' if need > 2 else ''} of its pool while it runs and "
        f"needs more for the rest: set it to {need} or more")
    enough = cli(url, tmp_path, role, env={"PILOTLIGHT_DATABASE_POOL_SIZE": str(need)})
    assert one_error(enough, code=1).startswith("error: cannot reach the database")


def test_a_misspelt_variable_is_told_with_the_name_it_likely_meant(
    database_url: str, tmp_path: Path
) -> None:
    """Ignored in silence, PILOTLIGHT_DATABSE_URL left the database at the SQLite default:
    `check` and every command say so (in the environment or in .env). Kubernetes' service
    variables are not settings and are not told."""
    (tmp_path / ".env").write_text("PILOTLIGHT_GEMINI_API_KEYY=abc\n")
    env = {"PILOTLIGHT_DATABSE_URL": "postgresql://u@127.0.0.1/db",
           "PILOTLIGHT_SERVICE_HOST": "10.0.0.1", "PILOTLIGHT_PORT_8000_TCP": "tcp://x"}
    checked = cli(database_url, tmp_path, "check", env=env)
    warned = [line for line in checked.stdout.splitlines() if line.startswith("settings  WARN")]
    assert warned == [
        "settings  WARN  PILOTLIGHT_DATABSE_URL names no setting and is ignored: did you mean "
        "PILOTLIGHT_DATABASE_URL?",
        "settings  WARN  PILOTLIGHT_GEMINI_API_KEYY names no setting and is ignored: did you "
        "mean PILOTLIGHT_GEMINI_API_KEY?",
    ]
    migrated = cli(database_url, tmp_path, "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "PILOTLIGHT_DATABSE_URL names no setting and is ignored" in migrated.stderr
    assert "SERVICE_HOST" not in migrated.stderr + checked.stdout


def test_a_dot_env_that_is_not_utf8_is_one_line(database_url: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PILOTLIGHT_PORT=8001\n", encoding="utf-16")
    result = cli(database_url, tmp_path, "migrate")
    assert one_error(result) == (
        "error: .env is not UTF-8 text (PowerShell's `echo > .env` writes UTF-16): save it "
        "as UTF-8")


@pytest.mark.parametrize("role", ["serve", "api"])
def test_options_are_checked_like_settings_before_anything_is_done(
    database_url: str, tmp_path: Path, role: str
) -> None:
    result = cli(database_url, tmp_path, role, "--port", "99999")
    assert one_error(result) == "error: --port: Input should be less than or equal to 65535"
    assert not (tmp_path / "data").exists()  # serve did not migrate first


def test_help_texts_wrap_as_sentences_not_as_the_source_lines(
    database_url: str, tmp_path: Path
) -> None:
    # Rich's help kept the docstrings' line breaks: "the keys PostgreSQL" / "needs".
    wide = {"COLUMNS": "200", "TERM": "dumb"}
    top = cli(database_url, tmp_path, "--help", env=wide)
    assert top.returncode == 0, top.stderr
    assert "the keys PostgreSQL needs and the sources; exit 1 on a problem." in top.stdout
    assert "(single use, expires soon). The link leads to" in top.stdout
    user = cli(database_url, tmp_path, "user", "email", "--help", env=wide)
    assert "before changing PILOTLIGHT_LOCAL_USER_EMAIL to it); its instructions" \
        in user.stdout


def test_check_reports_an_unsupported_database(database_url: str, tmp_path: Path) -> None:
    result = cli(database_url, tmp_path, "check",
                 env={"PILOTLIGHT_DATABASE_URL": "mysql://u:hunter2@127.0.0.1/y"})
    line = one_error(result, code=1)
    assert line.startswith("settings  FAIL  PILOTLIGHT_DATABASE_URL: unsupported database "
                           "mysql://: use sqlite:///PATH (aiosqlite) or postgresql://"), line
    assert "hunter2" not in line


def test_check_reports_bad_settings_and_exits_1(database_url: str, tmp_path: Path) -> None:
    result = cli(database_url, tmp_path, "check",
                 env={"PILOTLIGHT_SECRET_KEYS": "abc", "PILOTLIGHT_PORT": "abc"})
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "settings  FAIL  PILOTLIGHT_PORT: Input should be a valid integer, unable to parse "
        "string as an integer",
        "settings  FAIL  PILOTLIGHT_SECRET_KEYS: key 1 is not a Fernet key (32 url-safe base64 "
        "bytes)",
    ]


REFUSED = "connection refused (is the server running, on that host and port?)"


def closed_port_url() -> tuple[str, str]:
    """A PostgreSQL URL with a password at a closed port on 127.0.0.1, and how it is shown."""
    port = free_port()
    return (f"postgresql://postgres:hunter2@127.0.0.1:{port}/pilotlight",
            f"postgresql+asyncpg://postgres:***@127.0.0.1:{port}/pilotlight")


@pytest.mark.parametrize(
    "args",
    [["migrate"], ["token", "create"], ["user", "create", "a@b.example"], ["serve"], ["api"],
     ["scheduler"], ["worker"], ["keys", "rotate"], ["login-link", "a@b.example"]],
    ids=["migrate", "token", "user", "serve", "api", "scheduler", "worker", "keys", "login-link"],
)
def test_an_unreachable_database_is_one_line_with_the_password_hidden(
    database_url: str, tmp_path: Path, args: list[str]
) -> None:
    url, shown = closed_port_url()
    result = cli(database_url, tmp_path, *args, env={"PILOTLIGHT_DATABASE_URL": url})
    assert one_error(result, code=1) == f"error: cannot reach the database at {shown}: {REFUSED}"
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("args", [["migrate"], ["token", "create"]], ids=["migrate", "token"])
def test_a_database_that_cannot_be_opened_is_one_line(
    database_url: str, is_postgres: bool, tmp_path: Path, args: list[str]
) -> None:
    if is_postgres:  # the test server, a database it does not have
        missing = make_url(database_url)
        missing = missing.set(database=f"{missing.database}_missing")
        url, reason = missing.render_as_string(hide_password=False), (
            f'database "{missing.database}" does not exist')
    else:  # a folder where the file should be
        url, reason = f"sqlite:///{tmp_path}", "unable to open database file"
    result = cli(database_url, tmp_path, *args, env={"PILOTLIGHT_DATABASE_URL": url})
    shown = make_url(url.replace("sqlite://", "sqlite+aiosqlite://")).render_as_string()
    assert one_error(result, code=1) == f"error: cannot reach the database at {shown}: {reason}"


def test_check_reports_an_unreachable_database(database_url: str, tmp_path: Path) -> None:
    url, shown = closed_port_url()
    result = cli(database_url, tmp_path, "check", env={"PILOTLIGHT_DATABASE_URL": url})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"database  FAIL  cannot reach the database at {shown}: {REFUSED}"
    assert lines[1].startswith("model     ok")  # the other checks still ran
    assert "Traceback" not in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def postgres_keys() -> dict[str, str]:
    """The keys a PostgreSQL setup needs (SQLite makes its own)."""
    vapid = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    return {"PILOTLIGHT_SECRET_KEYS": Fernet.generate_key().decode(),
            "PILOTLIGHT_VAPID_PRIVATE_KEY": vapid}


async def test_check_reports_database_model_and_sources(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    result = cli(database_url, tmp_path, "check", env=postgres_keys() if is_postgres else {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database  ok" in result.stdout
    assert "offline model" in result.stdout
    assert "14 messages, 6 documents" in result.stdout
    if not is_postgres:  # reported, not made: check changes nothing
        data = tmp_path / "data"
        assert f"secrets   ok   {data / 'secret.key'} (made on first use)" in result.stdout
        assert f"push      ok   {data / 'vapid.pem'} (made on first use)" in result.stdout
        assert not (data / "secret.key").exists()
        assert not (data / "vapid.pem").exists()


async def test_check_warns_when_apple_would_refuse_the_vapid_subject(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    """A subject at localhost: push to Safari and iOS fails (403 BadJwtToken), others work,
    so it is a warning, not a failed check."""
    env = postgres_keys() if is_postgres else {}
    default = cli(database_url, tmp_path, "check", env=env)
    assert default.returncode == 0, default.stdout + default.stderr
    [warned] = [line for line in default.stdout.splitlines() if "WARN" in line]
    assert warned.startswith("push      WARN  the default VAPID subject "
                             "(PILOTLIGHT_PUBLIC_URL is not a public https URL) is "
                             "mailto:pilotlight@localhost: Apple's push service")
    assert "403 BadJwtToken" in warned
    assert "PILOTLIGHT_VAPID_SUBJECT" in warned

    given = cli(database_url, tmp_path, "check",
                env={**env, "PILOTLIGHT_VAPID_SUBJECT": "mailto:me@box.local"})
    assert given.returncode == 0, given.stdout + given.stderr
    assert ("push      WARN  PILOTLIGHT_VAPID_SUBJECT is mailto:me@box.local: Apple's push "
            "service (Safari, iOS) refuses a subject at box.local") in given.stdout

    public = cli(database_url, tmp_path, "check",
                 env={**env, "PILOTLIGHT_PUBLIC_URL": "https://pilot.example.com"})
    assert public.returncode == 0, public.stdout + public.stderr
    assert "WARN" not in public.stdout


async def test_check_reports_the_keys_postgresql_needs(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    # On a SQLite run, a PostgreSQL URL at a closed port: the keys are judged all the same.
    url = database_url if is_postgres else closed_port_url()[0]
    env = {"PILOTLIGHT_DATABASE_URL": url}
    missing = cli(database_url, tmp_path, "check", env=env)
    assert missing.returncode == 1
    assert ("secrets   FAIL  PILOTLIGHT_SECRET_KEYS is not set, and with PostgreSQL none is "
            "generated: adding a webhook or connecting Google answers 503 until it is"
            ) in missing.stdout.splitlines()
    assert ("push      FAIL  PILOTLIGHT_VAPID_PRIVATE_KEY is not set, and with PostgreSQL none "
            "is generated: web push answers 503 until it is (other channels work)"
            ) in missing.stdout.splitlines()

    keys = postgres_keys()
    given = cli(database_url, tmp_path, "check", env={**env, **keys})
    assert "secrets   ok   PILOTLIGHT_SECRET_KEYS: 1 key" in given.stdout.splitlines()
    assert "push      ok   PILOTLIGHT_VAPID_PRIVATE_KEY" in given.stdout.splitlines()
    assert given.returncode == (0 if is_postgres else 1), given.stdout  # SQLite run: no server
    for key in keys.values():
        assert key not in given.stdout + given.stderr

    bad = cli(database_url, tmp_path, "check",
              env={**env, **keys, "PILOTLIGHT_VAPID_PRIVATE_KEY": "not-a-key"})
    assert bad.returncode == 1
    assert "push      FAIL  the VAPID private key cannot be read: " in bad.stdout
    assert "not-a-key" not in bad.stdout + bad.stderr


async def test_check_reads_the_secret_key_and_what_it_encrypted(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    """`secrets ok` was said of a key file holding garbage, and of keys that read none of
    the secrets stored (a key replaced rather than added in front)."""
    key = Fernet.generate_key()
    async with transaction(runtime.sessionmaker) as session:
        user = await users.create_user(session=session, email="ada@example.com")
        session.add(Webhook(user_id=user.id,
                            url_encrypted=Fernet(key).encrypt(b"https://hooks.example.com/a"),
                            url_shown="https://hooks.example.com/\u2026",
                            secret_encrypted=Fernet(key).encrypt(b"whsec_x"),
                            event_types={"types": ["digest.created"]}))
    env = postgres_keys()
    reads = cli(database_url, tmp_path, "check", env={**env, "PILOTLIGHT_SECRET_KEYS":
                                                       key.decode()})
    assert "secrets   ok   the keys read the secrets stored" in reads.stdout.splitlines()
    assert reads.returncode == 0, reads.stdout + reads.stderr

    replaced = cli(database_url, tmp_path, "check", env=env)  # another key
    assert replaced.returncode == 1
    assert ("secrets   FAIL  a stored secret cannot be decrypted: the key it was encrypted with "
            "is not among PILOTLIGHT_SECRET_KEYS") in replaced.stdout
    if not is_postgres:
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / "secret.key").write_text("garbage\n")
        broken = cli(database_url, tmp_path, "check")
        assert broken.returncode == 1
        assert (f"secrets   FAIL  {tmp_path / 'data' / 'secret.key'}: a secret key is not a "
                "valid Fernet key") in broken.stdout


async def test_a_rejected_gemini_key_is_a_clear_error_at_start(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    with FakeGemini() as fake:
        env = {"PILOTLIGHT_GEMINI_BASE_URL": fake.url, "PILOTLIGHT_GEMINI_MAX_RETRIES": "0",
               **(postgres_keys() if is_postgres else {})}
        good = cli(database_url, tmp_path, "check",
                   env={**env, "PILOTLIGHT_GEMINI_API_KEY": fake.api_key})
        assert good.returncode == 0, good.stdout + good.stderr
        assert "the API key works" in good.stdout

        env["PILOTLIGHT_GEMINI_API_KEY"] = "not-the-key"
        bad = cli(database_url, tmp_path, "check", env=env)
        assert bad.returncode == 1
        assert "model     FAIL" in bad.stdout
        assert "key rejected" in bad.stdout

        worker = cli(database_url, tmp_path, "worker", env=env)
        assert worker.returncode == 2
        assert "Gemini API key rejected" in worker.stderr
        assert "not-the-key" not in worker.stderr + worker.stdout  # never echo secrets


async def test_a_gemini_model_without_a_price_is_told_by_check_and_the_worker(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    """A model the price table does not list costs $0, so PILOTLIGHT_GEMINI_MODEL set to
    one (gemini-2.5-pro) turned off every user's daily cost cap and showed $0 in usage, and
    `check` said all was well."""
    told = ("PILOTLIGHT_GEMINI_MODEL gemini-2.5-pro has no price in PILOTLIGHT_GEMINI_PRICES: "
            "its turns are counted at $0 in usage and the daily cost cap does not stop them; "
            "add its price to PILOTLIGHT_GEMINI_PRICES")
    with FakeGemini() as fake:
        env = {"PILOTLIGHT_GEMINI_BASE_URL": fake.url, "PILOTLIGHT_GEMINI_API_KEY": fake.api_key,
               "PILOTLIGHT_GEMINI_MODEL": "gemini-2.5-pro", "PILOTLIGHT_GEMINI_MAX_RETRIES": "0",
               **(postgres_keys() if is_postgres else {})}
        checked = cli(database_url, tmp_path, "check", env=env)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"model     WARN  {told}" in checked.stdout.splitlines()
        priced = cli(database_url, tmp_path, "check",
                     env={**env, "PILOTLIGHT_GEMINI_MODEL": "gemini-3.1-pro-preview"})
        assert "WARN  PILOTLIGHT_GEMINI_MODEL" not in priced.stdout
        log = tmp_path / "worker.log"
        worker = start(command("worker"), {**pilotlight_env(
            data_dir=tmp_path / "data", database_url=database_url), **env}, tmp_path, log)
        try:
            wait_logged(log, "worker started")
        finally:
            stop(worker, log=log)
    assert f"WARNING pilotlight: {told}" in log.read_text()


async def test_model_turns_are_not_logged_line_by_line_unless_debugging(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    """httpx2 (the Gemini SDK's httpx) logged "HTTP Request: POST <url> ..." at INFO for
    every request it sent: each model turn and retry was a line in the service's log, its
    whole URL too (the filter that cuts it to its origin was on httpx alone). They show at
    DEBUG, by origin, and the API key, which the SDK sends in a header, is in no line at
    any level."""
    key = "fake-key-SECRET-4f0c"
    with FakeGemini(api_key=key) as fake:
        env = {"PILOTLIGHT_GEMINI_BASE_URL": fake.url, "PILOTLIGHT_GEMINI_API_KEY": key,
               "PILOTLIGHT_GEMINI_MAX_RETRIES": "0",
               **(postgres_keys() if is_postgres else {})}
        quiet = cli(database_url, tmp_path, "check", env=env)
        debugging = cli(database_url, tmp_path, "check",
                        env={**env, "PILOTLIGHT_LOG_LEVEL": "debug"})
        turns = len(fake.requests())
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert debugging.returncode == 0, debugging.stdout + debugging.stderr
    assert turns == 2  # each check asked the model
    assert "model     ok" in quiet.stdout
    assert "HTTP Request" not in quiet.stderr, quiet.stderr
    shown = [line for line in debugging.stderr.splitlines() if "HTTP Request:" in line]
    assert len(shown) == 1, debugging.stderr
    # The SDK sends through httpx2, httpx's fork: by origin too.
    assert shown[0].endswith(f'httpx2: HTTP Request: POST {fake.url} "HTTP/1.1 200 OK"')
    for result in (quiet, debugging):
        assert key not in result.stdout + result.stderr


@contextlib.asynccontextmanager
async def _serving(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, *, log_level: str = "info",
    loggers: tuple[str, ...] = (),
) -> AsyncIterator[int]:
    """The app served by uvicorn on a free port, the `loggers` (which do not propagate)
    heard by caplog; yields the port."""
    _setup_logging(runtime.settings)
    port = free_port()
    http = server(create_app(runtime), host="127.0.0.1", port=port, log_level=log_level,
                  forwarded_allow_ips=runtime.settings.trusted_proxies({}))
    heard = [logging.getLogger(name) for name in loggers]
    for logger in heard:
        logger.addHandler(caplog.handler)
    serving = asyncio.create_task(http.serve())
    try:
        while not http.started:
            assert not serving.done(), serving
            await asyncio.sleep(0.01)
        yield port
    finally:
        http.should_exit = True
        await serving
        for logger in heard:
            logger.removeHandler(caplog.handler)


async def test_the_access_log_shows_paths_but_never_query_strings(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The login link's token and the OAuth callbacks' state and code stay out of the log."""
    async with _serving(runtime, caplog, loggers=("uvicorn.access", "uvicorn.error")) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await client.get("/login/link", params={"token": "LINKSECRET"})
            await client.get("/oauth/google/callback",
                             params={"state": "STATESECRET", "code": "CODESECRET"})
            await client.get("/login/google/callback",
                             params={"state": "STATESECRET", "code": "CODESECRET"})
        # No WebSocket route: the handshake is refused, and uvicorn logs it.
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"ws://127.0.0.1:{port}/events?token=WSSECRET"):
                pass

    records = [r for r in caplog.records if r.name == "uvicorn.access"]
    shown = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s',
                            use_colors=False)  # uvicorn's own
    lines = [shown.format(r) for r in records]
    assert len(lines) == 3, lines
    for path, line in zip(["/login/link", "/oauth/google/callback", "/login/google/callback"],
                          lines, strict=True):
        assert f'"GET {path} HTTP/1.1"' in line, line
        assert "SECRET" not in line, line
        assert "?" not in line, line
    handshakes = [r.getMessage() for r in caplog.records if "WebSocket" in r.getMessage()]
    assert handshakes
    assert all('"WebSocket /events"' in line for line in handshakes), handshakes
    assert not [r for r in caplog.records if "SECRET" in r.getMessage()]


async def test_health_checks_and_scrapes_that_succeed_are_not_in_the_access_log(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A load balancer's /healthz and a Prometheus scrape every few seconds were a line
    each in an idle api's log."""
    async with _serving(runtime, caplog, loggers=("uvicorn.access",)) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for path in ("/healthz", "/readyz", "/metrics", "/healthz?x=1", "/openapi.json"):
                assert (await client.get(path)).status_code == 200
            assert (await client.head("/healthz")).status_code == 200
            assert (await client.get("/metricsx")).status_code == 404
    shown = AccessFormatter('"%(request_line)s" %(status_code)s', use_colors=False)
    lines = [shown.format(r) for r in caplog.records if r.name == "uvicorn.access"]
    assert lines == ['"GET /openapi.json HTTP/1.1" 200 OK',
                     '"GET /metricsx HTTP/1.1" 404 Not Found']


async def test_outbound_requests_are_logged_by_origin_only(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """httpx logged each webhook and push request's whole URL at INFO: a Slack hook's
    secret path, a `?token=`, a push subscription's capability path."""
    async with _serving(runtime, caplog, log_level="warning") as port:
        with caplog.at_level(logging.INFO, logger="httpx"):
            async with httpx.AsyncClient() as client:
                await client.post(f"http://127.0.0.1:{port}/services/T0/B0/HOOKSECRET",
                                  params={"token": "TOKENSECRET"})
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines == [f'HTTP Request: POST http://127.0.0.1:{port} "HTTP/1.1 404 Not Found"'], (
        lines)
