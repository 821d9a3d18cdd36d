"""Browser push subscriptions: register (upsert by endpoint), list, delete; fan-out targets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.models import PushSubscription
from app.channels.schemas import PushSubscriptionCreate, PushSubscriptionOut
from app.core.config import Settings
from app.core.crypto import SecretBox, secret_box
from app.core.db import utcnow
from app.core.errors import BadRequest, Conflict, NotFound
from app.delivery.ssrf import UrlRefused, check_url
from app.users import service as users
from app.users.models import User

MAX_SUBSCRIPTIONS_PER_USER = 50


class PushSubscriptionNotFound(NotFound):
    pass


class PushEndpointRefused(BadRequest):
    pass


class TooManyPushSubscriptions(Conflict):
    pass


def check_endpoint(endpoint: str, settings: Settings) -> None:
    """Raise UrlRefused unless push may call this URL (https, public; see app/delivery/ssrf)."""
    if not endpoint.startswith("https://") and not settings.webhook_allow_private:
        raise UrlRefused("a push endpoint must be https")
    check_url(endpoint, allow_private=settings.webhook_allow_private)


def auth_of(subscription: PushSubscription, box: SecretBox) -> str:
    """The browser's auth secret (raises SecretKeyError when no key reads it)."""
    return box.decrypt(subscription.auth_encrypted).decode()


def to_out(subscription: PushSubscription) -> PushSubscriptionOut:
    return PushSubscriptionOut(
        id=subscription.id, endpoint=subscription.endpoint,
        created_at=subscription.created_at, updated_at=subscription.updated_at,
    )


async def subscribe(
    *, session: AsyncSession, user: User, data: PushSubscriptionCreate, settings: Settings
) -> PushSubscription:
    """Register a browser's subscription; the same endpoint again updates its keys. Its
    auth secret is stored encrypted (SecretKeyError without the keys to)."""
    try:
        check_endpoint(data.endpoint, settings)
    except UrlRefused as exc:
        raise PushEndpointRefused(f"endpoint: {exc}") from exc
    # Counted and added one request at a time: ten at once made 51 of 50.
    await users.hold(session=session, user_id=user.id)
    found = (await session.execute(
        select(PushSubscription).where(PushSubscription.endpoint == data.endpoint)
    )).scalar_one_or_none()
    if found is not None and found.user_id != user.id:
        # The endpoint is the browser's; whoever subscribes it now owns it.
        await session.delete(found)
        await session.flush()
        found = None
    auth_encrypted = secret_box(settings).encrypt(data.keys.auth.encode())
    if found is not None:
        found.p256dh, found.auth_encrypted = data.keys.p256dh, auth_encrypted
        found.last_error = None
        found.updated_at = utcnow()
        await session.flush()
        return found
    count = len(await list_for(session=session, user=user))
    if count >= MAX_SUBSCRIPTIONS_PER_USER:
        raise TooManyPushSubscriptions(
            f"at most {MAX_SUBSCRIPTIONS_PER_USER} push subscriptions per user")
    subscription = PushSubscription(user_id=user.id, endpoint=data.endpoint,
                                    p256dh=data.keys.p256dh, auth_encrypted=auth_encrypted)
    session.add(subscription)
    await session.flush()
    return subscription


async def list_for(*, session: AsyncSession, user: User) -> Sequence[PushSubscription]:
    rows = await session.execute(
        select(PushSubscription).where(PushSubscription.user_id == user.id)
        .order_by(PushSubscription.created_at, PushSubscription.id)
    )
    return rows.scalars().all()


async def unsubscribe(
    *, session: AsyncSession, user: User, subscription_id: uuid.UUID | None = None,
    endpoint: str | None = None,
) -> None:
    stmt = select(PushSubscription).where(PushSubscription.user_id == user.id)
    if subscription_id is not None:
        stmt = stmt.where(PushSubscription.id == subscription_id)
    else:
        stmt = stmt.where(PushSubscription.endpoint == endpoint)
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise PushSubscriptionNotFound("push subscription not found")
    await session.delete(found)
    await session.flush()


async def targets(*, session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.execute(
        select(PushSubscription.id).where(PushSubscription.user_id == user_id)
        .order_by(PushSubscription.created_at, PushSubscription.id)
    )
    return list(rows.scalars())


async def remove(*, session: AsyncSession, user_id: uuid.UUID, subscription_id: uuid.UUID) -> None:
    """Drop a subscription the push service said is gone (404/410)."""
    await session.execute(
        sql_delete(PushSubscription)
        .where(PushSubscription.id == subscription_id, PushSubscription.user_id == user_id)
        .execution_options(synchronize_session=False)
    )
