"""The watch poller: fires watch instructions for new matching mail and Drive files.

Per Google account with an active watch instruction, each poll asks the cheap change
detectors first: Gmail's history since the account's watch cursor (one `history.list`,
2 quota units when nothing changed) and Drive's change list. Only when messages were
added does each mail watch run its query, whose ids are intersected with the added
ones; a message taken out of spam or trash arrives then too, and is looked for with the
query narrowed to the second it first arrived in. A Drive folder watch keeps the new or
changed files whose parents include its folder. Every matching item gets a hit row and
its run in one transaction (the hit's unique key makes an item fire at most one run,
however many schedulers poll; a message trashed and restored fires no second run), and
only then does the cursor move on, by compare-and-set: a poll that dies half way is
done again from the same cursor and fires nothing twice.

Every query is narrowed with `after:` the moment the watch was created, changed or
resumed (`Instruction.watch_since`): older mail never fires, also mail that came while
it was paused. A historyId that Gmail no longer knows (404), a history too long to read
through (`gmail.HISTORY_SCAN_PAGES_MAX` pages, mostly mail read or archived: reads never
stop the history before new mail), or an account polled for the first time, is
resynced within `google_watch_resync_limit`: each query runs with `after:` the
watch's last poll (or its start), so nothing older fires. Either way only
mail that arrived fires, by the labels and headers of the matching messages (one
metadata batch): not the user's drafts or the mail they sent to others (a query answers
those too), nor Pilotlight's own emails. Drive's change
list likewise starts only at an account's first poll: a folder watch then reads the
folder for files created or modified since the watch began, so none added before that
poll is missed.

A Drive change is not always a new version: a move keeps the file's modifiedTime, an
upload may keep its own, and viewing, starring or sharing a file puts it in the change
list with nothing new in it. So a folder watch reads its folder's file ids once when it
(re)starts and keeps in the database which files it knows there: a file in the folder
with an older modifiedTime fires only if it was not known there (moved or uploaded in).

A doc being written autosaves between every two polls: a version of a file fires only
once its modifiedTime is `google_watch_settle_seconds` old. Until then it waits in the
database (`WatchPendingFile`), replaced by any newer version, and every poll fires the
versions that have rested long enough, so a restart loses none.

A poll reads its watchers in one transaction and writes what Google answered in later
ones. Each write first locks the instruction's row and checks that it is still the
active watch the poll read (`watch_service.still_watching`): a delete or a trigger
change (which forget the folder's rows under the same row lock) that came meanwhile
leaves the poll nothing to write, so no membership row or run outlives it. A watch
created, resumed or changed meanwhile (`watch_service.watches_changed`, checked in the
cursor's transaction, which waits for a watch still being created to commit: both
take the user's row) may match what the poll read, after its new start: the cursor
then stays, and the next poll reads the same changes with the watches as they are
(hits stop the others firing twice). A watch deleted, paused or made a schedule holds
nothing back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Account
from app.core.config import Settings
from app.core.db import after_commit, db_now, transaction
from app.core.loops import LoopService
from app.core.pubsub import PgListener
from app.core.runtime import Wakeups
from app.google import watch_service
from app.google.accounts import mark_disconnected, mark_no_mailbox
from app.google.watch_service import DRIVE, GMAIL, FileVersion, WatchedAccount, Watcher
from app.runs import metrics
from app.runs.service import WORKER_CHANNEL
from app.sources.base import (
    AccountDisconnected,
    ChangedFile,
    NoMailbox,
    Source,
    SourceError,
    WatchableSource,
)
from app.sources.registry import source_for

log = logging.getLogger(__name__)

# In-process wake-up channel, and the PostgreSQL NOTIFY channel, of the watch poller.
WATCH_CHANNEL = "pilotlight_google_watch"
# Accounts polled at once by one poller.
_CONCURRENCY = 8
# A mail watch's query looks at this many more ids than were added: messages the query
# matches that are newer than the history read (they come again next poll) must not push
# an added one out of the answer.
_SEARCH_MARGIN = 50
# Files of a watched folder read when its watch (re)starts (1000 ids a call).
_SNAPSHOT_FILES = 10_000

SourceFactory = Callable[[Account, Settings], Source | None]


@dataclass
class PollReport:
    """What one iteration did (for tests and logs)."""

    polled: int = 0
    runs: list[uuid.UUID] = field(default_factory=list)
    resynced: int = 0
    failed: int = 0
    disconnected: int = 0
    # Accounts whose Gmail answered that it is gone: recorded, their Drive polled on.
    no_mailbox: int = 0
    cursor_conflicts: int = 0
    # Polls whose cursor stayed because a watch was created, resumed or changed meanwhile.
    watches_changed: int = 0


class WatchPoller(LoopService):
    name = "google-watch"

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        wakeups: Wakeups,
        settings: Settings,
        sources: SourceFactory = source_for,
    ) -> None:
        super().__init__(interval=settings.google_watch_poll_seconds)
        self.sessionmaker = sessionmaker
        self.wakeups = wakeups
        self.settings = settings
        self.sources = sources
        self.interval_delta = timedelta(seconds=settings.google_watch_poll_seconds)
        self.settle = timedelta(seconds=settings.google_watch_settle_seconds)
        wakeups.subscribe(WATCH_CHANNEL, self.wake)

    async def run(self, stop: asyncio.Event) -> None:
        # A push received by any api process wakes this poller through NOTIFY.
        listener: asyncio.Task[None] | None = None
        engine = self.sessionmaker.kw.get("bind")
        if engine is not None and engine.dialect.name == "postgresql":
            pg = PgListener(engine.url, {WATCH_CHANNEL: self.wake})
            listener = asyncio.create_task(pg.run(stop), name="google-watch-listen")
        try:
            await super().run(stop)
        finally:
            if listener is not None:
                await asyncio.gather(listener, return_exceptions=True)

    async def run_once(self) -> PollReport:
        """Poll every watched account that is due (a push makes one due at once)."""
        async with transaction(self.sessionmaker) as session:
            now = await db_now(session)
            due = await watch_service.watched_accounts(session=session, now=now)
        return await self.poll(due, now)

    async def poll_accounts(self, account_ids: list[uuid.UUID]) -> PollReport:
        """Poll these accounts now, due or not."""
        async with transaction(self.sessionmaker) as session:
            now = await db_now(session)
            due = await watch_service.watched_accounts(
                session=session, now=now, account_ids=account_ids
            )
        return await self.poll(due, now)

    async def poll(self, due: list[WatchedAccount], now: datetime) -> PollReport:
        report = PollReport()
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def one(watched: WatchedAccount) -> None:
            async with limit:
                try:
                    await self._poll(watched, now, report)
                except Exception:
                    # One account's failure (the database, a bug) must not stop the others';
                    # its cursor stays, so the next poll does it again.
                    report.failed += 1
                    log.exception("watch: polling account %s failed", watched.account.id)

        await asyncio.gather(*(one(watched) for watched in due))
        if report.runs:
            log.info("watch: %d account(s) polled, %d run(s) queued",
                     report.polled, len(report.runs))
        return report

    async def _poll(self, watched: WatchedAccount, now: datetime, report: PollReport) -> None:
        account = watched.account
        source = self.sources(account, self.settings)
        if not isinstance(source, WatchableSource):
            log.warning("watch: account %s has no watchable source; skipped", account.id)
            report.failed += 1
            return
        try:
            try:
                history_id = await self._mail(watched, source, now, report)
            except NoMailbox as exc:
                # Gmail is gone, Drive is not: its watches go on. The mail watches start
                # afresh (no historyId) if Gmail comes back and they are resumed.
                report.no_mailbox += 1
                await self._mailbox_gone(account, exc)
                history_id = None
            page_token = await self._files(watched, source, now, report)
        except AccountDisconnected as exc:
            report.disconnected += 1
            await self._disconnected(account, exc)
            return
        except SourceError as exc:
            # The next poll starts again from the same cursor; hits stop repeats.
            report.failed += 1
            log.warning("watch: polling account %s failed: %s", account.id, exc)
            return
        async with transaction(self.sessionmaker) as session:
            changed = await watch_service.watches_changed(
                session=session, account=account, watchers=watched.watchers
            )
            if not changed:
                moved = await watch_service.advance_cursor(
                    session=session, account=account, seen=watched.cursor,
                    history_id=history_id, drive_page_token=page_token, now=now,
                    next_poll_at=now + self.interval_delta,
                )
        if changed:
            # A watch created, resumed or changed during the poll may match what it read
            # (it was not looked for, or its write was refused): the cursor stays, and the
            # next poll reads the same changes with the watches as they are now. The other
            # watches fire nothing twice: their hits are there.
            report.watches_changed += 1
            log.info("watch: account %s: watch(es) %s changed during the poll; its changes "
                     "are read again", account.id, ", ".join(map(str, changed)))
            return
        report.polled += 1
        if not moved:
            # Another scheduler polled the same account meanwhile and moved the cursor.
            report.cursor_conflicts += 1

    async def _mail(
        self, watched: WatchedAccount, source: WatchableSource, now: datetime,
        report: PollReport,
    ) -> str | None:
        """Fire the mail watches; returns the historyId to store."""
        watchers = [w for w in watched.watchers if w.spec.get(GMAIL)]
        if not watchers:
            return None  # a mail watch created later starts afresh
        cursor = watched.cursor
        start = cursor.history_id if cursor is not None else None
        changes = await source.mail_changes(start)
        if start is None or changes.expired:
            report.resynced += 1
            if changes.expired:
                log.warning("watch: account %s history expired; resyncing", watched.account.id)
            last_poll = cursor.polled_at if cursor is not None else None
            for watcher in watchers:
                since = _resync_since(watcher, last_poll)
                ids = await source.search_mail_ids(
                    _after(watcher.spec[GMAIL], since),
                    limit=self.settings.google_watch_resync_limit,
                )
                await self._fire(watcher, watched.account, "message",
                                 await _arrived(source, ids), now, report)
        elif changes.added_message_ids or changes.rescued_message_ids:
            added = set(changes.added_message_ids)
            # Back from spam or trash ("Not spam", restored): it may have arrived long ago,
            # beyond the newest answers of a query, so each is looked for by the second it
            # arrived in (one query each; a rescue is rare). Metadata first, for that time.
            rescued = await source.arrived_mail(changes.rescued_message_ids)
            for watcher in watchers:
                matching: list[str] = []
                if added:
                    ids = await source.search_mail_ids(
                        _after(watcher.spec[GMAIL], watcher.since),
                        limit=len(added) + _SEARCH_MARGIN,
                    )
                    matching = await _arrived(source, [i for i in ids if i in added])
                for mid, arrived_at in rescued.items():
                    if arrived_at < watcher.since:
                        continue
                    ids = await source.search_mail_ids(
                        _around(watcher.spec[GMAIL], arrived_at),
                        limit=self.settings.google_watch_resync_limit,
                    )
                    if mid in ids:
                        matching.append(mid)
                await self._fire(watcher, watched.account, "message", matching, now, report)
        return changes.history_id

    async def _files(
        self, watched: WatchedAccount, source: WatchableSource, now: datetime,
        report: PollReport,
    ) -> str | None:
        """Fire the Drive folder watches; returns the page token to store."""
        watchers = [w for w in watched.watchers if w.spec.get(DRIVE)]
        if not watchers:
            return None
        cursor = watched.cursor
        token = cursor.drive_page_token if cursor is not None else None
        changes = await source.file_changes(token)
        await self._snapshot(watchers, watched.account, source, now)
        if token is None:
            # The change list starts now: what came to the folder since the watch began
            # (or since the last poll) is read from the folder itself, after the start
            # token was taken, so that no file falls between the two.
            report.resynced += 1
            last_poll = cursor.polled_at if cursor is not None else None
            for watcher in watchers:
                since = _resync_since(watcher, last_poll)
                files = await source.folder_files(
                    watcher.spec[DRIVE], since=since,
                    limit=self.settings.google_watch_resync_limit,
                )
                await self._folder(watcher, watched.account, now, report,
                                   versions=_versions(files))
            await self._settled(watchers, watched.account, now, report)
            return changes.page_token
        for watcher in watchers:
            folder = watcher.spec[DRIVE]
            inside = [f for f in changes.files if not f.removed and folder in f.parents]
            # Created or changed since the watch began: each version fires once. An older
            # file is new to the folder only if the watch did not know it there (moved
            # in, or uploaded with its own date); else the change was to its metadata.
            recent = [f for f in inside if _since_watch(f, watcher.since)]
            older = [f for f in inside if not _since_watch(f, watcher.since)]
            left = [f.id for f in changes.files if f.removed or folder not in f.parents]
            await self._folder(watcher, watched.account, now, report,
                               versions=_versions(recent), older=_versions(older), left=left)
        await self._settled(watchers, watched.account, now, report)
        return changes.page_token

    async def _folder(
        self, watcher: Watcher, account: Account, now: datetime, report: PollReport, *,
        versions: list[FileVersion], older: list[FileVersion] | None = None,
        left: list[str] | None = None,
    ) -> None:
        """Fire (or keep waiting to settle) one folder watch's changed files."""
        if not (versions or older or left):
            return
        async with transaction(self.sessionmaker) as session:
            runs = await watch_service.record_folder_changes(
                session=session, watcher=watcher, account_id=account.id, versions=versions,
                older=older or [], left=left or [], now=now, settle=self.settle,
            )
            self._queued(session, runs)
        report.runs.extend(runs)

    async def _settled(
        self, watchers: list[Watcher], account: Account, now: datetime, report: PollReport,
    ) -> None:
        """Fire the file versions that waited long enough without a newer one (also
        those left waiting when the settle time was then longer)."""
        async with transaction(self.sessionmaker) as session:
            runs = await watch_service.fire_settled(
                session=session, watchers=watchers, account_id=account.id, now=now,
            )
            self._queued(session, runs)
        report.runs.extend(runs)

    async def _snapshot(
        self, watchers: list[Watcher], account: Account, source: WatchableSource,
        now: datetime,
    ) -> None:
        """Read the folder of each watch that (re)started since the last poll: the files
        there now are not new to it. (One that came in with an older modifiedTime between
        the watch's start and this poll is counted as there already: Drive cannot say.)"""
        async with transaction(self.sessionmaker) as session:
            needed = await watch_service.without_snapshot(session=session, watchers=watchers)
        for watcher in needed:
            ids = await source.folder_file_ids(watcher.spec[DRIVE], limit=_SNAPSHOT_FILES)
            if len(ids) >= _SNAPSHOT_FILES:
                log.warning("watch: only the first %d files of the folder of instruction %s "
                            "are known to be there; a change to the metadata of another "
                            "fires it once", _SNAPSHOT_FILES, watcher.id)
            async with transaction(self.sessionmaker) as session:
                await watch_service.record_snapshot(
                    session=session, watcher=watcher, account_id=account.id, file_ids=ids,
                    now=now,
                )

    async def _fire(
        self, watcher: Watcher, account: Account, kind: str, items: list[str], now: datetime,
        report: PollReport,
    ) -> None:
        if not items:
            return
        async with transaction(self.sessionmaker) as session:
            if not await watch_service.still_watching(session=session, watchers=[watcher]):
                return  # deleted, paused or changed since the poll read it
            runs = await watch_service.record_hits(
                session=session, watcher=watcher, account_id=account.id, kind=kind,
                item_ids=items, now=now,
            )
            self._queued(session, runs)
        report.runs.extend(runs)

    def _queued(self, session: AsyncSession, runs: list[uuid.UUID]) -> None:
        """Once committed: wake a worker for the runs, count them."""
        if runs:
            count = len(runs)
            after_commit(session, lambda: self.wakeups.notify(WORKER_CHANNEL))
            after_commit(session, lambda: metrics.RUNS_QUEUED.labels("watch").inc(count))

    async def _disconnected(self, account: Account, exc: AccountDisconnected) -> None:
        """The grant is gone: the account is marked disconnected, its watches are paused
        and the user is told once (with a reconnect link); polling it stops."""
        log.warning("watch: account %s is disconnected: %s", account.id, exc)
        async with transaction(self.sessionmaker) as session:
            await mark_disconnected(
                session, account=account, reason=str(exc), settings=self.settings
            )

    async def _mailbox_gone(self, account: Account, exc: NoMailbox) -> None:
        """Gmail said the account's mail service is not enabled: the account is recorded
        as mailbox-less, its mail watches are paused (unless another account serves them)
        and the user is told once; it is polled on for its Drive watches."""
        log.warning("watch: account %s has no Gmail any more: %s", account.id, exc)
        async with transaction(self.sessionmaker) as session:
            await mark_no_mailbox(session, account=account, settings=self.settings)


def _resync_since(watcher: Watcher, last_poll: datetime | None) -> datetime:
    """Where a resync looks from: the watch's start, or its last poll if later."""
    return watcher.since if last_poll is None else max(watcher.since, last_poll)


def _since_watch(file: ChangedFile, since: datetime) -> bool:
    """Created or modified at or after `since` (a file without dates counts as new)."""
    if file.modified_time is None:
        return True
    return file.modified_time >= since or (
        file.created_time is not None and file.created_time >= since
    )


def _versions(files: list[ChangedFile]) -> list[FileVersion]:
    """Each version of a file fires once: its id with its modifiedTime."""
    return [
        FileVersion(id=f.id, modified=f.modified_time,
                    key=f"{f.id}@{f.modified_time.isoformat() if f.modified_time else ''}")
        for f in files
    ]


def _after(query: str, since: datetime) -> str:
    """The query narrowed to mail received at or after `since` (Gmail's `after:` takes
    epoch seconds), so that nothing older than the watch fires."""
    return f"({query}) after:{int(since.timestamp())}"


def _around(query: str, when: datetime) -> str:
    """The query narrowed to mail received within a second or so of `when` (whether
    Gmail's `after:` and `before:` include their own second or not)."""
    second = int(when.timestamp())
    return f"({query}) after:{second - 1} before:{second + 2}"


async def _arrived(source: WatchableSource, ids: list[str]) -> list[str]:
    """The ids of mail the user received, by the messages' labels and headers, on every
    path alike: a resync's query (like any `messages.list`) also answers the user's own
    sent mail and drafts, which never fire; nor do Pilotlight's own emails, or a watch
    whose query matches the digest it sends (`in:inbox`, `to:me`) would fire on it, and
    again on the next one. One metadata batch, only when something matched."""
    if not ids:
        return ids
    return list(await source.arrived_mail(ids))
