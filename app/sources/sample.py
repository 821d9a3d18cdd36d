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
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from app.sources.base import (
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
from app.sources.maildir import (
    Mail,
    Mailbox,
    attachment_part,
    maildir_key,
    parse_mail,
    part_size,
    thread_id_for,
    thread_roots,
)
from app.sources.text import snippet, tidy

log = logging.getLogger(__name__)

SAMPLE_DATA_DIR = Path(__file__).parent / "sample_data"
"""The bundled sample: `maildir/` and `docs/`."""

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

_QUERY_TOKEN = re.compile(r'(\w+):"([^"]*)"|"([^"]*)"|(\S+)')
_MAIL_FIELDS = frozenset({"from", "to", "subject"})


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
        self._cache: dict[Path, tuple[tuple[int, int], Mail]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading disk

    def _mailbox(self) -> Mailbox:
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

        mails: dict[str, Mail] = {}
        live: set[Path] = set()
        for key, path in files.items():
            mail = self._parse_cached(key, path)
            if mail is not None:
                mails[key] = mail
                live.add(path)
        with self._lock:
            for stale in set(self._cache) - live:
                del self._cache[stale]

        roots = thread_roots(mails.values())
        return Mailbox(mails, {key: thread_id_for(root) for key, root in roots.items()})

    def _parse_cached(self, key: str, path: Path) -> Mail | None:
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
                text="" if media else tidy(data.decode("utf-8-sig", "replace")),
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
        found = attachment_part(
            msg, body_part if isinstance(body_part, EmailMessage) else None, filename
        )
        if found is None:
            raise ItemNotFound(f"message {message_id!r} has no attachment {filename!r}")
        if part_size(found) > MAX_MEDIA_BYTES:
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
