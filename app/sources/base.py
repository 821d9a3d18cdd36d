"""The source interface: what the agent may read, whoever holds the data.

The bundled sample (a Maildir and a folder of documents), Gmail and Drive all
implement `Source`. Everything a source returns is untrusted data: the agent
fences it as such in the prompt and never lets it choose a tool that sends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class MailCard(BaseModel):
    """A compact view of one message, as put into the prompt before the first turn."""

    id: str
    thread_id: str
    sender: str
    to: list[str] = Field(default_factory=list)
    subject: str
    date: datetime
    snippet: str
    has_attachments: bool = False
    # Whether the mailbox's owner sent it (Gmail's SENT label); None where the source
    # cannot say. A From header is the sender's to write: only this makes a mail the user's.
    sent_by_owner: bool | None = None


class FileCard(BaseModel):
    """A compact view of one document that is new or changed."""

    id: str
    name: str
    mime_type: str
    modified_time: datetime
    modified_by: str | None = None
    snippet: str


class Attachment(BaseModel):
    filename: str
    mime_type: str
    size: int


class Message(BaseModel):
    """One message in full, with its body as plain text."""

    id: str
    thread_id: str
    sender: str
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    subject: str
    date: datetime
    body: str
    attachments: list[Attachment] = Field(default_factory=list)
    sent_by_owner: bool | None = None  # as MailCard's


class Thread(BaseModel):
    id: str
    subject: str
    messages: list[Message]


class Document(BaseModel):
    """One document in full, exported as text."""

    id: str
    name: str
    mime_type: str
    modified_time: datetime
    modified_by: str | None = None
    text: str


class Delta(BaseModel):
    """What is new since a cursor, and the cursor that marks it as seen."""

    messages: list[MailCard] = Field(default_factory=list)
    files: list[FileCard] = Field(default_factory=list)
    cursor: dict[str, Any] = Field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.messages and not self.files


class SourceError(Exception):
    """A source could not answer (not found, unreachable, access revoked)."""


class ItemNotFound(SourceError):
    """The message, thread or file id does not exist in this source."""


class ContentUnavailable(SourceError):
    """The item is there but its content cannot be had (its owner does not let the user
    download it, it is flagged as malware, its download quota is used up): the message
    says why, for the model to read in place of the content."""


class AccountDisconnected(SourceError):
    """The account's grant is gone (revoked, `invalid_grant`, never stored): the user must
    reconnect. Callers mark the account disconnected; retrying cannot help."""


class NoMailbox(SourceError):
    """The account has no mailbox any more, though its grant covers mail: Gmail answers
    that its mail service is not enabled (a Workspace administrator turned Gmail off for
    the user). Its other data can still be read; retrying cannot help. Callers record the
    account as mailbox-less (`app.google.accounts.mark_no_mailbox`)."""

    def __init__(self, message: str, *, account_id: str) -> None:
        super().__init__(message)
        self.account_id = account_id


class MailChanges(BaseModel):
    """What Gmail's history says arrived since a historyId (the watch's change detector)."""

    history_id: str
    added_message_ids: list[str] = Field(default_factory=list)
    # Messages taken out of spam or trash ("Not spam", restored): they arrive now, though
    # they were added earlier. None of them is also in `added_message_ids`.
    rescued_message_ids: list[str] = Field(default_factory=list)
    # The start historyId was too old (Gmail answered 404): `history_id` is the current
    # one and the added ids are unknown; the caller resyncs within its bounds.
    expired: bool = False


class ChangedFile(BaseModel):
    """One entry of Drive's change list."""

    id: str
    name: str = ""
    mime_type: str = ""
    parents: list[str] = Field(default_factory=list)
    modified_time: datetime | None = None
    # When the file came to Drive (an upload keeps its own modifiedTime, not this).
    created_time: datetime | None = None
    removed: bool = False


class FileChanges(BaseModel):
    page_token: str
    files: list[ChangedFile] = Field(default_factory=list)


class WatchableSource(ABC):
    """The cheap change detectors and id queries behind watch triggers (Gmail and Drive)."""

    @abstractmethod
    async def mail_changes(self, start_history_id: str | None) -> MailChanges:
        """New message ids since `start_history_id` (one `history.list` call when nothing
        changed); `None` returns the current historyId and no ids."""

    @abstractmethod
    async def search_mail_ids(self, query: str, *, limit: int = 100) -> list[str]:
        """Ids of the messages matching a Gmail query, newest first."""

    @abstractmethod
    async def arrived_mail(self, ids: list[str]) -> dict[str, datetime]:
        """Those of these messages that are mail the user received, in the given order,
        with the time each arrived (Gmail's internalDate): not a draft, not mail the user
        sent to others, not in spam or trash, and not an email Pilotlight itself sent (a
        digest, an alert, a question, delivered to the user's own mailbox). Only these
        fire a watch."""

    @abstractmethod
    async def file_changes(self, page_token: str | None) -> FileChanges:
        """Drive changes since `page_token`; `None` returns the start token and no files."""

    @abstractmethod
    async def folder_files(
        self, folder_id: str, *, since: datetime, limit: int = 100
    ) -> list[ChangedFile]:
        """The files in a folder created or modified at or after `since`, newest first
        (what a watch of it must see before the change list starts)."""

    @abstractmethod
    async def folder_file_ids(self, folder_id: str, *, limit: int) -> list[str]:
        """The ids of the files in a folder now (at most `limit`)."""


class Source(ABC):
    """One account's mail and documents, read-only."""

    kind: str
    # The mailbox owner's address, when the source knows it (a Google account's, from
    # Gmail's profile): mail from it is the user's. Unknown (None), it is guessed from the
    # mail's recipients (`app.agent.prompt.mailbox_owner`).
    address: str | None = None

    @abstractmethod
    async def delta(
        self, cursor: dict[str, Any] | None, *, mail: bool = True, files: bool = True,
        limit: int = 100, since: datetime | None = None,
    ) -> Delta:
        """Return the messages and files that are new or changed since `cursor`.

        `since` keeps only items dated at or after it (a preview over a past
        window passes no cursor and a `since`).

        A `None` cursor means "never looked": the source returns its recent
        items (at most `limit` of each kind, newest first). The returned
        cursor is opaque to the caller, JSON-serialisable, and is stored only
        once the run that used it has succeeded.
        """

    @abstractmethod
    async def search_mail(self, query: str, *, limit: int = 20) -> list[MailCard]:
        """Search messages (words match sender, subject and body), newest first."""

    @abstractmethod
    async def read_message(self, message_id: str) -> Message:
        """Return one message in full; raises `ItemNotFound`."""

    @abstractmethod
    async def read_thread(self, thread_id: str) -> Thread:
        """Return a thread's messages in date order; raises `ItemNotFound`."""

    @abstractmethod
    async def search_files(self, query: str, *, limit: int = 20) -> list[FileCard]:
        """Search documents by name and content, most recently modified first."""

    @abstractmethod
    async def read_file(self, file_id: str) -> Document:
        """Return one document's text; raises `ItemNotFound`."""

    async def read_attachment(self, message_id: str, filename: str) -> tuple[str, bytes]:
        """One attachment of a message as (mime_type, bytes); raises `ItemNotFound`.

        `filename` comes from the model: it is looked up among the message's
        attachments, never joined onto a path. Sources that cannot serve
        attachments keep this default.
        """
        raise ItemNotFound(f"attachment {filename!r} of message {message_id!r} is not available")

    async def read_file_bytes(self, file_id: str) -> tuple[str, bytes]:
        """A document's original bytes as (mime_type, bytes), for images and PDFs;
        raises `ItemNotFound` (the default) when the source cannot give them."""
        raise ItemNotFound(f"the bytes of file {file_id!r} are not available")

    def mailbox_gone(self) -> bool:
        """Whether a read of this source met `NoMailbox` (a tool that caught it told the
        model; the run still has to record it)."""
        return False

    def message_link(self, message_id: str) -> str | None:
        """A link for the user to open a message, built by the app, never by the model."""
        return None

    def file_link(self, file_id: str) -> str | None:
        """A link for the user to open a document."""
        return None
