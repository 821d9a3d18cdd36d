"""Gmail for the source: incremental sync from a historyId, search, reads, attachments.

The delta cursor's mail part is `{"history_id": str, "seen": [ids], "seen_at": [epoch
ms], "floor": epoch ms, "pending": [ids], "after": epoch ms}`:

- `history_id`: where the next `history.list` starts. A no-change delta is that one
  call (2 quota units).
- `seen`: the ids already looked at, shown or skipped (drafts, sent, deleted, ours; not
  what was in spam or trash, which may come back), the last `SEEN_MAX` looked at, so a
  message is never shown twice, also across a resync or a trip to the trash and back;
  `seen_at`: when each arrived (internalDate).
- `floor`: the latest arrival among the ids `seen` has let go of. A message back from
  spam or trash that arrived at or before it is not shown: `seen` can no longer say
  whether it was (so spam rescued long after it came, past `SEEN_MAX` other messages,
  is not shown either).
- `pending`: ids found but not looked at because the delta was full (`limit`); the
  next delta shows them after anything newer, so a burst is not dropped (up to
  `PENDING_MAX` waiting ids: beyond that the oldest of a burst are lost).
- `after`: the arrival time (internalDate) of the newest message shown.

New mail is what history says arrived (`messageAdded`, not a draft, spam, trash or
mail sent to others) and what it says came back: a `labelsRemoved` entry taking SPAM or
TRASH off a message ("Not spam", restored from the trash) is an arrival too, unless the
message is in `seen` or arrived at or before `floor`.

Metadata is fetched only for the candidates a delta looks at, newest first, until
`limit` cards are found: a burst costs what the delta shows, not what arrived.

No cursor: the `limit` newest arrived messages (one `messages.list`), and the
current historyId from the profile, taken first so nothing falls between.

An expired historyId (404): a bounded full resync. The newest
`google_resync_messages` ids are listed; those in `seen` are dropped, the rest are
fetched newest first and kept while they arrived at or after `after` (a message older
than what was last shown was covered by the history the cursor came from, or arrived
before it existed; the first older one ends the resync). That rule is for the listing
only: the ids waiting in `pending` were found before and never shown, so they are shown
(or keep waiting) as after any delta. What arrived beyond the newest N while the
history was lost is not shown: that is the bound.

Label removals that are not SPAM/TRASH (mail read: UNREAD; archived: INBOX) come in the
same `history.list` pages but are read past: they do not count against the history
budget (`HISTORY_PAGE` x `HISTORY_PAGES_MAX` records that add mail or take it out of
spam or trash), so "Mark all as read" on 10,000 messages cannot stop a delta before the
mail that came after. They are capped apart (`HISTORY_SCAN_PAGES_MAX` pages in all);
past that cap the history is treated as lost (logged) and resynced as for a 404.

Metadata comes from `messages.get(format=metadata)` in batches of at most 50. Such a card
has no snippet (`gmail_format.card`: Gmail's own includes text hidden from the reader); the
run reads each new mail for the prompt anyway. Search results, shown to the model with a
snippet, come in `full` format (the same 5 quota units a message) and their snippet is cut
from the cleaned text.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from app.google import gmail_format as fmt
from app.google.client import GoogleApiError, GoogleClient
from app.sources.base import (
    ItemNotFound,
    MailCard,
    MailChanges,
    Message,
    SourceError,
    Thread,
)

SEEN_MAX = 1000
PENDING_MAX = 1000
HISTORY_PAGE = 500
HISTORY_PAGES_MAX = 20
"""At most `HISTORY_PAGE` x this many history records that add mail or take it out of
spam or trash per sync; the cursor then resumes from the last record read."""
HISTORY_SCAN_PAGES_MAX = 200
"""At most this many history pages per sync in all (records read past included: 100,000
records, 400 quota units); beyond that the history is resynced as if expired."""
LIST_PAGE_MAX = 500
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
# Labels whose removal brings a message back: "Not spam", or restored from the trash.
_QUARANTINE = frozenset({"SPAM", "TRASH"})

log = logging.getLogger(__name__)


class HistoryExpired(SourceError):
    """Gmail no longer keeps history from this historyId."""


def check_id(item_id: str, what: str) -> str:
    """Ids come from the model: only Gmail's own id alphabet goes into a call."""
    if not isinstance(item_id, str) or not _ID.match(item_id):
        raise ItemNotFound(f"no {what} with id {item_id!r}")
    return item_id


def _not_found(exc: GoogleApiError, what: str, item_id: str) -> SourceError:
    # Gmail answers 400 "Invalid id value" for ids of the wrong shape.
    if exc.status in (400, 404):
        return ItemNotFound(f"no {what} with id {item_id!r}")
    return exc


class GmailReader:
    """One account's Gmail, read-only."""

    def __init__(self, client: GoogleClient, *, resync_limit: int) -> None:
        self.client = client
        self.resync_limit = resync_limit

    def _users(self) -> Any:
        return self.client.gmail().users()

    # ------------------------------------------------------------------ calls

    async def history_id(self) -> str:
        profile = await self.client.call("gmail", self._users().getProfile(userId="me"))
        return str(profile["historyId"])

    async def history(self, start: str) -> tuple[str, list[str], list[str]]:
        """(historyId to resume from, ids of arrived messages added since `start`, ids of
        messages taken out of spam or trash since then), each oldest first. Raises
        `HistoryExpired` on Gmail's 404.

        "Not spam" and "restore from trash" add no message: Gmail records a labelsRemoved
        (SPAM or TRASH) entry, so label removals are asked for too; the other ones (most
        are UNREAD, when mail is read) are read past, in the same pages of the same call
        (2 units a page). Only records that add a message or take one out of spam or
        trash count against the budget (`HISTORY_PAGE` x `HISTORY_PAGES_MAX`): reading
        or archiving in bulk must not stop the delta before the mail that came after
        (the next digest's window would leave that mail out). Past
        `HISTORY_SCAN_PAGES_MAX` pages in all, `HistoryExpired` (resynced)."""
        added: list[str] = []
        rescued: list[str] = []
        page_token: str | None = None
        resume = start
        counted = 0
        for _ in range(HISTORY_SCAN_PAGES_MAX):
            kwargs: dict[str, Any] = {
                "userId": "me", "startHistoryId": start,
                "historyTypes": ["messageAdded", "labelRemoved"], "maxResults": HISTORY_PAGE,
            }
            if page_token:
                kwargs["pageToken"] = page_token
            try:
                page = await self.client.call("gmail", self._users().history().list(**kwargs))
            except GoogleApiError as exc:
                if exc.status == 404:
                    raise HistoryExpired(f"Gmail no longer has history from {start}") from exc
                raise
            for record in page.get("history") or []:
                counts = bool(record.get("messagesAdded"))
                for entry in record.get("messagesAdded") or []:
                    msg = entry.get("message") or {}
                    if msg.get("id") and fmt.arrived(msg):
                        added.append(str(msg["id"]))
                for entry in record.get("labelsRemoved") or []:
                    msg = entry.get("message") or {}
                    if not set(entry.get("labelIds") or []) & _QUARANTINE:
                        continue  # read, archived...: read past, not counted
                    counts = True
                    # The message's labels after the change, when Gmail gives them: out of
                    # spam but still in trash (or a draft) has not arrived. The caller's
                    # metadata decides in the end.
                    if msg.get("id") and fmt.arrived(msg):
                        rescued.append(str(msg["id"]))
                counted += counts
                if record.get("id"):
                    resume = str(record["id"])
            page_token = page.get("nextPageToken")
            if not page_token:
                return str(page.get("historyId") or resume), added, rescued
            if counted >= HISTORY_PAGE * HISTORY_PAGES_MAX:
                # Too much new mail at once: carry on from the last record next time.
                return resume, added, rescued
        # Pages upon pages of reads and archives: stopping inside them would leave the mail
        # after them to a later delta, whose window may be past it. Resync instead.
        log.warning(
            "gmail: more than %d history pages from %s (mostly mail read or archived); "
            "resyncing as if the history had expired",
            HISTORY_SCAN_PAGES_MAX, start,
        )
        raise HistoryExpired(f"Gmail history from {start} is too long to read through")

    async def list_ids(self, *, query: str | None, limit: int) -> list[str]:
        """Message ids matching `query` (Gmail syntax), newest first, at most `limit`."""
        ids: list[str] = []
        page_token: str | None = None
        while len(ids) < limit:
            kwargs: dict[str, Any] = {
                "userId": "me", "maxResults": min(LIST_PAGE_MAX, limit - len(ids)),
            }
            if query:
                kwargs["q"] = query
            if page_token:
                kwargs["pageToken"] = page_token
            page = await self.client.call("gmail", self._users().messages().list(**kwargs))
            ids += [str(m["id"]) for m in page.get("messages") or [] if m.get("id")]
            page_token = page.get("nextPageToken")
            if not page_token:
                break
        return list(dict.fromkeys(ids))[:limit]

    async def metadata(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Message resources in `metadata` format by id, in batches of at most 50; ids that
        are gone (deleted since) are left out."""
        return await self._resources(ids, full=False)

    async def _resources(self, ids: list[str], *, full: bool) -> dict[str, dict[str, Any]]:
        messages = self._users().messages()
        requests = [
            (mid, messages.get(userId="me", id=mid, format="full") if full else messages.get(
                userId="me", id=mid, format="metadata", metadataHeaders=fmt.METADATA_HEADERS
            ))
            for mid in dict.fromkeys(ids)
        ]
        found: dict[str, dict[str, Any]] = {}
        for mid, result in (await self.client.batch("gmail", requests)).items():
            if isinstance(result, GoogleApiError):
                if result.status in (400, 404):
                    continue
                raise result
            found[mid] = result
        return found

    async def arrived_mail(self, ids: list[str]) -> dict[str, datetime]:
        """Those of `ids` that arrived (`fmt.arrived`: no draft, no mail sent to others, not
        in spam or trash) and are not Pilotlight's own emails, in the order of `ids`, with
        their arrival time (internalDate); deleted ones are left out. One metadata
        batch."""
        found = await self.metadata(ids)
        return {
            mid: fmt.internal_date(resource) for mid in dict.fromkeys(ids)
            if (resource := found.get(mid)) is not None
            and fmt.arrived(resource) and not fmt.from_pilotlight(resource)
        }

    async def cards(self, ids: list[str], since: datetime | None = None) -> list[MailCard]:
        """Cards of the arrived messages among `ids`, in the order of `ids`, each with a
        snippet of its text as its reader sees it: fetched in `full` format, which costs
        the quota units of `metadata` (5 a message) and carries the bodies to clean."""
        found = await self._resources(ids, full=True)
        out = []
        for mid in ids:
            resource = found.get(mid)
            if resource is None or not fmt.arrived(resource):
                continue
            card = fmt.card(resource)
            if since is None or card.date >= since:
                out.append(card)
        return out

    # ------------------------------------------------------------------ delta

    async def delta(
        self, old: dict[str, Any] | None, *, limit: int, since: datetime | None
    ) -> tuple[list[MailCard], dict[str, Any]]:
        """New messages since the cursor's mail part, and the part that marks them seen."""
        limit = max(0, limit)
        if not old or not isinstance(old.get("history_id"), str):
            return await self._first(limit, since)
        seen = [str(i) for i in old.get("seen") or []]
        seen_set = set(seen)
        pending = [str(i) for i in old.get("pending") or []]
        after = int(old.get("after") or 0)
        seen_at = [int(t) for t in old.get("seen_at") or []]
        if len(seen_at) != len(seen):
            seen_at = [after] * len(seen)  # a cursor from before seen_at: none arrived later
        floor = int(old.get("floor") or 0)
        back: set[str] = set()
        try:
            history_id, arrived, rescued = await self.history(old["history_id"])
            # A message back from spam or trash arrives now, unless it was seen (`seen`
            # keeps no id skipped for being in spam or trash: it may come back).
            added = [*arrived, *rescued]
            back = set(rescued) - set(arrived)
            resync = False
        except HistoryExpired:
            history_id = await self.history_id()
            added = list(reversed(await self.list_ids(query=None, limit=self.resync_limit)))
            resync = True
        # Newest first: what history added (it lists oldest first), then what waited.
        waiting = set(pending)
        candidates = [
            i for i in dict.fromkeys([*reversed(added), *pending]) if i not in seen_set
        ]
        shown: list[MailCard] = []
        newest = after
        looked: list[str] = []
        looked_at: list[int] = []
        # Metadata only for as many as can be shown: a burst costs what the delta shows.
        while len(shown) < limit and candidates:
            chunk = candidates[: limit - len(shown)]
            candidates = candidates[len(chunk):]
            found = await self.metadata(chunk)
            older = False
            for mid in chunk:
                resource = found.get(mid)
                if resource is not None and set(resource.get("labelIds") or []) & _QUARANTINE:
                    # In spam or trash by now: not shown, nor kept as seen, so that it is
                    # shown if it comes back from there.
                    continue
                arrived_at = int((resource or {}).get("internalDate") or 0)
                looked.append(mid)
                looked_at.append(arrived_at)
                if resource is None or not fmt.arrived(resource) or fmt.from_pilotlight(resource):
                    # Deleted since, a draft, sent to others, or our own email: seen all the
                    # same.
                    continue
                if mid in back and mid not in waiting and arrived_at <= floor:
                    # Back from the trash, but from before what `seen` still remembers: it
                    # may have been shown then.
                    continue
                if resync and arrived_at < after and mid not in waiting:
                    # Listed again but older than what was shown last: not new, nor is the
                    # rest of the listing (newest first). What waited in `pending` was
                    # found before and never shown: it stays.
                    older = True
                    continue
                card = fmt.card(resource)
                if since is None or card.date >= since:
                    shown.append(card)
                    newest = max(newest, arrived_at)
            if older:
                candidates = [i for i in candidates if i in waiting]
        seen, seen_at = seen + looked, seen_at + looked_at
        forgotten = len(seen) - SEEN_MAX
        if forgotten > 0:
            floor = max(floor, *seen_at[:forgotten])
            seen, seen_at = seen[forgotten:], seen_at[forgotten:]
        return shown, {
            "history_id": history_id,
            "seen": seen,
            "seen_at": seen_at,
            "floor": floor,
            "pending": candidates[:PENDING_MAX],
            "after": newest,
        }

    async def _first(
        self, limit: int, since: datetime | None
    ) -> tuple[list[MailCard], dict[str, Any]]:
        history_id = await self.history_id()  # first: what arrives meanwhile comes next time
        query = f"after:{int(since.timestamp())}" if since is not None else None
        ids = await self.list_ids(query=query, limit=limit) if limit else []
        found = await self.metadata(ids)
        resources = [
            found[i] for i in ids
            if i in found and fmt.arrived(found[i]) and not fmt.from_pilotlight(found[i])
        ]
        cards = [
            c for c in (fmt.card(r) for r in resources) if since is None or c.date >= since
        ]
        seen_at = [int((found.get(i) or {}).get("internalDate") or 0) for i in ids]
        return cards, {
            "history_id": history_id,
            "seen": ids[-SEEN_MAX:],
            "seen_at": seen_at[-SEEN_MAX:],
            "floor": max(seen_at[:-SEEN_MAX], default=0),
            "pending": [],
            "after": max((int(r.get("internalDate") or 0) for r in resources), default=0),
        }

    # ------------------------------------------------------------------ watch detectors

    async def changes(self, start: str | None) -> MailChanges:
        if start is None:
            return MailChanges(history_id=await self.history_id())
        try:
            history_id, added, rescued = await self.history(start)
        except HistoryExpired:
            return MailChanges(history_id=await self.history_id(), expired=True)
        added = list(dict.fromkeys(added))
        known = set(added)
        return MailChanges(
            history_id=history_id, added_message_ids=added,
            rescued_message_ids=[i for i in dict.fromkeys(rescued) if i not in known],
        )

    # ------------------------------------------------------------------ tools

    async def search(self, query: str, *, limit: int) -> list[MailCard]:
        """Gmail's own search (its query syntax passed through), newest first."""
        ids = await self.list_ids(query=query, limit=max(0, limit)) if limit > 0 else []
        return await self.cards(ids)

    async def _full(self, message_id: str) -> dict[str, Any]:
        check_id(message_id, "message")
        request = self._users().messages().get(userId="me", id=message_id, format="full")
        try:
            result: dict[str, Any] = await self.client.call("gmail", request)
        except GoogleApiError as exc:
            raise _not_found(exc, "message", message_id) from exc
        return result

    async def read_message(self, message_id: str) -> Message:
        return fmt.message(await self._full(message_id))

    async def read_thread(self, thread_id: str) -> Thread:
        check_id(thread_id, "thread")
        request = self._users().threads().get(userId="me", id=thread_id, format="full")
        try:
            resource = await self.client.call("gmail", request)
        except GoogleApiError as exc:
            raise _not_found(exc, "thread", thread_id) from exc
        messages = sorted(
            (fmt.message(m) for m in resource.get("messages") or []
             if not set(m.get("labelIds") or []) & fmt.NOT_ARRIVED),
            key=lambda m: m.date,
        )
        if not messages:
            raise ItemNotFound(f"no thread with id {thread_id!r}")
        return Thread(id=thread_id, subject=messages[0].subject, messages=messages)

    async def read_attachment(self, message_id: str, filename: str) -> tuple[str, bytes]:
        """One attachment as `read_message` lists it, by name (never a path)."""
        resource = await self._full(message_id)
        part = next(
            (p for name, p in fmt.attachment_parts(resource.get("payload") or {})
             if name == filename),
            None,
        )
        if part is None:
            raise ItemNotFound(f"message {message_id!r} has no attachment {filename!r}")
        mime_type = str(part.get("mimeType") or "application/octet-stream")
        body = part.get("body") or {}
        if int(body.get("size") or 0) > MAX_ATTACHMENT_BYTES:
            raise SourceError(
                f"attachment {filename!r} is larger than {MAX_ATTACHMENT_BYTES} bytes"
            )
        if body.get("data"):
            return mime_type, fmt.decode_data(str(body["data"]))
        attachment_id = body.get("attachmentId")
        if not attachment_id:
            return mime_type, b""
        request = self._users().messages().attachments().get(
            userId="me", messageId=message_id, id=str(attachment_id)
        )
        try:
            fetched = await self.client.call("gmail", request)
        except GoogleApiError as exc:
            raise _not_found(exc, "message", message_id) from exc
        return mime_type, fmt.decode_data(str(fetched.get("data") or ""))
