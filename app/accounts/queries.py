"""Reading the user's source accounts (the Google connection adds the writes)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.core.errors import BadRequest
from app.sources.registry import readable, reads_any
from app.users.models import User

NOTHING_TO_READ = (
    "nothing to read: none of your accounts can be read (no Google account connected, or "
    "its access was removed). Connect Google at /api/v1/google/connect (on the "
    "dashboard: Settings, Connect Google), then try again"
)


_KIND_NAMES = {"gmail": "mail", "drive": "Drive"}


class NothingToRead(BadRequest):
    """An instruction set to run for a user none of whose accounts a run could read."""


async def list_for(*, session: AsyncSession, user: User) -> Sequence[Account]:
    """The user's accounts, oldest first."""
    rows = await session.execute(
        select(Account).where(Account.user_id == user.id).order_by(Account.created_at, Account.id)
    )
    return rows.scalars().all()


async def require_something_to_read(
    *, session: AsyncSession, user_id: uuid.UUID, kinds: Sequence[str] = ()
) -> None:
    """Refuse to set an instruction running (create, resume, run now, preview) when its
    runs would have nothing to read: they could only fail. `kinds`: the sources the
    instruction reads ("gmail", "drive"), one of which an account must serve."""
    accounts = (await session.execute(
        select(Account).where(Account.user_id == user_id, Account.status == "active")
    )).scalars().all()
    if not any(readable(account) for account in accounts):
        raise NothingToRead(NOTHING_TO_READ)
    if kinds and not any(reads_any(account, kinds) for account in accounts):
        what = " or ".join(_KIND_NAMES.get(kind, kind) for kind in kinds)
        other = "Drive" if set(kinds) == {"gmail"} else "mail"
        raise NothingToRead(
            f"nothing to read: this instruction reads {what} only, and none of your accounts "
            f"serves it (a Google account without Gmail, or whose grant left it out). "
            f"Connect a Google account that has it at /api/v1/google/connect (on the "
            f"dashboard: Settings, Connect Google), or let the instruction read {other} too"
        )
