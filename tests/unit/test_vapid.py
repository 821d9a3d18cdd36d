"""The VAPID key: generated once (0600) with SQLite, required with PostgreSQL, checked."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.core.config import Settings
from app.core.vapid import KEY_FILE, VapidKeyError, public_key_of, vapid_key


def test_sqlite_generates_a_key_once_into_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="")
    first = public_key_of(vapid_key(settings))
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Settings(data_dir=tmp_path, database_url="", vapid_public_key=first)
    assert public_key_of(vapid_key(again)) == first


def test_postgresql_requires_a_configured_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql://x@127.0.0.1/none")
    with pytest.raises(VapidKeyError, match="PILOTLIGHT_VAPID_PRIVATE_KEY"):
        vapid_key(settings)
    assert not (tmp_path / KEY_FILE).exists()


@pytest.mark.parametrize("key", ["not a key", "-----BEGIN PRIVATE KEY-----\nxx\n"])
def test_a_bad_key_or_mismatched_public_key_fails_closed(tmp_path: Path, key: str) -> None:
    with pytest.raises(VapidKeyError):
        vapid_key(Settings(data_dir=tmp_path, vapid_private_key=SecretStr(key)))
    generated = Settings(data_dir=tmp_path, database_url="", vapid_public_key="BAD")
    with pytest.raises(VapidKeyError, match="does not match"):
        vapid_key(generated)
