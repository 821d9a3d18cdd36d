"""The bundled sample source: a Maildir and a folder of documents on disk.

`SampleSource()` reads the sample bundled in `app/sources/sample_data/`, so a
fresh install has something realistic to run instructions against. Pointed at
another folder (`SampleSource(Path("/srv/demo"))`) it reads `<root>/maildir`
(a Maildir: messages in `cur/` and `new/`, `tmp/` ignored) and `<root>/docs`
(`.md`, `.txt` and `.csv` files, plus an optional `.meta.json` sidecar).
PDFs and images (`.pdf`, `.png`, `.jpg`, `.jpeg`, `.gif`, `.webp`) are documents
only when the sidecar names them; they have no text and are served as bytes
(`read_file_bytes`). Message attachments are served by `read_attachment`.

The sidecar maps a file name to `{"modified_time", "modified_by",
"mime_type", "sha256"}`: file mtimes are not stable in git, so the sample's
modification metadata comes from here. When `sha256` is given and the file's
content no longer matches it (someone edited the file), the metadata is stale
and the file's own mtime is used instead, with no `modified_by`.

Ids: a message id is the Maildir file's unique key (the name before `:2,`,
so it survives flag changes and the move from `new/` to `cur/`); a thread id
is a short sha1 of the thread root's Message-ID; a file id is the file name.
Ids come from the model and are untrusted: they are looked up in listings,
never joined onto a path.

The delta cursor is `{"mail_seen": [keys], "files": {name: sha256}}`; each
part is optional, and a missing part means "never looked" for that kind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from app.sources.base import (
    Attachment,
    Delta,
    Document,
    FileCard,
    ItemNotFound,
    MailCard,
    Message,
    Source,
    SourceError,
    Thread,
)

log = logging.getLogger(__name__)

SAMPLE_DATA_DIR = Path(__file__).parent / "sample_data"
"""The bundled sample: `maildir/` and `docs/`."""

SNIPPET_CHARS = 200
META_FILE = ".meta.json"
DOC_TYPES = {".md": "text/markdown", ".txt": "text/plain", ".csv": "text/csv"}
# Documents served as their bytes (`read_file_bytes`), with no text of their own.
MEDIA_DOC_TYPES = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
MAX_MEDIA_BYTES = 20 * 1024 * 1024
"""Attachments and media documents larger than this are refused, not read."""

_MSGID = re.compile(r"<[^<>\s]+>")
_QUERY_TOKEN = re.compile(r'(\w+):"([^"]*)"|"([^"]*)"|(\S+)')
_MAIL_FIELDS = frozenset({"from", "to", "subject"})


# --------------------------------------------------------------------------- html


class _TextExtractor(HTMLParser):
    """Plain text from HTML: drops scripts and styles, keeps paragraphs and list items."""

    _SKIP = frozenset({"script", "style", "title", "template", "noscript", "head"})
    _PARAGRAPH = frozenset(
        {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote", "pre"}
    )
    _LINE = frozenset(
        {"div", "tr", "section", "article", "header", "footer", "dt", "dd", "hr", "address",
         "center", "form", "fieldset", "figure", "figcaption", "main", "nav", "aside"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._skip = 0
        self._pre = 0
        self._pending = 0  # line breaks owed before the next text

    def _break(self, lines: int) -> None:
        self._pending = max(self._pending, lines)

    def _emit(self, text: str) -> None:
        if self._pending:
            if self._out:
                self._out.append("\n" * self._pending)
            self._pending = 0
        self._out.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._skip = 0  # a missing </head> must not hide the whole body
        if tag in self._SKIP:
            self._skip += 1
        elif self._skip:
            return
        elif tag == "br":
            self._emit("\n")
        elif tag == "li":
            self._break(1)
            self._emit("- ")
        elif tag in ("td", "th"):
            self._emit("\t")
        elif tag in self._PARAGRAPH:
            self._break(2)
            if tag == "pre":
                self._pre += 1
        elif tag in self._LINE:
            self._break(1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            return
        if tag == "br":
            self._emit("\n")
        elif tag == "hr":
            self._break(1)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif self._skip:
            return
        elif tag in self._PARAGRAPH:
            self._break(2)
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
        elif tag in self._LINE or tag == "li":
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._pre:
            self._emit(data)
        elif data.strip():
            self._emit(re.sub(r"[ \t\r\n\f\v]+", " ", data))
        elif not self._pending:
            self._out.append(" ")

    def text(self) -> str:
        lines = []
        for line in "".join(self._out).split("\n"):
            cells = [" ".join(cell.split()) for cell in line.split("\t")]
            lines.append(" | ".join(cell for cell in cells if cell))
        return _tidy("\n".join(lines))


def html_to_text(html: str) -> str:
    """Turn an HTML body into readable plain text (no tags, entities decoded)."""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # html.parser is lenient; never let a bad body break a read
        log.warning("could not parse an HTML body; stripping tags instead", exc_info=True)
        return _tidy(re.sub(r"<[^>]*>", " ", html))
    return parser.text()


# --------------------------------------------------------------------------- text helpers


def _tidy(text: str) -> str:
    """Normalise line ends, trim trailing spaces, squeeze runs of blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip()


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The first ~`limit` characters of `text`, whitespace collapsed."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    space = cut.rfind(" ")
    if space > limit * 3 // 4:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


def _parse_query(query: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Split a query into free words and `field:value` filters (all lower-cased)."""
    words: list[str] = []
    fields: list[tuple[str, str]] = []
    for m in _QUERY_TOKEN.finditer(query):
        prefix, quoted_value, phrase, bare = m.groups()
        if prefix is not None:
            if prefix.casefold() in _MAIL_FIELDS:
                if quoted_value.strip():
                    fields.append((prefix.casefold(), quoted_value.casefold().strip()))
            elif quoted_value.strip():
                words.append(f"{prefix}:{quoted_value}".casefold())
        elif phrase is not None:
            if phrase.strip():
                words.append(" ".join(phrase.split()).casefold())
        else:
            name, sep, value = bare.partition(":")
            if sep and value and name.casefold() in _MAIL_FIELDS:
                fields.append((name.casefold(), value.casefold()))
            else:
                words.append(bare.casefold())
    return words, fields


def _check_id(item_id: object, what: str) -> str:
    """Reject ids that are not plain names (ids come from the model)."""
    if (
        not isinstance(item_id, str)
        or not item_id
        or item_id in (".", "..")
        or ".." in item_id
        or any(ch in item_id for ch in "/\\\x00")
        or item_id.startswith(".")
        or len(item_id) > 255
    ):
        raise ItemNotFound(f"no {what} with id {item_id!r}")
    return item_id


# --------------------------------------------------------------------------- mail


@dataclass(frozen=True)
class _Mail:
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
class _Mailbox:
    mails: dict[str, _Mail]  # key -> mail
    thread_of: dict[str, str]  # key -> thread id

    def newest_first(self) -> list[_Mail]:
        return sorted(self.mails.values(), key=lambda m: (m.date, m.key), reverse=True)

    def card(self, mail: _Mail) -> MailCard:
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

    def message(self, mail: _Mail) -> Message:
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


def _part_size(part: EmailMessage) -> int:
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
        Attachment(filename=name, mime_type=part.get_content_type(), size=_part_size(part))
        for name, part in _attachment_parts(msg, body_part)
    ]


def _attachment_part(
    msg: EmailMessage, body_part: EmailMessage | None, filename: str
) -> EmailMessage | None:
    """The part `_attachments` lists under `filename`."""
    return next(
        (part for name, part in _attachment_parts(msg, body_part) if name == filename), None
    )


def parse_mail(key: str, data: bytes, fallback_date: datetime) -> _Mail:
    """Parse one RFC 5322 message into the parts the source serves."""
    msg = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(data)
    body_part = msg.get_body(preferencelist=("plain", "html"))
    body = ""
    if isinstance(body_part, EmailMessage):
        text = _part_text(body_part)
        if body_part.get_content_subtype() == "html":
            body = html_to_text(text)
        else:
            body = _tidy(text)
    else:
        body_part = None
    own_ids = _message_ids(_header_text(msg, "Message-ID"))
    references = _message_ids(_header_text(msg, "References"))
    in_reply_to = _message_ids(_header_text(msg, "In-Reply-To"))
    parent = references[0] if references else (in_reply_to[0] if in_reply_to else None)
    from_ = _addresses(msg, "From")
    return _Mail(
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


def _thread_roots(mails: Collection[_Mail]) -> dict[str, str]:
    """Each mail's thread root Message-ID: follow parents as far as they are known.

    A reply's parent is its first References entry (the thread's root, as
    mail clients write it), else its In-Reply-To; a parent that is not in the
    Maildir still names the thread, so replies to a missing root stay together.
    """
    by_msgid: dict[str, _Mail] = {}
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


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class _Doc:
    name: str
    mime_type: str
    modified_time: datetime
    modified_by: str | None
    sha256: str
    text: str

    def card(self) -> FileCard:
        return FileCard(
            id=self.name,
            name=self.name,
            mime_type=self.mime_type,
            modified_time=self.modified_time,
            modified_by=self.modified_by,
            snippet=snippet(self.text),
        )

    def document(self) -> Document:
        return Document(
            id=self.name,
            name=self.name,
            mime_type=self.mime_type,
            modified_time=self.modified_time,
            modified_by=self.modified_by,
            text=self.text,
        )


def _load_meta(docs_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = json.loads((docs_dir / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s in %s", META_FILE, docs_dir, exc_info=True)
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, dict)}


def _meta_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- cursor


def _cursor_seen(cursor: dict[str, Any]) -> set[str] | None:
    seen = cursor.get("mail_seen")
    if isinstance(seen, list) and all(isinstance(k, str) for k in seen):
        return set(seen)
    return None


def _cursor_files(cursor: dict[str, Any]) -> dict[str, str] | None:
    files = cursor.get("files")
    if isinstance(files, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        return dict(files)
    return None


# --------------------------------------------------------------------------- the source


class SampleSource(Source):
    """A Maildir and a folder of documents on local disk, read-only.

    Every blocking read runs in a worker thread (`asyncio.to_thread`).
    Parsed messages are cached per file (path, size and mtime), so repeated
    calls only re-read what changed.
    """

    kind = "sample"

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else SAMPLE_DATA_DIR
        if not self.root.is_dir():
            raise SourceError(f"sample data folder {self.root} does not exist")
        self.maildir = self.root / "maildir"
        self.docs_dir = self.root / "docs"
        self._cache: dict[Path, tuple[tuple[int, int], _Mail]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading disk

    def _mailbox(self) -> _Mailbox:
        files: dict[str, Path] = {}
        for sub in ("cur", "new"):  # tmp/ holds deliveries in progress
            folder = self.maildir / sub
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise SourceError(f"cannot list {folder}: {exc}") from exc
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                files.setdefault(maildir_key(entry.name), Path(entry.path))

        mails: dict[str, _Mail] = {}
        live: set[Path] = set()
        for key, path in files.items():
            mail = self._parse_cached(key, path)
            if mail is not None:
                mails[key] = mail
                live.add(path)
        with self._lock:
            for stale in set(self._cache) - live:
                del self._cache[stale]

        roots = _thread_roots(mails.values())
        return _Mailbox(mails, {key: thread_id_for(root) for key, root in roots.items()})

    def _parse_cached(self, key: str, path: Path) -> _Mail | None:
        try:
            st = path.stat()
        except FileNotFoundError:  # moved or deleted by a mail client meanwhile
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        prefix = key.split(".", 1)[0]
        fallback = datetime.fromtimestamp(
            int(prefix) if prefix.isdigit() else st.st_mtime, tz=UTC
        )
        try:
            mail = parse_mail(key, data, fallback)
        except Exception:
            log.warning("skipping unparseable message %s", path, exc_info=True)
            return None
        with self._lock:
            self._cache[path] = (stamp, mail)
        return mail

    def _docs(self) -> dict[str, _Doc]:
        try:
            entries = sorted(os.scandir(self.docs_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SourceError(f"cannot list {self.docs_dir}: {exc}") from exc
        meta = _load_meta(self.docs_dir)
        docs: dict[str, _Doc] = {}
        for entry in entries:
            name = entry.name
            suffix = Path(name).suffix.lower()
            if name.startswith(".") or not entry.is_file():
                continue
            media = suffix in MEDIA_DOC_TYPES
            if not (suffix in DOC_TYPES or (media and name in meta)):
                continue
            try:
                data = Path(entry.path).read_bytes()
                mtime = entry.stat().st_mtime
            except FileNotFoundError:
                continue
            digest = hashlib.sha256(data).hexdigest()
            info = meta.get(name, {})
            mime = info.get("mime_type")
            default_type = DOC_TYPES.get(suffix) or MEDIA_DOC_TYPES[suffix]
            mime_type = mime if isinstance(mime, str) and mime else default_type
            meta_time = _meta_time(info.get("modified_time"))
            recorded = info.get("sha256")
            if meta_time is not None and (recorded is None or recorded == digest):
                modified_time = meta_time
                by = info.get("modified_by")
                modified_by = by if isinstance(by, str) and by else None
            else:
                modified_time = datetime.fromtimestamp(mtime, tz=UTC)
                modified_by = None
            docs[name] = _Doc(
                name=name,
                mime_type=mime_type,
                modified_time=modified_time,
                modified_by=modified_by,
                sha256=digest,
                text="" if media else _tidy(data.decode("utf-8-sig", "replace")),
            )
        return docs

    @staticmethod
    def _newest_docs(docs: dict[str, _Doc]) -> list[_Doc]:
        return sorted(docs.values(), key=lambda d: (d.modified_time, d.name), reverse=True)

    # ------------------------------------------------------------------ delta

    def _delta(
        self, cursor: dict[str, Any] | None, mail: bool, files: bool, limit: int,
        since: datetime | None = None,
    ) -> Delta:
        old = cursor if isinstance(cursor, dict) else {}
        limit = max(0, limit)
        new_cursor: dict[str, Any] = {}
        delta = Delta()

        if mail:
            box = self._mailbox()
            newest = [m for m in box.newest_first() if since is None or m.date >= since]
            seen = _cursor_seen(old)
            if seen is None:
                # Never looked: show the recent ones, and take the rest as old news.
                picked = newest[:limit]
                seen = set(box.mails)
            else:
                # Whatever does not fit in `limit` stays unseen for the next delta.
                picked = [m for m in newest if m.key not in seen][:limit]
                seen |= {m.key for m in picked}
            delta.messages = [box.card(m) for m in picked]
            new_cursor["mail_seen"] = sorted(seen)
        elif "mail_seen" in old:
            new_cursor["mail_seen"] = old["mail_seen"]

        if files:
            newest_docs = [
                d for d in self._newest_docs(self._docs())
                if since is None or d.modified_time >= since
            ]
            hashes = _cursor_files(old)
            if hashes is None:
                picked_docs = newest_docs[:limit]
                hashes = {d.name: d.sha256 for d in newest_docs}
            else:
                picked_docs = [d for d in newest_docs if hashes.get(d.name) != d.sha256][:limit]
                hashes.update({d.name: d.sha256 for d in picked_docs})
            delta.files = [d.card() for d in picked_docs]
            new_cursor["files"] = dict(sorted(hashes.items()))
        elif "files" in old:
            new_cursor["files"] = old["files"]

        delta.cursor = new_cursor
        return delta

    async def delta(
        self, cursor: dict[str, Any] | None, *, mail: bool = True, files: bool = True,
        limit: int = 100, since: datetime | None = None,
    ) -> Delta:
        """New messages (by Maildir key) and new or changed files (by content hash).

        With no cursor (or no part for a kind), the newest `limit` items are
        returned and everything present counts as seen. Otherwise the newest
        `limit` unseen items are returned; any beyond `limit` stay unseen and
        come in a later delta.
        """
        return await asyncio.to_thread(self._delta, cursor, mail, files, limit, since)

    # ------------------------------------------------------------------ mail

    def _search_mail(self, query: str, limit: int) -> list[MailCard]:
        words, fields = _parse_query(query)
        box = self._mailbox()
        hits: list[MailCard] = []
        for mail in box.newest_first():
            if len(hits) >= limit:
                break
            sender = mail.sender.casefold()
            subject = mail.subject.casefold()
            recipients = " ".join(mail.to + mail.cc).casefold()
            haystack = "\n".join((sender, subject, mail.body.casefold()))
            if not all(w in haystack for w in words):
                continue
            if not all(
                value in {"from": sender, "to": recipients, "subject": subject}[name]
                for name, value in fields
            ):
                continue
            hits.append(box.card(mail))
        return hits

    async def search_mail(self, query: str, *, limit: int = 20) -> list[MailCard]:
        """All words must match sender, subject or body; `from:`, `to:`, `subject:` filter."""
        return await asyncio.to_thread(self._search_mail, query, max(0, limit))

    def _read_message(self, message_id: str) -> Message:
        key = _check_id(message_id, "message")
        box = self._mailbox()
        mail = box.mails.get(key)
        if mail is None:
            raise ItemNotFound(f"no message with id {message_id!r}")
        return box.message(mail)

    async def read_message(self, message_id: str) -> Message:
        return await asyncio.to_thread(self._read_message, message_id)

    def _read_thread(self, thread_id: str) -> Thread:
        _check_id(thread_id, "thread")
        box = self._mailbox()
        mails = sorted(
            (m for m in box.mails.values() if box.thread_of[m.key] == thread_id),
            key=lambda m: (m.date, m.key),
        )
        if not mails:
            raise ItemNotFound(f"no thread with id {thread_id!r}")
        return Thread(
            id=thread_id, subject=mails[0].subject, messages=[box.message(m) for m in mails]
        )

    async def read_thread(self, thread_id: str) -> Thread:
        return await asyncio.to_thread(self._read_thread, thread_id)

    # ------------------------------------------------------------------ files

    def _search_files(self, query: str, limit: int) -> list[FileCard]:
        words, fields = _parse_query(query)
        # Field filters mean nothing for documents: match their text as words.
        words += [f"{name}:{value}" for name, value in fields]
        hits: list[FileCard] = []
        for doc in self._newest_docs(self._docs()):
            if len(hits) >= limit:
                break
            haystack = f"{doc.name}\n{doc.text}".casefold()
            if all(w in haystack for w in words):
                hits.append(doc.card())
        return hits

    async def search_files(self, query: str, *, limit: int = 20) -> list[FileCard]:
        """All words must match the file name or text; most recently modified first."""
        return await asyncio.to_thread(self._search_files, query, max(0, limit))

    def _read_file(self, file_id: str) -> Document:
        name = _check_id(file_id, "file")
        doc = self._docs().get(name)
        if doc is None:
            raise ItemNotFound(f"no file with id {file_id!r}")
        return doc.document()

    async def read_file(self, file_id: str) -> Document:
        return await asyncio.to_thread(self._read_file, file_id)

    def _read_file_bytes(self, file_id: str) -> tuple[str, bytes]:
        name = _check_id(file_id, "file")
        doc = self._docs().get(name)  # looked up in the listing, never joined from the id
        if doc is None or Path(name).suffix.lower() not in MEDIA_DOC_TYPES:
            raise ItemNotFound(f"no image or PDF file with id {file_id!r}")
        path = self.docs_dir / doc.name
        try:
            if path.stat().st_size > MAX_MEDIA_BYTES:
                raise SourceError(f"file {file_id!r} is larger than {MAX_MEDIA_BYTES} bytes")
            return doc.mime_type, path.read_bytes()
        except FileNotFoundError as exc:
            raise ItemNotFound(f"no file with id {file_id!r}") from exc

    async def read_file_bytes(self, file_id: str) -> tuple[str, bytes]:
        return await asyncio.to_thread(self._read_file_bytes, file_id)

    # ------------------------------------------------------------------ attachments

    def _read_attachment(self, message_id: str, filename: str) -> tuple[str, bytes]:
        key = _check_id(message_id, "message")
        box = self._mailbox()
        mail = box.mails.get(key)
        if mail is None:
            raise ItemNotFound(f"no message with id {message_id!r}")
        if not any(a.filename == filename for a in mail.attachments):
            raise ItemNotFound(f"message {message_id!r} has no attachment {filename!r}")
        path = self._path_of(key)
        if path is None:
            raise ItemNotFound(f"no message with id {message_id!r}")
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ItemNotFound(f"no message with id {message_id!r}") from exc
        msg = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(data)
        body_part = msg.get_body(preferencelist=("plain", "html"))
        found = _attachment_part(
            msg, body_part if isinstance(body_part, EmailMessage) else None, filename
        )
        if found is None:
            raise ItemNotFound(f"message {message_id!r} has no attachment {filename!r}")
        if _part_size(found) > MAX_MEDIA_BYTES:
            raise SourceError(f"attachment {filename!r} is larger than {MAX_MEDIA_BYTES} bytes")
        payload = (
            found.as_bytes() if found.get_content_maintype() == "message"
            else found.get_payload(decode=True)
        )
        return found.get_content_type(), payload if isinstance(payload, bytes) else b""

    def _path_of(self, key: str) -> Path | None:
        """The Maildir file of a key, found by listing `cur/` and `new/`."""
        for sub in ("cur", "new"):
            try:
                entries = sorted(os.scandir(self.maildir / sub), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise SourceError(f"cannot list {self.maildir / sub}: {exc}") from exc
            for entry in entries:
                if not entry.name.startswith(".") and maildir_key(entry.name) == key:
                    return Path(entry.path)
        return None

    async def read_attachment(self, message_id: str, filename: str) -> tuple[str, bytes]:
        """An attachment named as `read_message` lists it; `SourceError` when too large."""
        return await asyncio.to_thread(self._read_attachment, message_id, filename)
