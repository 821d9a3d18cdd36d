from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channel: str
    status: Literal["pending", "sent", "failed"]
    attempts: int
    sent_at: datetime | None
    last_error: str | None


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
