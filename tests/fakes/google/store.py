"""The fake's state: per account a mailbox with its history, a Drive with its changes."""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .mail import Attachment, StoredMessage, attachment_parts, build_rfc822
from .query import SYSTEM_LABELS

GOOGLE_APPS = "application/vnd.google-apps."
FOLDER = GOOGLE_APPS + "folder"


class Ids:
    """Deterministic ids that look like Google's."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def hex16(self) -> str:
        return f"{self.rng.getrandbits(60) | (1 << 60):016x}"[-16:]

    def token(self, length: int, prefix: str = "") -> str:
        alphabet = string.ascii_letters + string.digits + "-_"
        return prefix + "".join(self.rng.choice(alphabet) for _ in range(length))


@dataclass
class HistoryRecord:
    id: int
    kind: str  # messageAdded, messageDeleted, labelAdded, labelRemoved
    message_id: str
    thread_id: str
    label_ids: list[str]  # the message's labels after the change
    changed: list[str] = field(default_factory=list)  # the labels added or removed


@dataclass
class Watch:
    topic: str
    label_ids: list[str]
    label_filter: str
    expiration_ms: int
    history_id: int


class Mailbox:
    def __init__(self, email: str, ids: Ids) -> None:
        self.email = email
        self.ids = ids
        self.messages: dict[str, StoredMessage] = {}
        self.history: list[HistoryRecord] = []
        self.history_id = 1000 + ids.rng.randrange(1000)
        self.history_floor = self.history_id  # startHistoryIds below this answer 404
        self.labels: dict[str, str] = {}  # user label name -> id
        self.watch: Watch | None = None
        # Gmail does not promise to keep the Message-ID of a message sent through the API;
        # True: `messages.send` gives every message one of its own, as it may.
        self.replaces_message_ids = False

    def bump(self) -> int:
        self.history_id += ids_gap(self.ids)
        return self.history_id

    def record(self, kind: str, message: StoredMessage, changed: list[str] | None = None) -> None:
        history_id = self.bump()
        message.history_id = history_id
        self.history.append(
            HistoryRecord(history_id, kind, message.id, message.thread_id,
                          list(message.label_ids), list(changed or []))
        )

    def label_id(self, name: str) -> str:
        if name.upper() == name and not name.startswith("Label_"):
            return name  # a system label
        if name.startswith("Label_"):
            return name
        if name not in self.labels:
            self.labels[name] = f"Label_{len(self.labels) + 1}"
        return self.labels[name]

    def known_label(self, label_id: str) -> bool:
        return label_id in SYSTEM_LABELS or label_id in self.labels.values()

    def add(
        self,
        *,
        sender: str,
        to: list[str],
        subject: str,
        text: str,
        html: str | None,
        attachments: list[tuple[str, str, bytes]],
        labels: tuple[str, ...] | list[str],
        thread_id: str | None,
        date: datetime | None,
        cc: list[str] | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> StoredMessage:
        if thread_id is not None and not any(m.thread_id == thread_id
                                             for m in self.messages.values()):
            raise KeyError(f"no thread {thread_id} in {self.email}'s mailbox")
        when = (date or datetime.now(UTC)).astimezone(UTC)
        message_id = self.ids.hex16()
        if raw is None:
            raw = build_rfc822(
                sender=sender, to=to, subject=subject, text=text, html_body=html,
                attachments=attachments, date=when, cc=cc, extra_headers=headers,
                message_id=f"<{message_id}.{self.ids.token(8)}@mail.fake.example>",
            )
        message = StoredMessage(
            id=message_id, thread_id=thread_id or message_id, raw=raw, internal_date=when,
            label_ids=[self.label_id(label) for label in labels], history_id=0,
        )
        for part_id, filename, mime_type, data in attachment_parts(raw):
            message.attachments[part_id] = Attachment(
                self.ids.token(86, "ANGjdJ"), filename, mime_type, data
            )
        self.messages[message_id] = message
        self.record("messageAdded", message)
        return message

    def relabel(self, message_id: str, add: list[str], remove: list[str]) -> StoredMessage:
        message = self.messages[message_id]
        added = [self.label_id(x) for x in add if self.label_id(x) not in message.label_ids]
        removed = [self.label_id(x) for x in remove if self.label_id(x) in message.label_ids]
        message.label_ids = [x for x in message.label_ids if x not in removed] + added
        if added:
            self.record("labelAdded", message, added)
        if removed:
            self.record("labelRemoved", message, removed)
        return message

    def delete(self, message_id: str) -> None:
        message = self.messages.pop(message_id)
        self.record("messageDeleted", message)

    def expire_history(self) -> None:
        """Every historyId issued so far is now too old: history.list answers 404."""
        self.history_floor = self.bump()
        self.history = [r for r in self.history if r.id >= self.history_floor]


def ids_gap(ids: Ids) -> int:
    return 1 + ids.rng.randrange(7)  # historyIds grow with gaps, as Gmail's do


@dataclass
class DriveFile:
    id: str
    name: str
    mime_type: str
    content: bytes
    parents: list[str]
    created: datetime
    modified: datetime
    modified_by: str
    owner: str
    trashed: bool = False
    starred: bool = False
    description: str = ""
    version: int = 1
    drive_id: str | None = None
    """The shared drive the file lives in; None for a file in My Drive."""
    shared_with_me: datetime | None = None
    """When the owner (not the user) shared the file with the user (`sharedWithMeTime`)."""
    copy_requires_writer_permission: bool = False
    """The owner turned off "viewers can download, print and copy" for a file shared with
    the user as a viewer (Drive v3 `copyRequiresWriterPermission`)."""
    abusive: bool = False
    """Google flagged the file as malware or spam: only its owner may download it, and
    only with acknowledgeAbuse=true."""
    download_quota_exceeded: bool = False
    """The file was downloaded too often lately: Drive refuses its content for a while."""
    paragraphs: list[list[tuple[str, str]]] | None = None
    """A Doc's text with its formatting (`docs_html.Paragraph`s), for its HTML export;
    None: each line of `content` a paragraph in the default style."""

    @property
    def is_google_doc(self) -> bool:
        return self.mime_type.startswith(GOOGLE_APPS) and self.mime_type != FOLDER

    def resource(self, owner_email: str) -> dict[str, Any]:
        """The full File resource (before `fields` cuts it down)."""
        def stamp(when: datetime) -> str:
            return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
                f"{when.microsecond // 1000:03d}Z"

        me = self.modified_by == owner_email
        file: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime_type,
            "parents": list(self.parents),
            "createdTime": stamp(self.created),
            "modifiedTime": stamp(self.modified),
            "trashed": self.trashed,
            "explicitlyTrashed": self.trashed,
            "starred": self.starred,
            "description": self.description,
            "version": str(self.version),
            "spaces": ["drive"],
            "ownedByMe": self.owner == owner_email,
            "modifiedByMe": me,
            "owners": [{"kind": "drive#user", "displayName": self.owner.split("@")[0].title(),
                        "emailAddress": self.owner, "me": self.owner == owner_email}],
            "lastModifyingUser": {
                "kind": "drive#user", "displayName": self.modified_by.split("@")[0].title(),
                "me": me,
                **({"emailAddress": self.modified_by} if "@" in self.modified_by else {}),
            },
            "webViewLink": f"https://docs.google.com/fake/d/{self.id}/view",
            "iconLink": f"https://drive-thirdparty.googleusercontent.com/16/type/{self.mime_type}",
            "shared": False,
            "copyRequiresWriterPermission": self.copy_requires_writer_permission,
        }
        if not self.mime_type.startswith(GOOGLE_APPS):
            file["size"] = str(len(self.content))
            file["md5Checksum"] = hashlib.md5(self.content).hexdigest()  # noqa: S324
            if "." in self.name:
                file["fileExtension"] = self.name.rsplit(".", 1)[1]
                file["fullFileExtension"] = file["fileExtension"]
        if not self.description:
            del file["description"]
        if self.shared_with_me is not None:
            # "The time at which the file was shared with the user, if applicable": only
            # on files shared with the user (Drive v3 File resource).
            file["sharedWithMeTime"] = stamp(self.shared_with_me)
            file["shared"] = True
        if self.drive_id is not None:
            # Only items in a shared drive carry driveId; they are owned by the drive, so
            # owners and ownedByMe are left out ("Shared drive API differences" guide).
            file["driveId"] = self.drive_id
            del file["owners"], file["ownedByMe"]
        # What queries look at, never rendered: text for fullText, people for 'x' in owners.
        file["_text"] = self.content.decode("utf-8", "replace") if self._texty() else ""
        file["_people"] = [self.owner]
        return file

    def _texty(self) -> bool:
        return self.is_google_doc or self.mime_type.startswith("text/")


@dataclass
class Change:
    id: int
    file_id: str
    removed: bool
    time: datetime


class Drive:
    def __init__(self, email: str, ids: Ids) -> None:
        self.email = email
        self.ids = ids
        self.root_id = ids.token(17, "0A")
        self.files: dict[str, DriveFile] = {}
        self.shared_drives: dict[str, str] = {}
        """Shared drives the account is a member of: id -> name. A shared drive's id is
        also the id of its top folder, the parent of the files at its top."""
        self.changes: list[Change] = []
        self.next_change = 100 + ids.rng.randrange(100)

    def file_id(self) -> str:
        return self.ids.token(32, "1")

    def add_shared_drive(self, name: str) -> str:
        drive_id = self.ids.token(17, "0A")
        self.shared_drives[drive_id] = name
        return drive_id

    def drive_of(self, parents: list[str]) -> str | None:
        """The shared drive of a file with these parents (all in one drive, as in Drive)."""
        drives = {
            p if p in self.shared_drives else self.files[p].drive_id
            for p in parents if p in self.shared_drives or p in self.files
        }
        if len(drives) > 1:
            raise ValueError("a file lives in one drive: its parents are in several")
        return drives.pop() if drives else None

    def changed(self, file_id: str, removed: bool = False) -> None:
        self.changes.append(Change(self.next_change, file_id, removed, datetime.now(UTC)))
        self.next_change += 1

    def add(
        self, *, name: str, mime_type: str, content: bytes, parents: list[str],
        modified_by: str, modified: datetime | None = None, created: datetime | None = None,
        description: str = "", paragraphs: list[list[tuple[str, str]]] | None = None,
    ) -> DriveFile:
        # files.create takes modifiedTime (and createdTime) from the uploader: Drive for
        # desktop and API uploads keep a file's own date. Unless given, createdTime is the
        # moment of the upload, so an old file uploaded now is created now.
        now = datetime.now(UTC)
        when = (modified or now).astimezone(UTC)
        born = (created or (when if modified is None else now)).astimezone(UTC)
        resolved = [self.root_id if p == "root" else p for p in parents]
        for parent in resolved:
            if parent != self.root_id and parent not in self.shared_drives and (
                parent not in self.files or self.files[parent].mime_type != FOLDER
            ):
                raise KeyError(f"no folder {parent} in {self.email}'s Drive")
        file = DriveFile(
            id=self.file_id(), name=name, mime_type=mime_type, content=content,
            parents=resolved, created=born, modified=when, modified_by=modified_by,
            owner=self.email, description=description, drive_id=self.drive_of(resolved),
            paragraphs=paragraphs,
        )
        self.files[file.id] = file
        self.changed(file.id)
        return file

    def update(
        self, file_id: str, *, content: bytes | None = None, name: str | None = None,
        trashed: bool | None = None, modified_by: str | None = None,
        parents: list[str] | None = None,
    ) -> DriveFile:
        file = self.files[file_id]
        if content is not None:
            file.content, file.paragraphs = content, None
        if name is not None:
            file.name = name
        if trashed is not None:
            file.trashed = trashed
        if parents is not None:
            file.parents = [self.root_id if p == "root" else p for p in parents]
            file.drive_id = self.drive_of(file.parents)
        if modified_by is not None:
            file.modified_by = modified_by
        # A move (new parents, nothing else) leaves modifiedTime alone on Drive: only the
        # change list and the file's version say that it happened.
        if content is not None or name is not None or trashed is not None:
            file.modified = max(datetime.now(UTC), file.modified)
        file.version += 1
        self.changed(file_id)
        return file

    def star(self, file_id: str, starred: bool = True) -> DriveFile:
        """A metadata-only change (starred, like viewed or shared): Drive's change list
        reports the file again, with its modifiedTime and version as they were (starred
        is the user's own flag, not the file's content)."""
        file = self.files[file_id]
        file.starred = starred
        self.changed(file_id)
        return file

    def share(self, file_id: str, owner: str) -> DriveFile:
        """`owner`'s file shared with the user now: the user's change list reports it,
        its modifiedTime and createdTime as they were."""
        file = self.files[file_id]
        file.owner, file.shared_with_me = owner, datetime.now(UTC)
        self.changed(file_id)
        return file

    def delete(self, file_id: str) -> None:
        del self.files[file_id]
        self.changed(file_id, removed=True)


class Account:
    def __init__(self, email: str, ids: Ids) -> None:
        self.email = email
        self.mailbox = Mailbox(email, ids)
        self.drive = Drive(email, ids)
        # A Google account without Gmail (made with another address, or a Workspace user
        # whose Gmail is off): Gmail answers every call 400 "Mail service not enabled".
        self.gmail_enabled = True
