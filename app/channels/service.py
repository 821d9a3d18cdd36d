"""Webhooks: register, list, change, delete; their secrets and URLs, encrypted at rest.

A secret is `whsec_` + base64 of 32 random bytes (Standard Webhooks), shown
once on creation and stored only encrypted (`app/core/crypto.py`). A new one can be
asked for (`rotate_secret`); for `PREVIOUS_SECRET_SIGNS` after, each request is signed
with the old secret too, so a receiver moves to the new one without refusing any.

The URL is a secret too (an incoming webhook's URL is what lets one post to it): it is
stored encrypted, given back whole only in the answer that creates the webhook, and
shown after that as scheme, host and a masked path (`app.delivery.ssrf.masked`).
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.models import Webhook
from app.channels.schemas import WebhookCreate, WebhookOut, WebhookUpdate
from app.core.config import Settings
from app.core.crypto import SecretBox, SecretKeyError, secret_box
from app.core.db import utcnow
from app.core.errors import BadRequest, Conflict, NotFound
from app.delivery.ssrf import UrlRefused, check_url, masked
from app.users import service as users
from app.users.models import User

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MAX_WEBHOOKS_PER_USER = 20
PREVIOUS_SECRET_SIGNS = timedelta(hours=24)
# The event a notification is, by its kind; kinds not here are not sent to webhooks.
# An alert is what `notify_now` sends ("tell me at once"): an instruction whose channels
# include webhook gets its alerts there like its digests.
EVENTS = {
    "digest": "digest.created",
    "question": "question.asked",
    "error": "run.failed",
    "alert": "alert.created",
}


class WebhookNotFound(NotFound):
    pass


class WebhookUrlRefused(BadRequest):
    pass


class TooManyWebhooks(Conflict):
    pass


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret: the bytes its base64 encodes."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def secret_of(webhook: Webhook, box: SecretBox) -> str:
    return box.decrypt(webhook.secret_encrypted).decode()


def url_of(webhook: Webhook, box: SecretBox) -> str:
    """The webhook's URL (raises SecretKeyError when no key reads it)."""
    return box.decrypt(webhook.url_encrypted).decode()


def _holds(webhook: Webhook, box: SecretBox, url: str) -> bool:
    """The webhook's sealed URL is `url` (False when no key reads it)."""
    try:
        return url_of(webhook, box) == url
    except SecretKeyError:
        return False


def previous_secret_of(webhook: Webhook, box: SecretBox, now: datetime) -> str | None:
    """The secret before the last rotation while it still signs (`PREVIOUS_SECRET_SIGNS`)."""
    if webhook.previous_secret_encrypted is None or not _still_signs(webhook, now):
        return None
    return box.decrypt(webhook.previous_secret_encrypted).decode()


def _still_signs(webhook: Webhook, now: datetime) -> bool:
    return webhook.previous_secret_until is not None and webhook.previous_secret_until > now


def event_type(kind: str, run_id: uuid.UUID | None) -> str | None:
    """The webhook event of a notification: `error` only for a failed run."""
    if kind == "error" and run_id is None:
        return None
    return EVENTS.get(kind)


def _checked_url(url: str, settings: Settings) -> str:
    try:
        check_url(url, allow_private=settings.webhook_allow_private)
    except UrlRefused as exc:
        raise WebhookUrlRefused(f"url: {exc}") from exc
    return url


def to_out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=webhook.id, url=webhook.url_shown,
        event_types=list(webhook.event_types.get("types", [])),
        enabled=webhook.enabled, status_detail=webhook.status_detail,
        previous_secret_until=webhook.previous_secret_until
        if _still_signs(webhook, utcnow()) else None,
        created_at=webhook.created_at, updated_at=webhook.updated_at,
    )


async def create(
    *, session: AsyncSession, user: User, data: WebhookCreate, settings: Settings
) -> tuple[Webhook, str]:
    """Register a webhook; returns it and its secret in plain text (shown only this once)."""
    url = _checked_url(data.url, settings)
    # Counted and added one request at a time: ten at once made 21 of 20.
    await users.hold(session=session, user_id=user.id)
    count = (await session.execute(
        select(func.count()).select_from(Webhook).where(Webhook.user_id == user.id)
    )).scalar_one()
    if count >= MAX_WEBHOOKS_PER_USER:
        raise TooManyWebhooks(f"at most {MAX_WEBHOOKS_PER_USER} webhooks per user")
    box = secret_box(settings)
    secret = new_secret()
    webhook = Webhook(
        user_id=user.id, url_encrypted=box.encrypt(url.encode()), url_shown=masked(url),
        secret_encrypted=box.encrypt(secret.encode()),
        event_types={"types": list(data.event_types)}, enabled=data.enabled,
    )
    session.add(webhook)
    await session.flush()
    return webhook, secret


async def list_for(*, session: AsyncSession, user: User) -> Sequence[Webhook]:
    rows = await session.execute(
        select(Webhook).where(Webhook.user_id == user.id)
        .order_by(Webhook.created_at.desc(), Webhook.id)
    )
    return rows.scalars().all()


async def get(
    *, session: AsyncSession, user: User, webhook_id: uuid.UUID, lock: bool = False
) -> Webhook:
    query = select(Webhook).where(Webhook.id == webhook_id, Webhook.user_id == user.id)
    webhook = (await session.execute(
        query.with_for_update() if lock else query
    )).scalar_one_or_none()
    if webhook is None:
        raise WebhookNotFound(f"webhook {webhook_id} not found")
    return webhook


async def update_webhook(
    *, session: AsyncSession, user: User, webhook_id: uuid.UUID, data: WebhookUpdate,
    settings: Settings,
) -> Webhook:
    """Change what `data` gives; a new URL is sealed (SecretKeyError without the keys)."""
    webhook = await get(session=session, user=user, webhook_id=webhook_id)
    if data.url is not None:
        url = _checked_url(data.url, settings)
        box = secret_box(settings)
        # The same URL again keeps its sealed bytes: a delivery on its way tells by them
        # whether the webhook moved meanwhile (`disable`).
        if not _holds(webhook, box, url):
            webhook.url_encrypted = box.encrypt(url.encode())
            webhook.url_shown = masked(url)
    if data.event_types is not None:
        webhook.event_types = {"types": list(data.event_types)}
    if data.enabled is not None:
        webhook.enabled = data.enabled
        if data.enabled:
            webhook.status_detail = None
    webhook.updated_at = utcnow()
    await session.flush()
    return webhook


async def rotate_secret(
    *, session: AsyncSession, user: User, webhook_id: uuid.UUID, settings: Settings
) -> tuple[Webhook, str]:
    """Give a webhook a new signing secret; returns it in plain text (shown only this
    once). The one it replaces signs requests too for `PREVIOUS_SECRET_SIGNS`; one
    replaced before that stops at once (two rotations in a row: the newest two sign)."""
    # Locked: of two rotations at once, the second replaces the first's secret, never
    # the same old one (the first's answer would hold a secret nothing signs with).
    webhook = await get(session=session, user=user, webhook_id=webhook_id, lock=True)
    box = secret_box(settings)
    secret = new_secret()
    now = utcnow()
    webhook.previous_secret_encrypted = webhook.secret_encrypted
    webhook.previous_secret_until = now + PREVIOUS_SECRET_SIGNS
    webhook.secret_encrypted = box.encrypt(secret.encode())
    webhook.updated_at = now
    await session.flush()
    return webhook, secret


async def delete(*, session: AsyncSession, user: User, webhook_id: uuid.UUID) -> None:
    webhook = await get(session=session, user=user, webhook_id=webhook_id)
    await session.delete(webhook)
    await session.flush()


class Targets(NamedTuple):
    """Where a notification's webhook event goes."""

    ids: list[uuid.UUID]
    """The user's enabled webhooks that subscribe to the event."""
    missing: bool
    """None of them, because the user has no webhook at all."""


async def targets(
    *, session: AsyncSession, user_id: uuid.UUID, kind: str, run_id: uuid.UUID | None
) -> Targets:
    """The user's enabled webhooks that subscribe to this notification's event.

    A webhook that chose other event types, or that the user turned off, chose not to
    get the event: that is no failure, so `missing` is False for it. Nor for one that a
    410 turned off: the user was told when that happened (the delivery that got the 410
    failed and said so), and telling them again for every later event would bury it.
    """
    event = event_type(kind, run_id)
    if event is None:
        return Targets(ids=[], missing=False)
    rows = (await session.execute(
        select(Webhook.id, Webhook.event_types, Webhook.enabled)
        .where(Webhook.user_id == user_id)
        .order_by(Webhook.created_at, Webhook.id)
    )).all()
    ids = [row.id for row in rows
           if row.enabled and event in row.event_types.get("types", [])]
    return Targets(ids=ids, missing=not rows)


async def disable(
    *, session: AsyncSession, user_id: uuid.UUID, webhook_id: uuid.UUID,
    url_encrypted: bytes, reason: str,
) -> bool:
    """Turn a webhook off (its endpoint said 410 Gone); False if it is gone, already off,
    or no longer at the URL the delivery was sent to, `url_encrypted` as it was read then
    (the user moved it while the delivery was on its way: the old endpoint's end says
    nothing of the new one). A new URL is sealed anew, so the sealed bytes tell; so would
    `pilotlight keys rotate` re-sealing it meanwhile, and the webhook stays on until the
    next 410."""
    result = await session.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.user_id == user_id, Webhook.enabled.is_(True),
               Webhook.url_encrypted == url_encrypted)
        .values(enabled=False, status_detail=reason, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))
