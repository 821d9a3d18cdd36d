from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channel: str
    target: str | None = Field(
        None, description="The webhook's or the push subscription's id the delivery goes to: "
        "which one failed, with several. None for email and in_app.")
    status: Literal["pending", "sent", "failed"]
    attempts: int
    sent_at: datetime | None
    last_error: str | None

    @field_validator("target", mode="before")
    @classmethod
    def _none_when_empty(cls, value: object) -> object:
        return value or None


class NotificationOut(BaseModel):
    id: uuid.UUID
    kind: Literal["digest", "question", "alert", "error"]
    title: str
    body: str
    data: dict[str, Any]
    run_id: uuid.UUID | None
    instruction_id: uuid.UUID | None
    created_at: datetime
    read_at: datetime | None
    deliveries: list[DeliveryOut]


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None = None
