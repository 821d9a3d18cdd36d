"""Request and response shapes of webhooks. Unknown fields are refused."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

EventType = Literal["digest.created", "question.asked", "run.failed"]
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
    enabled: bool = True

    _dedupe = field_validator("event_types")(_unique)


class WebhookUpdate(_Strict):
    url: str | None = Field(None, min_length=1, max_length=2000)
    event_types: list[EventType] | None = Field(None, min_length=1, max_length=len(EVENT_TYPES))
    enabled: bool | None = Field(
        None, description="Turn it on again after a 410 disabled it, or off for a while."
    )

    _dedupe = field_validator("event_types")(_unique)


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    enabled: bool
    status_detail: str | None = Field(description="Why it was disabled, if it was.")
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The signing secret (whsec_...), shown only this once: verify the "
        "webhook-signature header of each request with it, per Standard Webhooks."
    )
