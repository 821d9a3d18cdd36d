"""Request and response shapes of webhooks. Unknown fields are refused."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, get_args

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core.encoding import unbase64url
from app.core.validation import PartialUpdate, check_no_nul

EventType = Literal["digest.created", "question.asked", "run.failed", "alert.created"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique(value: list[EventType] | None) -> list[EventType] | None:
    return None if value is None else list(dict.fromkeys(value))


class WebhookCreate(_Strict):
    url: str = Field(min_length=1, max_length=2000, description="http:// or https:// endpoint.")
    event_types: list[EventType] = Field(
        default_factory=lambda: list(EVENT_TYPES), min_length=1, max_length=len(EVENT_TYPES),
        description="The events sent to it; all of them when omitted.",
    )
    enabled: bool = Field(True, strict=True)

    _dedupe = field_validator("event_types")(_unique)


class WebhookUpdate(PartialUpdate):
    """The fields to change; a field left out keeps its value. None of them takes null."""

    url: str | None = Field(None, min_length=1, max_length=2000)
    event_types: list[EventType] | None = Field(None, min_length=1, max_length=len(EVENT_TYPES))
    enabled: bool | None = Field(
        None, strict=True,
        description="Turn it on again after a 410 disabled it, or off for a while.",
    )

    _dedupe = field_validator("event_types")(_unique)


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str = Field(
        description="Scheme, host and port, the rest masked (`https://hooks.slack.com/…`): "
        "a webhook URL often carries its secret in its path or query, and is stored "
        "encrypted. Only the answer to POST /webhooks gives it whole.")
    event_types: list[str]
    enabled: bool
    status_detail: str | None = Field(description="Why it was disabled, if it was.")
    previous_secret_until: datetime | None = Field(
        description="After a new secret (POST /webhooks/{id}/secret): until when each "
        "request is signed with the one before it too; null when it is not.")
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    """A webhook with its signing secret. Created (POST /webhooks), `url` is whole, as
    given; with a new secret (POST /webhooks/{id}/secret), masked as ever."""

    secret: str = Field(
        description="The signing secret (whsec_...), shown only this once: verify the "
        "webhook-signature header of each request with it, per Standard Webhooks."
    )


class PushKeys(_Strict):
    p256dh: str = Field(min_length=80, max_length=200, pattern=r"^[A-Za-z0-9_-]+=*$",
                        description="The browser's P-256 public key, base64url.")
    auth: str = Field(min_length=16, max_length=100, pattern=r"^[A-Za-z0-9_-]+=*$",
                      description="The browser's auth secret, base64url.")

    @field_validator("p256dh")
    @classmethod
    def _a_p256_point(cls, value: str) -> str:
        """Every push to a key that is not one would fail (RFC 8291: an uncompressed
        point on P-256, 65 bytes)."""
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unbase64url(value))
        except ValueError:
            raise ValueError("not a P-256 public key (65 bytes, an uncompressed point on "
                             "the curve, base64url)") from None
        return value

    @field_validator("auth")
    @classmethod
    def _sixteen_bytes(cls, value: str) -> str:
        try:
            secret = unbase64url(value)
        except ValueError:
            secret = b""
        if len(secret) != 16:
            raise ValueError("the auth secret must be 16 bytes, base64url (RFC 8291)")
        return value


class PushSubscriptionCreate(BaseModel):
    """The browser's `PushSubscription.toJSON()`; `expirationTime` and others are ignored."""

    endpoint: str = Field(min_length=9, max_length=2000, pattern=r"^https?://\S+$",
                          description="The push service URL (https; http only where "
                          "PILOTLIGHT_WEBHOOK_ALLOW_PRIVATE is set).")
    keys: PushKeys


class PushSubscriptionDelete(_Strict):
    endpoint: str = Field(min_length=1, max_length=2000)

    _plain = field_validator("endpoint")(check_no_nul)


class PushSubscriptionOut(BaseModel):
    id: uuid.UUID
    endpoint: str
    created_at: datetime
    updated_at: datetime


class VapidPublicKey(BaseModel):
    public_key: str = Field(description="The applicationServerKey for pushManager.subscribe.")
