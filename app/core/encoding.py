"""base64url as the web writes it: padding optional (JWT, Web Push keys, Gmail bodies)."""

from __future__ import annotations

import base64


def unbase64url(text: str) -> bytes:
    """The bytes of base64url text with or without its `=` padding. Raises
    `binascii.Error` (a ValueError) when the text cannot be base64."""
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
