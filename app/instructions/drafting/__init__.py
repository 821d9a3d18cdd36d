"""A proposed instruction from one sentence, for the user to confirm; nothing is created.

The offline path is a deterministic parser of common phrasings ("every weekday at 8
tell me what my team sent"), in `reading` and `plans`. With a real model behind the
`LLM` port, the sentence goes to it as one structured-output turn without tools; its
answer is checked with pydantic, and anything short of a valid proposal falls back to
the parser.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, ValidationError

from app.agent.llm import LLM, IncompleteAnswer, LLMError, TurnRequest, Usage
from app.agent.offline import OFFLINE_MODEL_NAME
from app.instructions.drafting.errors import (
    PARSER_NAME,
    DraftIntervalTooShort,
    DraftNotUnderstood,
    DraftWatchNotAvailable,
    _not_understood,
    _quote,
)
from app.instructions.drafting.plans import (
    _FOLDER_ID_HOW,
    _and,
    _cron_plan,
    _interval_plan,
    _watch_plan,
    _WatchPlan,
)
from app.instructions.drafting.prompt import draft_system_instruction
from app.instructions.drafting.reading import (
    _EMAIL_CHANNEL,
    _FILLER,
    _ONE_OFF,
    _PUSH_CHANNEL,
    _RECURRING,
    _UNKNOWN_EVERY,
    _lower,
    _not_english,
    _read_schedule,
    _Reading,
)
from app.instructions.schemas import (
    Channel,
    CronTriggerIn,
    DraftOut,
    InstructionCreate,
    IntervalTriggerIn,
    SourceKind,
    WatchTriggerIn,
)
from app.instructions.triggers import describe

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.runtime import Runtime
    from app.users.models import User

__all__ = [
    "PARSER_NAME", "DraftIntervalTooShort", "DraftNotUnderstood", "DraftWatchNotAvailable",
    "draft", "draft_json_schema", "parse", "propose",
]

log = logging.getLogger(__name__)

# --- What to read, where to deliver, and the words of the proposal ----------------------------

_GMAIL_WORDS = re.compile(
    r"\b(?:e-?mails?|mails?|inbox|sent|messages?|gmail|unread|replies|threads?)\b"
)
_DRIVE_WORDS = re.compile(
    r"\b(?:docs?|documents?|drive|files?|sheets?|spreadsheets?|notes?|slides|folders?|pdfs?)\b"
)
_EVERYTHING = re.compile(
    r"\beverything\b(?!\s+(?:new|that(?:'s|\s+is|\s+was)?\s+new))|\ball\s+(?:of\s+)?(?:my\s+|the\s+)?"
    r"(?:mail|e-?mails|messages|documents|docs|files)\b|\bfull\s+(?:summary|digest|report|overview)"
    r"\b|\beven\s+(?:if|when)\s+nothing(?:\s+is)?\s+new\b"
)
_SENDER = re.compile(r"\bfrom\s+(?P<who>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)")
_TITLE_STOP = _FILLER | frozenset(
    "summarize summarise summary summaries digest brief briefing report update updates "
    "overview list check look read go through happened happening changed change changes "
    "arrived came got get received receive sent mail mails email emails e-mail inbox message "
    "messages gmail unread replies thread threads docs doc document documents drive file files "
    "sheet sheets spreadsheet spreadsheets note notes slides folder folders pdf pdfs "
    "everything anything something things thing whats what's items item write make keep "
    "did does do done last next over coming upcoming week day today yesterday tomorrow full "
    "stuff".split()
)
_DAY_NAMES = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())


def _topic(leftover: str, sources: list[SourceKind], sentence: str) -> str:
    noun = "digest" if len(sources) > 1 else {"gmail": "mail", "drive": "documents"}[sources[0]]
    if sender := _SENDER.search(leftover):
        return f"{noun} from {sender['who']}"
    # A word the user capitalized past the sentence's start keeps it: "Anna mail".
    named = {w.lower(): w for w in re.findall(r"(?<=\s)[A-Z][A-Za-z0-9-]+", sentence)}
    words: list[str] = []
    for raw in re.findall(r"[a-z][a-z'-]+", leftover):
        word = re.sub(r"'s$|'$", "", raw)
        word = word.capitalize() if word in _DAY_NAMES else named.get(word, word)
        if len(word) >= 3 and word.lower() not in _TITLE_STOP and word not in words:
            words.append(word)
        if len(words) == 2:
            break
    return " ".join([*words, noun])


def _explain(when: str, timezone: str, data: InstructionCreate, note: str = "") -> str:
    reads = _and([{"gmail": "Gmail", "drive": "Drive"}[s] for s in data.sources])
    delivers = _and([{"in_app": "in the app", "email": "by email", "push": "by push",
                      "webhook": "by webhook"}[c] for c in data.channels])
    scope = "only what is new" if data.only_new else "everything, even when nothing is new"
    zone = f" ({timezone})" if isinstance(data.trigger, CronTriggerIn) else ""
    extra = f" ({note})" if note else ""
    return (f"Understood: {when}{zone}{extra}; reads {reads}; delivers {delivers}; "
            f"reports {scope}.")


def _explain_watch(when: str, data: InstructionCreate) -> str:
    assert isinstance(data.trigger, WatchTriggerIn)
    delivers = _and([{"in_app": "in the app", "email": "by email", "push": "by push",
                      "webhook": "by webhook"}[c] for c in data.channels])
    return (f"Understood: {when}; one run for each new message that matches the Gmail query "
            f"{data.trigger.gmail_query}; delivers {delivers}. Saving it needs a connected "
            "Google account that allows reading Gmail.")


def _watch_draft(
    watch: _WatchPlan, sentence: str, channels: list[Channel], only_new: bool
) -> DraftOut:
    data = InstructionCreate(
        title=watch.title[:200], text=_clean(sentence), trigger=watch.trigger, sources=["gmail"],
        channels=channels, thinking_level="medium", max_tool_calls=None, only_new=only_new,
    )
    return DraftOut(
        instruction=data, schedule=describe(watch.trigger.model_dump(exclude_none=True)),
        explanation=_explain_watch(watch.when, data), drafted_by=PARSER_NAME,
    )


def _clean(text: str) -> str:
    text = " ".join(text.split())
    text = text[:1].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def parse(text: str, *, timezone: str) -> DraftOut:
    """The deterministic reading of a sentence; raises the Draft* errors when it cannot."""
    sentence = " ".join(text.split())
    if not re.search(r"[^\W\d_]{2}", sentence):
        raise _not_understood(f"{_quote(sentence)}: it has no words")
    reading = _Reading(sentence, _lower(sentence))

    email = bool(reading.take(_EMAIL_CHANNEL))
    push = bool(reading.take(_PUSH_CHANNEL))
    channels: list[Channel] = ["in_app"]
    if email:
        channels.append("email")
    if push:
        channels.append("push")
    gmail = bool(_GMAIL_WORDS.search(reading.rest))
    drive = bool(_DRIVE_WORDS.search(reading.rest))
    sources: list[SourceKind] = ["gmail", "drive"]
    if gmail != drive:
        sources = ["gmail"] if gmail else ["drive"]
    only_new = not _EVERYTHING.search(reading.low)

    one_off = _ONE_OFF.search(reading.low)
    recurring = _RECURRING.search(reading.low)
    schedule = _read_schedule(reading)
    if not schedule.found():
        try:
            watch = _watch_plan(reading)
            if watch:
                return _watch_draft(watch, sentence, channels, only_new)
        except ValidationError as exc:  # a query the trigger refuses (too long): never a 500
            raise _not_understood(f"the mail to watch for in {_quote(sentence)}") from exc
        if unknown := _UNKNOWN_EVERY.search(reading.rest):
            raise _not_understood(f"{_quote(unknown[0])} as a schedule")
        if _not_english(reading.low):
            raise _not_understood(
                f"when to run {_quote(sentence)}: only English sentences are read without a "
                "model; say how often or at what time in English"
            )
        raise _not_understood(
            f"when to run {_quote(sentence)}: say how often or at what time"
        )
    if one_off and not recurring:
        raise _not_understood(
            f"{_quote(one_off[0])} as a repeating schedule: instructions run again and again, "
            "not once"
        )
    timezone = schedule.timezone or timezone  # a zone the sentence names wins
    try:
        plan = (_interval_plan if schedule.interval else _cron_plan)(schedule, timezone)
    except ValidationError as exc:  # a reading the trigger refuses: say so, never a 500
        raise _not_understood(f"the schedule in {_quote(sentence)}") from exc

    leftover = reading.leftover()
    task_words = [w for w in re.findall(r"[a-z][a-z'-]+", leftover) if w not in _FILLER]
    if not task_words:
        raise _not_understood(
            f"what to do in {_quote(sentence)}: it has a schedule ({plan.when}) but no task"
        )

    topic = _topic(leftover, sources, sentence)
    head = f"{plan.title_head} " if plan.title_head else ""
    title = f"{head}{topic} {plan.title_tail}".strip()
    title = title[:1].upper() + title[1:]
    data = InstructionCreate(
        title=title[:200], text=_clean(sentence), trigger=plan.trigger, sources=sources,
        channels=channels, thinking_level="medium", max_tool_calls=None, only_new=only_new,
    )
    return DraftOut(
        instruction=data,
        schedule=describe(plan.trigger.model_dump()),
        explanation=_explain(plan.when, timezone, data, plan.note),
        drafted_by=PARSER_NAME,
    )


# --- The seam for a real model ----------------------------------------------------------------


class ModelTrigger(BaseModel):
    type: Literal["cron", "interval", "watch"]
    cron: str | None = Field(None, description="Crontab, 5 fields; weekdays from Sunday = 0.")
    timezone: str | None = Field(
        None, description="For cron: the IANA zone the sentence names, if it names one."
    )
    seconds: int | None = Field(None, description="For an interval: seconds between runs.")
    gmail_query: str | None = Field(None, description="For a watch on mail: a Gmail query.")
    drive_folder: str | None = Field(None, description="For a watch on Drive: a folder name.")


class ModelDraft(BaseModel):
    """What the model answers: a proposed instruction, or why the sentence cannot be read."""

    understood: bool
    reason: str | None = Field(None, description="When not understood: what could not be read.")
    title: str = Field("", description='Short, e.g. "Weekday team mail at 08:00".')
    text: str = Field("", description="The user's sentence, cleaned up.")
    trigger: ModelTrigger | None = None
    sources: list[SourceKind] = Field(default=["gmail", "drive"])
    channels: list[Channel] = Field(default=["in_app"])
    only_new: bool = True


def _inline(node: object, defs: dict[str, object]) -> object:
    if isinstance(node, dict):
        if isinstance(ref := node.get("$ref"), str):
            return _inline(defs[ref.rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def draft_json_schema() -> dict[str, object]:
    """The response schema of the drafting turn, self-contained (no `$ref`)."""
    schema = ModelDraft.model_json_schema()
    inlined = _inline(schema, schema.get("$defs", {}))
    assert isinstance(inlined, dict)
    return inlined


async def draft(
    *, text: str, timezone: str, llm: LLM | None = None,
    on_usage: Callable[[Usage], Awaitable[None]] | None = None,
) -> DraftOut:
    """A proposed instruction for one sentence: the model's if it has a valid one, else the
    parser's (or the parser's refusal). `on_usage` gets the model turn's usage as soon as
    it is answered, whatever becomes of the answer (its tokens are spent)."""
    if llm is None or llm.name == OFFLINE_MODEL_NAME:
        return parse(text, timezone=timezone)
    request = TurnRequest(
        model=llm.name, system_instruction=draft_system_instruction(timezone), input=text,
        tools=[], thinking_level="low", response_schema=draft_json_schema(),
    )
    try:
        response = await llm.turn(request)
        if on_usage is not None:
            await on_usage(response.usage)
        answer = ModelDraft.model_validate_json(response.text or "")
    except (LLMError, ValidationError) as exc:
        if isinstance(exc, IncompleteAnswer) and on_usage is not None:
            await on_usage(exc.usage)  # cut off, so not used, but billed
        log.warning("drafting with %s failed, using the parser: %s", llm.name, exc)
        return parse(text, timezone=timezone)
    if answer.understood and answer.trigger is not None:
        if answer.trigger.type == "watch":
            return _model_watch(answer, text, timezone, llm.name)
        if answer.trigger.type == "interval" and 0 < (answer.trigger.seconds or 0) < 60:
            raise DraftIntervalTooShort(
                f"Every {answer.trigger.seconds} seconds is too often: instructions run at most "
                'once a minute. Try "every minute" or "every 5 minutes".'
            )
        # The zone the sentence names, else the user's; one that is not an IANA name makes
        # the proposal invalid (the parser's instead).
        zone = answer.trigger.timezone or timezone
        try:
            trigger: CronTriggerIn | IntervalTriggerIn = (
                CronTriggerIn(type="cron", cron=answer.trigger.cron or "", timezone=zone)
                if answer.trigger.type == "cron"
                else IntervalTriggerIn(type="interval", seconds=answer.trigger.seconds or 0)
            )
            data = InstructionCreate(
                title=answer.title, text=answer.text or _clean(text), trigger=trigger,
                sources=answer.sources, channels=answer.channels, max_tool_calls=None,
                only_new=answer.only_new,
            )
        except ValidationError as exc:
            log.warning("%s proposed an invalid instruction, using the parser: %s",
                        llm.name, exc)
        else:
            schedule = describe(trigger.model_dump())
            when = schedule.removesuffix(f" ({zone})")
            return DraftOut(
                instruction=data, schedule=schedule,
                explanation=_explain(when[:1].lower() + when[1:], zone, data),
                drafted_by=llm.name,
            )
    return parse(text, timezone=timezone)


def _model_watch(answer: ModelDraft, text: str, timezone: str, model: str) -> DraftOut:
    """The model's watch: proposed on its Gmail query; a Drive folder, which it can only
    name, is refused with how to give its id; anything short of that, the parser's."""
    assert answer.trigger is not None
    if answer.trigger.gmail_query:
        try:
            trigger = WatchTriggerIn(type="watch", gmail_query=answer.trigger.gmail_query)
            sources = answer.sources if "gmail" in answer.sources else ["gmail"]
            data = InstructionCreate(
                title=answer.title, text=answer.text or _clean(text), trigger=trigger,
                sources=sources, channels=answer.channels, max_tool_calls=None,
                only_new=answer.only_new,
            )
        except ValidationError as exc:
            log.warning("%s proposed an invalid watch, using the parser: %s", model, exc)
        else:
            return DraftOut(
                instruction=data, schedule=describe(trigger.model_dump(exclude_none=True)),
                explanation=_explain_watch("whenever matching mail arrives", data),
                drafted_by=model,
            )
    elif answer.trigger.drive_folder:
        folder = " ".join(answer.trigger.drive_folder.split())[:100]
        raise DraftWatchNotAvailable(
            f"Understood {_quote(answer.text or text, 120)} (Drive folder: '{folder}'): "
            f"{_FOLDER_ID_HOW}tell me what changed in the folder '{folder}'\"."
        )
    return parse(text, timezone=timezone)


async def propose(*, text: str, user: User, session: AsyncSession, runtime: Runtime) -> DraftOut:
    """Draft with the process's model (the parser without a Gemini key), as the API and the
    dashboard both do: refused at the user's daily cost cap, the turn's tokens recorded.

    Ends the session's transaction before the model turn, which may take a while.
    """
    from app.core.db import commit, transaction
    from app.runs import costs

    settings = runtime.settings
    key = settings.gemini_api_key
    if key is None or not key.get_secret_value():
        return parse(text, timezone=user.timezone)
    llm = runtime.model()  # the process's one client, not one per request
    await costs.ensure_under_cap(
        session=session, user=user, model=llm.name, prices=settings.gemini_prices
    )
    await commit(session)

    async def record(usage: Usage) -> None:  # in its own transaction: a 4xx keeps it too
        async with transaction(runtime.sessionmaker) as own:
            await costs.record_model_call(
                session=own, user_id=user.id, purpose="draft", model=llm.name, usage=usage,
                prices=settings.gemini_prices,
            )

    return await draft(text=text, timezone=user.timezone, llm=llm, on_usage=record)
