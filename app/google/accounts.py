"""A Google account's life after the consent: which features its grant turns on, and
what happens when the grant is gone (`mark_disconnected`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.core.config import Settings
from app.core.db import utcnow
from app.google.credentials import usable_scopes
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY, GMAIL_SEND
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
    instructions = (
        await session.execute(
            select(Instruction).where(
                Instruction.user_id == account.user_id, Instruction.status == "active",
                Instruction.deleted_at.is_(None),
            ).order_by(Instruction.id).with_for_update()
        )
    ).scalars().all()
    now = utcnow()
    paused = []
    # Locked in id order, as every other path that locks several instructions does (the
    # watch poller, the batched outcome write): two of them cannot deadlock.
    for instruction in sorted(instructions, key=lambda i: i.created_at):
        if others is not None and instruction.trigger.get("type") != "watch":
            continue
        instruction.status = "paused"
        instruction.next_run_at = None
        instruction.status_detail = detail
        instruction.updated_at = now
        paused.append(instruction.id)
    await session.flush()
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
        await notifications.notify(
            session=session, user_id=row.user_id,
            key=f"account:{row.id}:disconnected:{now.isoformat()}", kind="alert",
            title="Google account disconnected", body=body, channels=[],
            data={
                "account_id": str(row.id), "reconnect_url": link,
                "paused_instruction_ids": [str(i) for i in paused],
            },
        )
    await session.flush()
    if account is not row:  # the caller's copy from another session shows it too
        account.status, account.status_detail = row.status, row.status_detail
    return first
