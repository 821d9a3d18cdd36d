from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core.validation import PartialUpdate, check_timezone


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str
    timezone: str
    daily_cost_cap_usd: float
    created_at: datetime


class UserUpdate(PartialUpdate):
    """What `PATCH /me` changes: the fields given, all or none. None of them takes null,
    and a number or a flag must be one (not "5" or "no")."""

    timezone: str | None = Field(None, max_length=64, examples=["Asia/Tokyo"])
    daily_cost_cap_usd: float | None = Field(
        None, ge=0, le=10_000, allow_inf_nan=False, strict=True,
        description="USD a day; 0 stops paid model turns.",
    )
    move_instructions: bool = Field(
        True, strict=True,
        description="With a new time zone, the cron instructions in the old one run at "
        "the same hours in the new one; those named for another zone stay.",
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)
