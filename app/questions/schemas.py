from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core.validation import check_no_nul, check_not_blank


class QuestionOut(BaseModel):
    id: uuid.UUID
    run_id: uuid.UUID
    instruction_id: uuid.UUID
    text: str
    choices: list[str]
    status: Literal["open", "answered", "expired"]
    answer: str | None
    answered_at: datetime | None
    expires_at: datetime | None
    created_at: datetime


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str = Field(min_length=1, max_length=2000)

    @field_validator("answer")
    @classmethod
    def _plain(cls, value: str) -> str:
        return check_not_blank(check_no_nul(value))


def to_out(question: Any) -> QuestionOut:
    return QuestionOut(
        id=question.id, run_id=question.run_id, instruction_id=question.instruction_id,
        text=question.text, choices=list(question.choices.get("choices", [])),
        status=question.status, answer=question.answer, answered_at=question.answered_at,
        expires_at=question.expires_at, created_at=question.created_at,
    )
