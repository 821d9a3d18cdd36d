"""The `pilotlight` command against a real database."""

from __future__ import annotations

import subprocess
from pathlib import Path

from app.core.db import transaction
from app.core.runtime import Runtime
from app.users import service as users
from tests.integration.processes import command, pilotlight_env


def cli(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = pilotlight_env(data_dir=tmp_path / "data", database_url=database_url)
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


async def test_bad_input_is_a_clear_error(
    runtime: Runtime, database_url: str, tmp_path: Path
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
    assert "start `pilotlight serve` once" in no_local.stderr
    assert "Traceback" not in no_local.stderr + nobody.stderr + bad_email.stderr
