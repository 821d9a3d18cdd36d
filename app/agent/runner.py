"""The agent loop, free of the database: deltas in, model turns ⇄ tools, a digest out.

The caller persists what it is handed: each `StepRecord` as it happens, and
the outcome's cursors only once the run has succeeded (or been skipped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from app.agent.digest import (
    CoverWindow,
    Digest,
    DigestDraft,
    DraftItem,
    DraftSection,
    build_digest,
    draft_json_schema,
)
from app.agent.llm import (
    LLM,
    FunctionCall,
    FunctionResult,
    LLMError,
    ThinkingLevel,
    TurnRequest,
    TurnResponse,
    Usage,
)
from app.agent.prompt import (
    BUDGET_SPENT,
    LAST_CALL_GUIDANCE,
    LAST_TURN_GUIDANCE,
    SYSTEM_INSTRUCTION,
    build_first_prompt,
    repair_prompt,
)
from app.agent.tools import ToolBox
from app.sources.base import Delta, Source

log = logging.getLogger(__name__)

EXCERPT_CHARS = 500


@dataclass(frozen=True)
class AgentRequest:
    """What one run of an instruction asks of the agent."""

    title: str
    text: str
    thinking_level: ThinkingLevel
    max_tool_calls: int
    max_turns: int
    only_new: bool
    read_mail: bool
    read_files: bool
    timezone: str
    now: datetime
    window_start: datetime | None
    model: str
    # New items per source and kind shown in the prompt; the rest come next run.
    context_limit: int = 100
    # Only items dated at or after this (a preview over a past window).
    since: datetime | None = None
    # Input tokens the run may spend in all (chained turns bill the whole
    # conversation so far); None: no limit.
    max_input_tokens: int | None = None


class StepRecord(BaseModel):
    kind: Literal["model", "tool"]
    name: str
    arguments: dict[str, Any] | None = None
    result_excerpt: str | None = None
    usage: Usage = Field(default_factory=Usage)
    duration_ms: int = 0
    interaction_id: str | None = None
    error: str | None = None


class StepRecorder(Protocol):
    async def __call__(self, step: StepRecord) -> None: ...


class AgentOutcome(BaseModel):
    status: Literal["succeeded", "skipped"]
    digest: Digest | None = None
    cursors: dict[str, dict[str, Any]]
    usage: Usage = Field(default_factory=Usage)
    interaction_ids: list[str] = Field(default_factory=list)
    skipped_reason: str | None = None
    budget_exhausted: bool = False


class AgentError(Exception):
    """The run could not produce a digest (the model kept answering outside the schema)."""


def _excerpt(text: str | None) -> str | None:
    return None if text is None else text[:EXCERPT_CHARS]


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


class _Run:
    """The state of one run; `run_agent` is its only entry point."""

    def __init__(
        self, llm: LLM, sources: Mapping[str, Source], request: AgentRequest, record: StepRecorder
    ) -> None:
        self.llm, self.request, self.record = llm, request, record
        self.toolbox = ToolBox(sources, read_mail=request.read_mail, read_files=request.read_files)
        self.usage = Usage()
        self.interaction_ids: list[str] = []
        self.turns = 0
        self.calls_used = 0
        self.refused_calls = 0
        self.schema = draft_json_schema()

    async def turn(
        self, turn_input: str | list[FunctionResult], previous: str | None
    ) -> TurnResponse:
        """One model turn, recorded; an `LLMError` is recorded too, then raised."""
        request = TurnRequest(
            model=self.request.model,
            system_instruction=SYSTEM_INSTRUCTION,
            input=turn_input,
            tools=self.toolbox.declarations,
            previous_interaction_id=previous,
            thinking_level=self.request.thinking_level,
            response_schema=self.schema,
        )
        self.turns += 1
        started = time.perf_counter()
        try:
            response = await self.llm.turn(request)
        except LLMError as exc:
            await self.record(
                StepRecord(
                    kind="model",
                    name=self.request.model,
                    duration_ms=_ms(started),
                    interaction_id=previous,
                    error=str(exc),
                )
            )
            raise
        self.usage += response.usage
        self.interaction_ids.append(response.interaction_id)
        calls = ", ".join(f"{c.name}({c.arguments})" for c in response.function_calls)
        await self.record(
            StepRecord(
                kind="model",
                name=self.request.model,
                result_excerpt=_excerpt(response.text if not calls else f"calls: {calls}"),
                usage=response.usage,
                duration_ms=_ms(started),
                interaction_id=response.interaction_id,
            )
        )
        return response

    async def call(self, call: FunctionCall, interaction_id: str) -> FunctionResult:
        """Run one tool call within the budget; always exactly one result for it."""
        started = time.perf_counter()
        error: str | None
        # ask_user and notify_now will be intercepted here, before the read-only tools.
        if self.calls_used >= self.request.max_tool_calls:
            self.refused_calls += 1
            text, error = BUDGET_SPENT, "action budget spent"
        else:
            self.calls_used += 1
            outcome = await self.toolbox.execute(call)
            text, error = outcome.text, outcome.error
        await self.record(
            StepRecord(
                kind="tool",
                name=call.name,
                arguments=call.arguments,
                result_excerpt=_excerpt(text),
                duration_ms=_ms(started),
                interaction_id=interaction_id,
                error=error,
            )
        )
        return FunctionResult(call_id=call.call_id, name=call.name, result=text)

    async def results(self, response: TurnResponse) -> list[FunctionResult]:
        results = [await self.call(c, response.interaction_id) for c in response.function_calls]
        guidance = []
        if self.calls_used >= self.request.max_tool_calls and not self.refused_calls:
            guidance.append(LAST_CALL_GUIDANCE)
        if self.turns + 1 >= self.request.max_turns:
            guidance.append(LAST_TURN_GUIDANCE)
        if guidance:  # guidance rides on the last result, after two newlines
            last = results[-1]
            results[-1] = last.model_copy(
                update={"result": last.result + "\n\n" + " ".join(guidance)}
            )
        return results

    async def final_draft(self, response: TurnResponse) -> DigestDraft:
        """Validate the final text; one repair turn if it does not match the schema."""
        try:
            return DigestDraft.model_validate_json(response.text or "")
        except ValidationError as exc:
            first_error = exc
        log.info("final answer did not match the schema; asking once for a repair")
        repaired = await self.turn(repair_prompt(str(first_error)), response.interaction_id)
        if repaired.function_calls:
            raise AgentError("the model answered the repair turn with tool calls, not a digest")
        try:
            return DigestDraft.model_validate_json(repaired.text or "")
        except ValidationError as exc:
            raise AgentError(f"the model's digest is still invalid after a repair: {exc}") from exc


def _fallback_draft(deltas: Mapping[str, Delta]) -> DigestDraft:
    """What the run has when the model ran out of turns without answering: the new items."""
    messages = [m for d in deltas.values() for m in d.messages]
    files = [f for d in deltas.values() for f in d.files]
    mail = [
        DraftItem(title=m.subject, detail=f"From {m.sender}: {m.snippet}", message_ids=[m.id])
        for m in messages
    ]
    docs = [DraftItem(title=f.name, detail=f.snippet, file_ids=[f.id]) for f in files]
    return DigestDraft(
        summary=f"The agent ran out of turns before writing its digest. {len(messages)} new "
        f"messages and {len(files)} new or changed documents are listed below, unread.",
        sections=[
            DraftSection(title=title, items=items)
            for title, items in (("New mail", mail), ("Documents changed", docs))
            if items
        ],
    )


async def run_agent(
    *,
    llm: LLM,
    sources: Mapping[str, Source],
    cursors: Mapping[str, dict[str, Any] | None],
    request: AgentRequest,
    record: StepRecorder,
) -> AgentOutcome:
    """Run one instruction once over `sources` (keyed by account) from `cursors`.

    Raises `SourceError` if a delta fails, `LLMError` if a model turn fails
    and `AgentError` if no valid digest comes back; in each case the caller
    keeps the old cursors.
    """
    keys = list(sources)
    fetched = await asyncio.gather(
        *(
            sources[key].delta(
                cursors.get(key), mail=request.read_mail, files=request.read_files,
                limit=request.context_limit, since=request.since,
            )
            for key in keys
        )
    )
    deltas = dict(zip(keys, fetched, strict=True))
    new_cursors = {key: delta.cursor for key, delta in deltas.items()}
    if request.only_new and all(delta.empty for delta in deltas.values()):
        return AgentOutcome(
            status="skipped", cursors=new_cursors, skipped_reason="Nothing new since the last run."
        )

    run = _Run(llm, sources, request, record)
    for key, delta in deltas.items():
        run.toolbox.show_delta(key, delta)
    prompt = build_first_prompt(
        title=request.title,
        text=request.text,
        timezone=request.timezone,
        now=request.now,
        window_start=request.window_start,
        max_tool_calls=request.max_tool_calls,
        read_mail=request.read_mail,
        read_files=request.read_files,
        messages=sorted(
            (m for d in deltas.values() for m in d.messages), key=lambda m: m.date, reverse=True
        ),
        files=sorted(
            (f for d in deltas.values() for f in d.files),
            key=lambda f: f.modified_time,
            reverse=True,
        ),
    )
    notes: list[str] = []
    response = await run.turn(prompt, None)

    def tokens_spent() -> bool:
        limit = request.max_input_tokens
        return limit is not None and run.usage.input_tokens >= limit

    while response.function_calls and run.turns < request.max_turns and not tokens_spent():
        response = await run.turn(await run.results(response), response.interaction_id)
    turns_spent = bool(response.function_calls)
    if turns_spent:  # a budget cut it short: finish with what the run has
        draft = _fallback_draft(deltas)
        if tokens_spent():
            notes.append(
                f"Stopped after {run.usage.input_tokens} input tokens (the budget is "
                f"{request.max_input_tokens}) without a digest from the model; the new items "
                "are listed from their previews."
            )
        else:
            notes.append(
                f"Stopped after {request.max_turns} model turns without a digest from the "
                "model; the new items are listed from their previews."
            )
    else:
        draft = await run.final_draft(response)
    calls_spent = run.refused_calls > 0 or 0 < request.max_tool_calls <= run.calls_used
    if calls_spent:
        notes.append(
            f"The action budget of {request.max_tool_calls} tool calls was used up; "
            "some items may not have been read."
        )
    digest, dropped = build_digest(
        draft,
        resolve=run.toolbox.resolve,
        model=request.model,
        covers=CoverWindow(start=request.window_start, end=request.now),
        notes=notes,
    )
    if dropped:
        log.warning("dropped %d cited ids the run never saw: %s", len(dropped), dropped)
    return AgentOutcome(
        status="succeeded",
        digest=digest,
        cursors=new_cursors,
        usage=run.usage,
        interaction_ids=run.interaction_ids,
        budget_exhausted=turns_spent or calls_spent,
    )
