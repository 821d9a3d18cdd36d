"""Watch triggers' rules and bookkeeping: which accounts a watch needs, which instructions
watch an account, the hits (each item fires at most one run) and the account's cursor.

Services only flush; the watch poller (app/google/watch.py) owns the transactions.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, and_, case, delete, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.core.db import insert_ignore
from app.core.errors import BadRequest
from app.google.credentials import usable_scopes
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY
from app.google.watch_models import WatchCursor, WatchHit, WatchPendingFile
from app.instructions.models import Instruction
from app.runs import queue
from app.users.models import User

# A watch trigger's spec names what it watches with one of these keys.
GMAIL = "gmail_query"
DRIVE = "drive_folder_id"


class WatchNeedsGoogle(BadRequest):
    """A watch trigger on an account that is not connected, or lacks the scope it needs."""


def needed_scope(spec: dict[str, Any]) -> str:
    return GMAIL_READONLY if spec.get(GMAIL) else DRIVE_READONLY


def can_watch(account: Account, spec: dict[str, Any]) -> bool:
    """Whether `account` can serve this watch trigger now."""
    return (
        account.kind == "google" and account.status == "active"
        and needed_scope(spec) in usable_scopes(account)
    )


async def require_watchable(
    *, session: AsyncSession, user_id: uuid.UUID, spec: dict[str, Any]
) -> None:
    """Refuse a watch trigger that no connected Google account of the user can serve."""
    accounts = (
        await session.execute(
            select(Account).where(Account.user_id == user_id, Account.kind == "google")
        )
    ).scalars().all()
    if any(can_watch(account, spec) for account in accounts):
        return
    what = "mail" if spec.get(GMAIL) else "a Drive folder"
    scope = needed_scope(spec)
    if not accounts:
        raise WatchNeedsGoogle(
            f"watching {what} needs a connected Google account: connect one at "
            "/api/v1/google/connect, then try again"
        )
    if not any(a.status == "active" for a in accounts):
        raise WatchNeedsGoogle(
            f"watching {what} needs a connected Google account, and yours is disconnected: "
            "reconnect it at /api/v1/google/connect"
        )
    raise WatchNeedsGoogle(
        f"watching {what} needs the {scope} permission, which your Google account did not "
        "grant: reconnect at /api/v1/google/connect and allow it"
    )


async def hold_new_watch(*, session: AsyncSession, user_id: uuid.UUID) -> None:
    """Before a new watch takes its start: hold the user's row shared until the
    transaction ends. A poll of the user's accounts takes it too before it moves a
    cursor (`watches_changed`), so it waits for the new watch to commit and sees it,
    and mail that came after the watch began is not skipped. (The user's row, taken
    first, as connecting Google takes it before the account's.)"""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update(read=True))


@dataclass(frozen=True)
class Watcher:
    """An active watch instruction, as the poller needs it."""

    id: uuid.UUID
    user_id: uuid.UUID
    spec: dict[str, Any]
    # Items older than this never fire (the watch was created, changed or resumed then).
    since: datetime
    covered_until: datetime | None


@dataclass
class WatchedAccount:
    account: Account
    cursor: WatchCursor | None
    watchers: list[Watcher]


_WATCHING = (
    select(Instruction.id, Instruction.user_id, Instruction.trigger, Instruction.created_at,
           Instruction.watch_since, Instruction.covered_until)
    .where(
        Instruction.status == "active", Instruction.deleted_at.is_(None),
        Instruction.next_run_at.is_(None),
    )
)


def _watcher(row: Any) -> Watcher:
    return Watcher(row.id, row.user_id, row.trigger, row.watch_since or row.created_at,
                   row.covered_until)


async def watched_accounts(
    *, session: AsyncSession, now: datetime, account_ids: Sequence[uuid.UUID] | None = None,
    due_only: bool = True,
) -> list[WatchedAccount]:
    """Active Google accounts with an active watch instruction that are due for a poll
    (never polled, or next_poll_at reached); with `account_ids` or `due_only=False`,
    due or not."""
    rows = (await session.execute(_WATCHING)).all()
    by_user: dict[uuid.UUID, list[Watcher]] = {}
    for row in rows:
        if (row.trigger or {}).get("type") != "watch":
            continue
        by_user.setdefault(row.user_id, []).append(_watcher(row))
    if not by_user:
        return []
    stmt = (
        select(Account, WatchCursor)
        .outerjoin(WatchCursor, WatchCursor.account_id == Account.id)
        .where(Account.user_id.in_(list(by_user)), Account.kind == "google",
               Account.status == "active")
        .order_by(Account.id)
    )
    if account_ids is not None:
        stmt = stmt.where(Account.id.in_(list(account_ids)))
    elif due_only:
        stmt = stmt.where(
            (WatchCursor.next_poll_at.is_(None)) | (WatchCursor.next_poll_at <= now)
        )
    found: list[WatchedAccount] = []
    for account, cursor in (await session.execute(stmt)).all():
        watchers = [w for w in by_user[account.user_id] if can_watch(account, w.spec)]
        if watchers:
            found.append(WatchedAccount(account, cursor, watchers))
    return found


async def still_watching(
    *, session: AsyncSession, watchers: Sequence[Watcher]
) -> list[Watcher]:
    """The watchers whose instruction is still the active watch the poller read (not
    deleted, paused, or changed to another trigger or start since), their rows locked
    until the transaction ends.

    A poll reads its watchers in one transaction and writes what it found in later ones,
    after Google answered: an instruction deleted (or changed) meanwhile has had
    `forget_folder` run, and a write that followed it would stay for ever. Every write
    of the poller calls this first in its own transaction: the delete and the trigger
    change lock the same row (`instructions.service.get(for_update=True)`), so either the
    write commits first and the forget removes it, or the forget commits first and the
    write sees the instruction gone. (SQLite's BEGIN IMMEDIATE serializes the two
    transactions whole.) What a refused write held is not lost for a watch resumed or
    changed: the poller then leaves the account's cursor (`watches_changed`)."""
    if not watchers:
        return []
    rows = (await session.execute(
        select(Instruction.id, Instruction.trigger, Instruction.watch_since,
               Instruction.created_at)
        .where(Instruction.id.in_(sorted({w.id for w in watchers})),
               Instruction.status == "active", Instruction.deleted_at.is_(None))
        .order_by(Instruction.id)
        .with_for_update()
    )).all()
    live = {row.id: row for row in rows}
    return [
        w for w in watchers
        if (row := live.get(w.id)) is not None and row.trigger == w.spec
        and (row.watch_since or row.created_at) == w.since
    ]


async def watches_changed(
    *, session: AsyncSession, account: Account, watchers: Sequence[Watcher]
) -> list[uuid.UUID]:
    """The account's active watches that a poll which read `watchers` did not read as
    they are now: created, resumed, or given another trigger since. Their rows (and
    those of the user's paused instructions, which a resume makes watches) are locked
    until the transaction ends.

    Such a watch may match items in the history or change list the poll read (whatever
    came after its start), which the poll did not look for, or looked for with the
    watch as it was and was refused (`still_watching`): the account's cursor must not
    move past them. A watch deleted or paused, or changed to a schedule, has nothing
    left to fire and is not one of these. Locked like `still_watching`: a change that
    took its start time before this reads waits to commit, and is seen; so does a watch
    being created, which holds the user's row shared (`hold_new_watch`)."""
    await session.execute(
        select(User.id).where(User.id == account.user_id).with_for_update(key_share=True)
    )
    rows = (await session.execute(
        select(Instruction.id, Instruction.user_id, Instruction.status, Instruction.trigger,
               Instruction.created_at, Instruction.watch_since, Instruction.covered_until)
        .where(Instruction.user_id == account.user_id, Instruction.deleted_at.is_(None),
               Instruction.next_run_at.is_(None))
        .order_by(Instruction.id)
        .with_for_update()
    )).all()
    read = {w.id: (w.spec, w.since) for w in watchers}
    return [
        watcher.id for watcher in (_watcher(row) for row in rows
                                   if row.status == "active"
                                   and (row.trigger or {}).get("type") == "watch")
        if can_watch(account, watcher.spec)
        and read.get(watcher.id) != (watcher.spec, watcher.since)
    ]


async def record_hits(
    *,
    session: AsyncSession,
    watcher: Watcher,
    account_id: uuid.UUID,
    kind: str,
    item_ids: Sequence[str],
    now: datetime,
) -> list[uuid.UUID]:
    """Write a hit and queue a watch run for each item not seen before; returns the runs.

    The unique (instruction, item) key decides which items are new, also when another
    scheduler records the same items at the same moment (PostgreSQL makes it wait for
    that transaction, then skips its rows). Items are inserted in sorted order so two
    such writers lock them in the same order.
    """
    items = sorted(set(item_ids))
    if not items:
        return []
    stmt = insert_ignore(session, WatchHit, ["instruction_id", "item_id"]).values([
        {"id": uuid.uuid4(), "user_id": watcher.user_id, "instruction_id": watcher.id,
         "account_id": account_id, "kind": kind, "item_id": item, "created_at": now}
        for item in items
    ]).returning(WatchHit.id, WatchHit.item_id)
    new = sorted((await session.execute(stmt)).all(), key=lambda row: row.item_id)
    runs: list[uuid.UUID] = []
    for offset, hit in enumerate(new):
        run_id = await _enqueue(session, watcher, account_id, kind, hit.item_id, now, offset)
        await session.execute(
            update(WatchHit).where(WatchHit.id == hit.id).values(run_id=run_id)
            .execution_options(synchronize_session=False)
        )
        runs.append(run_id)
    return runs


# A Drive folder watch also keeps, in the hits table and without a run, which files it
# knows to be in its folder: those there when it started watching (a snapshot, marked
# by a row for the moment it started), and those that came since with an older
# modifiedTime (moved in, or uploaded with their own date). Drive's change list reports a
# file again for a change of its metadata alone (viewed, starred, shared), and says
# nothing of the parents it had before: only this tells a file new to the folder from
# one that was always there.
MEMBER = "member"
SNAPSHOT = "snapshot"


def _member(file_id: str) -> str:
    return f"in:{file_id}"


def _snapshot(watcher: Watcher) -> str:
    return f"snapshot:{watcher.since.astimezone(UTC).isoformat()}"


async def without_snapshot(*, session: AsyncSession, watchers: Sequence[Watcher]) -> list[Watcher]:
    """The folder watches whose folder has not been read since they (re)started."""
    if not watchers:
        return []
    taken = {tuple(row) for row in (await session.execute(
        select(WatchHit.instruction_id, WatchHit.item_id).where(
            WatchHit.instruction_id.in_([w.id for w in watchers]), WatchHit.kind == SNAPSHOT,
        )
    )).all()}
    return [w for w in watchers if (w.id, _snapshot(w)) not in taken]


async def record_snapshot(
    *, session: AsyncSession, watcher: Watcher, account_id: uuid.UUID,
    file_ids: Sequence[str], now: datetime,
) -> None:
    """The files in the folder as the watch (re)starts: none of them is new to it (and
    no version that waited to settle before it was paused or changed fires).

    Only the scheduler that writes the snapshot's mark does this: another one that read
    the folder at the same time (two woken by a resume) and comes late would delete the
    versions the first one has queued since. Nothing for a watch no longer live
    (`still_watching`)."""
    if not await still_watching(session=session, watchers=[watcher]):
        return
    mark: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
        insert_ignore(session, WatchHit, ["instruction_id", "item_id"]).values(
            id=uuid.uuid4(), user_id=watcher.user_id, instruction_id=watcher.id,
            account_id=account_id, kind=SNAPSHOT, item_id=_snapshot(watcher), created_at=now,
        )
    )
    if mark.rowcount != 1:
        return
    await session.execute(
        delete(WatchHit).where(
            WatchHit.instruction_id == watcher.id,
            or_(WatchHit.kind == MEMBER,
                and_(WatchHit.kind == SNAPSHOT, WatchHit.item_id != _snapshot(watcher))),
        ).execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(WatchPendingFile).where(WatchPendingFile.instruction_id == watcher.id)
        .execution_options(synchronize_session=False)
    )
    await _insert_marks(session, watcher, account_id, MEMBER,
                        [_member(i) for i in file_ids], now)


async def forget_folder(*, session: AsyncSession, instruction_id: uuid.UUID) -> None:
    """What only a folder watch's polling needs (its folder's membership, up to
    10,000 rows, and the versions waiting to settle), dropped when the
    instruction is deleted or its trigger changes (a new folder watch takes its snapshot
    again). The hits of the runs it fired stay with them."""
    await session.execute(
        delete(WatchHit).where(
            WatchHit.instruction_id == instruction_id, WatchHit.kind.in_([MEMBER, SNAPSHOT])
        ).execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(WatchPendingFile).where(WatchPendingFile.instruction_id == instruction_id)
        .execution_options(synchronize_session=False)
    )


async def _insert_marks(
    session: AsyncSession, watcher: Watcher, account_id: uuid.UUID, kind: str,
    items: Sequence[str], now: datetime,
) -> None:
    for start in range(0, len(items), _CHUNK):
        await session.execute(
            insert_ignore(session, WatchHit, ["instruction_id", "item_id"]).values([
                {"id": uuid.uuid4(), "user_id": watcher.user_id, "instruction_id": watcher.id,
                 "account_id": account_id, "kind": kind, "item_id": item, "created_at": now}
                for item in sorted(set(items[start:start + _CHUNK]))
            ])
        )


@dataclass(frozen=True)
class FileVersion:
    """One version of a Drive file: `key` (its id with its modifiedTime) is the hit's
    item id, so each version fires once."""

    id: str
    key: str
    modified: datetime | None


async def record_folder_changes(
    *,
    session: AsyncSession,
    watcher: Watcher,
    account_id: uuid.UUID,
    versions: Sequence[FileVersion],
    older: Sequence[FileVersion],
    left: Sequence[str],
    now: datetime,
    settle: timedelta,
) -> list[uuid.UUID]:
    """Fire a folder watch for one page of Drive changes; returns the runs.

    `versions` are the files in the folder modified (or created) since the watch began,
    each fired once per version as before. `older` are the files in the folder with an
    older modifiedTime: new to the folder (moved in, uploaded with their own date) unless
    the watch already knows them there, and then they fire. `left` are files no longer
    in the folder: if they come back, they are new again. A version modified less than
    `settle` ago waits (see `fire_settled`). Nothing for a watch no longer live
    (`still_watching`).
    """
    if not await still_watching(session=session, watchers=[watcher]):
        return []
    for start in range(0, len(left), _CHUNK):
        await session.execute(
            delete(WatchHit).where(
                WatchHit.instruction_id == watcher.id, WatchHit.kind == MEMBER,
                WatchHit.item_id.in_([_member(i) for i in left[start:start + _CHUNK]]),
            ).execution_options(synchronize_session=False)
        )
        # A version waiting to settle of a file no longer there (trashed, deleted, moved
        # out) never fires.
        await session.execute(
            delete(WatchPendingFile).where(
                WatchPendingFile.instruction_id == watcher.id,
                WatchPendingFile.file_id.in_(left[start:start + _CHUNK]),
            ).execution_options(synchronize_session=False)
        )
    known: set[str] = set()
    ids = [file.id for file in older]
    for start in range(0, len(ids), _CHUNK):
        known |= set((await session.execute(
            select(WatchHit.item_id).where(
                WatchHit.instruction_id == watcher.id, WatchHit.kind == MEMBER,
                WatchHit.item_id.in_([_member(i) for i in ids[start:start + _CHUNK]]),
            )
        )).scalars().all())
    arrived = [file for file in older if _member(file.id) not in known]
    await _insert_marks(session, watcher, account_id, MEMBER,
                        [_member(file.id) for file in arrived], now)
    files = [*versions, *arrived]
    ready = [f for f in files if f.modified is None or f.modified + settle <= now]
    waiting = [f for f in files if f not in ready]
    # A version that fires replaces the one that waited for the file, if that one was not
    # newer (an older version read late by another scheduler leaves a newer one waiting).
    ready = sorted(ready, key=lambda f: f.id)
    for start in range(0, len(ready), _OR_CHUNK):
        await session.execute(
            delete(WatchPendingFile).where(
                WatchPendingFile.instruction_id == watcher.id,
                or_(*(
                    and_(WatchPendingFile.file_id == f.id,
                         true() if f.modified is None
                         else WatchPendingFile.due_at <= f.modified + settle)
                    for f in ready[start:start + _OR_CHUNK]
                )),
            ).execution_options(synchronize_session=False)
        )
    for file in sorted(waiting, key=lambda f: f.id):
        await _wait(session, watcher, account_id, file, now, settle)
    return await record_hits(
        session=session, watcher=watcher, account_id=account_id, kind="file",
        item_ids=[f.key for f in ready], now=now,
    )


async def _wait(
    session: AsyncSession, watcher: Watcher, account_id: uuid.UUID, file: FileVersion,
    now: datetime, settle: timedelta,
) -> None:
    """Keep this version of the file waiting (the latest one: it replaces an older)."""
    assert file.modified is not None
    values = {"id": uuid.uuid4(), "user_id": watcher.user_id, "instruction_id": watcher.id,
              "account_id": account_id, "file_id": file.id, "version": file.key,
              # An uploader may date its file ahead: it rests from when it was seen then.
              "due_at": min(file.modified, now) + settle, "seen_at": now}
    stmt: Any
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(WatchPendingFile).values(**values)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(WatchPendingFile).values(**values)
    # An older modifiedTime never replaces a newer one (two schedulers, a page read late).
    await session.execute(stmt.on_conflict_do_update(
        index_elements=["instruction_id", "file_id"],
        set_={"version": stmt.excluded.version, "due_at": stmt.excluded.due_at,
              "seen_at": stmt.excluded.seen_at},
        where=WatchPendingFile.due_at <= stmt.excluded.due_at,
    ))


async def fire_settled(
    *, session: AsyncSession, watchers: Sequence[Watcher], account_id: uuid.UUID,
    now: datetime,
) -> list[uuid.UUID]:
    """Fire the waiting file versions that have rested long enough; returns the runs.
    One seen before its watch (re)started (paused, changed) is dropped; the watches no
    longer live (`still_watching`) are left alone."""
    watchers = await still_watching(session=session, watchers=watchers)
    by_id = {w.id: w for w in watchers}
    if not by_id:
        return []
    # Taken in one statement: a version that a newer one replaced meanwhile is not due.
    rows = (await session.execute(
        delete(WatchPendingFile).where(
            WatchPendingFile.instruction_id.in_(list(by_id)),
            WatchPendingFile.account_id == account_id, WatchPendingFile.due_at <= now,
        ).returning(WatchPendingFile.instruction_id, WatchPendingFile.version,
                    WatchPendingFile.seen_at)
        .execution_options(synchronize_session=False)
    )).all()
    runs: list[uuid.UUID] = []
    for watcher in watchers:
        versions = [r.version for r in rows
                    if r.instruction_id == watcher.id and r.seen_at >= watcher.since]
        if versions:
            runs += await record_hits(
                session=session, watcher=watcher, account_id=account_id, kind="file",
                item_ids=versions, now=now,
            )
    return runs


_CHUNK = 500
_OR_CHUNK = 100  # terms OR-ed in one statement (SQLite limits an expression's depth)

# Runs are unique per (instruction, scheduled_for): a burst's runs are a microsecond
# apart, and a clash (another run of the instruction at that very microsecond) moves on.
_MAX_CLASHES = 1000


async def _enqueue(
    session: AsyncSession, watcher: Watcher, account_id: uuid.UUID, kind: str, item_id: str,
    now: datetime, offset: int,
) -> uuid.UUID:
    item = {"account_id": str(account_id), "kind": kind, "id": item_id.split("@", 1)[0]}
    for clash in range(_MAX_CLASHES):
        fire = now + timedelta(microseconds=offset + clash * 1_000_003)
        run_id = await queue.enqueue(
            session=session, user_id=watcher.user_id, instruction_id=watcher.id,
            reason="watch", scheduled_for=fire, window_start=watcher.covered_until,
            window_end=fire, trigger_item=item,
        )
        if run_id is not None:
            return run_id
    raise RuntimeError(f"no free fire time for a watch run of instruction {watcher.id}")


async def advance_cursor(
    *,
    session: AsyncSession,
    account: Account,
    seen: WatchCursor | None,
    history_id: str | None,
    drive_page_token: str | None,
    now: datetime,
    next_poll_at: datetime,
) -> bool:
    """Move the account's cursor on if nobody moved it since `seen` (compare-and-set)."""
    values: dict[str, Any] = {
        "history_id": history_id, "drive_page_token": drive_page_token, "polled_at": now,
        "next_poll_at": next_poll_at, "updated_at": now,
    }
    if seen is None:
        result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
            insert_ignore(session, WatchCursor, ["account_id"]).values(
                account_id=account.id, user_id=account.user_id, version=1, **values
            )
        )
    else:
        # A push that came during the poll (`poll_now`) set the next poll to then: it stays,
        # or the mail it announced would wait for the whole interval.
        values["next_poll_at"] = case(
            (WatchCursor.next_poll_at.is_distinct_from(seen.next_poll_at),
             WatchCursor.next_poll_at),
            else_=next_poll_at,
        )
        result = await session.execute(  # type: ignore[assignment]
            update(WatchCursor)
            .where(WatchCursor.account_id == account.id, WatchCursor.version == seen.version)
            .values(version=WatchCursor.version + 1, **values)
            .execution_options(synchronize_session=False)
        )
    return result.rowcount == 1


async def poll_now(*, session: AsyncSession, email: str, now: datetime) -> list[uuid.UUID]:
    """Make the watched Google accounts of this address due now (a Gmail push)."""
    accounts = (
        await session.execute(
            select(Account.id).where(Account.kind == "google", Account.email == email)
        )
    ).scalars().all()
    if not accounts:
        return []
    await session.execute(
        update(WatchCursor).where(WatchCursor.account_id.in_(list(accounts)))
        .values(next_poll_at=now).execution_options(synchronize_session=False)
    )
    return list(accounts)
