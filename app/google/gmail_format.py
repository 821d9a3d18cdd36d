"""Gmail's message resources turned into the source's cards and messages.

Everything here is pure: no calls. Bodies are untrusted; HTML becomes plain text
(scripts, styles and text hidden from the reader dropped, entities decoded, a link's
address kept after its text), never rendered.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from app.core.encoding import unbase64url
from app.sources.base import Attachment, MailCard, Message
from app.sources.text import (
    VOID,
    LinkKeepingExtractor,
    nested_too_deeply,
    snippet,
    tidy,
    visible_markup,
)
from app.sources.text import html_to_text as _readable_text

# Set on every email Pilotlight sends (app/delivery/render.py): the digests, alerts and
# questions that land in the user's own mailbox are its own words, not new mail.
PILOTLIGHT_HEADER = "X-Pilotlight-Notification"
METADATA_HEADERS = ["From", "To", "Cc", "Subject", "Date", PILOTLIGHT_HEADER]
# Labels of messages that did not arrive: drafts, and what is in spam or trash.
NOT_ARRIVED = frozenset({"DRAFT", "SPAM", "TRASH"})


# How mail clients mark the quoted mail in an HTML reply. Gmail: `div.gmail_quote`
# (newer: also `gmail_quote_container`) holding `div.gmail_attr` (the "On … wrote:" line)
# and `blockquote.gmail_quote`; Apple Mail and Thunderbird: `blockquote type="cite"`
# (Thunderbird's attribution in `div.moz-cite-prefix`); Yahoo: `div.yahoo_quoted`.
_QUOTE_CLASSES = ("gmail_quote", "gmail_attr", "gmail_extra", "moz-cite-prefix",
                  "yahoo_quoted")
# Outlook does not wrap the original: its header block (`div#divRplyFwdMsg`, after
# `div#appendonsend` and a rule; `#mail-editor-reference-message-container` on mobile)
# starts it, and everything after belongs to it. A re-quoted body prefixes ids with "x_".
_ORIGINAL_IDS = frozenset({"divrplyfwdmsg", "appendonsend",
                           "mail-editor-reference-message-container"})


class _UnquotedExtractor(LinkKeepingExtractor):
    """The text of an HTML reply without the mail it quotes: a blockquote or a client's
    quote container is dropped whole, and Outlook's original ends the text."""

    def __init__(self) -> None:
        super().__init__()
        self._quote_tag = ""
        self._quote_depth = 0  # open elements named `_quote_tag` inside the quote
        self._original = False

    @staticmethod
    def _marks_quote(tag: str, attrs: dict[str, str | None]) -> bool:
        if tag in VOID:  # no end tag: it never opens a quote that would hide the rest
            return False
        if tag == "blockquote":
            return True
        classes = (attrs.get("class") or "").lower().split()
        return any(c.startswith(_QUOTE_CLASSES) for c in classes)

    @staticmethod
    def _starts_original(attrs: dict[str, str | None]) -> bool:
        element_id = (attrs.get("id") or "").lower()
        while element_id.startswith("x_"):
            element_id = element_id[2:]
        return element_id in _ORIGINAL_IDS

    def _hidden(self) -> bool:
        return self._original or self._quote_depth > 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._original:
            return
        if self._quote_depth:
            if tag == self._quote_tag:
                self._quote_depth += 1
            return
        found = dict(attrs)
        if self._starts_original(found):
            self._original = True
        elif self._marks_quote(tag, found):
            self._quote_tag, self._quote_depth = tag, 1
        else:
            super().handle_starttag(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._hidden():
            return
        if self._starts_original(dict(attrs)):
            self._original = True
            return
        super().handle_startendtag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self._original:
            return
        if self._quote_depth:
            if tag == self._quote_tag:
                self._quote_depth -= 1
                if not self._quote_depth:
                    self._break(1)
            return
        super().handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if not self._hidden():
            super().handle_data(data)


def html_to_text(markup: str, *, without_quotes: bool = False) -> str:
    """Readable plain text from an HTML body; links as `text (address)`. With
    `without_quotes` (a reply), the mail it quotes is left out."""
    if not without_quotes:
        return _readable_text(markup)
    if nested_too_deeply(markup):
        return ""  # no reply text: its note must not answer a question
    parser = _UnquotedExtractor()
    try:
        parser.feed(visible_markup(markup))
        parser.close()
    except Exception:  # html.parser is lenient; a bad body must never break a read
        return ""  # the quote cannot be told from the reply: no text rather than both
    return parser.text()


# --------------------------------------------------------------------------- parts


def _headers(part: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in part.get("headers") or []:
        name = str(header.get("name", "")).lower()
        if name and name not in out:
            out[name] = " ".join(str(header.get("value", "")).split())
    return out


def _walk(part: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield part
    for sub in part.get("parts") or []:
        if isinstance(sub, dict):
            yield from _walk(sub)


def decode_data(data: str) -> bytes:
    """Gmail's base64url body data (padding optional)."""
    try:
        return unbase64url(data)
    except (binascii.Error, ValueError):
        return b""


def _charset(part: dict[str, Any]) -> str:
    content_type = _headers(part).get("content-type", "")
    match = re.search(r'charset="?([\w.:-]+)"?', content_type, re.I)
    return match.group(1) if match else "utf-8"


def _part_text(part: dict[str, Any]) -> str:
    raw = decode_data(str((part.get("body") or {}).get("data", "")))
    try:
        return raw.decode(_charset(part), "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def _is_attachment(part: dict[str, Any]) -> bool:
    return bool(part.get("filename")) or (
        "attachment" in _headers(part).get("content-disposition", "").lower()
    )


def body_text(payload: dict[str, Any], *, without_quotes: bool = False) -> str:
    """The message's text as its reader sees it: its first text/html part as text, else
    its first text/plain part.

    Gmail shows a message's HTML whenever it has one, so a text/plain alternative is
    text the reader never sees: whatever it says must not reach the model as the mail,
    not even when the HTML shows no text (images only).
    With `without_quotes` (the user's own reply, whose plain text marks the quote with
    ">" lines) the plain part comes first, and the HTML, without the mail the reply
    quotes, only when the plain part is missing or blank.
    """
    plain = html_part = None
    for part in _walk(payload):
        if _is_attachment(part):
            continue
        mime = str(part.get("mimeType", "")).lower()
        if mime == "text/plain" and plain is None:
            plain = part
        elif mime == "text/html" and html_part is None:
            html_part = part
    if not without_quotes:
        if html_part is not None:
            return html_to_text(_part_text(html_part))
        return tidy(_part_text(plain)) if plain is not None else ""
    text = tidy(_part_text(plain)) if plain is not None else ""
    if not text and html_part is not None:  # some mailers send an empty plain part
        return html_to_text(_part_text(html_part), without_quotes=True)
    return text


def attachment_parts(payload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each attachment's listed name and part, in message order."""
    count = 0
    for part in _walk(payload):
        if str(part.get("mimeType", "")).lower().startswith("multipart/"):
            continue
        if not _is_attachment(part):
            continue
        count += 1
        yield str(part.get("filename") or f"attachment-{count}"), part


def attachments(payload: dict[str, Any]) -> list[Attachment]:
    return [
        Attachment(
            filename=name, mime_type=str(part.get("mimeType") or "application/octet-stream"),
            size=int((part.get("body") or {}).get("size") or 0),
        )
        for name, part in attachment_parts(payload)
    ]


# --------------------------------------------------------------------------- messages


def internal_date(resource: dict[str, Any]) -> datetime:
    try:
        millis = int(resource.get("internalDate") or 0)
    except (TypeError, ValueError):
        millis = 0
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def _date(headers: dict[str, str], resource: dict[str, Any]) -> datetime:
    value = headers.get("date")
    if value:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return internal_date(resource)


def _addresses(value: str) -> list[str]:
    out = []
    for name, addr in getaddresses([value]):
        if addr:
            out.append(f"{name} <{addr}>" if name else addr)
    return out


def arrived(resource: dict[str, Any]) -> bool:
    """A message that arrived (or was sent to oneself), not a draft, spam or trash."""
    labels = set(resource.get("labelIds") or [])
    if labels & NOT_ARRIVED:
        return False
    return not ("SENT" in labels and "INBOX" not in labels)


def message_headers(resource: dict[str, Any]) -> dict[str, str]:
    """A message resource's top-level headers by lower-case name (the first of each)."""
    return _headers(resource.get("payload") or {})


def from_pilotlight(resource: dict[str, Any]) -> bool:
    """An email Pilotlight sent (a message in `metadata` or `full` format). Never new mail:
    a digest would report the last digest, and a watch would fire on its own digest for
    ever. A sender who forges the header only hides its own mail from the digest."""
    return PILOTLIGHT_HEADER.lower() in message_headers(resource)


def _sent(resource: dict[str, Any]) -> bool | None:
    """Whether the mailbox's owner sent the message: Gmail labels what they send SENT,
    whatever its From says (None: the resource came without its labels)."""
    labels = resource.get("labelIds")
    return None if labels is None else "SENT" in labels


def _has_body(payload: dict[str, Any]) -> bool:
    """Whether a payload carries its parts (`full` format), not only headers."""
    return any("body" in part for part in _walk(payload))


def card(resource: dict[str, Any]) -> MailCard:
    """A card from a message in `full` (or `metadata`) format.

    Its snippet is the start of the message's text as its reader sees it (`body_text`),
    never Gmail's `snippet`: Gmail takes that from the whole body, text hidden from the
    reader included (a preheader in a display:none block, white on white), so up to
    200 characters a sender hid from view would reach the model as the mail's preview.
    A card from `metadata` format has no body to clean, so it has no snippet."""
    payload = resource.get("payload") or {}
    headers = _headers(payload)
    listed = any(True for _ in attachment_parts(payload))
    preview = snippet(body_text(payload)) if _has_body(payload) else ""
    return MailCard(
        id=str(resource["id"]),
        thread_id=str(resource.get("threadId") or resource["id"]),
        sender=headers.get("from") or "(unknown sender)",
        to=_addresses(headers.get("to", "")),
        subject=headers.get("subject", ""),
        date=_date(headers, resource),
        snippet=preview,
        # `metadata` has no parts: a multipart/mixed message is taken to carry files.
        has_attachments=listed or str(payload.get("mimeType", "")).lower() == "multipart/mixed",
        sent_by_owner=_sent(resource),
    )


def message(resource: dict[str, Any]) -> Message:
    """A whole message from one in `full` format."""
    payload = resource.get("payload") or {}
    headers = _headers(payload)
    return Message(
        id=str(resource["id"]),
        thread_id=str(resource.get("threadId") or resource["id"]),
        sender=headers.get("from") or "(unknown sender)",
        to=_addresses(headers.get("to", "")),
        cc=_addresses(headers.get("cc", "")),
        subject=headers.get("subject", ""),
        date=_date(headers, resource),
        body=body_text(payload),
        attachments=attachments(payload),
        sent_by_owner=_sent(resource),
    )
