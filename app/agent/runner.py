"""The agent loop, free of the database: deltas in, model turns ⇄ tools, a digest out.

The caller persists what it is handed: each `StepRecord` as it happens, and
the outcome's cursors only once the run has succeeded (or been skipped).

A turn that calls `ask_user` pauses the run: its other calls are run, and the
outcome is `waiting` with a `PausedState` the caller stores. `run_agent(...,
resume=ResumeState(state, answer))` goes on from there: it sends those results
and the answer in one turn chained to the asking one, without new deltas.
`notify_now` goes through the caller's `Notifier`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from app.agent.digest import (
    CoverWindow,
    Digest,
    DigestDraft,
    build_digest,
    draft_json_schema,
)
from app.agent.excerpt import mail_excerpts
from app.agent.links import addresses_in, inert, inert_draft
from app.agent.llm import (
    LLM,
    ConversationGone,
    FunctionCall,
    FunctionResult,
    IncompleteAnswer,
    LLMError,
    MediaPart,
    ThinkingLevel,
    TurnRequest,
    TurnResponse,
    Usage,
)
from app.agent.pricing import ModelPrice, cost_at
from app.agent.prompt import (
    ALERT_ALREADY_SENT,
    ALERT_SENT,
    ASKED,
    BUDGET_SPENT,
    CUT_OFF_GUIDANCE,
    LAST_CALL_GUIDANCE,
    LAST_TURN_GUIDANCE,
    NO_ANSWER,
    ONE_QUESTION_AT_A_TIME,
    SYSTEM_INSTRUCTION,
    answered,
    automated,
    build_first_prompt,
    mailbox_owner,
    repair_prompt,
    sent_alerts_note,
    too_many,
)
from app.agent.resume import PausedState, ResumeState, fallback_draft
from app.agent.tools import (
    ASK_USER,
    NOTIFY_NOW,
    Alert,
    AskedQuestion,
    BadCall,
    ToolBox,
    parse_alert,
    parse_question,
)
from app.sources.base import Delta, FileCard, ItemNotFound, MailCard, Source

log = logging.getLogger(__name__)

EXCERPT_CHARS = 500
MAX_QUESTIONS_PER_RUN = 2
MAX_ALERTS_PER_RUN = 3
# How long a run cancelled mid-turn (its worker stops, its lease was lost) waits for the
# answer of the request on its way, which the model service bills whether or not it is
# read, to count what it was billed. The worker's stop grace leaves this (docker-compose:
# 40 s, of which runs get PILOTLIGHT_WORKER_SHUTDOWN_SECONDS, 30 s, to finish).
CANCELLED_TURN_WAIT_SECONDS = 5.0


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
    # Offer ask_user and notify_now (not to a preview, which tells nobody).
    interactive: bool = False
    # A watch run: the item that fired it, {"account_id", "kind": "message" | "file",
    # "id"}; it alone is the run's new item, and the instruction's cursors stay.
    watch_item: Mapping[str, str] | None = None
    # The alerts an earlier attempt of this run sent ({"title", "message"}): a retried
    # attempt (a retried resume too) is shown them, as data, so that it does not send
    # them again in new words.
    sent_alerts: Sequence[Mapping[str, str]] = ()
    # USD this attempt may spend at `price` (the user's daily cost cap less what was
    # spent today and what the user's other runs at work hold); None: no limit.
    max_cost_usd: float | None = None
    price: ModelPrice | None = None
    # Why a source the instruction names is not read (the app's words, a sentence each:
    # "Mail was not read: Gmail is off for ..."): said in the digest, or in why the run
    # was skipped, so that mail not read is never taken for no mail.
    unread: Sequence[str] = ()


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


class Notifier(Protocol):
    """Alerts the user now; False when this alert was already sent (a retried run)."""

    async def __call__(self, alert: Alert) -> bool: ...


class AgentOutcome(BaseModel):
    status: Literal["succeeded", "skipped", "waiting"]
    digest: Digest | None = None
    cursors: dict[str, dict[str, Any]]
    usage: Usage = Field(default_factory=Usage)
    interaction_ids: list[str] = Field(default_factory=list)
    skipped_reason: str | None = None
    budget_exhausted: bool = False
    # status "waiting": what to store on the run to resume it once the user answers.
    paused: PausedState | None = None


class AgentError(Exception):
    """The run could not produce a digest (the model kept answering outside the schema)."""


def _excerpt(text: str | None) -> str | None:
    return None if text is None else text[:EXCERPT_CHARS]


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


class _Run:
    """The state of one run; `run_agent` is its only entry point."""

    def __init__(
        self,
        llm: LLM,
        sources: Mapping[str, Source],
        request: AgentRequest,
        record: StepRecorder,
        notify: Notifier | None,
    ) -> None:
        self.llm, self.request, self.record, self.notify = llm, request, record, notify
        self.toolbox = ToolBox(
            sources, read_mail=request.read_mail, read_files=request.read_files,
            user_tools=request.interactive,
        )
        self.usage = Usage()
        self.spent = Usage()  # by this attempt (`usage` holds a paused run's earlier turns)
        self.interaction_ids: list[str] = []
        self.turns = 0
        self.calls_used = 0
        self.refused_calls = 0
        self.questions_asked = 0
        self.alerts_sent = 0
        self.asked: AskedQuestion | None = None  # by the turn being answered
        self.notes: list[str] = []
        # The model service no longer had the conversation the run was to go on with.
        self.conversation_gone = False
        self.schema = draft_json_schema()
        # The web addresses the run read (its prompt, tool results, the user's answer):
        # only these stay as they are in what the model writes (`app/agent/links.py`).
        self.read: set[str] = set()

    def restore(self, state: PausedState) -> None:
        """Take back the budgets, usage and seen items of a paused run."""
        self.turns, self.calls_used = state.turns, state.calls_used
        self.refused_calls = state.refused_calls
        self.questions_asked, self.alerts_sent = state.questions_asked, state.alerts_sent
        self.usage = state.usage.model_copy()
        self.interaction_ids = list(state.interaction_ids)
        self.toolbox.restore_seen(state.seen)
        self.read = set(state.read)

    def tokens_spent(self) -> bool:
        limit = self.request.max_input_tokens
        return limit is not None and self.usage.input_tokens >= limit

    def may_turn(self) -> bool:
        """Another model turn is within the turn cap, the input-token budget and what the
        daily cost cap left this attempt."""
        return (self.turns < self.request.max_turns and not self.tokens_spent()
                and not self.money_spent())

    def cost(self) -> float:
        """What this attempt's turns cost (0.0 for an unpriced model)."""
        price = self.request.price
        return 0.0 if price is None else cost_at(price, self.spent)

    def money_spent(self) -> bool:
        """True once the attempt has spent what the user's daily cost cap left it."""
        limit = self.request.max_cost_usd
        return limit is not None and self.request.price is not None and self.cost() >= limit

    async def turn(
        self, turn_input: str | list[FunctionResult], previous: str | None
    ) -> TurnResponse:
        """One model turn, recorded; an `LLMError` is recorded too, then raised.

        An answer cut off before it was whole (`IncompleteAnswer`: a digest cut mid JSON)
        is never used: the turn is sent once more, asking for a briefer answer at thinking
        level low at most (thoughts count against the output limit first: at medium or
        high they alone can reach it again), when the budgets leave a turn for it; cut
        off again, or with no turn left, the attempt fails with the reason. Its tokens
        were billed, so they are counted either way."""
        try:
            return await self.send(turn_input, previous)
        except IncompleteAnswer as exc:
            if not self.may_turn():
                raise IncompleteAnswer(
                    f"the model's answer was cut off and no turn was left to ask again: {exc}",
                    usage=exc.usage, interaction_id=exc.interaction_id,
                ) from exc
            log.warning("the model's answer was cut off (%s); asking once more", exc)
        briefer: ThinkingLevel = (
            "low" if self.request.thinking_level in ("medium", "high")
            else self.request.thinking_level
        )
        try:
            return await self.send(
                _noted(turn_input, CUT_OFF_GUIDANCE), previous, thinking_level=briefer
            )
        except IncompleteAnswer as exc:
            raise IncompleteAnswer(
                f"the model's answer was cut off twice, so no digest was made of it: {exc}",
                usage=exc.usage, interaction_id=exc.interaction_id,
            ) from exc

    async def send(
        self, turn_input: str | list[FunctionResult], previous: str | None, *,
        thinking_level: ThinkingLevel | None = None,
    ) -> TurnResponse:
        """One request to the model, recorded with what it was billed; at the
        instruction's thinking level unless told another."""
        request = TurnRequest(
            model=self.request.model,
            system_instruction=SYSTEM_INSTRUCTION,
            input=turn_input,
            tools=self.toolbox.declarations,
            previous_interaction_id=previous,
            thinking_level=thinking_level or self.request.thinking_level,
            response_schema=self.schema,
        )
        self.turns += 1
        started = time.perf_counter()
        turn = asyncio.ensure_future(self.llm.turn(request))
        try:
            response = await asyncio.shield(turn)
        except asyncio.CancelledError:
            # Cancelled it stays. A step that cannot be written (the lease is lost) is the
            # caller's recorder's to add to the run all the same (app/runs/steps.py).
            with contextlib.suppress(Exception):
                await self.cancelled(turn, started, previous)
            raise
        except LLMError as exc:
            billed = exc.usage if isinstance(exc, IncompleteAnswer) else Usage()
            self.usage += billed
            self.spent += billed
            await self.record(
                StepRecord(
                    kind="model",
                    name=self.request.model,
                    usage=billed,
                    duration_ms=_ms(started),
                    interaction_id=(
                        exc.interaction_id if isinstance(exc, IncompleteAnswer) else None
                    ) or previous,
                    error=str(exc),
                )
            )
            raise
        self.usage += response.usage
        self.spent += response.usage
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

    async def cancelled(
        self, turn: asyncio.Future[TurnResponse], started: float, previous: str | None
    ) -> None:
        """The run was cancelled while a turn's request was on its way: the service bills
        it all the same. Wait a little (`CANCELLED_TURN_WAIT_SECONDS`) for its answer and
        record what it was billed, so that it counts in the run's cost; never use it."""
        done, _pending = await asyncio.wait({turn}, timeout=CANCELLED_TURN_WAIT_SECONDS)
        if not done:
            turn.cancel()
            await asyncio.gather(turn, return_exceptions=True)
            log.warning("cancelled during a model turn whose answer did not come in %.0f s: "
                        "what it was billed is not counted", CANCELLED_TURN_WAIT_SECONDS)
            return
        if turn.cancelled():
            return
        failure = turn.exception()
        interaction_id: str | None
        if failure is None:
            response = turn.result()
            billed, interaction_id = response.usage, response.interaction_id
        elif isinstance(failure, IncompleteAnswer):
            billed, interaction_id = failure.usage, failure.interaction_id
        else:
            return  # not answered (a failed request is not billed)
        self.usage += billed
        self.spent += billed
        await self.record(
            StepRecord(
                kind="model", name=self.request.model, usage=billed,
                duration_ms=_ms(started), interaction_id=interaction_id or previous,
                error="the run was stopped before this answer was used",
            )
        )

    async def call(self, call: FunctionCall, interaction_id: str) -> FunctionResult:
        """Run one tool call within the budget; always exactly one result for it."""
        started = time.perf_counter()
        error: str | None
        parts: tuple[MediaPart, ...] = ()
        if self.calls_used >= self.request.max_tool_calls:
            self.refused_calls += 1
            text, error = BUDGET_SPENT, "action budget spent"
        else:
            self.calls_used += 1
            text, error, parts = await self.dispatch(call)
            self.read |= addresses_in(text)
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
        # A PDF or an image read by the call rides along as media parts of the result.
        return FunctionResult(
            call_id=call.call_id, name=call.name, result=text, parts=list(parts)
        )

    async def dispatch(
        self, call: FunctionCall
    ) -> tuple[str, str | None, tuple[MediaPart, ...]]:
        """The result of one call (text, error, media), the user tools intercepted first."""
        try:
            if self.request.interactive and call.name == ASK_USER:
                question = parse_question(call)
                return (*self.ask(replace(
                    question, text=inert(question.text, self.read),
                    choices=[inert(c, self.read) for c in question.choices])), ())
            if self.request.interactive and call.name == NOTIFY_NOW:
                alert = parse_alert(call)
                return (*(await self.alert(replace(
                    alert, title=inert(alert.title, self.read),
                    message=inert(alert.message, self.read)))), ())
        except BadCall as exc:
            return f"Error: {exc}", str(exc), ()
        outcome = await self.toolbox.execute(call)
        return outcome.text, outcome.error, outcome.parts

    def ask(self, question: AskedQuestion) -> tuple[str, str | None]:
        if self.asked is not None:
            return ONE_QUESTION_AT_A_TIME, "one question at a time"
        if self.questions_asked >= MAX_QUESTIONS_PER_RUN:
            return too_many("ask the user", MAX_QUESTIONS_PER_RUN), "too many questions"
        self.asked = question
        self.questions_asked += 1
        return ASKED, None

    async def alert(self, alert: Alert) -> tuple[str, str | None]:
        if self.alerts_sent >= MAX_ALERTS_PER_RUN:
            return too_many("alert the user", MAX_ALERTS_PER_RUN), "too many alerts"
        if self.notify is None:
            raise BadCall("alerts are not available in this run.")
        sent = await self.notify(replace(alert, items=self.alerted_items(alert)))
        self.alerts_sent += 1
        return (ALERT_SENT if sent else ALERT_ALREADY_SENT), None

    def alerted_items(self, alert: Alert) -> tuple[str, ...]:
        """The app's keys of the items the alert is about; `BadCall` for an id that is
        not a message or file this run saw."""
        keys: dict[str, None] = {}
        for value in alert.about:
            ref = self.toolbox.resolve("message", value) or self.toolbox.resolve("file", value)
            if ref is None:
                raise BadCall(
                    f'"about" holds {value!r}, which is not the id of a message or a file '
                    "you were shown (m1, f1)."
                )
            keys[f"{ref.account}:{ref.kind}:{ref.id}"] = None
        return tuple(keys)

    async def results(self, response: TurnResponse) -> list[FunctionResult]:
        """One result per call of the turn, in order; a question asked is in `self.asked`."""
        self.asked = None
        return [await self.call(c, response.interaction_id) for c in response.function_calls]

    def with_guidance(self, results: list[FunctionResult]) -> list[FunctionResult]:
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

    def pause(
        self,
        interaction_id: str,
        results: list[FunctionResult],
        cursors: dict[str, dict[str, Any]],
        fallback: DigestDraft,
    ) -> AgentOutcome:
        """The outcome of a turn that asked the user: everything needed to go on later."""
        asked = self.asked
        assert asked is not None
        index = next(i for i, r in enumerate(results) if r.call_id == asked.call_id)
        state = PausedState(
            interaction_id=interaction_id, call_id=asked.call_id, question=asked.text,
            choices=asked.choices, results=results[:index] + results[index + 1 :],
            question_index=index, turns=self.turns, calls_used=self.calls_used,
            refused_calls=self.refused_calls, questions_asked=self.questions_asked,
            alerts_sent=self.alerts_sent, usage=self.usage, interaction_ids=self.interaction_ids,
            cursors=cursors, seen=self.toolbox.export_seen(), read=sorted(self.read),
            fallback=fallback,
        )
        return AgentOutcome(
            status="waiting", cursors=cursors, usage=self.usage,
            interaction_ids=list(self.interaction_ids), paused=state,
        )

    async def final_draft(self, response: TurnResponse) -> DigestDraft | None:
        """Validate the final text; one repair turn if it does not match the schema, None
        when the budgets leave no turn for it."""
        try:
            return DigestDraft.model_validate_json(response.text or "")
        except ValidationError as exc:
            first_error = exc
        if not self.may_turn():
            log.info("final answer did not match the schema; no turn left for a repair")
            return None
        log.info("final answer did not match the schema; asking once for a repair")
        repaired = await self.turn(repair_prompt(str(first_error)), response.interaction_id)
        if repaired.function_calls:
            raise AgentError("the model answered the repair turn with tool calls, not a digest")
        try:
            return DigestDraft.model_validate_json(repaired.text or "")
        except ValidationError as exc:
            raise AgentError(
                f"the model's digest is still invalid after a repair: {_what_is_wrong(exc)}"
            ) from exc


def _noted(
    turn_input: str | list[FunctionResult], note: str
) -> str | list[FunctionResult]:
    """The turn's input with a note for the model after two newlines: at the end of the
    text, or of the last function result (never a part of its own)."""
    if isinstance(turn_input, str):
        return f"{turn_input}\n\n{note}"
    last = turn_input[-1]
    return [*turn_input[:-1], last.model_copy(update={"result": f"{last.result}\n\n{note}"})]


def _lost_mailboxes(sources: Iterable[Source]) -> list[str]:
    """A note for each source whose Gmail answered, during the run, that the mail service
    is gone: the model was told at the tool call, the user is told here, as what the run
    did not read from it is missing from the digest."""
    return [
        f"Gmail stopped answering for {source.address or 'your Google account'} during this "
        "run: Google says its mail service is not enabled (\"Mail service not enabled\": "
        "Gmail was turned off for it), so its mail that the run had not read yet is missing "
        "from this digest."
        for source in sources if source.mailbox_gone()
    ]


def _what_is_wrong(error: ValidationError) -> str:
    """Where and why the digest did not match, without the text the model wrote (pydantic
    quotes it, and it can be the mail's): this goes to the log and to the run's error."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'digest'}: {e['msg']}"
        for e in error.errors(include_url=False, include_input=False, include_context=False)
    )


def _owners(sources: Mapping[str, Source], messages: Sequence[tuple[str, MailCard]]) -> set[str]:
    """The user's own addresses: each source's own, else guessed from its mail."""
    known = {source.address for source in sources.values() if source.address}
    guessed = mailbox_owner([m for key, m in messages if not sources[key].address])
    return known | ({guessed} if guessed else set())


async def run_agent(
    *,
    llm: LLM,
    sources: Mapping[str, Source],
    cursors: Mapping[str, dict[str, Any] | None],
    request: AgentRequest,
    record: StepRecorder,
    resume: ResumeState | None = None,
    notify: Notifier | None = None,
) -> AgentOutcome:
    """Run one instruction once over `sources` (keyed by account) from `cursors`.

    With `resume`, go on from a run that paused on `ask_user` (the sources' delta
    is not asked again; `cursors` are unused). The outcome is `waiting` when the
    model asks the user a question.

    Raises `SourceError` if a delta fails, `LLMError` if a model turn fails
    and `AgentError` if no valid digest comes back; in each case the caller
    keeps the old cursors (and a paused run's state).
    """
    if resume is not None:
        return await _resume(llm, sources, request, record, notify, resume)
    if request.watch_item is not None:
        deltas = await _watch_delta(sources, cursors, request.watch_item)
        new_cursors = {key: delta.cursor for key, delta in deltas.items() if delta.cursor}
        if not deltas:
            return AgentOutcome(
                status="skipped", cursors=new_cursors,
                skipped_reason="The item that fired this watch is gone.",
            )
    else:
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
            status="skipped", cursors=new_cursors,
            skipped_reason=" ".join(["Nothing new since the last run.", *request.unread]),
        )

    run = _Run(llm, sources, request, record, notify)
    for key, delta in deltas.items():
        run.toolbox.show_delta(key, delta)
    messages = sorted(
        ((key, m) for key, d in deltas.items() for m in d.messages),
        key=lambda pair: pair[1].date, reverse=True,
    )
    # Context first: the app reads the new mail for the prompt, so that the model seldom
    # needs a turn of reads (each later turn is billed for the whole conversation again).
    texts = await mail_excerpts([(sources[key], m) for key, m in messages], automated)
    prompt = build_first_prompt(
        title=request.title,
        text=request.text,
        timezone=request.timezone,
        now=request.now,
        window_start=request.window_start,
        max_tool_calls=request.max_tool_calls,
        read_mail=request.read_mail,
        read_files=request.read_files,
        messages=[m for _, m in messages],
        files=sorted(
            (f for d in deltas.values() for f in d.files),
            key=lambda f: f.modified_time,
            reverse=True,
        ),
        alias=run.toolbox.alias,
        texts=texts,
        sent_alerts=request.sent_alerts,
        owners=_owners(sources, messages),
    )
    run.read |= addresses_in(prompt)
    response = await run.turn(prompt, None)
    return await _converse(run, response, new_cursors, fallback_draft(deltas))


async def _watch_delta(
    sources: Mapping[str, Source],
    cursors: Mapping[str, dict[str, Any] | None],
    item: Mapping[str, str],
) -> dict[str, Delta]:
    """The item that fired a watch run as its only new item; empty when it is gone.

    The instruction's cursors are handed back as they were: a watch run reports its
    item, not what else arrived.
    """
    key = item.get("account_id", "")
    source = sources.get(key)
    if source is None:
        return {}
    cursor = dict(cursors.get(key) or {})
    try:
        if item.get("kind") == "file":
            document = await source.read_file(item["id"])
            card = FileCard(
                id=document.id, name=document.name, mime_type=document.mime_type,
                modified_time=document.modified_time, modified_by=document.modified_by,
                snippet=_snippet(document.text),
            )
            return {key: Delta(files=[card], cursor=cursor)}
        message = await source.read_message(item["id"])
    except ItemNotFound:
        return {}
    mail = MailCard(
        id=message.id, thread_id=message.thread_id, sender=message.sender, to=message.to,
        subject=message.subject, date=message.date, snippet=_snippet(message.body),
        has_attachments=bool(message.attachments), sent_by_owner=message.sent_by_owner,
    )
    return {key: Delta(messages=[mail], cursor=cursor)}


def _snippet(text: str, size: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"


async def _resume(
    llm: LLM,
    sources: Mapping[str, Source],
    request: AgentRequest,
    record: StepRecorder,
    notify: Notifier | None,
    resume: ResumeState,
) -> AgentOutcome:
    """Answer the paused turn's calls, the question among them, in one turn; then go on."""
    state = PausedState.model_validate(resume.state)
    run = _Run(llm, sources, request, record, notify)
    run.restore(state)
    if resume.answer is None:
        text = NO_ANSWER
        run.notes.append(
            f"You did not answer the question “{state.question}” in time; this digest was "
            "written without it."
        )
    else:
        text = answered(resume.answer)
    run.read |= addresses_in(text)  # the user's answer
    await record(
        StepRecord(
            kind="tool", name=ASK_USER, arguments={"question": state.question},
            result_excerpt=_excerpt(text), interaction_id=state.interaction_id,
            error=None if resume.answer is not None else "no answer in time",
        )
    )
    results = list(state.results)
    results.insert(state.question_index, FunctionResult(
        call_id=state.call_id, name=ASK_USER, result=text
    ))
    results = run.with_guidance(results)
    if request.sent_alerts:
        # A retried resume chains to the same paused turn as the attempt before it, whose
        # alerts are not in this conversation: shown them, it does not send them again.
        last = results[-1]
        results[-1] = last.model_copy(
            update={"result": last.result + "\n\n" + sent_alerts_note(request.sent_alerts)}
        )
    response = None
    if run.may_turn():  # the budgets may have changed while the question waited
        try:
            response = await run.turn(results, state.interaction_id)
        except ConversationGone as exc:
            # The service deleted the paused conversation (its retention is shorter than a
            # question may wait): no attempt could go on with it, so finish with what the
            # run has rather than fail every attempt on the same 404.
            log.warning("run resumed after its conversation expired: %s", exc)
            run.conversation_gone = True
    return await _converse(run, response, state.cursors, state.fallback)


async def _converse(
    run: _Run,
    response: TurnResponse | None,
    cursors: dict[str, dict[str, Any]],
    fallback: DigestDraft,
) -> AgentOutcome:
    """Answer tool calls turn by turn until the digest, a budget, or a question to the user.

    `response` None: the budgets left no turn to send."""
    request = run.request
    notes = run.notes
    while response is not None and response.function_calls and run.may_turn():
        results = await run.results(response)
        if run.asked is not None:
            return run.pause(response.interaction_id, results, cursors, fallback)
        response = await run.turn(run.with_guidance(results), response.interaction_id)
    draft = None
    if response is not None and not response.function_calls:
        draft = await run.final_draft(response)  # None: invalid, and no turn left to repair it
    if draft is not None:  # the model's: an address it made up must not go out
        draft = inert_draft(draft, run.read)
    turns_spent = draft is None
    if draft is None:  # a budget cut it short: finish with what the run has
        draft = fallback
        if run.conversation_gone:
            notes.append(
                "The model service no longer kept this run's conversation when the question "
                "was answered or expired (it keeps them for a limited time: a day on Gemini's "
                "free tier), so the model could not go on; the new items are listed from "
                "their previews."
            )
        elif run.money_spent():
            notes.append(
                f"Stopped because the daily cost cap was reached (this run spent "
                f"${run.cost():.2f} of the ${request.max_cost_usd:.2f} left today) without a "
                "digest from the model; the new items are listed from their previews."
            )
        elif run.tokens_spent():
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
    notes.extend(request.unread)
    notes.extend(_lost_mailboxes(run.toolbox.sources.values()))
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
        # Only how many: the ids are the model's words, which may be the mail's.
        log.warning("dropped %d cited id(s) the run never saw", len(dropped))
    return AgentOutcome(
        status="succeeded",
        digest=digest,
        cursors=cursors,
        usage=run.usage,
        interaction_ids=run.interaction_ids,
        budget_exhausted=turns_spent or calls_spent,
    )
