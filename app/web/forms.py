"""The instruction editor's form: to and from the instruction schemas, with readable errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from starlette.datastructures import FormData

from app.instructions import triggers
from app.instructions.models import Instruction
from app.instructions.schemas import InstructionCreate, Trigger

CHANNEL_LABELS = {"in_app": "In the app", "email": "Email", "push": "Web push",
                  "webhook": "Webhooks"}
SOURCE_LABELS = {"gmail": "Mail (Gmail)", "drive": "Documents (Drive)"}
THINKING_LEVELS = ("minimal", "low", "medium", "high")
_TRIGGER: TypeAdapter[Any] = TypeAdapter(Trigger)


@dataclass
class EditorValues:
    title: str = ""
    text: str = ""
    trigger_type: str = "cron"
    cron: str = "0 8 * * 1-5"
    timezone: str = "UTC"
    interval_minutes: str = "60"
    gmail_query: str = ""
    drive_folder_id: str = ""
    sources: list[str] = field(default_factory=lambda: ["gmail", "drive"])
    channels: list[str] = field(default_factory=lambda: ["in_app"])
    thinking_level: str = "medium"
    max_tool_calls: str = ""
    only_new: bool = True

    @classmethod
    def of(cls, data: InstructionCreate | Instruction, timezone: str) -> EditorValues:
        if isinstance(data, Instruction):
            trigger = data.trigger
            sources = list(data.sources.get("kinds", []))
            channels = list(data.channels.get("kinds", []))
            max_calls = str(data.max_tool_calls)
        else:
            trigger = data.trigger.model_dump()
            sources, channels = list(data.sources), list(data.channels)
            max_calls = "" if data.max_tool_calls is None else str(data.max_tool_calls)
        values = cls(title=data.title, text=data.text, sources=sources, channels=channels,
                     thinking_level=data.thinking_level, max_tool_calls=max_calls,
                     only_new=data.only_new, timezone=timezone)
        values.trigger_type = trigger["type"]
        if trigger["type"] == "cron":
            values.cron = trigger["cron"]
            values.timezone = trigger.get("timezone") or timezone
        elif trigger["type"] == "interval":
            values.interval_minutes = minutes_text(int(trigger["seconds"]))
        elif trigger["type"] == "watch":
            values.gmail_query = trigger.get("gmail_query") or ""
            values.drive_folder_id = trigger.get("drive_folder_id") or ""
        return values

    @classmethod
    def from_form(cls, form: FormData, timezone: str) -> EditorValues:
        def text(name: str, default: str = "") -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else default

        return cls(
            title=text("title"), text=text("text"), trigger_type=text("trigger_type", "cron"),
            cron=text("cron"), timezone=text("timezone") or timezone,
            interval_minutes=text("interval_minutes"), gmail_query=text("gmail_query"),
            drive_folder_id=text("drive_folder_id"),
            sources=[v for v in form.getlist("sources") if isinstance(v, str)],
            channels=[v for v in form.getlist("channels") if isinstance(v, str)],
            thinking_level=text("thinking_level", "medium"),
            max_tool_calls=text("max_tool_calls"), only_new=form.get("only_new") == "on",
        )

    def trigger(self) -> dict[str, Any]:
        if self.trigger_type == "interval":
            try:
                seconds = round(float(self.interval_minutes) * 60)
            except (ValueError, OverflowError) as exc:  # not a number, nan, inf or "1e999"
                # As a ValidationError, which every caller shows as the form's other errors.
                raise ValidationError.from_exception_data("EditorValues", [InitErrorDetails(
                    type=PydanticCustomError("minutes", "interval must be a number of minutes"),
                    loc=("interval_minutes",), input=self.interval_minutes,
                )]) from exc
            return {"type": "interval", "seconds": seconds}
        if self.trigger_type == "watch":
            watched = {"gmail_query": self.gmail_query, "drive_folder_id": self.drive_folder_id}
            return {"type": "watch", **{k: v for k, v in watched.items() if v}}
        if self.trigger_type == "cron":
            return {"type": "cron", "cron": self.cron, "timezone": self.timezone}
        return {"type": self.trigger_type}  # refused, naming the kinds there are

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "title": self.title, "text": self.text, "trigger": self.trigger(),
            "sources": self.sources, "channels": self.channels,
            "thinking_level": self.thinking_level, "only_new": self.only_new,
        }
        if self.max_tool_calls:
            # The API takes a JSON number; the form's text is one only if it is digits
            # (anything else goes through as text and is refused, naming the field).
            calls = self.max_tool_calls.strip()
            body["max_tool_calls"] = int(calls) if calls.isascii() and calls.isdigit() else calls
        return body


# The dashboard forms' fields by the name the schemas give them, as their labels say them.
FIELD_LABELS = {
    "title": "Title", "text": "Instruction", "cron": "Cron expression",
    "timezone": "Time zone", "interval": "Minutes between runs",
    "interval_minutes": "Minutes between runs", "watch": "Gmail search or Drive folder id",
    "gmail_query": "Gmail search", "drive_folder_id": "Drive folder id", "trigger": "When",
    "sources": "Reads", "channels": "Tells you", "thinking_level": "Thinking",
    "max_tool_calls": "Action budget", "only_new": "Only what is new",
    "url": "Endpoint URL", "event_types": "Events",
}
_KINDS = ("cron", "interval", "watch")


def errors_of(exc: ValidationError) -> list[str]:
    """One line per problem, naming the field as the form labels it."""
    out = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
        if loc[:1] == ["trigger"] and len(loc) > 1:
            loc = loc[1:]  # the trigger's fields are the form's own
        if len(loc) > 1 and loc[0] in _KINDS:
            loc = loc[1:]  # the kind of trigger, as the union names its member
        where = loc[-1] if loc else "form"
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if where == "seconds":
            # The API's interval is in seconds, the form's in minutes: say it in those.
            where, message = "interval", _in_minutes(error, message)
        elif error.get("type") == "string_too_short" and _limit(error, "min_length") == 1:
            message = "must not be empty"
        elif error.get("type") == "too_short" and _limit(error, "min_length") == 1:
            message = "tick at least one"
        out.append(f"{FIELD_LABELS.get(where, where)}: {message}")
    return out


def _limit(error: Any, name: str) -> object:
    return (error.get("ctx") or {}).get(name)


_BOUNDS = {"greater_than_equal": ("ge", "at least"), "less_than_equal": ("le", "at most")}


def _in_minutes(error: Any, message: str) -> str:
    bound = _BOUNDS.get(str(error.get("type")))
    limit = (error.get("ctx") or {}).get(bound[0]) if bound else None
    if bound is None or not isinstance(limit, int | float):
        return message
    minutes = minutes_text(int(limit))
    return f"must be {bound[1]} {minutes} minute{'' if minutes == '1' else 's'}"


def minutes_text(seconds: int) -> str:
    """An interval in the editor's minutes, exact (90 s is "1.5"): saved unchanged, it is
    the same interval, not one rounded to whole minutes and rescheduled."""
    return f"{seconds / 60:.4f}".rstrip("0").rstrip(".")


def schedule_preview(
    spec: dict[str, Any], now: datetime, count: int = 3, *, anchor: datetime | None = None
) -> tuple[str, list[datetime]]:
    """The trigger in words and its next fire times; raises ValidationError when invalid.
    An interval counts from `anchor` (an instruction's creation, as its schedule does),
    else from now (a new instruction)."""
    trigger = _TRIGGER.validate_python(spec).model_dump()
    fires: list[datetime] = []
    after = now
    for _ in range(count):
        fire = triggers.next_after(trigger, after, anchor=anchor or now)
        if fire is None:
            break
        fires.append(fire)
        after = fire
    return triggers.describe(trigger), fires
