"""A notification as an email: HTML with inlined CSS and a plain-text part.

Everything the model wrote is escaped (a `<script>` in a digest shows as
text); links come only from the refs' `link`, which the app built, and only
http(s) ones; there are no images, so nothing remote is ever loaded.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from email import charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formataddr, formatdate, parseaddr
from html import escape
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import css_inline

from app.agent.offline import notes_its_model
from app.notifications.models import Notification

CSS = """
body { margin: 0; padding: 0; background: #f4f5f7; }
.wrap { max-width: 640px; margin: 0 auto; padding: 24px; background: #ffffff;
        font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif;
        font-size: 15px; line-height: 1.5; color: #1f2328; }
h1 { font-size: 22px; margin: 0 0 12px 0; }
h2 { font-size: 17px; margin: 24px 0 8px 0; border-bottom: 1px solid #d0d7de;
     padding-bottom: 4px; }
p { margin: 0 0 12px 0; white-space: pre-wrap; }
ul { margin: 0 0 12px 0; padding-left: 20px; }
li { margin: 0 0 10px 0; }
.detail { white-space: pre-wrap; }
.refs { display: block; font-size: 13px; color: #57606a; }
.refs a { color: #0969da; }
.meta { font-size: 12px; color: #57606a; border-top: 1px solid #d0d7de; padding-top: 12px;
        margin-top: 24px; }
"""
_INLINER = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)
# UTF-8 bodies as quoted-printable (readable, 7-bit safe), headers as RFC 2047 Q-words.
_UTF8 = charset.Charset("utf-8")
_UTF8.header_encoding = charset.QP
_UTF8.body_encoding = charset.QP


@functools.lru_cache(maxsize=16)
def parse_from(from_address: str) -> tuple[str, str]:
    """(display name, address) of the From setting (parsed once, it is the same each time)."""
    return parseaddr(from_address)


# Names the notification a message carries: a retried Gmail send looks for it.
NOTIFICATION_HEADER = "X-Pilotlight-Notification"


def message_id(idempotency_key: str, from_address: str) -> str:
    """The same Message-ID on every attempt of one delivery, so receivers can de-duplicate."""
    domain = parse_from(from_address)[1].rpartition("@")[2] or "pilotlight.invalid"
    # Short enough that the header is never folded.
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_message(
    notification: Notification, *, to: str, from_address: str, idempotency_key: str,
    timezone: str = "UTC", replies_read: bool = False, answer_at: str | None = None,
) -> Message:
    """multipart/alternative: the text part, then the HTML part with its CSS inlined.

    Built with the `email.mime` classes (compat32): the same MIME as `EmailMessage` would
    write, at about a third of the CPU (the modern header classes parse and refold every
    header). Headers that could hold other text are encoded (RFC 2047) and never carry a
    line break.
    """
    digest = notification.data.get("digest") if isinstance(notification.data, dict) else None
    if isinstance(digest, dict):
        text = digest_text(notification.title, digest, timezone)
        html = digest_html(notification.title, digest, timezone)
    else:
        how = how_to_answer(notification, replies_read=replies_read, answer_at=answer_at)
        text, html = plain_text(notification, how), plain_html(notification, how)
    name, address = parse_from(from_address)
    for value in (to, name, address):
        if "\r" in value or "\n" in value:
            raise ValueError("a line break in an address header")
    # The parts are quoted-printable, where "=" is always written "=3D": no line of theirs
    # can be this boundary, so the generator need not search them for a collision.
    message = MIMEMultipart("alternative", boundary=f"=_{uuid.uuid4().hex}=_")
    message["From"] = formataddr((name, address), charset="utf-8")
    message["To"] = to
    subject = _one_line(notification.title)[:200] or "Pilotlight"
    # compat32 takes a Header (RFC 2047 words) where a str would not do.
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")  # type: ignore[assignment]
    message["Date"] = formatdate(notification.created_at.timestamp(), usegmt=True)
    message["Message-ID"] = message_id(idempotency_key, from_address)
    # RFC 3834: machine-made, so auto-responders do not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message[NOTIFICATION_HEADER] = str(notification.id)
    message.attach(_text_part(text, "plain"))
    message.attach(_text_part(_INLINER.inline(html), "html"))
    return message


def _text_part(text: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(text, _UTF8)
    return part


# --- the digest ------------------------------------------------------------------------------


def _safe_link(ref: dict[str, Any]) -> str | None:
    link = ref.get("link")
    if isinstance(link, str) and link.lower().startswith(("https://", "http://")):
        return link
    return None


def _refs(refs: Iterable[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(str(r.get("title") or r.get("id") or "source"), _safe_link(r)) for r in refs
            if isinstance(r, dict)]


def _refs_html(refs: Iterable[dict[str, Any]]) -> str:
    parts = [
        f'<a href="{escape(link, quote=True)}">{escape(title)}</a>' if link else escape(title)
        for title, link in _refs(refs)
    ]
    return f'<span class="refs">Sources: {", ".join(parts)}</span>' if parts else ""


def _action_line(action: dict[str, Any]) -> str:
    extra = [f"owner: {action['owner']}" if action.get("owner") else "",
             f"due: {action['due']}" if action.get("due") else ""]
    extra_text = ", ".join(e for e in extra if e)
    return str(action.get("text", "")) + (f" ({extra_text})" if extra_text else "")


def _moment(value: object, zone: ZoneInfo) -> str:
    """An ISO time as the reader reads it, in their zone: `Mon 23 Nov 08:00`."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).strftime("%a %d %b %Y %H:%M")


def _covers(digest: dict[str, Any], timezone: str) -> str:
    covers = digest.get("covers") or {}
    start, end = covers.get("start"), covers.get("end")
    try:
        zone = ZoneInfo(timezone)
    except (ValueError, ZoneInfoNotFoundError):
        zone, timezone = ZoneInfo("UTC"), "UTC"
    if start and end:
        return f"Covers {_moment(start, zone)} to {_moment(end, zone)} ({timezone} time)."
    return f"Covers everything up to {_moment(end, zone)} ({timezone} time)." if end else ""


def _written_by(digest: dict[str, Any], timezone: str) -> str:
    """Who wrote it (unless its notes say so already) and what it covers."""
    by = "" if notes_its_model(digest) else f"Written by {digest.get('model', 'the model')}."
    return f"{by} {_covers(digest, timezone)}".strip()


def digest_html(title: str, digest: dict[str, Any], timezone: str = "UTC") -> str:
    out = [f"<h1>{escape(title)}</h1>", f"<p>{escape(str(digest.get('summary', '')))}</p>"]
    for section in digest.get("sections") or []:
        out.append(f"<h2>{escape(str(section.get('title', '')))}</h2>")
        items = []
        for item in section.get("items") or []:
            items.append(
                f"<li><strong>{escape(str(item.get('title', '')))}</strong>"
                f'<div class="detail">{escape(str(item.get("detail", "")))}</div>'
                f"{_refs_html(item.get('refs') or [])}</li>"
            )
        out.append(f"<ul>{''.join(items)}</ul>" if items else "<p>Nothing here.</p>")
    actions = digest.get("action_items") or []
    if actions:
        out.append("<h2>Action items</h2><ul>")
        out += [f"<li>{escape(_action_line(a))}{_refs_html(a.get('refs') or [])}</li>"
                for a in actions]
        out.append("</ul>")
    meta = [escape(str(note)) for note in digest.get("notes") or []]
    meta.append(escape(_written_by(digest, timezone)))
    out.append(f'<div class="meta">{"<br>".join(meta)}</div>')
    return _page(title, "".join(out))


def digest_text(title: str, digest: dict[str, Any], timezone: str = "UTC") -> str:
    # The model's text on one line each, as the HTML part shows it: at the start of a
    # line of its own it could pass for the app's ("Links:", a "[1] …: URL" under it).
    lines = [title, "=" * len(title), "", _one_line(str(digest.get("summary", ""))), ""]
    links: list[str] = []

    def cite(refs: Iterable[dict[str, Any]]) -> str:
        marks = []
        for ref_title, link in _refs(refs):
            if link:
                links.append(f"[{len(links) + 1}] {ref_title}: {link}")
                marks.append(f"[{len(links)}]")
            else:
                marks.append(ref_title)
        return f"  Sources: {', '.join(marks)}" if marks else ""

    for section in digest.get("sections") or []:
        heading = _one_line(str(section.get("title", "")))
        lines += [heading, "-" * len(heading)]
        for item in section.get("items") or []:
            lines.append(f"* {_one_line(str(item.get('title', '')))}")
            lines.append(f"  {_one_line(str(item.get('detail', '')))}")
            sources = cite(item.get("refs") or [])
            if sources:
                lines.append(sources)
        lines.append("")
    actions = digest.get("action_items") or []
    if actions:
        lines += ["Action items", "------------"]
        for action in actions:
            lines.append(f"* {_one_line(_action_line(action))}")
            sources = cite(action.get("refs") or [])
            if sources:
                lines.append(sources)
        lines.append("")
    lines += [_one_line(str(note)) for note in digest.get("notes") or []]
    lines.append(_written_by(digest, timezone))
    if links:
        lines += ["", "Links:", *links]
    return "\n".join(lines) + "\n"


# --- any other notification ------------------------------------------------------------------


def how_to_answer(
    notification: Notification, *, replies_read: bool, answer_at: str | None
) -> tuple[str, str | None]:
    """What a question's email says about answering, and the dashboard link it ends with:
    a reply only where one is read (a Gmail account that can read it), the link always
    (the empty string and None for any other notification)."""
    if notification.kind != "question":
        return "", None
    if replies_read:
        said = ("Reply to this email with one of them, or with an answer of your own."
                if _choices(notification) else "Reply to this email with your answer.")
        return (f"{said} Or answer here: " if answer_at else said), answer_at
    return ("Answer here: " if answer_at else "Answer it in Pilotlight."), answer_at


def _choices(notification: Notification) -> list[str]:
    """A question's choices (the model wrote them: shown as text, never markup)."""
    data = notification.data if isinstance(notification.data, dict) else {}
    raw = data.get("choices") if notification.kind == "question" else None
    if not isinstance(raw, list):
        return []
    return [shown for shown in (_one_line(str(c)) for c in raw) if shown]


def plain_text(notification: Notification, how: tuple[str, str | None] = ("", None)) -> str:
    text = f"{notification.title}\n\n{notification.body}\n"
    choices = _choices(notification)
    if choices:
        text += "\nChoices:\n" + "".join(f"* {c}\n" for c in choices)
    said, link = how
    if said:
        text += f"\n{said}{link or ''}\n"
    return text


def plain_html(notification: Notification, how: tuple[str, str | None] = ("", None)) -> str:
    body = f"<h1>{escape(notification.title)}</h1><p>{escape(notification.body)}</p>"
    choices = _choices(notification)
    if choices:
        body += ("<h2>Choices</h2><ul>" + "".join(f"<li>{escape(c)}</li>" for c in choices)
                 + "</ul>")
    said, link = how
    if said:
        shown = f'<a href="{escape(link)}">{escape(link)}</a>' if link else ""
        body += f"<p>{escape(said)}{shown}</p>"
    return _page(notification.title, body)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f'<body><div class="wrap">{body}</div></body></html>'
    )
