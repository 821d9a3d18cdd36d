"""The one LLM port. Shaped like Gemini's Interactions API so both
implementations (the offline planner and Gemini) drive the same agent loop.

A conversation is a chain of turns: the first sends the user's text, each
later one sends one function result per function call of the previous turn
and names that turn in `previous_interaction_id`. The final turn answers with
text that matches `response_schema`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, field_serializer, field_validator

ThinkingLevel = Literal["minimal", "low", "medium", "high"]
THINKING_LEVELS: tuple[str, ...] = ("minimal", "low", "medium", "high")


class FunctionDeclaration(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object


class FunctionCall(BaseModel):
    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class MediaPart(BaseModel):
    """An image or a document (PDF) handed to the model with a function result.

    `data` is the raw bytes; a base64 string is accepted and decoded.
    """

    mime_type: str
    data: bytes

    @field_validator("data", mode="before")
    @classmethod
    def _decode(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("data must be bytes or base64 text") from exc
        return value

    @field_serializer("data", when_used="json")
    def _encode(self, value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


class FunctionResult(BaseModel):
    """The answer to exactly one FunctionCall (same call_id and name).

    Guidance for the model goes at the end of `result`, after two newlines,
    never as a separate part. `parts` carries images or documents the tool
    read; a model that cannot look at them (the offline planner) ignores them.
    """

    call_id: str
    name: str
    result: str
    parts: list[MediaPart] = Field(default_factory=list)


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    thought_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            thought_tokens=self.thought_tokens + other.thought_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )


class TurnRequest(BaseModel):
    model: str
    system_instruction: str
    # The user's text on the first turn; the function results on later turns.
    input: str | list[FunctionResult]
    tools: list[FunctionDeclaration] = Field(default_factory=list)
    previous_interaction_id: str | None = None
    thinking_level: ThinkingLevel = "medium"
    # JSON schema the final text must match (structured output).
    response_schema: dict[str, Any] | None = None


class TurnResponse(BaseModel):
    interaction_id: str
    function_calls: list[FunctionCall] = Field(default_factory=list)
    text: str | None = None
    usage: Usage = Field(default_factory=Usage)


class LLMError(Exception):
    """The model could not answer this turn."""


class KeyRejected(LLMError):
    """The model service refused the API key: nothing will work until it is fixed."""


class IncompleteAnswer(LLMError):
    """The model stopped before its answer was whole (Gemini: an interaction of status
    `incomplete`, at its output token limit, or `budget_exceeded`): not an answer to use,
    but billed all the same, so it carries what the turn spent."""

    def __init__(
        self, message: str, *, usage: Usage, interaction_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.usage = usage
        self.interaction_id = interaction_id


class QuotaExhausted(LLMError):
    """The model service's quota for the day is used up: retrying within minutes is
    useless. `resets_at` is when it resets, at the latest: the operator may raise it
    sooner."""

    def __init__(self, message: str, *, resets_at: datetime) -> None:
        super().__init__(message)
        self.resets_at = resets_at


class ConversationGone(LLMError):
    """The turn chains to an interaction the model service no longer has: it keeps stored
    conversations for a while only (Gemini: 1 day on the free tier, 55 days paid)."""


class LLM(Protocol):
    """What the agent loop needs from a model."""

    name: str

    async def turn(self, request: TurnRequest) -> TurnResponse: ...
