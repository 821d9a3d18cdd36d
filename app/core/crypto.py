"""Secrets at rest (Google refresh tokens, OAuth code verifiers, webhook secrets):
Fernet, with key rotation through MultiFernet (`app.core.rotation`).

Keys come from `PILOTLIGHT_SECRET_KEYS`, newest first: the first encrypts, every
one decrypts. With SQLite (the embedded mode) and no keys set, a key is
generated once into `DATA_DIR/secret.key` (mode 0600). With PostgreSQL several
processes must share the keys, so none is generated and the setting is
required. A secret no configured key can read fails closed: `SecretKeyError`,
never a wrong plaintext.

A column that holds a sealed secret is named `*_encrypted`: that is how
`pilotlight keys rotate` finds it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.core.config import Settings
from app.core.errors import DomainError

log = logging.getLogger(__name__)

KEY_FILE = "secret.key"


class SecretKeyError(DomainError):
    """Secrets cannot be encrypted or decrypted with the keys this process has."""

    status_code = 503


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no secret key configured (PILOTLIGHT_SECRET_KEYS)")
        try:
            fernets = [Fernet(key) for key in keys]
        except ValueError as exc:
            raise SecretKeyError(f"a secret key is not a valid Fernet key: {exc}") from exc
        self._newest = fernets[0]
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise SecretKeyError(
                "a stored secret cannot be decrypted: the key it was encrypted with is not "
                "among PILOTLIGHT_SECRET_KEYS (or DATA_DIR/secret.key was replaced)"
            ) from exc

    def is_current(self, token: bytes) -> bool:
        """The newest key reads it: rotating it would change nothing."""
        try:
            self._newest.decrypt(token)
        except InvalidToken:
            return False
        return True

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt with the newest key (after adding one at the front of the list)."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken as exc:
            raise SecretKeyError("a stored secret cannot be decrypted with any key") from exc


_boxes: dict[tuple[object, ...], SecretBox] = {}


def secret_box(settings: Settings) -> SecretBox:
    """The box for these settings (built once per process and key set)."""
    configured = tuple(key.get_secret_value() for key in settings.secret_keys)
    cache_key = (configured, str(settings.data_dir.resolve()), settings.is_sqlite)
    box = _boxes.get(cache_key)
    if box is None:
        if configured:
            keys = [key.encode() for key in configured]
        elif settings.is_sqlite:
            keys = [_key_file(settings.data_dir / KEY_FILE)]
        else:
            raise SecretKeyError(
                "PILOTLIGHT_SECRET_KEYS is not set: with PostgreSQL every process must use "
                "the same keys, so none is generated. Create one with: python -c 'from "
                "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            )
        box = _boxes[cache_key] = SecretBox(keys)
    return box


def _key_file(path: Path) -> bytes:
    """Read the embedded key, generating it (0600) the first time."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as out:
            out.write(key + b"\n")
        log.warning(
            "generated a secret key in %s (mode 0600); it encrypts webhook secrets: keep it "
            "and back it up with the database, or set PILOTLIGHT_SECRET_KEYS instead", path,
        )
        return key
    if not key:
        raise SecretKeyError(f"{path} is empty: restore the key, or remove the file to start over")
    return key
