"""Reading the user's source accounts (the Google connection adds the writes)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.users.models import User


async def list_for(*, session: AsyncSession, user: User) -> Sequence[Account]:
    """The user's accounts, oldest first."""
    rows = await session.execute(
        select(Account).where(Account.user_id == user.id).order_by(Account.created_at, Account.id)
    )
    return rows.scalars().all()
