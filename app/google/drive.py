"""Drive for the source: changes from a page token, search, documents as text or bytes.

The delta cursor's files part is `{"page_token": str, "pending": [ids], "covered": str}`:
the `changes.list` page token to go on from, the ids of changed files that did not fit
in the last delta (`limit`), shown next time, and the latest moment (Drive's clock, RFC
3339) the deltas have read changes up to. Drive's change list also reports files whose
metadata alone changed (viewed, starred, with their modifiedTime as it was): a change
counts only if the file was modified, created or shared with the user
(`sharedWithMeTime`) after `covered`, or if it waited in `pending`. `covered` never
passes the moment the delta ran (an uploader sets its file's modifiedTime, maybe
ahead). A cursor without `covered` (older ones, or one holding a future time) keeps
every change once, as before.

Docs are exported as HTML (`files.export`, text/html) and read as a person sees them, the
same way as an HTML mail (`app.sources.text.html_to_text`): text formatted out of sight
(white on the page, a 1 pt font, display:none) is left out, as the plain-text export would
hand it over as if seen. Sheets and Slides are exported as text (text/csv, text/plain:
Drive offers Slides no HTML). Text files and PDFs (and images) come through
`files.get_media`; an uploaded HTML file is read as a person sees it too.

Shared drives are read too: Drive answers a shared-drive file with a 404 and leaves it out of
lists and changes unless the call opts in, so every call says `supportsAllDrives` and lists and
changes add `includeItemsFromAllDrives` (`files.export` has no such parameter and needs none).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

from app.google.client import GoogleApiError, GoogleClient
from app.sources.base import (
    ChangedFile,
    ContentUnavailable,
    Document,
    FileCard,
    FileChanges,
    ItemNotFound,
    SourceError,
)
from app.sources.text import doc_html_to_text, html_to_text, snippet, tidy

FOLDER = "application/vnd.google-apps.folder"
EXPORTS = {
    "application/vnd.google-apps.document": "text/html",
    "application/vnd.google-apps.spreadsheet": "text/csv",
    "application/vnd.google-apps.presentation": "text/plain",
}
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/csv"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
"""Read through the HTML-to-text code, hidden text left out (an export or a download)."""
BYTES_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp"})
FILE_FIELDS = (
    "id,name,mimeType,createdTime,modifiedTime,sharedWithMeTime,parents,trashed,size,"
    "lastModifyingUser(displayName,emailAddress)"
)
CHANGE_PAGE = 1000
CHANGE_PAGES_MAX = 20
PENDING_MAX = 1000
MAX_TEXT_BYTES = 10 * 1024 * 1024  # Drive's own export limit
# files.export refuses with 403 and one of these reasons: the export is over 10 MB, the
# file is no Docs Editors file, or its owner stopped viewers downloading and copying it
# (`cannotExportFile`). The file is there, only its text cannot be had.
UNEXPORTABLE = frozenset({"exportSizeLimitExceeded", "fileNotExportable", "cannotExportFile"})
# files.get with alt=media refuses with 403 and one of these reasons: the owner stopped
# viewers downloading and copying the file (`cannotDownloadFile`, "This file cannot be
# downloaded by the user."), Google flagged it as malware or spam
# (`cannotDownloadAbusiveFile`), or it was downloaded too often lately
# (`downloadQuotaExceeded`). The file is there, only its content cannot be had: the agent
# reads a note saying why instead of the run failing.
# - An abusive file is never downloaded with acknowledgeAbuse=true: Drive asks apps to
#   get the user's explicit consent first (and only the owner may), and a digest must not
#   pull flagged content into the model unseen.
# - The download quota is per file and lasts hours (Drive says up to 24): the client's
#   retries (seconds) cannot outlast it, and a failed run would fail again on each
#   attempt and count towards stopping the instruction. A note now is the useful answer.
UNDOWNLOADABLE = {
    "cannotDownloadFile": "its owner does not let viewers download or copy it",
    "cannotDownloadAbusiveFile": "Google Drive flagged it as malware or spam, so it was "
    "not downloaded",
    "downloadQuotaExceeded": "Google Drive's download quota for it is used up for now "
    "(too many downloads lately; it can take up to a day)",
}
MAX_MEDIA_BYTES = 20 * 1024 * 1024
ALL_DRIVES: dict[str, Any] = {"supportsAllDrives": True}
"""For files.get (metadata and alt=media) and changes.getStartPageToken."""
ITEMS_FROM_ALL_DRIVES: dict[str, Any] = {**ALL_DRIVES, "includeItemsFromAllDrives": True}
"""For changes.list: without a driveId it reads the user's change log, which holds the changes
to the shared drives the user is a member of as well as to their own files."""
LIST_ALL_DRIVES: dict[str, Any] = {**ITEMS_FROM_ALL_DRIVES, "corpora": "allDrives"}
"""For files.list: My Drive, shared with me and every shared drive the user is a member of.
Drive says to prefer `user` or `drive` for efficiency, but `user` leaves shared drives out;
our lists are narrow (a folder, recent files, a search) and capped."""
SNIPPET_FILES = 20
"""Changed files whose text is fetched for their card's snippet; later ones have none."""
_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
# A query already in Drive's syntax: terms (`field op value`, `'x' in parents`) joined by
# and / or, each maybe negated, with balanced parentheses and closed, escaped strings.
_STRING = r"'(?:[^'\\]|\\.)*'"
_FIELD = (
    r"(?:name|fullText|mimeType|modifiedTime|createdTime|viewedByMeTime|trashed|starred|"
    r"sharedWithMe|visibility|shortcutDetails\.targetId)"
)
_TERM = (
    rf"(?:not\s+)?(?:{_FIELD}\s*(?:contains|!=|<=|>=|=|<|>)\s*(?:{_STRING}|true|false)"
    rf"|{_STRING}\s+in\s+(?:parents|owners|writers|readers))"
)
_DRIVE_QUERY = re.compile(rf"\s*{_TERM}(?:\s+(?:and|or)\s+{_TERM})*\s*")
_STRINGS = re.compile(_STRING)
_WORD = re.compile(r'"([^"]*)"|(\S+)')


def is_text(mime_type: str) -> bool:
    return mime_type.startswith("text/") or mime_type in TEXT_TYPES or mime_type in HTML_TYPES


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _masked_strings(query: str) -> str:
    """The query with each closed string's contents left out (`''`). Once a string is not
    closed, none after it is (each of their quotes is inside it): the search stops there.
    Searching on from each quote instead read to the end from every one of them, 2 s for
    a query of 16,000 characters of escaped quotes (quadratic)."""
    out, at = [], 0
    while (quote := query.find("'", at)) >= 0:
        closed = _STRINGS.match(query, quote)
        if closed is None:
            break
        out += [query[at:quote], "''"]
        at = closed.end()
    return "".join(out) + query[at:]


def looks_like_drive_syntax(query: str) -> bool:
    """The whole query parses as Drive terms, its strings closed, its parentheses balanced."""
    masked = _masked_strings(query)  # string contents can hold anything, even ( and '
    if "'" in masked.replace("''", ""):
        return False
    depth = 0
    for char in masked:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    if depth:
        return False
    return _DRIVE_QUERY.fullmatch(re.sub(r"[()]", " ", masked)) is not None


def drive_query(words: str) -> str:
    """A Drive `q` for the user's words: each word (or "quoted phrase") must be in the
    name or the text, with quotes escaped; a query already in Drive's syntax is kept."""
    text = words.strip()
    if looks_like_drive_syntax(text):
        return f"({text}) and trashed = false"
    terms = [
        f"(name contains {_quote(term)} or fullText contains {_quote(term)})"
        for phrase, bare in _WORD.findall(text)
        if (term := (phrase or bare).strip())
    ]
    return " and ".join([*terms, "trashed = false"])


def check_id(file_id: str) -> str:
    if not isinstance(file_id, str) or not _ID.match(file_id):
        raise ItemNotFound(f"no file with id {file_id!r}")
    return file_id


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _modified_by(resource: dict[str, Any]) -> str | None:
    user = resource.get("lastModifyingUser") or {}
    return user.get("displayName") or user.get("emailAddress") or None


def _moment(value: Any) -> datetime | None:
    """An RFC 3339 time from Drive or a cursor, or None if there is none (or it is bad)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = _time(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _covered(cursor: dict[str, Any]) -> datetime | None:
    return _moment(cursor.get("covered"))


def _since(moment: datetime) -> str:
    """`modifiedTime >= ...` in a files.list query: RFC 3339, UTC."""
    return _quote(moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))


def _changed(resource: dict[str, Any], *, file_id: str, removed: bool = False) -> ChangedFile:
    modified = resource.get("modifiedTime")
    created = resource.get("createdTime")
    return ChangedFile(
        id=file_id, name=str(resource.get("name") or ""),
        mime_type=str(resource.get("mimeType") or ""),
        parents=[str(p) for p in resource.get("parents") or []],
        modified_time=_time(modified) if modified else None,
        created_time=_time(created) if created else None, removed=removed,
    )


def _undownloadable(exc: GoogleApiError, mime: str) -> str | None:
    """A note in place of the content of a file Drive will not let us download, or None."""
    why = UNDOWNLOADABLE.get(exc.reason) if exc.status == 403 else None
    return None if why is None else f"(a {mime} file: {why}; its content cannot be read)"


def _listable(resource: dict[str, Any]) -> bool:
    return not resource.get("trashed") and resource.get("mimeType") != FOLDER


class DriveReader:
    """One account's Drive, read-only."""

    def __init__(self, client: GoogleClient) -> None:
        self.client = client

    def _files(self) -> Any:
        return self.client.drive().files()

    # ------------------------------------------------------------------ calls

    async def _get(self, file_id: str) -> dict[str, Any]:
        check_id(file_id)
        request = self._files().get(fileId=file_id, fields=FILE_FIELDS, **ALL_DRIVES)
        try:
            resource: dict[str, Any] = await self.client.call("drive", request)
        except GoogleApiError as exc:
            if exc.status in (400, 404):
                raise ItemNotFound(f"no file with id {file_id!r}") from exc
            raise
        if resource.get("mimeType") == FOLDER:
            raise ItemNotFound(f"{file_id!r} is a folder, not a file")
        return resource

    async def _text(self, resource: dict[str, Any]) -> str:
        """A file's text: exported for Google's editors, downloaded for text files."""
        mime = str(resource.get("mimeType", ""))
        if mime in EXPORTS:
            request = self._files().export(fileId=resource["id"], mimeType=EXPORTS[mime])
        elif is_text(mime):
            if int(resource.get("size") or 0) > MAX_TEXT_BYTES:
                return f"(a text file of {resource.get('size')} bytes: too large to read)"
            request = self._files().get_media(fileId=resource["id"], **ALL_DRIVES)
        else:
            return ""
        try:
            data = await self.client.call("drive", request)
        except GoogleApiError as exc:
            if exc.status == 403 and exc.reason in UNEXPORTABLE:
                if exc.reason == "exportSizeLimitExceeded":
                    return "(a Google Docs file too large for Drive to export as text: " \
                        "its content cannot be read)"
                if exc.reason == "cannotExportFile":
                    return "(a Google Docs file whose owner does not let viewers download " \
                        "or copy it: its content cannot be read)"
                return "(a Google Docs file that Drive does not export: its content " \
                    "cannot be read)"
            if (note := _undownloadable(exc, mime)) is not None:
                return note
            raise
        raw = data if isinstance(data, bytes) else str(data).encode()
        text = raw[:MAX_TEXT_BYTES].decode("utf-8-sig", "replace")
        # Off the event loop: up to 10 MB of markup, its styles inlined, is seconds.
        if mime in EXPORTS and EXPORTS[mime] in HTML_TYPES:
            return await asyncio.to_thread(doc_html_to_text, text)
        if mime in HTML_TYPES:
            return await asyncio.to_thread(html_to_text, text)
        return tidy(text)

    def _card(self, resource: dict[str, Any], text: str) -> FileCard:
        return FileCard(
            id=str(resource["id"]), name=str(resource.get("name", "")),
            mime_type=str(resource.get("mimeType", "")),
            modified_time=_time(resource["modifiedTime"]),
            modified_by=_modified_by(resource), snippet=snippet(text),
        )

    async def _cards(self, resources: list[dict[str, Any]]) -> list[FileCard]:
        """Cards with snippets (the first `SNIPPET_FILES` files' text, fetched at once)."""

        async def text_of(resource: dict[str, Any]) -> str:
            try:
                return await self._text(resource)
            except (ItemNotFound, GoogleApiError):  # gone, or not exportable: no snippet
                return ""

        texts = await asyncio.gather(*(text_of(r) for r in resources[:SNIPPET_FILES]))
        return [
            self._card(r, texts[n] if n < len(texts) else "") for n, r in enumerate(resources)
        ]

    async def start_token(self) -> str:
        request = self.client.drive().changes().getStartPageToken(**ALL_DRIVES)
        result = await self.client.call("drive", request)
        return str(result["startPageToken"])

    async def changes(self, page_token: str) -> tuple[str, list[dict[str, Any]]]:
        """(the token to go on from, each change since `page_token` in order)."""
        changes: list[dict[str, Any]] = []
        token = page_token
        for _ in range(CHANGE_PAGES_MAX):
            request = self.client.drive().changes().list(
                pageToken=token, pageSize=CHANGE_PAGE, includeRemoved=True, spaces="drive",
                **ITEMS_FROM_ALL_DRIVES,
                fields=f"nextPageToken,newStartPageToken,changes(fileId,removed,time,"
                f"file({FILE_FIELDS}))",
            )
            page = await self.client.call("drive", request)
            changes += page.get("changes") or []
            if page.get("newStartPageToken"):
                return str(page["newStartPageToken"]), changes
            if not page.get("nextPageToken"):
                return token, changes
            token = str(page["nextPageToken"])
        return token, changes  # too much at once: carry on from here next time

    # ------------------------------------------------------------------ delta

    async def delta(
        self, old: dict[str, Any] | None, *, limit: int, since: datetime | None
    ) -> tuple[list[FileCard], dict[str, Any]]:
        limit = max(0, limit)
        if not old or not isinstance(old.get("page_token"), str):
            started = datetime.now(UTC)
            token = await self.start_token()  # first: what changes meanwhile comes next time
            resources = await self._recent(limit, since) if limit else []
            first: dict[str, Any] = {"page_token": token, "pending": []}
            # Newest first: what is older than the newest file shown was covered too. The
            # uploader sets modifiedTime (a local file's date, a wrong clock): never past
            # the moment the listing began, or one file dated ahead hides every change.
            newest = _moment(resources[0].get("modifiedTime")) if resources else None
            if newest is not None:
                first["covered"] = _stamp(min(newest, started))
            return await self._cards(resources), first
        started = datetime.now(UTC)
        # A cursor from before `covered` was kept behind the clock may hold a future
        # modifiedTime: it is read as no `covered` (every change once).
        covered = c if (c := _covered(old)) is not None and c <= started else None
        token, changes = await self.changes(old["page_token"])
        # What waited from the last delta changed before it: shown even if its change now
        # is to its metadata alone (viewed, starred), which leaves its modifiedTime as it was.
        waited = {str(i) for i in old.get("pending") or []}
        latest: dict[str, dict[str, Any]] = {}
        reached = covered
        for change in changes:
            when = _moment(change.get("time"))
            if when is not None and (reached is None or when > reached):
                reached = when
            file_id = str(change.get("fileId") or "")
            if not file_id:
                continue
            latest.pop(file_id, None)
            if not change.get("removed") and change.get("file"):
                latest[file_id] = change["file"]

        def wanted(resource: dict[str, Any]) -> bool:
            return _listable(resource) and bool(resource.get("modifiedTime")) and (
                since is None or _time(resource["modifiedTime"]) >= since
            )

        def changed(resource: dict[str, Any]) -> bool:
            """Modified, created or shared with the user since the last delta read the
            changes, not only viewed or starred (Drive lists those too, their modifiedTime
            as it was). A file newly shared with the user is new to them, however old."""
            if covered is None or str(resource.get("id")) in waited:
                return True
            return any(
                moment is not None and moment > covered
                for moment in (_moment(resource.get("modifiedTime")),
                               _moment(resource.get("createdTime")),
                               _moment(resource.get("sharedWithMeTime")))
            )

        fresh = sorted(
            (r for r in latest.values() if wanted(r) and changed(r)),
            key=lambda r: _time(r["modifiedTime"]), reverse=True,
        )
        shown = fresh[:limit]
        # What waited from the last delta comes after anything newer, fetched only as far
        # as there is room.
        pending = [
            str(i) for i in old.get("pending") or [] if str(i) not in latest and _ID.match(str(i))
        ]
        room = limit - len(shown)
        fetch, later = pending[: max(0, room)], pending[max(0, room):]

        async def get(file_id: str) -> dict[str, Any] | None:
            try:
                return await self._get(file_id)
            except ItemNotFound:  # deleted since
                return None

        for resource in await asyncio.gather(*(get(i) for i in fetch)):
            if resource is not None and wanted(resource):
                shown.append(resource)
        waiting = [str(r["id"]) for r in fresh[limit:]] + later
        cursor: dict[str, Any] = {"page_token": token, "pending": waiting[:PENDING_MAX]}
        if reached is not None:  # Drive's change times, kept behind our own clock too
            cursor["covered"] = _stamp(min(reached, started))
        return await self._cards(shown), cursor

    async def _recent(self, limit: int, since: datetime | None) -> list[dict[str, Any]]:
        q = f"trashed = false and mimeType != {_quote(FOLDER)}"
        if since is not None:
            q += f" and modifiedTime >= {_since(since)}"
        return await self._list(q, limit=limit, order_by="modifiedTime desc")

    async def _list(
        self, q: str, *, limit: int, order_by: str | None, fields: str = FILE_FIELDS
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page_token: str | None = None
        while len(found) < limit:
            kwargs: dict[str, Any] = {
                "q": q, "pageSize": min(1000, limit - len(found)), "spaces": "drive",
                "fields": f"nextPageToken,files({fields})", **LIST_ALL_DRIVES,
            }
            if order_by:
                kwargs["orderBy"] = order_by
            if page_token:
                kwargs["pageToken"] = page_token
            try:
                page = await self.client.call("drive", self._files().list(**kwargs))
            except GoogleApiError as exc:
                if exc.status == 400:
                    raise SourceError(f"Drive refused the search {q!r}: {exc}") from exc
                raise
            found += [f for f in page.get("files") or [] if _listable(f)]
            page_token = page.get("nextPageToken")
            if not page_token:
                break
        return found[:limit]

    # ------------------------------------------------------------------ watch detector

    async def folder_files(
        self, folder_id: str, *, since: datetime, limit: int
    ) -> list[ChangedFile]:
        """The folder's files created or modified at or after `since`, newest first: an
        upload keeps its own modifiedTime, but its createdTime is the upload's."""
        when = _since(since)
        q = (f"{_quote(check_id(folder_id))} in parents and trashed = false"
             f" and mimeType != {_quote(FOLDER)}"
             f" and (createdTime >= {when} or modifiedTime >= {when})")
        files = [
            _changed(f, file_id=str(f["id"]))
            for f in await self._list(q, limit=limit, order_by="modifiedTime desc")
        ]
        # The query's times are whole seconds: the rest of the second before is left out.
        return [
            f for f in files
            if any(t is not None and t >= since for t in (f.created_time, f.modified_time))
        ]

    async def folder_file_ids(self, folder_id: str, *, limit: int) -> list[str]:
        """The ids of the folder's files now (ids only: up to 1000 a call)."""
        q = (f"{_quote(check_id(folder_id))} in parents and trashed = false"
             f" and mimeType != {_quote(FOLDER)}")
        files = await self._list(q, limit=limit, order_by=None,
                                 fields="id,mimeType,trashed")
        return [str(f["id"]) for f in files]

    async def file_changes(self, page_token: str | None) -> FileChanges:
        if page_token is None:
            return FileChanges(page_token=await self.start_token())
        token, changes = await self.changes(page_token)
        files = []
        for change in changes:
            resource = change.get("file") or {}
            files.append(_changed(
                resource, file_id=str(change.get("fileId") or resource.get("id") or ""),
                removed=bool(change.get("removed") or resource.get("trashed")),
            ))
        return FileChanges(page_token=token, files=[f for f in files if f.id])

    # ------------------------------------------------------------------ tools

    async def search(self, query: str, *, limit: int) -> list[FileCard]:
        """Drive search, most recently modified first. Drive does not sort queries with
        `fullText` itself (it orders them by relevance), so they are sorted here."""
        if limit <= 0 or not query.strip():
            return []
        q = drive_query(query)
        order = None if "fulltext" in q.lower() else "modifiedTime desc"
        resources = await self._list(q, limit=limit, order_by=order)
        resources.sort(key=lambda r: str(r.get("modifiedTime") or ""), reverse=True)
        return await self._cards(resources)

    async def read_file(self, file_id: str) -> Document:
        resource = await self._get(file_id)
        mime = str(resource.get("mimeType", ""))
        try:
            if mime in EXPORTS or is_text(mime):
                text = await self._text(resource)
            elif mime in BYTES_TYPES:
                text = ""  # shown as itself through read_file_bytes
            else:
                text = f"(a {mime} file: its content cannot be read as text)"
        except GoogleApiError as exc:
            if exc.status == 404:
                raise ItemNotFound(f"no file with id {file_id!r}") from exc
            raise
        return Document(
            id=str(resource["id"]), name=str(resource.get("name", "")), mime_type=mime,
            modified_time=_time(resource["modifiedTime"]), modified_by=_modified_by(resource),
            text=text,
        )

    async def read_file_bytes(self, file_id: str) -> tuple[str, bytes]:
        resource = await self._get(file_id)
        mime = str(resource.get("mimeType", ""))
        if mime not in BYTES_TYPES:
            raise ItemNotFound(f"file {file_id!r} is not an image or a PDF")
        if int(resource.get("size") or 0) > MAX_MEDIA_BYTES:
            raise SourceError(f"file {file_id!r} is larger than {MAX_MEDIA_BYTES} bytes")
        request = self._files().get_media(fileId=file_id, **ALL_DRIVES)
        try:
            data = await self.client.call("drive", request)
        except GoogleApiError as exc:
            if (note := _undownloadable(exc, mime)) is not None:
                raise ContentUnavailable(note) from exc
            raise
        return mime, data if isinstance(data, bytes) else str(data).encode()
