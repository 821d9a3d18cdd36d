"""The VAPID key pair (RFC 8292) that signs web push requests.

From `PILOTLIGHT_VAPID_PRIVATE_KEY` when set. With SQLite (the embedded mode)
and no key set, one is generated once into `DATA_DIR/vapid.pem` (mode 0600),
like the secret key. With PostgreSQL every process must sign with the same
key that browsers subscribed with, so none is generated and the setting is
required (`VapidKeyError`).
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from app.core.config import Settings
from app.core.encoding import unbase64url
from app.core.errors import DomainError

log = logging.getLogger(__name__)

KEY_FILE = "vapid.pem"


class VapidKeyError(DomainError):
    """Web push cannot be signed: no usable VAPID key."""

    status_code = 503


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_key_of(vapid: Vapid02) -> str:
    """The public key as browsers take it (applicationServerKey): base64url, uncompressed."""
    return b64url(vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


_cache: dict[tuple[object, ...], Vapid02] = {}


def vapid_key(settings: Settings) -> Vapid02:
    """The signing key for these settings (loaded once per process)."""
    configured = (settings.vapid_private_key.get_secret_value().strip()
                  if settings.vapid_private_key else "")
    cache_key = (configured, settings.vapid_public_key, str(settings.data_dir.resolve()),
                 settings.is_sqlite)
    vapid = _cache.get(cache_key)
    if vapid is not None:
        return vapid
    if configured:
        vapid = _parse(configured)
    elif settings.is_sqlite:
        vapid = _parse(_key_file(settings.data_dir / KEY_FILE))
    else:
        raise VapidKeyError(
            "PILOTLIGHT_VAPID_PRIVATE_KEY is not set: with PostgreSQL every process must sign "
            "web push with the same key, so none is generated. Create one with: openssl ecparam "
            "-name prime256v1 -genkey -noout"
        )
    if settings.vapid_public_key and settings.vapid_public_key != public_key_of(vapid):
        raise VapidKeyError("PILOTLIGHT_VAPID_PUBLIC_KEY does not match the private key")
    _cache[cache_key] = vapid
    return vapid


def _parse(text: str) -> Vapid02:
    try:
        if "BEGIN" in text:
            vapid = Vapid02.from_pem(text.encode())
        else:
            raw = unbase64url(text)
            if len(raw) != 32:
                raise ValueError("not PEM, nor 32 bytes in base64url")
            vapid = Vapid02.from_raw(text.encode())
    except Exception as exc:  # py_vapid raises assorted errors for a bad key
        raise VapidKeyError(f"the VAPID private key cannot be read: {exc}") from exc
    if not isinstance(vapid.private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        vapid.private_key.curve, ec.SECP256R1
    ):
        raise VapidKeyError("the VAPID private key must be a P-256 key")
    return vapid


def _key_file(path: Path) -> str:
    """Read the embedded key, generating it (0600) the first time."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return path.read_text().strip()
        with os.fdopen(fd, "w") as out:
            out.write(pem)
        log.warning("generated a VAPID key in %s (mode 0600): keep it, or browsers must "
                    "subscribe again; or set PILOTLIGHT_VAPID_PRIVATE_KEY instead", path)
        return pem
    if not text:
        raise VapidKeyError(f"{path} is empty: restore the key, or remove the file to start over")
    return text
