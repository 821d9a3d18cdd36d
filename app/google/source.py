"""A Google account as a `Source`: Gmail and Drive, read-only, within the granted scopes.

The delta cursor is `{"gmail": {...}, "drive": {...}}` (see `app/google/gmail.py` and
`app/google/drive.py` for each part); a missing part means "never looked" for that
kind, and a kind not read keeps its part unchanged. A kind whose scope was not
granted reads as empty (its tools are not offered: `reads_mail` / `reads_files`). Gmail
that answered that the account's mail service is gone (`NoMailbox`) is not read again by
this source: the delta leaves mail out, and every mail tool raises `NoMailbox` again, so
that the model is told why rather than shown no mail, or told a message it saw is not
there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from app.accounts.models import Account
from app.core.config import Settings
from app.google.client import GoogleClient
from app.google.credentials import usable_scopes
from app.google.drive import DriveReader
from app.google.gmail import GmailReader
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY
from app.sources.base import (
    ChangedFile,
    Delta,
    Document,
    FileCard,
    FileChanges,
    ItemNotFound,
    MailCard,
    MailChanges,
    Message,
    Source,
    SourceError,
    Thread,
    WatchableSource,
)


class ScopeNotGranted(SourceError):
    """The account's grant does not cover this kind of data."""


class GoogleSource(Source, WatchableSource):
    """One Google account's Gmail and Drive."""

    kind = "google"

    def __init__(self, account: Account, settings: Settings) -> None:
        scopes = usable_scopes(account)
        self.email = account.email
        self.address = account.email or None
        self._reads_mail = GMAIL_READONLY in scopes
        self.reads_files = DRIVE_READONLY in scopes
        self.client = GoogleClient(account, settings)
        self.gmail = GmailReader(self.client, resync_limit=settings.google_resync_messages)
        self.drive = DriveReader(self.client)

    @property
    def reads_mail(self) -> bool:
        """Gmail is granted and usable, and has not answered that it is gone since."""
        return self._reads_mail and not self.client.mailbox_gone

    def mailbox_gone(self) -> bool:
        return self.client.mailbox_gone

    def _need_mail(self) -> GmailReader:
        if self.client.mailbox_gone:
            raise self.client.mailbox_gone_error()
        if not self.reads_mail:
            raise ScopeNotGranted("this Google account did not grant read access to Gmail")
        return self.gmail

    def _mail_tool(self) -> bool:
        """Whether a mail tool reads Gmail (else it finds nothing); raises `NoMailbox` once
        Gmail answered that the mail service is gone."""
        if self.client.mailbox_gone:
            raise self.client.mailbox_gone_error()
        return self.reads_mail

    def _need_files(self) -> DriveReader:
        if not self.reads_files:
            raise ScopeNotGranted("this Google account did not grant read access to Drive")
        return self.drive

    # ------------------------------------------------------------------ delta

    async def delta(
        self, cursor: dict[str, Any] | None, *, mail: bool = True, files: bool = True,
        limit: int = 100, since: datetime | None = None,
    ) -> Delta:
        """New messages (Gmail history) and changed files (Drive changes) since `cursor`."""
        old = cursor if isinstance(cursor, dict) else {}
        delta = Delta()
        new_cursor: dict[str, Any] = {}
        if mail and self.reads_mail:
            part = old.get("gmail")
            delta.messages, new_cursor["gmail"] = await self.gmail.delta(
                part if isinstance(part, dict) else None, limit=limit, since=since
            )
        elif "gmail" in old:
            new_cursor["gmail"] = old["gmail"]
        if files and self.reads_files:
            part = old.get("drive")
            delta.files, new_cursor["drive"] = await self.drive.delta(
                part if isinstance(part, dict) else None, limit=limit, since=since
            )
        elif "drive" in old:
            new_cursor["drive"] = old["drive"]
        delta.cursor = new_cursor
        return delta

    # ------------------------------------------------------------------ watch detectors

    async def mail_changes(self, start_history_id: str | None) -> MailChanges:
        return await self._need_mail().changes(start_history_id)

    async def search_mail_ids(self, query: str, *, limit: int = 100) -> list[str]:
        return await self._need_mail().list_ids(query=query, limit=max(0, limit))

    async def arrived_mail(self, ids: list[str]) -> dict[str, datetime]:
        return await self._need_mail().arrived_mail(ids) if ids else {}

    async def file_changes(self, page_token: str | None) -> FileChanges:
        return await self._need_files().file_changes(page_token)

    async def folder_files(
        self, folder_id: str, *, since: datetime, limit: int = 100
    ) -> list[ChangedFile]:
        return await self._need_files().folder_files(folder_id, since=since, limit=limit)

    async def folder_file_ids(self, folder_id: str, *, limit: int) -> list[str]:
        return await self._need_files().folder_file_ids(folder_id, limit=limit)

    # ------------------------------------------------------------------ mail tools

    async def search_mail(self, query: str, *, limit: int = 20) -> list[MailCard]:
        """Gmail's search: the query in Gmail's syntax (`from:`, `has:attachment`, ...)."""
        if not self._mail_tool():
            return []
        return await self.gmail.search(query, limit=limit)

    async def read_message(self, message_id: str) -> Message:
        if not self._mail_tool():
            raise ItemNotFound(f"no message with id {message_id!r}")
        return await self.gmail.read_message(message_id)

    async def read_thread(self, thread_id: str) -> Thread:
        if not self._mail_tool():
            raise ItemNotFound(f"no thread with id {thread_id!r}")
        return await self.gmail.read_thread(thread_id)

    async def read_attachment(self, message_id: str, filename: str) -> tuple[str, bytes]:
        if not self._mail_tool():
            raise ItemNotFound(f"no message with id {message_id!r}")
        return await self.gmail.read_attachment(message_id, filename)

    # ------------------------------------------------------------------ file tools

    async def search_files(self, query: str, *, limit: int = 20) -> list[FileCard]:
        """Drive's search: the user's words in names and text, or a query in Drive syntax."""
        if not self.reads_files:
            return []
        return await self.drive.search(query, limit=limit)

    async def read_file(self, file_id: str) -> Document:
        if not self.reads_files:
            raise ItemNotFound(f"no file with id {file_id!r}")
        return await self.drive.read_file(file_id)

    async def read_file_bytes(self, file_id: str) -> tuple[str, bytes]:
        if not self.reads_files:
            raise ItemNotFound(f"no file with id {file_id!r}")
        return await self.drive.read_file_bytes(file_id)

    # ------------------------------------------------------------------ links

    def _account_query(self) -> str:
        return urlencode({"authuser": self.email}) if self.email else ""

    def message_link(self, message_id: str) -> str | None:
        """Gmail's web view of the message, in the account it belongs to."""
        query = self._account_query()
        return (
            f"https://mail.google.com/mail/{'?' + query if query else ''}"
            f"#all/{quote(message_id, safe='')}"
        )

    def file_link(self, file_id: str) -> str | None:
        params = {"id": file_id, **({"authuser": self.email} if self.email else {})}
        return f"https://drive.google.com/open?{urlencode(params)}"
