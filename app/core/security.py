"""Personal access tokens: a recognisable prefix, shown once, stored as a hash."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "plt_"


def new_token() -> str:
    """A fresh token such as `plt_3q2…`; 256 bits of randomness."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: there is nothing
    # to brute-force, unlike a password.
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    """The part of a token safe to show in lists (`plt_3q2F…`)."""
    return token[: len(TOKEN_PREFIX) + 6]
