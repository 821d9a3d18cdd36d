"""Reading the user's source accounts (the Google connection adds the writes)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.core.errors import BadRequest
from app.sources.registry import readable
from app.users.models import User

NOTHING_TO_READ = (
    "nothing to read: none of your accounts can be read (no Google account connected, or "
    "its access was removed). Connect Google at /api/v1/google/connect (on the "
    "dashboard: Settings, Connect Google), then try again"
)


class NothingToRead(BadRequest):
    """An instruction set to run for a user none of whose accounts a run could read."""


async def list_for(*, session: AsyncSession, user: User) -> Sequence[Account]:
    """The user's accounts, oldest first."""
    rows = await session.execute(
        select(Account).where(Account.user_id == user.id).order_by(Account.created_at, Account.id)
    )
    return rows.scalars().all()


async def require_something_to_read(*, session: AsyncSession, user_id: uuid.UUID) -> None:
    """Refuse to set an instruction running (create, resume, run now, preview) when its
    runs would have nothing to read: they could only fail."""
    accounts = (await session.execute(
        select(Account).where(Account.user_id == user_id, Account.status == "active")
    )).scalars().all()
    if not any(readable(account) for account in accounts):
        raise NothingToRead(NOTHING_TO_READ)
