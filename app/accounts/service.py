"""The user's source accounts: list, read, remove."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.accounts.queries import list_for
from app.accounts.schemas import AccountFeatures, AccountOut
from app.core.config import Settings
from app.core.crypto import SecretKeyError, secret_box
from app.core.errors import NotFound
from app.google.accounts import features, pause_dependents
from app.google.credentials import granted_scopes
from app.users.models import User

log = logging.getLogger(__name__)

__all__ = ["AccountNotFound", "get", "list_for", "refresh_token_of", "remove", "to_out"]


class AccountNotFound(NotFound):
    pass


def to_out(account: Account) -> AccountOut:
    return AccountOut(
        id=account.id, kind=account.kind, email=account.email, status=account.status,
        status_detail=account.status_detail,
        features=AccountFeatures(**features(account)),
        scopes=sorted(granted_scopes(account)),
        created_at=account.created_at, updated_at=account.updated_at,
    )


async def get(*, session: AsyncSession, user: User, account_id: uuid.UUID) -> Account:
    """One of the user's accounts; another user's is not found."""
    account = (
        await session.execute(
            select(Account).where(Account.id == account_id, Account.user_id == user.id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if account is None:
        raise AccountNotFound(f"account {account_id} not found")
    return account


def refresh_token_of(account: Account, settings: Settings) -> str | None:
    """The account's refresh token in clear, to revoke it; None when there is none or no
    configured key can read it (then there is nothing we could revoke anyway)."""
    if account.refresh_token_encrypted is None:
        return None
    try:
        return secret_box(settings).decrypt(account.refresh_token_encrypted).decode()
    except SecretKeyError:
        log.warning("account %s: its refresh token cannot be decrypted; not revoked", account.id)
        return None


async def remove(*, session: AsyncSession, account: Account) -> list[uuid.UUID]:
    """Delete the account and its grant; the instructions that depended on it are paused
    (the rule of `app.google.accounts.pause_dependents`). Returns their ids."""
    name = account.email or f"the {account.kind} account"
    paused = await pause_dependents(
        session, account=account,
        detail=f"paused: {name} was removed; connect an account again, then resume this "
        "instruction",
    )
    await session.delete(account)
    await session.flush()
    return paused
