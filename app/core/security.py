"""Personal access tokens (a recognisable prefix, shown once, stored as a hash), and
comparing secrets in constant time."""

from __future__ import annotations

import hashlib
import hmac
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


def same_secret(expected: str, given: str) -> bool:
    """Compare two secrets in constant time; any text, whatever a client sent."""
    # compare_digest refuses str with non-ASCII characters (TypeError): compare the bytes.
    # surrogatepass: a JSON string may hold a lone surrogate, which strict UTF-8 refuses.
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass")
    )
