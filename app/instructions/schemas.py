"""Request and response shapes of instructions. Unknown fields are refused."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.agent.llm import ThinkingLevel
from app.core.validation import PartialUpdate, check_no_nul, check_not_blank, check_timezone
from app.instructions.triggers import normalise_cron, validate_cron

SourceKind = Literal["gmail", "drive"]
Channel = Literal["in_app", "email", "push", "webhook"]
MIN_INTERVAL_SECONDS = 60
MAX_TEXT = 4000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CronTriggerIn(_Strict):
    type: Literal["cron"]
    cron: str = Field(max_length=120, examples=["0 8 * * 1-5"])
    timezone: str | None = Field(
        None, max_length=64, description="IANA name. When omitted: on create the user's "
        "time zone, on update the zone the instruction's cron was in (else the user's)."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @field_validator("cron")
    @classmethod
    def _normal(cls, value: str) -> str:
        # Stored as read: " 0 9  * * * " is "0 9 * * *", "5,5 8-10/3 * * *" "5 8 * * *".
        return normalise_cron(value)

    @model_validator(mode="after")
    def _cron(self) -> CronTriggerIn:
        try:
            validate_cron(self.cron, self.timezone or "UTC")
        except ValueError as exc:
            raise ValueError(f"invalid cron expression '{self.cron}': {exc}") from exc
        return self


class IntervalTriggerIn(_Strict):
    type: Literal["interval"]
    seconds: int = Field(ge=MIN_INTERVAL_SECONDS, le=366 * 86400, strict=True)


class WatchTriggerIn(_Strict):
    """Run when a new message matches a Gmail query, or a file in a Drive folder is new or
    changes: exactly one of the two. Each matching item fires one run."""

    type: Literal["watch"]
    gmail_query: str | None = Field(
        None, min_length=1, max_length=500,
        description="Gmail search syntax.", examples=["from:billing@example.com has:attachment"],
    )
    drive_folder_id: str | None = Field(
        None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$",
        description="The id of a Drive folder (from its URL).",
    )

    @field_validator("gmail_query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        return None if value is None else check_no_nul(check_not_blank(value))

    @model_validator(mode="after")
    def _exactly_one(self) -> WatchTriggerIn:
        if (self.gmail_query is None) == (self.drive_folder_id is None):
            raise ValueError(
                "a watch trigger needs exactly one of gmail_query (a Gmail search) and "
                "drive_folder_id (a Drive folder)"
            )
        return self


Trigger = Annotated[
    CronTriggerIn | IntervalTriggerIn | WatchTriggerIn, Field(discriminator="type")
]


class InstructionCreate(_Strict):
    title: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    trigger: Trigger
    sources: list[SourceKind] = Field(default=["gmail", "drive"], min_length=1, max_length=2)
    channels: list[Channel] = Field(default=["in_app"], min_length=1, max_length=4)
    thinking_level: ThinkingLevel = "medium"
    max_tool_calls: int | None = Field(
        None, ge=0, le=100, strict=True,
        description="Action budget; the server default when omitted.",
    )
    only_new: bool = Field(
        True, strict=True,
        description="Report only what is new; with nothing new the run is skipped.",
    )

    @field_validator("title", "text")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return None if value is None else check_not_blank(check_no_nul(value))


class InstructionUpdate(PartialUpdate):
    """The fields to change; a field left out keeps its value. None of them takes null."""

    title: str | None = Field(None, min_length=1, max_length=200)
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    trigger: Trigger | None = None
    sources: list[SourceKind] | None = Field(None, min_length=1, max_length=2)
    channels: list[Channel] | None = Field(None, min_length=1, max_length=4)
    thinking_level: ThinkingLevel | None = None
    max_tool_calls: int | None = Field(None, ge=0, le=100, strict=True)
    only_new: bool | None = Field(None, strict=True)

    @field_validator("title", "text")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return None if value is None else check_not_blank(check_no_nul(value))


class InstructionOut(BaseModel):
    id: uuid.UUID
    title: str
    text: str
    trigger: dict[str, Any]
    schedule: str = Field(description="The trigger in words.")
    sources: list[str]
    channels: list[str]
    thinking_level: str
    max_tool_calls: int
    only_new: bool
    status: Literal["active", "paused", "error"]
    status_detail: str | None
    consecutive_failures: int
    next_run_at: datetime | None
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime


class InstructionPage(BaseModel):
    items: list[InstructionOut]
    next_cursor: str | None = None


DRAFT_TEXT_MAX = 1000


class DraftIn(_Strict):
    text: str = Field(
        min_length=1, max_length=DRAFT_TEXT_MAX,
        description="One sentence: what to do and when.",
        examples=["every weekday at 8 tell me what my team sent"],
    )

    @field_validator("text")
    @classmethod
    def _sentence(cls, value: str) -> str:
        return check_not_blank(check_no_nul(value))


class DraftOut(BaseModel):
    instruction: InstructionCreate = Field(
        description="The proposed body: POST it to /instructions as is to create it."
    )
    schedule: str = Field(description="The trigger in words.")
    explanation: str = Field(description="One line: what was understood.")
    drafted_by: str = Field(
        description='Who drafted it: "pilotlight-offline" (the parser) or the model\'s name.'
    )
