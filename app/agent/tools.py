"""The model's tools: read-only searches and reads over the run's sources, and the two
that reach the user (`ask_user`, `notify_now`).

A tool never raises to the model: a bad argument, an unknown id or a source
that cannot answer becomes a result text the model can act on. What a tool
returns is untrusted data and goes back fenced, bounded in length.

The user-facing tools have no recipient: whatever the model passes, they reach
only the user. Their text is model output, kept as bounded plain text.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from app.agent.aliases import Aliases
from app.agent.digest import RefKind, SourceRef
from app.agent.llm import FunctionCall, FunctionDeclaration, MediaPart
from app.agent.prompt import SNIPPET_CHARS, clip, fence
from app.sources.base import (
    ContentUnavailable,
    Delta,
    Document,
    FileCard,
    ItemNotFound,
    MailCard,
    Message,
    Source,
    SourceError,
)

SEARCH_LIMIT = 10
MESSAGE_BODY_CHARS = 6_000
THREAD_BODY_CHARS = 12_000  # shared by the messages of one thread
DOCUMENT_CHARS = 8_000
MAX_RECIPIENTS = 20
QUESTION_CHARS = 500
CHOICE_CHARS = 100
MAX_CHOICES = 6
ALERT_TITLE_CHARS = 120
ALERT_MESSAGE_CHARS = 1_000
# The most items one alert may name in "about", and the longest id accepted there.
MAX_ALERT_ITEMS = 10
ALERT_ITEM_CHARS = 200
MEDIA_BYTES = 5 * 1024 * 1024  # larger images and PDFs are described, not shown
MEDIA_TYPES = frozenset(
    {"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp"}
)
FILENAME_CHARS = 255

T = TypeVar("T")
C = TypeVar("C", MailCard, FileCard)
SeenKind = Literal["message", "thread", "file"]


def _object(name: str, description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": description}},
        "required": [name],
    }


MAIL_TOOLS = [
    FunctionDeclaration(
        name="search_mail",
        description=f"Search all mail (sender, subject, body); up to {SEARCH_LIMIT} cards, "
        "newest first.",
        parameters=_object("query", "Words to look for."),
    ),
    FunctionDeclaration(
        name="read_message",
        description="Read one message in full.",
        parameters=_object("id", "A message id (m1)."),
    ),
    FunctionDeclaration(
        name="read_thread",
        description="Read a whole thread, oldest first.",
        parameters=_object("id", "A thread id (t1)."),
    ),
    FunctionDeclaration(
        name="read_attachment",
        description="Look at an attachment read_message lists: PDFs and PNG, JPEG, GIF or WebP "
        f"images up to {MEDIA_BYTES // (1024 * 1024)} MB.",
        parameters={
            "type": "object",
            "properties": {
                "message_id": {"type": "string", "description": "A message id (m1)."},
                "filename": {"type": "string", "description": "As read_message lists it."},
            },
            "required": ["message_id", "filename"],
        },
    ),
]
FILE_TOOLS = [
    FunctionDeclaration(
        name="search_files",
        description=f"Search documents by name and text; up to {SEARCH_LIMIT} cards, newest "
        "first.",
        parameters=_object("query", "Words to look for."),
    ),
    FunctionDeclaration(
        name="read_file",
        description="Read a document; a PDF or an image is shown to you as it is.",
        parameters=_object("id", "A file id (f1)."),
    ),
]
# The runner intercepts these two before `ToolBox.execute`: one pauses the run, the
# other writes through the executor. Neither has a recipient parameter.
ASK_USER = "ask_user"
NOTIFY_NOW = "notify_now"
USER_TOOLS = [
    FunctionDeclaration(
        name=ASK_USER,
        description="Ask the user one short follow-up question when the instruction is "
        "ambiguous and the answer changes what you report. The run pauses until the user "
        "answers or the question expires (then you are told there was no answer). Ask only "
        "when you cannot go on without it; other tool calls of the same turn are still run.",
        parameters={
            "type": "object",
            "properties": {
                "question": {
                    "type": "string",
                    "description": f"The question, plain text, at most {QUESTION_CHARS} "
                    "characters.",
                },
                "choices": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": f"Optional answers to pick from, at most {MAX_CHOICES}, "
                    f"each at most {CHOICE_CHARS} characters.",
                },
            },
            "required": ["question"],
        },
    ),
    FunctionDeclaration(
        name=NOTIFY_NOW,
        description="Alert the user at once, before the digest, about something urgent the "
        "instruction asks to be told about immediately. It reaches only the user.",
        parameters={
            "type": "object",
            "properties": {
                "title": {
                    "type": "string",
                    "description": f"A short title, at most {ALERT_TITLE_CHARS} characters.",
                },
                "message": {
                    "type": "string",
                    "description": f"The alert, plain text, at most {ALERT_MESSAGE_CHARS} "
                    "characters.",
                },
                "about": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The ids of the messages and files the alert is about "
                    f"(m1, f1), at most {MAX_ALERT_ITEMS}. The user is alerted about an item "
                    "once: an alert whose items were all alerted about before, by this "
                    "instruction, is not sent again.",
                },
            },
            "required": ["title", "message"],
        },
    ),
]


def tool_declarations(
    *, read_mail: bool, read_files: bool, user_tools: bool = False
) -> list[FunctionDeclaration]:
    return [
        *(MAIL_TOOLS if read_mail else []),
        *(FILE_TOOLS if read_files else []),
        *(USER_TOOLS if user_tools else []),
    ]


# C0 controls but tab and newline, DEL, and the bidi overrides that can disguise text.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def plain_text(value: str, limit: int) -> str:
    """Model text made safe to store and show as plain text: no control characters, bounded.

    Markup is kept as the characters it is: whatever shows it escapes it.
    """
    text = _UNSAFE.sub("", value.replace("\r\n", "\n").replace("\r", "\n")).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class AskedQuestion:
    """An `ask_user` call, its text checked and bounded."""

    call_id: str
    text: str
    choices: list[str]


@dataclass(frozen=True)
class Alert:
    """A `notify_now` call, its text checked and bounded."""

    call_id: str
    title: str
    message: str
    # The ids the model named in "about", as it wrote them (aliases or real ids).
    about: tuple[str, ...] = ()
    # Those items as the app keys them ("<account>:<kind>:<id>"), set by the runner once
    # it has checked that the run saw each one.
    items: tuple[str, ...] = ()


def parse_question(call: FunctionCall) -> AskedQuestion:
    """Raises `BadCall` with a message for the model when the arguments are not usable."""
    text = plain_text(_string(call.arguments, "question"), QUESTION_CHARS)
    raw = call.arguments.get("choices")
    if raw is None:
        raw = []
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise BadCall(f'"choices" must be a list of strings; got {raw!r}.')
    choices = [plain_text(c, CHOICE_CHARS) for c in raw]
    choices = list(dict.fromkeys(c for c in choices if c))[:MAX_CHOICES]
    if not text:
        raise BadCall('this tool needs {"question": "<text>"}.')
    return AskedQuestion(call.call_id, text, choices)


def parse_alert(call: FunctionCall) -> Alert:
    """Raises `BadCall` with a message for the model when the arguments are not usable."""
    title = plain_text(_string(call.arguments, "title"), ALERT_TITLE_CHARS)
    message = plain_text(_string(call.arguments, "message"), ALERT_MESSAGE_CHARS)
    if not title or not message:
        raise BadCall('this tool needs {"title": "<text>", "message": "<text>"}.')
    raw = call.arguments.get("about")
    if raw is None:
        raw = []
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise BadCall(f'"about" must be a list of ids (m1, f1); got {raw!r}.')
    about = tuple(dict.fromkeys(v.strip() for v in raw if v.strip()))
    if len(about) > MAX_ALERT_ITEMS:
        raise BadCall(f'"about" names {len(about)} items; at most {MAX_ALERT_ITEMS}.')
    if any(len(v) > ALERT_ITEM_CHARS for v in about):
        raise BadCall('"about" holds an id that is too long; use the ids shown (m1, f1).')
    return Alert(call.call_id, title, message, about)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[… truncated: {len(text) - limit} more characters]"


def _mail_card(card: MailCard, aliases: Aliases) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": aliases.alias("message", card.id),
        "thread_id": aliases.alias("thread", card.thread_id),
        "sender": clip(card.sender),
        "subject": clip(card.subject),
        "date": card.date.isoformat(),
        "snippet": truncate(card.snippet, SNIPPET_CHARS),
    }
    if card.has_attachments:
        record["attachments"] = True
    return record


def _file_card(card: FileCard, aliases: Aliases) -> dict[str, Any]:
    record = card.model_dump(mode="json", exclude_none=True)
    record["id"] = aliases.alias("file", card.id)
    for name in ("name", "mime_type", "modified_by"):
        if name in record:
            record[name] = clip(record[name])
    record["snippet"] = truncate(card.snippet, SNIPPET_CHARS)
    return record


def _message(message: Message, body_chars: int, aliases: Aliases) -> dict[str, Any]:
    return {
        "id": aliases.alias("message", message.id),
        "thread_id": aliases.alias("thread", message.thread_id),
        "sender": clip(message.sender),
        "to": [clip(a) for a in message.to[:MAX_RECIPIENTS]],
        "cc": [clip(a) for a in message.cc[:MAX_RECIPIENTS]],
        "subject": clip(message.subject),
        "date": message.date.isoformat(),
        # Whole up to the longest name read_attachment takes back.
        "attachments": [clip(a.filename, FILENAME_CHARS) for a in message.attachments],
        "body": truncate(message.body, body_chars),
    }


def _document(doc: Document, aliases: Aliases) -> dict[str, Any]:
    return {
        "id": aliases.alias("file", doc.id),
        "name": clip(doc.name),
        "mime_type": clip(doc.mime_type),
        "modified_time": doc.modified_time.isoformat(),
        "modified_by": None if doc.modified_by is None else clip(doc.modified_by),
        "text": truncate(doc.text, DOCUMENT_CHARS),
    }


@dataclass(frozen=True)
class ToolResult:
    text: str
    error: str | None = None
    parts: tuple[MediaPart, ...] = ()  # images or PDFs for the model to look at


class BadCall(Exception):
    """The call cannot be run as asked; the message is for the model."""


class ToolBox:
    """Runs the model's tool calls and remembers every item the run has shown or read.

    That memory routes a later read to the right account and decides which
    cited ids are real when the digest is resolved.
    """

    def __init__(
        self,
        sources: Mapping[str, Source],
        *,
        read_mail: bool,
        read_files: bool,
        user_tools: bool = False,
    ):
        self.sources = dict(sources)
        self.declarations = tool_declarations(
            read_mail=read_mail, read_files=read_files, user_tools=user_tools
        )
        self._seen: dict[tuple[SeenKind, str], tuple[str, str]] = {}  # → (account, title)
        self.aliases = Aliases()

    def alias(self, kind: str, item_id: str) -> str:
        """The short id the model sees for an item (given on first sight)."""
        return self.aliases.alias(kind, item_id)

    def export_seen(self) -> list[list[str]]:
        """The seen index as JSON: [kind, id, account, title, alias] per item, for a paused
        run."""
        return [[kind, item_id, account, title, self.aliases.alias(kind, item_id)]
                for (kind, item_id), (account, title) in self._seen.items()]

    def restore_seen(self, seen: list[list[str]]) -> None:
        """Take back what `export_seen` gave; entries of accounts no longer there are dropped.

        Entries without an alias (stored before aliases) get a new one."""
        for entry in seen:
            kind, item_id, account, title = entry[:4]
            if account in self.sources and kind in ("message", "thread", "file"):
                if len(entry) > 4:
                    self.aliases.keep(kind, item_id, entry[4])
                self._see(kind, item_id, account, title)  # type: ignore[arg-type]

    def _see(self, kind: SeenKind, item_id: str, account: str, title: str) -> None:
        # The title becomes a digest's link text: cut as the prompt's cards are.
        self._seen.setdefault((kind, item_id), (account, clip(title)))

    def _see_mail(self, account: str, mail: MailCard | Message) -> None:
        self._see("message", mail.id, account, mail.subject)
        self._see("thread", mail.thread_id, account, mail.subject)

    def show_delta(self, account: str, delta: Delta) -> None:
        """Remember the cards that go into the first prompt."""
        for card in delta.messages:
            self._see_mail(account, card)
        for file in delta.files:
            self._see("file", file.id, account, file.name)

    def resolve(self, kind: RefKind, item_id: str) -> SourceRef | None:
        """The app's reference to an item the run saw (by alias or real id); None for an
        id it never saw."""
        item_id = self.aliases.real(kind, item_id)
        seen = self._seen.get((kind, item_id))
        if seen is None:
            return None
        account, title = seen
        source = self.sources[account]
        link = source.message_link(item_id) if kind == "message" else source.file_link(item_id)
        return SourceRef(kind=kind, id=item_id, account=account, title=title, link=link)

    async def execute(self, call: FunctionCall) -> ToolResult:
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[str | ToolResult]]] = {
            "search_mail": self._search_mail,
            "read_message": self._read_message,
            "read_thread": self._read_thread,
            "read_attachment": self._read_attachment,
            "search_files": self._search_files,
            "read_file": self._read_file,
        }
        offered = [d.name for d in self.declarations]
        if call.name not in offered or call.name not in handlers:
            error = f"There is no tool named {call.name!r}. Available: {', '.join(offered)}."
            return ToolResult(f"Error: {error}", error)
        try:
            outcome = await handlers[call.name](call.arguments)
        except BadCall as exc:
            return ToolResult(f"Error: {exc}", str(exc))
        return outcome if isinstance(outcome, ToolResult) else ToolResult(outcome)

    # --- the tools ---

    async def _search_mail(self, arguments: dict[str, Any]) -> str:
        query = _string(arguments, "query")
        found, note = await self._search(
            lambda source: source.search_mail(query, limit=SEARCH_LIMIT), lambda c: c.date
        )
        for account, card in found:
            self._see_mail(account, card)
        body = fence("search_mail", [_mail_card(c, self.aliases) for _, c in found])
        return f"{len(found)} messages match {query!r}.\n{body}{note}"

    async def _search_files(self, arguments: dict[str, Any]) -> str:
        query = _string(arguments, "query")
        found, note = await self._search(
            lambda source: source.search_files(query, limit=SEARCH_LIMIT),
            lambda c: c.modified_time,
        )
        for account, card in found:
            self._see("file", card.id, account, card.name)
        body = fence("search_files", [_file_card(c, self.aliases) for _, c in found])
        return f"{len(found)} documents match {query!r}.\n{body}{note}"

    async def _read_message(self, arguments: dict[str, Any]) -> str:
        message_id = self.aliases.real("message", _string(arguments, "id"))
        account, message = await self._find(
            "message", message_id, lambda source: source.read_message(message_id)
        )
        self._see_mail(account, message)
        return fence("read_message", [_message(message, MESSAGE_BODY_CHARS, self.aliases)])

    async def _read_thread(self, arguments: dict[str, Any]) -> str:
        thread_id = self.aliases.real("thread", _string(arguments, "id"))
        account, thread = await self._find(
            "thread", thread_id, lambda source: source.read_thread(thread_id)
        )
        for message in thread.messages:
            self._see_mail(account, message)
        body_chars = THREAD_BODY_CHARS // max(1, len(thread.messages))
        records = [_message(m, body_chars, self.aliases) for m in thread.messages]
        alias = self.aliases.alias("thread", thread.id)
        header = f"Thread {alias!r}: {len(records)} messages, oldest first.\n"
        return header + fence("read_thread", records)

    async def _read_attachment(self, arguments: dict[str, Any]) -> ToolResult:
        shown_id = _string(arguments, "message_id")
        message_id = self.aliases.real("message", shown_id)
        filename = _filename(arguments)
        account, message = await self._find(
            "message", message_id, lambda source: source.read_message(message_id)
        )
        self._see_mail(account, message)
        alias = self.aliases.alias("message", message.id)
        listed = next((a for a in message.attachments if a.filename == filename), None)
        if listed is None:  # the names are the sender's words: data, fenced
            if not message.attachments:
                return _error(f"message {alias!r} has no attachments.", "no such attachment")
            return _error(
                f"message {alias!r} has no attachment of that name; use a filename from "
                "its attachments:\n" + fence("attachments", [
                    {"filename": clip(a.filename, FILENAME_CHARS),
                     "mime_type": media_type(a.mime_type), "size": a.size}
                    for a in message.attachments
                ]),
                "no such attachment",
            )
        item = {"message_id": alias, "filename": listed.filename}
        refused = _not_shown("attachment", "read_attachment", item,
                             media_type(listed.mime_type), listed.size)
        if refused is not None:
            return refused
        try:
            mime_type, data = await self.sources[account].read_attachment(message_id, filename)
        except SourceError as exc:
            return _error(
                "could not read the attachment:\n"
                + fence("read_attachment", [{**item, "error": str(exc)}]),
                "attachment not read",
            )
        return _media("attachment", "read_attachment", item, mime_type, data)

    async def _read_file(self, arguments: dict[str, Any]) -> str | ToolResult:
        file_id = self.aliases.real("file", _string(arguments, "id"))
        account, doc = await self._find("file", file_id, lambda source: source.read_file(file_id))
        self._see("file", doc.id, account, doc.name)
        if doc.mime_type.lower() not in MEDIA_TYPES:
            return fence("read_file", [_document(doc, self.aliases)])
        try:
            mime_type, data = await self.sources[account].read_file_bytes(doc.id)
        except ContentUnavailable as exc:  # the note says why, in place of the content
            return fence("read_file", [_document(doc.model_copy(update={"text": str(exc)}),
                                                 self.aliases)])
        except SourceError:  # the source gives no bytes: its text is all there is
            return fence("read_file", [_document(doc, self.aliases)])
        item = {"id": self.aliases.alias("file", doc.id), "name": clip(doc.name)}
        return _media("document", "read_file", item, mime_type, data)

    # --- routing ---

    async def _search(
        self, search: Callable[[Source], Awaitable[list[C]]], newest: Callable[[C], datetime]
    ) -> tuple[list[tuple[str, C]], str]:
        """Search every account, newest first; a note names the accounts that failed."""
        found: list[tuple[str, C]] = []
        failed: list[str] = []
        for account, source in self.sources.items():
            try:
                found += [(account, card) for card in await search(source)]
            except SourceError as exc:  # one account down must not hide the others
                failed.append(f"{account} ({exc})")
        if failed and len(failed) == len(self.sources):
            raise BadCall(f"the search failed: {'; '.join(failed)}")
        found.sort(key=lambda pair: newest(pair[1]), reverse=True)
        note = f"\n\nNot searched, the source could not answer: {'; '.join(failed)}."
        return found[:SEARCH_LIMIT], note if failed else ""

    async def _find(
        self, kind: SeenKind, item_id: str, fetch: Callable[[Source], Awaitable[T]]
    ) -> tuple[str, T]:
        """Fetch from the account the id was seen in, else from each account in turn."""
        known = self._seen.get((kind, item_id))
        order = sorted(self.sources, key=lambda key: known is None or key != known[0])
        failure: SourceError | None = None
        for account in order:
            try:
                return account, await fetch(self.sources[account])
            except ItemNotFound:
                continue
            except SourceError as exc:  # one account down must not hide the others
                failure = exc
        shown = self.aliases.get(kind, item_id) or item_id
        if failure is not None:
            raise BadCall(f"could not read {kind} {shown!r}: {failure}")
        hint = "a thread_id from a card" if kind == "thread" else "an id from a card or a search"
        raise BadCall(f"there is no {kind} with id {shown!r}; use {hint}.")


# An attachment's or a file's media (results of read_attachment and read_file): the app's
# words say what became of it, and the item (its name, its type, its size: all chosen by
# whoever sent or shared it) follows as one fenced record.


def _error(text: str, error: str) -> ToolResult:
    return ToolResult(f"Error: {text}", error)


def _described(text: str, label: str, item: dict[str, Any], mime: str, size: int) -> str:
    return f"{text}\n{fence(label, [{**item, 'mime_type': mime, 'size': size}])}"


def _not_shown(
    noun: str, label: str, item: dict[str, Any], mime: str, size: int
) -> ToolResult | None:
    """Why the item cannot be shown as media (its type, its size), or None if it can."""
    if mime not in MEDIA_TYPES:
        why = "cannot be shown: only PDFs and PNG, JPEG, GIF or WebP images can"
    elif size > MEDIA_BYTES:
        why = f"is too large to be shown; the limit is {MEDIA_BYTES} bytes"
    else:
        return None
    return ToolResult(_described(f"The {noun} below {why}.", label, item, mime, size))


def _media(
    noun: str, label: str, item: dict[str, Any], mime_type: str, data: bytes
) -> ToolResult:
    """A short text, the item fenced, and the media part; a text answer when it cannot be
    shown."""
    mime = media_type(mime_type)
    refused = _not_shown(noun, label, item, mime, len(data))
    if refused is not None:
        return refused
    kind = "PDF document" if mime == "application/pdf" else "image"
    text = _described(f"The {noun} below is shown to you as the {kind} attached to this "
                      "result.", label, item, mime, len(data))
    return ToolResult(text, parts=(MediaPart(mime_type=mime, data=data),))


# type/subtype with RFC 6838's restricted names (section 4.2), no parameters.
_MEDIA_TYPE = re.compile(
    r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
)


def media_type(value: str) -> str:
    """A MIME type as `type/subtype`, lower case; "unknown" for anything else (a mail's
    sender writes its attachments' types)."""
    value = value.strip().lower()
    return value if _MEDIA_TYPE.fullmatch(value) else "unknown"


def _filename(arguments: dict[str, Any]) -> str:
    """An attachment name as the model gave it: a plain name, never a path."""
    name = _string(arguments, "filename")
    if (
        len(name) > FILENAME_CHARS
        or name in (".", "..")
        or any(ch in name for ch in "/\\\x00")
        or _UNSAFE.search(name)
    ):
        raise BadCall(f"{name[:80]!r} is not an attachment name; use a name read_message lists.")
    return name


def _string(arguments: dict[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadCall(f'this tool needs {{"{name}": "<text>"}}; got {arguments!r}.')
    return value.strip()
