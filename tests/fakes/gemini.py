"""A fake of Gemini's Interactions API over real HTTP on 127.0.0.1, as strict as the service.

The real `google-genai` SDK talks to it (base URL `fake.url`): `POST /{version}/interactions`
and `GET /{version}/interactions/{id}`. It refuses what the service refuses, with the API's
error shape {"error": {"code", "message"}}; the API key, checked in front of the API, is
refused in Google's own shape ({"error": {"code", "message", "status", "details"}}): no
`x-goog-api-key` 403 PERMISSION_DENIED, a wrong one 400 INVALID_ARGUMENT with reason
API_KEY_INVALID; temperature / top_p / top_k / thinking_budget, a thinking_level other
than minimal / low / medium / high or one the model does not take (`REFUSED_LEVELS`),
malformed tools, response_format, input or model 400;
an unknown `previous_interaction_id` 404 (also one the service no longer keeps: it
deletes stored interactions after 1 day on the free tier, 55 days paid; `forget` does
it); after a turn with function calls, anything but one `function_result` per call with
that call's `call_id` and `name` 400. A 429 (on
demand, `fail`) is the quota's, in Google's shape too: 429 RESOURCE_EXHAUSTED, how long to
wait in a google.rpc.RetryInfo detail, no Retry-After header, and (`quota_id=`) which quota
ran out in a google.rpc.QuotaFailure detail.

A function result is a string, an object, or a list of content parts: `text` ({"text"}),
`image` and `document` ({"mime_type", "data"}: standard base64, inline only, no `uri`).
Images must be PNG, JPEG, GIF, WebP, HEIC or HEIF and documents PDF, the bytes must look
like that type (magic numbers), and one part holds at most `MAX_INLINE_BYTES` decoded; any
other part type, mime type or bad data is a 400. Each image or document part is billed a
fixed `MEDIA_TOKENS` input tokens, whatever its size (the service bills by resolution and
pages; the fake keeps it simple and deterministic).

An answer past the output limit (the request's `generation_config.max_output_tokens`, at
most the model's, `MAX_OUTPUT_TOKENS`; thoughts count against it first) is cut where the
limit fell, a function call not whole is dropped, and the interaction ends `incomplete`,
billed for what was produced.

Replies come from a per-test script (`Calls`, `Text`) or, when it is empty, the offline
planner. Tokens are billed like the service bills them, deterministically (len // 4):
every turn pays input for the system instruction, the tools and the response schema
(structured output's schema counts as input); a chained turn pays input for the whole
conversation so far; thoughts are reported apart, as output. Implicit caching is on, as
on the service for Gemini 2.5 and later, in stateful and stateless mode: the longest
prefix of a turn's context that an earlier request processed (its system instruction,
tools and schema unchanged, then the same inputs and outputs) within `CACHE_TTL_SECONDS`
is reported in `total_cached_tokens` when it is at least the model's minimum
(`CACHE_MIN_TOKENS`, 4,096 for the Gemini 3 family; `cache_min_tokens=` overrides it for a
test). It stays part of `total_input_tokens`. A model's output becomes part of a cached
prefix only once a later turn has processed it (the fake never reports more cache hits
than the service could).
Control it from Python (`fail`, `slow`, `script`, `requests`, `reset`) or, standalone
(`python -m tests.fakes.gemini --port PORT [--api-key KEY]`), over `/_fake/{action}`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.agent.llm import (
    LLM,
    THINKING_LEVELS,
    FunctionDeclaration,
    FunctionResult,
    LLMError,
    MediaPart,
    TurnRequest,
)
from app.agent.offline import OfflineModel
from tests.fakes._server import ThreadedServer

DEFAULT_API_KEY = "fake-gemini-key"
FORBIDDEN_SAMPLING = ("temperature", "top_p", "top_k", "thinking_budget")
# Thinking levels a model refuses with a 400 (longest name prefix wins), as Google's
# thinking-level table has it: Gemini 3 Pro takes low and high only, 3.1 Pro and 3.7 Flash
# no minimal (the 400 "THINKING_LEVEL_MINIMAL is unsupported": can1357/oh-my-pi#10543,
# bolna-ai/bolna#956, which found low the one level the whole 3.x family takes); 3.5
# Flash takes all four.
REFUSED_LEVELS: dict[str, tuple[str, ...]] = {
    "gemini-3-pro": ("minimal", "medium"),
    "gemini-3.1-pro": ("minimal",),
    "gemini-3.7-flash": ("minimal",),
}
# The most output tokens (thoughts included) one turn may produce, when the request sets
# no lower `generation_config.max_output_tokens`: 65,536 for the Gemini 2.5 and 3 Flash
# models (`max_output_tokens=` overrides it for a test).
MAX_OUTPUT_TOKENS = 65536
# Thought tokens a reply spends by default, per thinking level.
THOUGHT_TOKENS = {"minimal": 0, "low": 8, "medium": 32, "high": 128}
# Function result content parts: what the fake accepts, and how it bills media.
IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/heic", "image/heif"}
)
DOCUMENT_TYPES = frozenset({"application/pdf"})
MAX_INLINE_BYTES = 20 * 1024 * 1024
MEDIA_TOKENS = 258  # billed per image or document part
# Implicit caching: the minimum cached prefix per model family (longest name prefix wins),
# and how long a processed prefix stays cached (the service says "a short amount of time").
CACHE_MIN_TOKENS = {"gemini-2.5": 2048, "gemini-": 4096}
DEFAULT_CACHE_MIN_TOKENS = 4096
CACHE_TTL_SECONDS = 300.0
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


def tokens(text: str) -> int:
    """The fake's deterministic token count."""
    return len(text) // 4


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Calls:
    """A scripted reply: call these functions, [(name, arguments), ...]."""

    calls: list[tuple[str, dict[str, Any]]]
    thought_tokens: int | None = None
    ids: list[str] | None = None  # the call ids to send; fresh ones when None
    # Called as the fake takes this reply from the script, before it answers: what changes
    # in the world while the model thinks (an administrator turns the user's Gmail off).
    meanwhile: Callable[[], None] | None = None


@dataclass
class Text:
    """A scripted reply: this final text (not checked against the response schema)."""

    text: str
    thought_tokens: int | None = None


Reply = Calls | Text


@dataclass
class Recorded:
    """One request the fake received, and what it answered."""

    at: float  # time.monotonic() on arrival
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    response: Any = None


@dataclass
class _Stored:
    interaction: dict[str, Any]
    history: int  # tokens of the conversation up to and including this turn
    # The conversation as segments (digest, tokens): each input and output, in order.
    segments: tuple[tuple[str, int], ...] = ()
    pending: dict[str, str] = field(default_factory=dict)  # call_id -> name
    planner_id: str | None = None  # the planner's own id for this turn


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.body = body  # the whole error body, when it is not the API's own shape


def _key_error(status: int, google_status: str, message: str, reason: str | None) -> ApiError:
    """The API key refused in front of the API, in Google's shape. As the real service
    answers (public reports of generativelanguage.googleapis.com errors, and the Gemini
    API's error table): no key is a 403 PERMISSION_DENIED "Method doesn't allow
    unregistered callers ..."; a key that is not valid a 400 INVALID_ARGUMENT "API key
    not valid. Please pass a valid API key." with an ErrorInfo of reason API_KEY_INVALID."""
    error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if reason is not None:
        error["details"] = [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }]
    return ApiError(status, google_status, message, {"error": error})


def _quota_error(
    retry_after: float | None, message: str | None, quota_id: str | None = None,
    model: str = "gemini-3.5-flash",
) -> ApiError:
    """A 429 as the service answers one, in Google's shape: how long to wait is in a
    google.rpc.RetryInfo detail ("retryDelay": "53s"), never in a Retry-After header
    (googleapis/python-genai#1875, whose SDK retries had to learn to read it). With
    `quota_id`, which quota ran out is in a google.rpc.QuotaFailure detail, as the service
    names it (`GenerateRequestsPerDayPerProjectPerModel`: google-gemini/gemini-cli#8437,
    langgenius/dify#19838), and the RetryInfo delay is short even for a day's quota."""
    text = message or (
        "You exceeded your current quota, please check your plan and billing details."
    )
    error: dict[str, Any] = {"code": 429, "message": text, "status": "RESOURCE_EXHAUSTED"}
    details: list[dict[str, Any]] = []
    if quota_id is not None:
        per = "day" if "PerDay" in quota_id else "minute"
        details.append({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_requests_per_model"
                + ("_per_day" if per == "day" else ""),
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": model},
            }],
        })
    if retry_after is not None:
        error["message"] = f"{text} Please retry in {retry_after:g}s."
        details.append({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": f"{retry_after:g}s",
        })
    if details:
        error["details"] = details
    return ApiError(429, "RESOURCE_EXHAUSTED", error["message"], {"error": error})


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _reply_from_json(data: dict[str, Any]) -> Reply:
    if "text" in data:
        return Text(str(data["text"]), data.get("thought_tokens"))
    calls = [(str(c["name"]), dict(c.get("arguments") or {})) for c in data["calls"]]
    return Calls(calls, data.get("thought_tokens"))


class FakeGemini(ThreadedServer):
    """The fake service; `with FakeGemini() as fake:` runs it in a background thread."""

    name = "fake-gemini"

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        replies: list[Reply] | None = None,
        planner: LLM | None = None,
        cache_min_tokens: int | None = None,
        max_output_tokens: int = MAX_OUTPUT_TOKENS,
    ) -> None:
        self.api_key = api_key
        self.max_output_tokens = max_output_tokens
        self.planner: LLM = planner or OfflineModel()
        # None: the service's minimum for the model (CACHE_MIN_TOKENS).
        self.cache_min_tokens = cache_min_tokens
        # Prefixes processed so far: segment digests -> (tokens, monotonic time).
        self._cache: dict[tuple[str, ...], tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque(replies or [])
        self._faults: deque[tuple[int, float | None, str | None, str | None]] = deque()
        self._delays: deque[float] = deque()
        self._requests: list[Recorded] = []
        self._stored: dict[str, _Stored] = {}
        self._ids = itertools.count(1)
        super().__init__()
        self.app = Starlette(
            routes=[
                Route("/{version}/interactions", self._create, methods=["POST"]),
                Route("/{version}/interactions/{id}", self._get, methods=["GET"]),
                Route("/_fake/{action}", self._control, methods=["GET", "POST"]),
            ]
        )

    # --- the Python handle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def fail(
        self, status: int, *, times: int = 1, retry_after: float | None = None,
        message: str | None = None, quota_id: str | None = None,
    ) -> None:
        """Answer the next `times` create requests with `status` (after the key check).

        `retry_after` goes where the service puts it: a 429's in its RetryInfo detail, any
        other status's in a Retry-After header. `quota_id` names the quota a 429 ran out
        of in a QuotaFailure detail (`GenerateRequestsPerDayPerProjectPerModel`, ...)."""
        with self._lock:
            self._faults.extend([(status, retry_after, message, quota_id)] * times)

    def slow(self, seconds: float, *, times: int = 1) -> None:
        """Hold the next `times` create requests for `seconds` before answering."""
        with self._lock:
            self._delays.extend([seconds] * times)

    def forget(self, *interaction_ids: str) -> None:
        """Delete stored interactions, as the service does once their retention ends (1 day
        on the free tier, 55 days paid): chaining to one, or getting it, is then a 404."""
        with self._lock:
            for interaction_id in interaction_ids:
                self._stored.pop(interaction_id, None)

    def requests(self, *, creates_only: bool = True) -> list[Recorded]:
        with self._lock:
            return [
                r for r in self._requests
                if not creates_only or (r.method == "POST" and r.path.endswith("/interactions"))
            ]

    def bodies(self) -> list[dict[str, Any]]:
        """The bodies of the create requests, in order."""
        return [r.body for r in self.requests()]

    def billed(self) -> list[dict[str, int]]:
        """The usage of every interaction answered successfully, in order."""
        return [r.response["usage"] for r in self.requests() if r.status == 200]

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._faults.clear()
            self._delays.clear()
            self._requests.clear()
            self._stored.clear()
            self._cache.clear()

    # --- HTTP -------------------------------------------------------------------------------

    async def _record(self, request: Request) -> Recorded:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        entry = Recorded(
            at=time.monotonic(), method=request.method, path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()}, body=body,
        )
        with self._lock:
            self._requests.append(entry)
        return entry

    def _answer(
        self, entry: Recorded, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        entry.status, entry.response = status, payload
        return JSONResponse(payload, status_code=status, headers=headers)

    def _error(
        self, entry: Recorded, exc: ApiError, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        payload = exc.body or {"error": {"code": exc.code, "message": exc.message}}
        return self._answer(entry, exc.status, payload, headers)

    def _check_key(self, entry: Recorded) -> None:
        key = entry.headers.get("x-goog-api-key")
        if not key:
            raise _key_error(
                403, "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to "
                "call this API.", None,
            )
        if key != self.api_key:
            raise _key_error(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                "API_KEY_INVALID",
            )

    async def _create(self, request: Request) -> JSONResponse:
        entry = await self._record(request)
        try:
            self._check_key(entry)
            with self._lock:
                fault = self._faults.popleft() if self._faults else None
                delay = self._delays.popleft() if self._delays else None
            if fault is not None:
                status, retry_after, message, quota_id = fault
                if status == 429:
                    model = entry.body.get("model") if isinstance(entry.body, dict) else None
                    return self._error(entry, _quota_error(
                        retry_after, message, quota_id, str(model or "gemini-3.5-flash")))
                headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
                code = {404: "not_found", 503: "unavailable"}.get(status, "internal")
                failure = ApiError(status, code, message or f"fake failure {status}")
                return self._error(entry, failure, headers)
            if delay:
                await asyncio.sleep(delay)
            payload = await self._interact(entry.body)
        except ApiError as exc:
            return self._error(entry, exc)
        return self._answer(entry, 200, payload)

    async def _get(self, request: Request) -> JSONResponse:
        entry = await self._record(request)
        try:
            self._check_key(entry)
            stored = self._stored.get(request.path_params["id"])
            if stored is None:
                missing = request.path_params["id"]
                raise ApiError(404, "not_found", f"Interaction {missing} not found.")
        except ApiError as exc:
            return self._error(entry, exc)
        return self._answer(entry, 200, stored.interaction)

    async def _control(self, request: Request) -> JSONResponse:
        action = request.path_params["action"]
        data = await request.json() if request.method == "POST" and await request.body() else {}
        if action == "requests":
            return JSONResponse([asdict(r) for r in self.requests(creates_only=False)])
        if action == "script":
            self.script(*(_reply_from_json(r) for r in data["replies"]))
        elif action == "fail":
            self.fail(int(data["status"]), times=int(data.get("times", 1)),
                      retry_after=data.get("retry_after"), message=data.get("message"),
                      quota_id=data.get("quota_id"))
        elif action == "slow":
            self.slow(float(data["seconds"]), times=int(data.get("times", 1)))
        elif action == "reset":
            self.reset()
        else:
            return JSONResponse({"error": f"unknown action {action}"}, status_code=404)
        return JSONResponse({"ok": True})

    # --- the service ------------------------------------------------------------------------

    async def _interact(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _invalid("model is required.")
        if body.get("agent") or body.get("stream"):
            raise _invalid("The fake serves model interactions without streaming only.")
        config = body.get("generation_config") or {}
        if not isinstance(config, dict):
            raise _invalid("generation_config must be an object.")
        for key in FORBIDDEN_SAMPLING:
            if key in body or key in config:
                raise _invalid(f"{key} is not supported by {model}; use thinking_level.")
        level = config.get("thinking_level", "medium")
        if level not in THINKING_LEVELS:
            raise _invalid(
                f"Invalid value at 'generation_config.thinking_level' ({level!r}): "
                f"expected one of {', '.join(THINKING_LEVELS)}."
            )
        refusing = [name for name in REFUSED_LEVELS if model.startswith(name)]
        if refusing and level in REFUSED_LEVELS[max(refusing, key=len)]:
            raise _invalid(f"THINKING_LEVEL_{level.upper()} is unsupported for {model}.")
        limit = config.get("max_output_tokens", self.max_output_tokens)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _invalid(
                f"Invalid value at 'generation_config.max_output_tokens' ({limit!r}): "
                "expected a positive integer."
            )
        limit = min(limit, self.max_output_tokens)
        system = body.get("system_instruction") or ""
        if not isinstance(system, str):
            raise _invalid("system_instruction must be a string.")
        tools = self._tools(body.get("tools"))
        schema = self._schema(body.get("response_format"))
        previous = None
        if (previous_id := body.get("previous_interaction_id")) is not None:
            previous = self._stored.get(previous_id)
            if previous is None:
                raise ApiError(404, "not_found", f"Interaction {previous_id} not found.")
        turn_input, new_input = self._input(body.get("input"), previous)

        with self._lock:
            reply = self._script.popleft() if self._script else None
        if isinstance(reply, Calls) and reply.meanwhile is not None:
            reply.meanwhile()
        planner_id = None
        if reply is None:
            if previous is not None and previous.planner_id is None:
                raise ApiError(500, "internal", "fake: the script ran out mid-conversation")
            reply, planner_id = await self._plan(
                model, system, turn_input, tools, previous, level, schema
            )

        # Bill it: the system instruction, tools and schema, then the whole conversation so
        # far on a chained turn, then this turn's input.
        history = previous.history if previous else 0
        fixed = [system, json.dumps(body.get("tools") or [], sort_keys=True),
                 json.dumps(schema, sort_keys=True) if schema is not None else ""]
        prefix = sum(tokens(part) for part in fixed)
        segments = (
            *(previous.segments if previous else ()),
            (_digest(json.dumps(body.get("input"), sort_keys=True)), new_input),
        )
        context = ((_digest("\x00".join(fixed)), prefix), *segments)
        cached = self._cached(model, context)
        steps: list[dict[str, Any]] = []
        thoughts = THOUGHT_TOKENS[level] if reply.thought_tokens is None else reply.thought_tokens
        # The output limit counts thoughts first, then the answer: past it the answer is cut
        # where the limit fell (function calls not whole are not sent) and the interaction
        # ends `incomplete` ("completed, but contains incomplete results (e.g. hitting
        # maxTokens)"), billed for what was produced.
        thoughts = min(thoughts, limit)
        room = limit - thoughts
        if thoughts:
            steps.append({"type": "thought", "signature": uuid.uuid4().hex})
        pending: dict[str, str] = {}
        if isinstance(reply, Calls):
            said = json.dumps([{"name": n, "arguments": a} for n, a in reply.calls])
            cut = tokens(said) > room
            ids = reply.ids or [f"call_{uuid.uuid4().hex[:16]}" for _ in reply.calls]
            for call_id, (name, arguments) in zip(ids, reply.calls, strict=True):
                if cut:
                    break
                pending[call_id] = name
                steps.append(
                    {"type": "function_call", "id": call_id, "name": name, "arguments": arguments}
                )
            if cut:
                said = said[: room * 4]
        else:
            cut = tokens(reply.text) > room
            said = reply.text[: room * 4] if cut else reply.text
            steps.append({"type": "model_output", "content": [{"type": "text", "text": said}]})
        usage = {
            "total_input_tokens": prefix + history + new_input,
            "total_cached_tokens": cached,
            "total_output_tokens": tokens(said),
            "total_thought_tokens": thoughts,
        }
        usage["total_tokens"] = (
            usage["total_input_tokens"] + usage["total_output_tokens"] + thoughts
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        interaction_id = f"v1_fake{next(self._ids):06d}{uuid.uuid4().hex[:10]}"
        interaction: dict[str, Any] = {
            "id": interaction_id,
            "object": "interaction",
            "model": model,
            "status": "incomplete" if cut else "requires_action" if pending else "completed",
            "created": now,
            "updated": now,
            "steps": steps,
            "usage": usage,
        }
        if previous_id is not None:
            interaction["previous_interaction_id"] = previous_id
        with self._lock:
            self._stored[interaction_id] = _Stored(
                interaction, history + new_input + tokens(said),
                (*segments, (_digest(said), tokens(said))), pending, planner_id,
            )
        return interaction

    def _cached(self, model: str, context: tuple[tuple[str, int], ...]) -> int:
        """Implicit caching: the tokens of the longest prefix of `context` processed before
        (and still cached), if it reaches the model's minimum; then remember this context's
        prefixes as processed."""
        minimum = self.cache_min_tokens
        if minimum is None:
            names = [name for name in CACHE_MIN_TOKENS if model.startswith(name)]
            minimum = (
                CACHE_MIN_TOKENS[max(names, key=len)] if names else DEFAULT_CACHE_MIN_TOKENS
            )
        now = time.monotonic()
        hit, total = 0, 0
        keys: list[tuple[tuple[str, ...], int]] = []
        with self._lock:
            for index, (_, count) in enumerate(context):
                total += count
                key = tuple(digest for digest, _ in context[: index + 1])
                keys.append((key, total))
                seen = self._cache.get(key)
                if seen is not None and now - seen[1] <= CACHE_TTL_SECONDS:
                    hit = seen[0]
            for key, count in keys:
                self._cache[key] = (count, now)
        return hit if hit >= minimum else 0

    def _tools(self, tools: Any) -> list[FunctionDeclaration]:
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise _invalid("tools must be a list.")
        declared: list[FunctionDeclaration] = []
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise _invalid(f"tools[{index}]: the fake knows only function tools.")
            name, parameters = tool.get("name"), tool.get("parameters", {"type": "object"})
            if not isinstance(name, str) or not name or not isinstance(parameters, dict):
                raise _invalid(f"tools[{index}]: a function needs a name and an object schema.")
            if any(d.name == name for d in declared):
                raise _invalid(f"tools[{index}]: duplicate function name {name!r}.")
            declared.append(
                FunctionDeclaration(
                    name=name, description=str(tool.get("description", "")), parameters=parameters
                )
            )
        return declared

    def _schema(self, response_format: Any) -> dict[str, Any] | None:
        if response_format is None:
            return None
        if (
            not isinstance(response_format, dict)
            or response_format.get("type") != "text"
            or response_format.get("mime_type") != "application/json"
            or not isinstance(response_format.get("schema"), dict)
        ):
            raise _invalid(
                "response_format must be {type: text, mime_type: application/json, schema}."
            )
        return response_format["schema"]

    def _input(
        self, value: Any, previous: _Stored | None
    ) -> tuple[str | list[FunctionResult], int]:
        """The turn's input for the planner, and the input tokens it bills."""
        if value is None or value == [] or value == "":
            raise _invalid("input is required.")
        items = value if isinstance(value, list) else [value]
        results = [i for i in items if isinstance(i, dict) and i.get("type") == "function_result"]
        expected = previous.pending if previous else {}
        if expected:
            if len(results) != len(items) or len(results) != len(expected):
                raise _invalid(
                    "Please ensure that the number of function results is equal to the number "
                    f"of function calls of the previous turn ({len(expected)})."
                )
            answered: list[FunctionResult] = []
            for index, item in enumerate(results):
                call_id, name, result = item.get("call_id"), item.get("name"), item.get("result")
                if call_id not in expected:
                    raise _invalid(
                        f"input[{index}].call_id {call_id!r} does not match a function call "
                        "of the previous turn."
                    )
                if name != expected[call_id]:
                    raise _invalid(
                        f"input[{index}].name {name!r} does not match the function call "
                        f"{call_id!r} ({expected[call_id]!r})."
                    )
                if any(r.call_id == call_id for r in answered):
                    raise _invalid(f"input[{index}]: call_id {call_id!r} is answered twice.")
                parts: list[MediaPart] = []
                if isinstance(result, list):
                    text, parts = _result_content(index, result)
                elif isinstance(result, str | dict):
                    text = result if isinstance(result, str) else json.dumps(result)
                else:
                    raise _invalid(
                        f"input[{index}].result must be a string, an object or a list of "
                        "content."
                    )
                answered.append(
                    FunctionResult(call_id=call_id, name=name, result=text, parts=parts)
                )
            media = sum(len(r.parts) for r in answered)
            return answered, tokens("".join(r.result for r in answered)) + MEDIA_TOKENS * media
        if results:
            raise _invalid("function_result given, but there is no function call to answer.")
        texts: list[str] = []
        for item in items:
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, dict) and item.get("type") == "text":
                texts.append(str(item.get("text", "")))
            elif isinstance(item, dict) and item.get("type") == "user_input":
                texts += [str(c.get("text", "")) for c in item.get("content") or []]
            else:
                raise _invalid("input must be text, text content or user_input steps.")
        text = "\n".join(texts)
        return text, tokens(text)

    async def _plan(
        self,
        model: str,
        system: str,
        turn_input: str | list[FunctionResult],
        tools: list[FunctionDeclaration],
        previous: _Stored | None,
        level: str,
        schema: dict[str, Any] | None,
    ) -> tuple[Reply, str]:
        request = TurnRequest(
            model=model, system_instruction=system, input=turn_input, tools=tools,
            previous_interaction_id=previous.planner_id if previous else None,
            thinking_level=level,
            response_schema=schema,
        )
        try:
            response = await self.planner.turn(request)
        except LLMError as exc:
            raise _invalid(str(exc)) from exc
        if response.function_calls:
            calls = response.function_calls
            reply: Reply = Calls(
                [(c.name, c.arguments) for c in calls], ids=[c.call_id for c in calls]
            )
        else:
            reply = Text(response.text or "")
        return reply, response.interaction_id


def _result_content(index: int, content: list[Any]) -> tuple[str, list[MediaPart]]:
    """A function result given as content parts: its text and its media, checked."""
    if not content:
        raise _invalid(f"input[{index}].result: content must not be empty.")
    texts: list[str] = []
    parts: list[MediaPart] = []
    for number, item in enumerate(content):
        where = f"input[{index}].result[{number}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text":
            if not isinstance(item.get("text"), str):
                raise _invalid(f"{where}.text must be a string.")
            texts.append(item["text"])
            continue
        if kind not in ("image", "document"):
            raise _invalid(f"{where}: unsupported content type {kind!r} in a function result.")
        mime, data = item.get("mime_type"), item.get("data")
        allowed = IMAGE_TYPES if kind == "image" else DOCUMENT_TYPES
        if mime not in allowed:
            raise _invalid(
                f"{where}.mime_type {mime!r} is not supported for {kind} content "
                f"(expected one of {', '.join(sorted(allowed))})."
            )
        if item.get("uri") is not None or not isinstance(data, str) or not data:
            raise _invalid(f"{where}: the fake takes inline base64 data only.")
        if len(data) > (MAX_INLINE_BYTES + 2) // 3 * 4:
            raise _invalid(f"{where}: inline data larger than {MAX_INLINE_BYTES} bytes.")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _invalid(f"{where}.data is not valid base64.") from exc
        magic = _MAGIC.get(mime)
        if magic is not None and not raw.startswith(magic):
            raise _invalid(f"{where}: the data is not a valid {mime} file.")
        parts.append(MediaPart(mime_type=mime, data=raw))
    return "".join(texts), parts


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake Gemini Interactions API.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args()
    fake = FakeGemini(api_key=args.api_key)
    sock = fake.bind(args.port)
    print(f"fake Gemini listening on {fake.url}", flush=True)
    uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", lifespan="off")).run(
        sockets=[sock]
    )


if __name__ == "__main__":
    main()
