"""A Google account's life after the consent: which features its grant turns on, what
happens when the grant is gone (`mark_disconnected`), and when its Gmail is
(`mark_no_mailbox`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.core.config import Settings
from app.core.db import utcnow
from app.google.credentials import granted_scopes, usable_scopes
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY, GMAIL_SEND
from app.google.watch_service import GMAIL, can_watch
from app.instructions.models import Instruction
from app.notifications import service as notifications

# What each feature of a Google account needs from the grant.
FEATURE_SCOPES = {"gmail": GMAIL_READONLY, "drive": DRIVE_READONLY, "gmail_send": GMAIL_SEND}
_MISSING = {
    "gmail": "Gmail is off: the permission to read your mail (gmail.readonly) was not "
    "granted. Connect Google again and allow it to turn Gmail on.",
    "drive": "Drive is off: the permission to read your files (drive.readonly) was not "
    "granted. Connect Google again and allow it to turn Drive on.",
    "gmail_send": "Digests through Gmail are off: the permission to send mail as you "
    "(gmail.send) was not granted, so digests go by SMTP. Connect Google again with "
    "gmail_send=true and allow it to turn them on.",
}


def reconnect_url(settings: Settings) -> str:
    return f"{settings.effective_public_url}/api/v1/google/connect"


def features(account: Account) -> dict[str, bool]:
    """Which features the account serves now: none while it is disconnected."""
    active = account.status == "active"
    if account.kind == "sample":
        return {"gmail": active, "drive": active, "gmail_send": False}
    usable = usable_scopes(account)
    return {name: active and scope in usable for name, scope in FEATURE_SCOPES.items()}


NO_MAILBOX = (
    "Gmail is off: this Google account has no Gmail (Gmail answered \"Mail service not "
    "enabled\"), so only its Drive is read. Connect a Google account that has Gmail to read "
    "mail."
)


# Gmail said, after the account was connected, that it has no Gmail any more.
LOST_MAILBOX = (
    "Gmail is off: Google says this account's mail service is not enabled any more (\"Mail "
    "service not enabled\": an administrator turned Gmail off for it), so only its Drive is "
    "read. Once Gmail is back, reconnect at {link} to read mail again."
)


def no_mail_reason(account: Account) -> str | None:
    """Why a Google account reads no mail (None when it does, or is not one)."""
    if account.kind != "google" or features(account)["gmail"]:
        return None
    name = account.email or "your Google account"
    if account.status != "active":
        return f"{name} is disconnected"
    if GMAIL_READONLY not in granted_scopes(account):
        return f"{name} did not grant read access to Gmail (gmail.readonly)"
    return (
        f"Gmail is off for {name}: Google says its mail service is not enabled (\"Mail "
        "service not enabled\")"
    )


def no_mail_detail(accounts: Iterable[Account], *, what: str, settings: Settings) -> str:
    """Why a run that needs mail (`what` it is) fails when none of `accounts` reads mail."""
    reasons = [r for r in map(no_mail_reason, accounts) if r]
    why = "; ".join(reasons) or "none of your accounts has a mailbox"
    return (
        f"{what}, and none of your accounts can read mail now: {why}. Reconnect Google at "
        f"{reconnect_url(settings)} once Gmail is on for it, or let this instruction read "
        "Drive as well"
    )


def missing_scopes_detail(granted: Iterable[str], requested: Iterable[str]) -> str | None:
    """The message stored on an account whose grant lacks a scope it asked for, or None.

    Gmail and Drive are always asked for; sending only when the user turned it on.
    """
    have, asked = set(granted), set(requested) | {GMAIL_READONLY, DRIVE_READONLY}
    missing = [
        _MISSING[name] for name, scope in FEATURE_SCOPES.items()
        if scope in asked and scope not in have
    ]
    return " ".join(missing) or None


async def pause_dependents(
    session: AsyncSession, *, account: Account, detail: str
) -> list[uuid.UUID]:
    """Pause the user's active instructions that cannot work without `account`.

    The rule: an instruction depends on a Google account when it is a watch instruction
    (only Gmail's history and Drive's changes can fire it), or when the user has no
    other active account (the bundled sample), so that its runs would have nothing to
    read. With another active account a scheduled instruction keeps running over it.
    Returns the ids of the instructions paused.
    """
    others = (
        await session.execute(
            select(Account.id).where(
                Account.user_id == account.user_id, Account.id != account.id,
                Account.status == "active",
            ).limit(1)
        )
    ).scalar_one_or_none()
    instructions = await _active_instructions(session, user_id=account.user_id)
    paused = _pause(
        (i for i in sorted(instructions, key=lambda i: i.created_at)
         if others is None or i.trigger.get("type") == "watch"),
        detail=detail,
    )
    await session.flush()
    return paused


async def _active_instructions(
    session: AsyncSession, *, user_id: uuid.UUID
) -> Sequence[Instruction]:
    """The user's active instructions, their rows locked in id order, as every other path
    that locks several instructions does (the watch poller, the batched outcome write):
    two of them cannot deadlock."""
    return (
        await session.execute(
            select(Instruction).where(
                Instruction.user_id == user_id, Instruction.status == "active",
                Instruction.deleted_at.is_(None),
            ).order_by(Instruction.id).with_for_update()
        )
    ).scalars().all()


def _pause(instructions: Iterable[Instruction], *, detail: str) -> list[uuid.UUID]:
    """Pause each of `instructions`, saying why; returns their ids in that order."""
    now = utcnow()
    paused = []
    for instruction in instructions:
        instruction.status = "paused"
        instruction.next_run_at = None
        instruction.status_detail = detail
        instruction.updated_at = now
        paused.append(instruction.id)
    return paused


async def mark_disconnected(
    session: AsyncSession, *, account: Account, reason: str, settings: Settings
) -> bool:
    """The account's grant is gone (revoked, `invalid_grant`): mark it disconnected, pause
    the instructions that depend on it (see `pause_dependents` for the rule) and tell the
    user once, in the app, with a link to reconnect.

    Safe to call again and from concurrent runs: the account row is locked, and only the
    call that moves it from active to disconnected notifies. Returns True for that call.
    Only flushes; the caller commits. `account` may come from another session.
    """
    row = (
        await session.execute(
            select(Account).where(Account.id == account.id).with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if row is None:
        return False  # removed meanwhile: nobody to tell
    link = reconnect_url(settings)
    name = row.email or "your Google account"
    paused = await pause_dependents(
        session, account=row,
        detail=f"paused: {name} was disconnected ({reason}); reconnect at {link}, then "
        "resume this instruction",
    )
    first = row.status != "disconnected"
    now = utcnow()
    if first:
        row.status = "disconnected"
        row.status_detail = f"Disconnected: {reason}. Reconnect at {link}"
        row.updated_at = now
        body = (
            f"Pilotlight can no longer read {name}: {reason}. Reconnect it at {link}."
        )
        if paused:
            body += (
                f" {len(paused)} instruction(s) that depend on it are paused; resume them "
                "once it is connected again."
            )
        await _alert(session, row, what="disconnected", at=now,
                     title="Google account disconnected", body=body, link=link, paused=paused)
    await session.flush()
    if account is not row:  # the caller's copy from another session shows it too
        account.status, account.status_detail = row.status, row.status_detail
    return first


async def mark_no_mailbox(
    session: AsyncSession, *, account: Account, settings: Settings
) -> bool:
    """Gmail answered that the account's mail service is not enabled (`NoMailbox`): record
    it as mailbox-less (`scopes["mailbox"]` false, as a connection to a Google account
    without Gmail stores it: `usable_scopes` then leaves Gmail out and its Drive goes on),
    pause the user's mail watches no other account of theirs can serve (nothing would
    fire them), and tell the user once, in the app, why and how to turn mail on again.
    Reconnecting once Gmail is back stores the grant afresh, with the mailbox.

    Safe to call again and from concurrent runs and polls: the account row is locked, and
    only the call that records it notifies (True). A disconnected account is left as it is
    (its reconnection reads Gmail again). Only flushes; the caller commits. `account` may
    come from another session.
    """
    row = (
        await session.execute(
            select(Account).where(Account.id == account.id).with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if row is None or row.kind != "google" or row.status != "active":
        return False
    if (row.scopes or {}).get("mailbox") is False:
        return False  # recorded already
    link = reconnect_url(settings)
    name = row.email or "your Google account"
    now = utcnow()
    row.scopes = {**(row.scopes or {}), "mailbox": False}
    row.status_detail = " ".join(
        d for d in (LOST_MAILBOX.format(link=link), row.status_detail) if d
    )
    row.updated_at = now
    paused = await _pause_mail_watches(
        session, account=row,
        detail=f"paused: Gmail is off for {name} (Google says its mail service is not "
        f"enabled); once it is back, reconnect at {link}, then resume this instruction",
    )
    body = (
        f"Google says Gmail is not enabled for {name} any more (\"Mail service not "
        "enabled\": an administrator turned it off for this account). Pilotlight goes on "
        "reading its Drive; instructions that read only mail fail, saying so, until Gmail "
        "is back."
    )
    if paused:
        body += f" {len(paused)} watch instruction(s) on its mail are paused."
    body += f" Once Gmail is on again, reconnect at {link}" + (
        ", then resume them." if paused else "."
    )
    await _alert(session, row, what="no-mailbox", at=now,
                 title="Gmail is off for your Google account", body=body, link=link,
                 paused=paused)
    await session.flush()
    if account is not row:  # the caller's copy from another session shows it too
        account.scopes, account.status_detail = row.scopes, row.status_detail
    return True


async def _alert(
    session: AsyncSession, row: Account, *, what: str, at: datetime, title: str, body: str,
    link: str, paused: list[uuid.UUID],
) -> None:
    """Tell the user, in the app, what happened to their Google account (`what`, once per
    event), with the reconnect link and the instructions paused for it."""
    await notifications.notify(
        session=session, user_id=row.user_id,
        key=f"account:{row.id}:{what}:{at.isoformat()}", kind="alert",
        title=title, body=body, channels=[],
        data={
            "account_id": str(row.id), "reconnect_url": link,
            "paused_instruction_ids": [str(i) for i in paused],
        },
    )


async def _pause_mail_watches(
    session: AsyncSession, *, account: Account, detail: str
) -> list[uuid.UUID]:
    """Pause the user's active mail watches that no other active account of theirs can
    serve now that `account` reads no mail. Returns their ids."""
    others = (
        await session.execute(
            select(Account).where(
                Account.user_id == account.user_id, Account.id != account.id,
                Account.status == "active",
            )
        )
    ).scalars().all()
    instructions = await _active_instructions(session, user_id=account.user_id)

    def unserved(instruction: Instruction) -> bool:
        trigger = instruction.trigger or {}
        return (trigger.get("type") == "watch" and bool(trigger.get(GMAIL))
                and not any(can_watch(other, trigger) for other in others))

    paused = _pause(filter(unserved, instructions), detail=detail)
    await session.flush()
    return paused
