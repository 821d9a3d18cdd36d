"""Gmail push through Cloud Pub/Sub: the push token's check, and what a push does.

Pub/Sub posts to `/api/v1/google/pubsub` with `Authorization: Bearer <JWT>`, an OIDC
token Google signs for the push subscription's service account. It is verified against
Google's signing certificates (`certs` in app/google/endpoints.py) and the configured
audience; only then is the message read. A push only makes the account's next watch
poll immediate: what fired is decided by the poll, as without push, so a forged or
replayed push could at most cost one poll.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
from google.oauth2 import id_token
from pydantic import BaseModel, ConfigDict, Field

from app.core.config import Settings
from app.core.errors import BadRequest, DomainError, Unauthorized
from app.google.endpoints import google_endpoints

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")


class PushRefused(DomainError):
    """The push token is not one Google signed for this service."""

    status_code = 403


class PushTokenMissing(Unauthorized):
    pass


class CertificatesUnavailable(DomainError):
    """Google's signing certificates could not be fetched: Pub/Sub retries the push."""

    status_code = 503


class PushMessageInvalid(BadRequest):
    pass


class PubSubMessage(BaseModel):
    data: str = Field("", max_length=10_000, description="base64 of the Gmail notification")
    messageId: str | None = Field(None, max_length=200)  # noqa: N815 - Pub/Sub's name
    publishTime: str | None = Field(None, max_length=100)  # noqa: N815


class PubSubPush(BaseModel):
    """The body Pub/Sub posts (fields it may add later are ignored)."""

    model_config = ConfigDict(extra="ignore")

    message: PubSubMessage
    subscription: str = Field("", max_length=500)


class GmailNotification(BaseModel):
    emailAddress: str = Field(min_length=3, max_length=320)  # noqa: N815 - Gmail's name
    historyId: int | str  # noqa: N815


def _verify(token: str, settings: Settings) -> Mapping[str, Any]:
    request = google.auth.transport.requests.Request()
    return id_token.verify_token(
        token, request, audience=settings.google_pubsub_audience,
        certs_url=google_endpoints(settings).certs, clock_skew_in_seconds=10,
    )


async def verify_push_token(authorization: str | None, settings: Settings) -> Mapping[str, Any]:
    """The claims of a valid push token; raises PushTokenMissing or PushRefused."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PushTokenMissing("a push needs the Pub/Sub OIDC token as a bearer token")
    if not settings.google_pubsub_audience:
        raise PushRefused("Gmail push is not configured (PILOTLIGHT_GOOGLE_PUBSUB_AUDIENCE)")
    try:
        # verify_token fetches the certificates with `requests`: off the event loop.
        claims = await asyncio.to_thread(_verify, token.strip(), settings)
    except google.auth.exceptions.TransportError as exc:
        raise CertificatesUnavailable(f"could not fetch the signing certificates: {exc}") from exc
    except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        raise PushRefused(f"push token refused: {exc}") from exc
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise PushRefused("push token refused: not issued by Google")
    expected = settings.google_pubsub_service_account
    if expected and (claims.get("email") != expected or not claims.get("email_verified")):
        raise PushRefused("push token refused: not the push subscription's service account")
    return claims


def gmail_notification(push: PubSubPush) -> GmailNotification:
    """The Gmail notification a push carries: `{"emailAddress", "historyId"}`."""
    try:
        raw = base64.b64decode(push.message.data, validate=False)
        return GmailNotification.model_validate(json.loads(raw))
    except (binascii.Error, ValueError) as exc:
        raise PushMessageInvalid(
            "the push message's data is not a Gmail notification "
            '(base64 of {"emailAddress": ..., "historyId": ...})'
        ) from exc
