"""The bundled sample's mail: one Maildir message file parsed into what the sample
source serves (headers, body text, attachments), and its messages grouped in threads
by their References/In-Reply-To chains."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from app.sources.base import Attachment, MailCard, Message
from app.sources.text import html_to_text, snippet, tidy

_MSGID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class Mail:
    key: str
    message_id: str | None
    parent_id: str | None  # the first References entry, else In-Reply-To
    sender: str
    to: list[str]
    cc: list[str]
    subject: str
    date: datetime
    body: str
    attachments: list[Attachment]


@dataclass(frozen=True)
class Mailbox:
    mails: dict[str, Mail]  # key -> mail
    thread_of: dict[str, str]  # key -> thread id

    def newest_first(self) -> list[Mail]:
        return sorted(self.mails.values(), key=lambda m: (m.date, m.key), reverse=True)

    def card(self, mail: Mail) -> MailCard:
        return MailCard(
            id=mail.key,
            thread_id=self.thread_of[mail.key],
            sender=mail.sender,
            to=mail.to,
            subject=mail.subject,
            date=mail.date,
            snippet=snippet(mail.body),
            has_attachments=bool(mail.attachments),
        )

    def message(self, mail: Mail) -> Message:
        return Message(
            id=mail.key,
            thread_id=self.thread_of[mail.key],
            sender=mail.sender,
            to=mail.to,
            cc=mail.cc,
            subject=mail.subject,
            date=mail.date,
            body=mail.body,
            attachments=mail.attachments,
        )


def maildir_key(filename: str) -> str:
    """A Maildir file's unique key: its name without the `:2,FLAGS` info part."""
    return filename.split(":", 1)[0]


def thread_id_for(root_message_id: str) -> str:
    """An opaque, path-safe thread id for a thread root's Message-ID."""
    return hashlib.sha1(root_message_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _header_text(msg: EmailMessage, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _addresses(msg: EmailMessage, name: str) -> list[str]:
    out: list[str] = []
    try:
        headers = msg.get_all(name) or []
    except Exception:
        return out
    for header in headers:
        addresses = getattr(header, "addresses", None)
        if addresses:
            out.extend(" ".join(str(a).split()) for a in addresses if a.addr_spec not in ("", "<>"))
        else:
            out.extend(p.strip() for p in str(header).split(",") if p.strip())
    return out


def _message_ids(value: str) -> list[str]:
    return _MSGID.findall(value)


def _date(msg: EmailMessage, fallback: datetime) -> datetime:
    try:
        header = msg.get("Date")
        value = getattr(header, "datetime", None)
    except Exception:
        value = None
    if not isinstance(value, datetime):
        return fallback
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _part_text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except Exception:  # unknown charset, broken transfer encoding
        content = part.get_payload(decode=True)
    if isinstance(content, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return content.decode(charset, "replace")
        except LookupError:
            return content.decode("utf-8", "replace")
    return content if isinstance(content, str) else ""


def part_size(part: EmailMessage) -> int:
    try:
        if part.get_content_maintype() == "message":
            return len(part.as_bytes())
        payload = part.get_payload(decode=True)
    except Exception:
        return 0
    return len(payload) if isinstance(payload, bytes) else 0


def _attachment_parts(
    msg: EmailMessage, body_part: EmailMessage | None
) -> Iterator[tuple[str, EmailMessage]]:
    """Each attachment's listed name and part, in message order (the body is not one)."""
    count = 0

    def visit(part: EmailMessage) -> Iterator[tuple[str, EmailMessage]]:
        nonlocal count
        if part is body_part:
            return
        if part.get_content_maintype() == "multipart":
            for sub in part.iter_parts():
                if isinstance(sub, EmailMessage):
                    yield from visit(sub)
            return
        filename = part.get_filename()
        if not (part.is_attachment() or filename or part.get_content_type() == "message/rfc822"):
            return  # an inline alternative of the body, not an attachment
        count += 1
        yield filename or f"attachment-{count}", part

    yield from visit(msg)


def _attachments(msg: EmailMessage, body_part: EmailMessage | None) -> list[Attachment]:
    return [
        Attachment(filename=name, mime_type=part.get_content_type(), size=part_size(part))
        for name, part in _attachment_parts(msg, body_part)
    ]


def attachment_part(
    msg: EmailMessage, body_part: EmailMessage | None, filename: str
) -> EmailMessage | None:
    """The part `_attachments` lists under `filename`."""
    return next(
        (part for name, part in _attachment_parts(msg, body_part) if name == filename), None
    )


def parse_mail(key: str, data: bytes, fallback_date: datetime) -> Mail:
    """Parse one RFC 5322 message into the parts the source serves."""
    msg = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(data)
    # The part a reader sees: mail clients show the HTML alternative when there is one,
    # so a text/plain one next to it is text nobody reads (app/google/gmail_format.py).
    body_part = msg.get_body(preferencelist=("html", "plain"))
    body = ""
    if isinstance(body_part, EmailMessage):
        text = _part_text(body_part)
        if body_part.get_content_subtype() == "html":
            body = html_to_text(text)
        else:
            body = tidy(text)
    else:
        body_part = None
    own_ids = _message_ids(_header_text(msg, "Message-ID"))
    references = _message_ids(_header_text(msg, "References"))
    in_reply_to = _message_ids(_header_text(msg, "In-Reply-To"))
    parent = references[0] if references else (in_reply_to[0] if in_reply_to else None)
    from_ = _addresses(msg, "From")
    return Mail(
        key=key,
        message_id=own_ids[0] if own_ids else None,
        parent_id=parent,
        sender=from_[0] if from_ else (_header_text(msg, "From") or "(unknown sender)"),
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        subject=_header_text(msg, "Subject") or "(no subject)",
        date=_date(msg, fallback_date),
        body=body,
        attachments=_attachments(msg, body_part),
    )


def thread_roots(mails: Collection[Mail]) -> dict[str, str]:
    """Each mail's thread root Message-ID: follow parents as far as they are known.

    A reply's parent is its first References entry (the thread's root, as
    mail clients write it), else its In-Reply-To; a parent that is not in the
    Maildir still names the thread, so replies to a missing root stay together.
    """
    by_msgid: dict[str, Mail] = {}
    for mail in mails:
        if mail.message_id is not None:
            by_msgid.setdefault(mail.message_id, mail)
    roots: dict[str, str] = {}
    for mail in mails:
        root = mail.message_id or f"<maildir-key:{mail.key}>"
        seen = {root}
        parent = mail.parent_id
        while parent is not None and parent not in seen:
            seen.add(parent)
            root = parent
            known = by_msgid.get(parent)
            parent = known.parent_id if known is not None else None
        roots[mail.key] = root
    return roots
