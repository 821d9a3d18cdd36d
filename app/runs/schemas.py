from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal[
    "queued", "running", "waiting_for_user", "succeeded", "skipped", "failed", "cancelled"
]


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    instruction_id: uuid.UUID
    reason: Literal["schedule", "watch", "manual", "resume", "preview"]
    status: RunStatus
    scheduled_for: datetime
    window_start: datetime | None
    window_end: datetime | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    model: str | None
    input_tokens: int
    output_tokens: int
    thought_tokens: int
    cached_tokens: int
    cost_usd: float
    result: dict[str, Any] | None
    error: str | None
    trigger_item: dict[str, Any] | None = Field(
        None, description='A watch run: what fired it, {"account_id", "kind", "id"}.'
    )
    created_at: datetime


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int = Field(
        7, ge=1, le=90, strict=True, description="How many days back the preview looks."
    )


class RunStepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    seq: int
    kind: Literal["model", "tool"]
    name: str
    arguments: dict[str, Any] | None
    result_excerpt: str | None
    interaction_id: str | None
    input_tokens: int
    output_tokens: int
    thought_tokens: int
    cached_tokens: int
    duration_ms: int
    error: str | None
    created_at: datetime


class RunDetail(RunOut):
    steps: list[RunStepOut]


class RunPage(BaseModel):
    items: list[RunOut]
    next_cursor: str | None = None
