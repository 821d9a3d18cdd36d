"""Gemini behind the `LLM` port, through the official `google-genai` SDK's Interactions API.

One port turn is one `client.aio.interactions.create` call. The request body:

    model                     the model name (`gemini-3.5-flash` by default)
    system_instruction        the port's system instruction, on every turn
    input                     first turn: the user's text (a string); later turns: one
                              {"type": "function_result", "call_id", "name", "result"}
                              step per function call of the previous turn; a result
                              with media parts sends `result` as a list of content:
                              [{"type": "text", "text"}, then per part
                              {"type": "document" | "image", "mime_type", "data": <base64>}]
                              (PDFs are documents, images are images)
    previous_interaction_id   the previous turn's interaction id (server-side history)
    tools                     [{"type": "function", "name", "description", "parameters"}]
    generation_config         {"thinking_level": "minimal" | "low" | "medium" | "high",
                              "max_output_tokens": <PILOTLIGHT_GEMINI_MAX_OUTPUT_TOKENS>},
                              the next level up when the model does not take the
                              instruction's (`MODEL_LEVELS`: 3.7 Flash and the Pro
                              models refuse minimal); never temperature, top_p, top_k
                              or thinking_budget. The output limit counts thoughts and
                              answer together (googleapis/python-genai#2062): without
                              it a turn may produce up to the model's own limit
                              (65,536 on the Gemini 3 models), a runaway answer billed
                              in full
    response_format           {"type": "text", "mime_type": "application/json",
                              "schema": <the digest's JSON schema>}

The answer is an Interaction: `id`, `status` (`requires_action` when it calls
functions, `completed`, `failed`, `incomplete` when it stopped at the output token
limit, ...), `steps` (`thought`, `function_call` with
`id`, `name`, `arguments`, `model_output` with text content) and `usage`
(`total_input_tokens`, `total_output_tokens`, `total_thought_tokens`,
`total_cached_tokens`).

A 429 whose google.rpc.QuotaFailure names a quota for the day (its quotaId says PerDay)
raises `QuotaExhausted` at once, with when the quota resets (midnight Pacific time):
retrying before then only burns the retries. Other 429s, 500, 502, 503, 504, timeouts
and connection errors are retried with
exponential backoff that honours the server's delay (a 429's google.rpc.RetryInfo
`retryDelay`, else `Retry-After`); the SDK's own retries are off so
that there is one retry policy, this one. A refused API key (401, 403, or a 400
whose ErrorInfo reason is API_KEY_INVALID, as the service answers a key that is not
valid) raises `KeyRejected`: the operator must fix it, no retry will. A 404 for a turn that
chains to an earlier interaction the service no longer has (its GET is a 404 too) raises
`ConversationGone`: stored interactions are deleted
after their retention (1 day on the free tier, 55 days paid), which a question waiting for
its answer can outlast. An interaction that ended without a whole answer (`incomplete`, at
the output token limit; `budget_exceeded`; any status but `requires_action` and
`completed`) raises `IncompleteAnswer` with what it was billed: the runner asks once more.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

from google import genai
from google.genai import _interactions as api_errors
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from app.agent.llm import (
    ConversationGone,
    FunctionCall,
    FunctionResult,
    IncompleteAnswer,
    KeyRejected,
    LLMError,
    QuotaExhausted,
    TurnRequest,
    TurnResponse,
    Usage,
)
from app.core.config import DEFAULT_GEMINI_MAX_OUTPUT_TOKENS

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemini-3.5-flash"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
AUTH_STATUS = frozenset({401, 403})
# A key that is not valid is a 400 INVALID_ARGUMENT, told apart from a bad request by
# the reason of its google.rpc.ErrorInfo detail.
KEY_REASONS = frozenset({"API_KEY_INVALID"})
FAILED_STATUSES = frozenset({"failed", "cancelled"})
# The statuses of an interaction that holds a whole answer: its function calls, or its text.
ANSWER_STATUSES = frozenset({"requires_action", "completed"})
# Why an interaction that ended with another status holds no whole answer, from the
# Interactions API's Status enum: INCOMPLETE "completed, but contains incomplete results
# (e.g. hitting maxTokens)", BUDGET_EXCEEDED "halted because the token budget was exceeded".
# Any other (in_progress, queued, requires_continuation, one added later) is not one either.
CUT_SHORT = {
    "incomplete": "it reached its output token limit",
    "budget_exceeded": "its token budget was exceeded",
}
# The thinking levels of the models that do not take all four (longest name prefix wins),
# from Google's thinking-level table: 3.7 Flash and the 3.x Pro models refuse minimal
# with a 400 "THINKING_LEVEL_MINIMAL is unsupported" (can1357/oh-my-pi#10543,
# bolna-ai/bolna#956), 3 Pro medium too. An instruction's level one of them does not take
# is sent as the next one up, rather than failing each of its runs.
LEVEL_ORDER = ("minimal", "low", "medium", "high")
MODEL_LEVELS: dict[str, tuple[str, ...]] = {
    "gemini-3-pro": ("low", "high"),
    "gemini-3.1-pro": ("low", "medium", "high"),
    "gemini-3.7-flash": ("low", "medium", "high"),
}

# The Gemini API's daily quotas (requests per day, RPD; tokens per day) reset at midnight
# Pacific time (ai.google.dev/gemini-api/docs/rate-limits).
QUOTA_DAY_ZONE = ZoneInfo("America/Los_Angeles")

Sleep = Callable[[float], Awaitable[None]]


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK model or of a plain dict (unknown step types may stay dicts)."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def api_message(exc: BaseException) -> str:
    """The API's own message from an error response ({"error": {"message": ...}}), if any."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if body.get("message"):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()
    return str(exc)


def _details(exc: BaseException) -> list[Mapping[str, Any]]:
    """The details of a Google error body ({"error": {"details": [...]}}), if any."""
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, Mapping)]


def _reasons(exc: BaseException) -> set[str]:
    """The reasons of the ErrorInfo details of a Google error body, if any."""
    return {str(d["reason"]) for d in _details(exc) if d.get("reason")}


def daily_quota(exc: BaseException) -> str | None:
    """The quota a 429 says ran out, when it is one for the day: the quotaId of a
    google.rpc.QuotaFailure violation such as `GenerateRequestsPerDayPerProjectPerModel`
    (`-FreeTier`), whose metric ends `per_day`. A 429 may list the minute's quotas with
    it; a day's quota used up is what decides. None for a per-minute 429."""
    for detail in _details(exc):
        if not str(detail.get("@type", "")).endswith("/google.rpc.QuotaFailure"):
            continue
        for violation in detail.get("violations") or []:
            if not isinstance(violation, Mapping):
                continue
            quota = str(violation.get("quotaId") or "")
            metric = str(violation.get("quotaMetric") or "")
            if "perday" in quota.lower() or metric.lower().endswith("per_day"):
                return quota or metric
    return None


def quota_resets_at(now: datetime) -> datetime:
    """When the Gemini API's daily quotas next reset: the next midnight Pacific time."""
    day = now.astimezone(QUOTA_DAY_ZONE).date() + timedelta(days=1)
    return datetime.combine(day, time(), QUOTA_DAY_ZONE)


def _retry_info_seconds(exc: BaseException) -> float | None:
    """The delay of the google.rpc.RetryInfo detail of a Google error body ("53s"), if any.

    This is how the Gemini API says how long a 429 RESOURCE_EXHAUSTED lasts: in the body,
    not in a Retry-After header (googleapis/python-genai#1875)."""
    for detail in _details(exc):
        if not str(detail.get("@type", "")).endswith("/google.rpc.RetryInfo"):
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(float(delay[:-1]), 0.0)
            except ValueError:
                return None
    return None


def retry_after_seconds(exc: BaseException) -> float | None:
    """How long the server asked to wait: the RetryInfo of its error body, else its
    Retry-After (seconds or an HTTP date) or retry-after-ms header, if it sent one."""
    if (delay := _retry_info_seconds(exc)) is not None:
        return delay
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def function_result_step(result: FunctionResult) -> dict[str, Any]:
    """One `function_result` input step: plain text, or text then its media parts."""
    content: str | list[dict[str, Any]] = result.result
    if result.parts:
        content = [{"type": "text", "text": result.result}]
        for part in result.parts:
            kind = "document" if part.mime_type == "application/pdf" else "image"
            content.append({"type": kind, "mime_type": part.mime_type, "data": part.b64()})
    return {
        "type": "function_result", "call_id": result.call_id, "name": result.name,
        "result": content,
    }


def thinking_level_for(model: str, level: str) -> str:
    """`level`, or the next level up that `model` takes (`MODEL_LEVELS`)."""
    names = [name for name in MODEL_LEVELS if model.startswith(name)]
    if not names or level not in LEVEL_ORDER:
        return level
    takes = MODEL_LEVELS[max(names, key=len)]
    return next((up for up in LEVEL_ORDER[LEVEL_ORDER.index(level):] if up in takes), level)


def build_body(request: TurnRequest, max_output_tokens: int | None = None) -> dict[str, Any]:
    """The `interactions.create` keyword arguments for one port turn; `max_output_tokens`
    bounds what the turn may produce (None: the model's own limit)."""
    level = thinking_level_for(request.model, request.thinking_level)
    config: dict[str, Any] = {"thinking_level": level}
    if max_output_tokens is not None:
        config["max_output_tokens"] = max_output_tokens
    body: dict[str, Any] = {
        "model": request.model,
        "system_instruction": request.system_instruction,
        "generation_config": config,
    }
    if isinstance(request.input, str):
        body["input"] = request.input
    else:  # one result per call, each with its call's id and name; guidance is in the text
        body["input"] = [function_result_step(r) for r in request.input]
    if request.previous_interaction_id:
        body["previous_interaction_id"] = request.previous_interaction_id
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            }
            for tool in request.tools
        ]
    if request.response_schema is not None:
        body["response_format"] = {
            "type": "text",
            "mime_type": "application/json",
            "schema": request.response_schema,
        }
    return body


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _usage(interaction: Any) -> Usage:
    usage = _get(interaction, "usage")
    return Usage(
        input_tokens=_int(_get(usage, "total_input_tokens")),
        output_tokens=_int(_get(usage, "total_output_tokens")),
        thought_tokens=_int(_get(usage, "total_thought_tokens")),
        cached_tokens=_int(_get(usage, "total_cached_tokens")),
    )


def parse_interaction(interaction: Any) -> TurnResponse:
    """The port's view of an Interaction: its id, the function calls or the text, the usage.

    An interaction that ended without a whole answer (`incomplete`: a digest cut off mid
    JSON) raises `IncompleteAnswer` with what it was billed, never a text to use."""
    interaction_id = _get(interaction, "id")
    status = _get(interaction, "status")
    if status in FAILED_STATUSES:
        errors = _get(interaction, "errors") or []
        detail = "; ".join(str(_get(e, "message") or e) for e in errors) or "no detail given"
        raise LLMError(f"Gemini interaction {interaction_id} {status}: {detail}")
    if status not in ANSWER_STATUSES:
        why = CUT_SHORT.get(str(status), "it holds no whole answer")
        raise IncompleteAnswer(
            f"Gemini interaction {interaction_id} ended {status}: {why}",
            usage=_usage(interaction),
            interaction_id=str(interaction_id) if interaction_id else None,
        )
    if not interaction_id:
        raise LLMError("Gemini answered without an interaction id")
    calls: list[FunctionCall] = []
    texts: list[str] = []
    for step in _get(interaction, "steps") or []:
        kind = _get(step, "type")
        if kind in ("user_input", "function_result"):  # an echo of the input: start after it
            calls, texts = [], []
        elif kind == "function_call":
            arguments = _get(step, "arguments")
            calls.append(
                FunctionCall(
                    call_id=str(_get(step, "id") or ""),
                    name=str(_get(step, "name") or ""),
                    arguments=dict(arguments) if isinstance(arguments, Mapping) else {},
                )
            )
        elif kind == "model_output":
            if (error := _get(step, "error")) is not None and not _get(step, "content"):
                raise LLMError(f"Gemini model output failed: {_get(error, 'message') or error}")
            for content in _get(step, "content") or []:
                if _get(content, "type") == "text" and _get(content, "text"):
                    texts.append(str(_get(content, "text")))
    if any(not c.call_id or not c.name for c in calls):
        raise LLMError("Gemini returned a function call without an id or a name")
    return TurnResponse(
        interaction_id=str(interaction_id),
        function_calls=calls,
        text=None if calls else "".join(texts),
        usage=_usage(interaction),
    )


class GeminiModel:
    """Implements `LLM` with Gemini's Interactions API."""

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str = "",
        max_retries: int = 4,
        timeout_seconds: float = 120,
        retry_base_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
        max_output_tokens: int | None = DEFAULT_GEMINI_MAX_OUTPUT_TOKENS,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("a Gemini API key is required")
        self.name = model
        self.max_output_tokens = max_output_tokens
        self.max_retries = max_retries
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self._sleep = sleep
        http_options = genai_types.HttpOptions(
            base_url=base_url or None,
            timeout=max(int(timeout_seconds * 1000), 1),
            # One retry policy, ours: the SDK sends each request once.
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        )
        self._client = genai.Client(api_key=api_key, http_options=http_options)

    async def aclose(self) -> None:
        await self._client.aio.aclose()

    async def _gone(self, interaction_id: str) -> bool:
        """Whether the service no longer has `interaction_id`: a chained turn's 404 may be
        for something else (the model), so ask for the interaction itself."""
        try:
            await self._client.aio.interactions.get(interaction_id)
        except api_errors.APIStatusError as exc:
            return exc.status_code == 404
        except api_errors.APIError:
            return False
        return False

    async def turn(self, request: TurnRequest) -> TurnResponse:
        body = build_body(request, self.max_output_tokens)
        attempt = 0
        while True:
            try:
                # automatic_continuation merges long decodes into one Interaction.
                interaction = await self._client.aio.interactions.create(**body)
            except api_errors.APIStatusError as exc:
                status = exc.status_code
                message = api_message(exc)
                if status in AUTH_STATUS or (status == 400 and KEY_REASONS & _reasons(exc)):
                    raise KeyRejected(f"Gemini API key rejected: {message}") from exc
                previous = request.previous_interaction_id
                if status == 404 and previous and await self._gone(previous):
                    raise ConversationGone(
                        f"Gemini no longer has interaction {previous}: {message}"
                    ) from exc
                if status not in RETRYABLE_STATUS:
                    raise LLMError(f"Gemini API error {status}: {message}") from exc
                if status == 429 and (quota := daily_quota(exc)) is not None:
                    # Its RetryInfo delay is short, but no retry works before the reset.
                    raise QuotaExhausted(
                        f"Gemini's daily quota {quota} is used up: {message}",
                        resets_at=quota_resets_at(datetime.now(UTC)),
                    ) from exc
                failure = f"{status} {message}"
                delay = retry_after_seconds(exc)
            except api_errors.APIConnectionError as exc:  # timeouts included
                failure, delay = f"{type(exc).__name__}: {exc}", None
            except genai_errors.ContinuationInterruptedError as exc:
                raise LLMError(f"Gemini answer interrupted: {exc}") from exc
            except api_errors.APIError as exc:  # e.g. an answer the SDK could not read
                raise LLMError(f"Gemini API error: {api_message(exc)}") from exc
            else:
                return parse_interaction(interaction)
            if attempt >= self.max_retries:
                raise LLMError(
                    f"Gemini API still failing after {attempt + 1} attempts: {failure}"
                )
            if delay is None:  # exponential backoff with jitter
                delay = self.retry_base_seconds * 2**attempt * random.uniform(0.5, 1.0)
            delay = min(delay, self.retry_max_seconds)
            attempt += 1
            log.warning(
                "Gemini turn failed (%s); retry %d of %d in %.1f s",
                failure, attempt, self.max_retries, delay,
            )
            await self._sleep(delay)
