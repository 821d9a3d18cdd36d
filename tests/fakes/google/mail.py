"""Gmail messages: built as real RFC 822 bytes, rendered as the API's Message resource."""

from __future__ import annotations

import base64
import email.policy
import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, parsedate_to_datetime
from functools import cached_property
from typing import Any


def b64url(data: bytes, *, padded: bool = False) -> str:
    """Gmail's base64url: part bodies and attachment data come without `=` padding (Python's
    urlsafe_b64decode needs it put back), the `raw` message with it."""
    text = base64.urlsafe_b64encode(data).decode("ascii")
    return text if padded else text.rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Attachment:
    attachment_id: str
    filename: str
    mime_type: str
    data: bytes


@dataclass
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    internal_date: datetime
    label_ids: list[str]
    history_id: int
    attachments: dict[str, Attachment] = field(default_factory=dict)  # by partId

    @cached_property
    def parsed(self) -> Message:
        return BytesParser(policy=email.policy.default).parsebytes(self.raw)

    def header(self, name: str) -> str:
        return str(self.parsed.get(name, "") or "")

    @cached_property
    def _text(self) -> str:
        """Every text part, decoded and joined: what word search looks at."""
        texts = []
        for part in self.parsed.walk():
            if part.get_content_maintype() == "text" and not part.get_filename():
                texts.append(_decoded_text(part))
        return "\n".join(texts)

    def text(self) -> str:
        return self._text

    def plain_text(self) -> str:
        for part in self.parsed.walk():
            if part.get_content_type() == "text/plain" and not part.get_filename():
                return _decoded_text(part)
        body = self.text()
        return re.sub(r"<[^>]+>", " ", body)

    def preview_text(self) -> str:
        """What Gmail's snippet is cut from: the HTML part's text when there is one, with
        no regard to CSS (a preheader in a display:none block comes first: that is what
        preheaders are for), else the plain part."""
        for part in self.parsed.walk():
            if part.get_content_type() == "text/html" and not part.get_filename():
                markup = _INVISIBLE_ELEMENTS.sub(" ", _decoded_text(part))
                return html.unescape(re.sub(r"<[^>]*>", " ", markup))
        return self.plain_text()

    def snippet(self) -> str:
        words = " ".join(self.preview_text().split())
        return html.escape(words[:200], quote=True).replace("&#x27;", "&#39;")

    def filenames(self) -> list[str]:
        return [a.filename for a in self.attachments.values()]


# Elements whose content is no text of the mail at all (CSS, scripts, the head's title).
_INVISIBLE_ELEMENTS = re.compile(r"<(head|style|script)\b.*?</\1\s*>", re.I | re.S)


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    return payload.decode(part.get_content_charset() or "utf-8", "replace")


def build_rfc822(
    *,
    sender: str,
    to: list[str],
    subject: str,
    text: str,
    html_body: str | None,
    attachments: list[tuple[str, str, bytes]],
    date: datetime,
    message_id: str,
    cc: list[str] | None = None,
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    for name, value in (extra_headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    if html_body is not None:
        msg.add_alternative(html_body, subtype="html")
    for filename, mime_type, data in attachments:
        maintype, _, subtype = mime_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=filename)
    return msg.as_bytes(policy=email.policy.SMTP)


def message_date(raw: bytes) -> datetime | None:
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
    value = parsed.get("Date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def addresses(value: str) -> list[str]:
    return [address for _, address in getaddresses([value]) if address]


def attachment_parts(raw: bytes) -> list[tuple[str, str, str, bytes]]:
    """(partId, filename, mime type, data) of every part with a filename."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    found: list[tuple[str, str, str, bytes]] = []

    def walk(part: Message, part_id: str) -> None:
        if part.is_multipart():
            children = part.get_payload()
            assert isinstance(children, list)
            for index, child in enumerate(children):
                walk(child, f"{part_id}.{index}" if part_id else str(index))
            return
        if part.get_filename():
            data = part.get_payload(decode=True)
            found.append((part_id, str(part.get_filename()), part.get_content_type(),
                          data if isinstance(data, bytes) else b""))

    walk(parsed, "")
    return found


def _headers(part: Message) -> list[dict[str, str]]:
    return [{"name": name, "value": str(value)} for name, value in part.items()]


def payload(message: StoredMessage) -> dict[str, Any]:
    """The `payload` MessagePart tree of format=full: bodies base64url, attachments by id."""

    def render(part: Message, part_id: str) -> dict[str, Any]:
        node: dict[str, Any] = {
            "partId": part_id,
            "mimeType": part.get_content_type(),
            "filename": str(part.get_filename() or ""),
            "headers": _headers(part),
        }
        if part.is_multipart():
            children = part.get_payload()
            assert isinstance(children, list)
            node["body"] = {"size": 0}
            node["parts"] = [
                render(child, f"{part_id}.{i}" if part_id else str(i))
                for i, child in enumerate(children)
            ]
            return node
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        attachment = message.attachments.get(part_id)
        if attachment is not None:
            node["body"] = {"attachmentId": attachment.attachment_id, "size": len(data)}
        elif data:
            node["body"] = {"size": len(data), "data": b64url(data)}
        else:
            node["body"] = {"size": 0}
        return node

    return render(message.parsed, "")


def resource(
    message: StoredMessage, fmt: str, metadata_headers: list[str] | None = None
) -> dict[str, Any]:
    """The Message resource in one of the formats minimal, metadata, full, raw."""
    result: dict[str, Any] = {
        "id": message.id,
        "threadId": message.thread_id,
        "labelIds": list(message.label_ids),
        "snippet": message.snippet(),
        "sizeEstimate": len(message.raw),
        "historyId": str(message.history_id),
        "internalDate": str(int(message.internal_date.timestamp() * 1000)),
    }
    if fmt == "raw":
        result["raw"] = b64url(message.raw, padded=True)
    elif fmt == "full":
        result["payload"] = payload(message)
    elif fmt == "metadata":
        parsed = message.parsed
        wanted = {h.lower() for h in metadata_headers or []}
        headers = [h for h in _headers(parsed) if not wanted or h["name"].lower() in wanted]
        result["payload"] = {
            "partId": "", "mimeType": parsed.get_content_type(), "filename": "",
            "headers": headers,
        }
    return result
