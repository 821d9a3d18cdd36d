from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.validation import check_no_nul, check_not_blank


class QuestionOut(BaseModel):
    id: uuid.UUID
    run_id: uuid.UUID
    instruction_id: uuid.UUID
    text: str
    choices: list[str]
    status: Literal["open", "answered", "expired", "cancelled"]
    answer: str | None
    answered_at: datetime | None
    expires_at: datetime | None
    created_at: datetime


class AnswerIn(BaseModel):
    """An answer in words, or the index of one of the question's choices."""

    model_config = ConfigDict(extra="forbid")

    answer: str | None = Field(
        None, min_length=1, max_length=2000,
        description="The answer as text: one of the choices or an answer of your own.",
    )
    choice: int | None = Field(
        None, ge=0, le=1000, strict=True,
        description="Instead of `answer`: the index of one of the question's choices (0 is "
        "the first), answered with that choice's whole text (a push notification's action "
        "button sends this, as its title may be cut short). An index the question has no "
        "choice for is refused with 422 `NoSuchChoice`.",
    )

    @field_validator("answer")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return None if value is None else check_not_blank(check_no_nul(value))

    @model_validator(mode="after")
    def _one_answer(self) -> AnswerIn:
        if (self.answer is None) == (self.choice is None):
            raise ValueError("give either `answer` (the text) or `choice` (a choice's index)")
        return self


def to_out(question: Any) -> QuestionOut:
    return QuestionOut(
        id=question.id, run_id=question.run_id, instruction_id=question.instruction_id,
        text=question.text, choices=list(question.choices.get("choices", [])),
        status=question.status, answer=question.answer, answered_at=question.answered_at,
        expires_at=question.expires_at, created_at=question.created_at,
    )
