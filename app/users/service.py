"""Users and personal access tokens."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.errors import BadRequest, Conflict, NotFound, Unauthorized
from app.core.security import TOKEN_PREFIX, display_prefix, hash_token, new_token
from app.core.validation import check_no_nul, check_timezone
from app.instructions import service as instructions
from app.users.models import ApiToken, User

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# The columns' lengths, checked here: PostgreSQL refused a longer one with an error on
# write (the CLI printed its traceback) and SQLite kept it.
EMAIL_MAX_LENGTH = 320
NAME_MAX_LENGTH = 200


class UserExists(Conflict):
    pass


class UserNotFound(NotFound):
    pass


class InvalidToken(Unauthorized):
    pass


def _check_timezone(name: str) -> None:
    try:
        check_timezone(name)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


async def create_user(
    *, session: AsyncSession, email: str, name: str = "", timezone: str = "UTC"
) -> User:
    """Create a user; the email is stored lower-case and must be unique."""
    email = _address(email)
    name = _name(name, "name")
    _check_timezone(timezone)
    await _not_taken(session, email)
    user = User(email=email, name=name, timezone=timezone)
    session.add(user)
    await session.flush()
    return user


async def change_email(*, session: AsyncSession, user: User, email: str) -> User:
    """Give a user another address (stored lower-case, unique): where email delivery sends
    and what Google sign-in matches; instructions, tokens and accounts stay the user's."""
    email = _address(email)
    if email == user.email:
        return user
    await _not_taken(session, email)
    user.email = email
    await session.flush()
    return user


def _address(email: str) -> str:
    """An address as users are stored by it: lower-case, and one."""
    email = email.strip().lower()
    if len(email) > EMAIL_MAX_LENGTH:
        raise BadRequest(f"an email address has at most {EMAIL_MAX_LENGTH} characters")
    if not _EMAIL.match(email):
        raise BadRequest(f"'{email}' is not an email address")
    return email


def _name(name: str, what: str) -> str:
    """A user's or a token's name, as its column holds it."""
    if len(name) > NAME_MAX_LENGTH:
        raise BadRequest(f"{what}: at most {NAME_MAX_LENGTH} characters")
    try:
        return check_no_nul(name)
    except ValueError as exc:
        raise BadRequest(f"{what}: {exc}") from exc


async def _not_taken(session: AsyncSession, email: str) -> None:
    if await get_by_email(session=session, email=email) is not None:
        raise UserExists(f"a user with email {email} already exists")


async def hold(*, session: AsyncSession, user_id: uuid.UUID) -> None:
    """Lock the user's row until the transaction ends (PostgreSQL; SQLite runs one write
    transaction at a time): what counts the user's rows and then adds one (the limits on
    webhooks and push subscriptions) runs one at a time per user. FOR NO KEY UPDATE: rows
    that only refer to the user (runs, notifications) are written meanwhile."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update(
        key_share=True))


async def get_by_email(*, session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email.strip().lower()))
    return result.scalar_one_or_none()


async def get(*, session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"user {user_id} not found")
    return user


async def create_token(
    *, session: AsyncSession, user: User, name: str = ""
) -> tuple[ApiToken, str]:
    """Create a token; the plaintext is returned once and never stored."""
    name = _name(name, "token name")
    plaintext = new_token()
    token = ApiToken(
        user_id=user.id, name=name, prefix=display_prefix(plaintext),
        token_hash=hash_token(plaintext),
    )
    session.add(token)
    await session.flush()
    return token, plaintext


async def token_owner(*, session: AsyncSession, token: str) -> tuple[ApiToken, User]:
    """A bearer token that still works and its user, recording nothing; raises InvalidToken."""
    if not token.startswith(TOKEN_PREFIX):
        raise InvalidToken(f"tokens start with '{TOKEN_PREFIX}'")
    result = await session.execute(
        select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    )
    row = result.one_or_none()
    if row is None:
        raise InvalidToken("unknown or revoked token")
    api_token, user = row
    return api_token, user


async def authenticate(*, session: AsyncSession, token: str) -> User:
    """The user a bearer token belongs to; raises InvalidToken."""
    api_token, user = await token_owner(session=session, token=token)
    now = utcnow()
    # Record use at most once a minute, so reads don't each cost a write.
    if api_token.last_used_at is None or (now - api_token.last_used_at).total_seconds() > 60:
        await session.execute(
            update(ApiToken).where(ApiToken.id == api_token.id).values(last_used_at=now)
        )
    return user


class ApiTokenNotFound(NotFound):
    pass


async def list_tokens(*, session: AsyncSession, user: User) -> Sequence[ApiToken]:
    """The user's tokens, newest first, revoked ones included (their hashes only)."""
    rows = await session.execute(
        select(ApiToken).where(ApiToken.user_id == user.id)
        .order_by(ApiToken.created_at.desc(), ApiToken.id)
    )
    return rows.scalars().all()


async def revoke_token(*, session: AsyncSession, user: User, token_id: uuid.UUID) -> ApiToken:
    """Revoke one of the user's tokens; it stops working at once. Revoking twice is a no-op."""
    token = (
        await session.execute(
            select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id)
        )
    ).scalar_one_or_none()
    if token is None:
        raise ApiTokenNotFound(f"token {token_id} not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        await session.flush()
    return token


MAX_DAILY_COST_CAP_USD = 10_000.0


async def update_profile(
    *, session: AsyncSession, user: User, timezone: str | None = None,
    daily_cost_cap_usd: float | None = None, move_instructions: bool = False,
) -> User:
    """Change the user's time zone or daily cost cap (USD, 0 stops paid runs): both, or
    neither when one is refused. With `move_instructions`, the cron instructions in the
    old time zone move to the new one (`instructions.move_time_zone`)."""
    old = user.timezone
    if timezone is not None:
        _check_timezone(timezone)
    if daily_cost_cap_usd is not None and not 0 <= daily_cost_cap_usd <= MAX_DAILY_COST_CAP_USD:
        raise BadRequest(
            f"the daily cost cap must be between 0 and {MAX_DAILY_COST_CAP_USD:g} USD"
        )
    if timezone is not None:
        user.timezone = timezone
    if daily_cost_cap_usd is not None:
        user.daily_cost_cap_usd = daily_cost_cap_usd
    user.updated_at = utcnow()
    await session.flush()
    if move_instructions:
        await instructions.move_time_zone(session=session, user=user, old=old,
                                          new=user.timezone)
    return user
