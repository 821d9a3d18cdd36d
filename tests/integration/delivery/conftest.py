"""Delivery fixtures: settings with a secret key and the local receivers reachable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select

from app.channels import service as channels
from app.channels.schemas import WebhookCreate
from app.core.config import Settings
from app.core.db import transaction
from app.core.runtime import Runtime
from app.delivery.sender import DeliverySender
from app.notifications.models import Delivery, Notification
from app.notifications.service import notify
from app.users.models import User
from tests.integration.delivery.receivers import (
    MailHandler,
    WebhookReceiver,
    start_smtp_server,
    webhook_receiver,
)

SECRET_KEY = Fernet.generate_key().decode()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, plus a secret key, and private addresses allowed (the receivers
    listen on 127.0.0.1); tests of the SSRF guard turn that off again."""
    return settings.model_copy(update={
        "secret_keys": [SecretStr(SECRET_KEY)],
        "webhook_allow_private": True,
        "delivery_retry_base_seconds": 0.1,
        "delivery_retry_max_seconds": 5.0,
        "delivery_timeout_seconds": 5.0,
        "delivery_max_attempts": 4,
    })


def with_settings(runtime: Runtime, **changes: Any) -> Runtime:
    """The same database, other settings."""
    return Runtime(runtime.settings.model_copy(update=changes), runtime.engine,
                   runtime.sessionmaker, runtime.wakeups)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as started:
        yield started


@pytest.fixture
def smtp() -> Iterator[tuple[MailHandler, int]]:
    handler, controller = start_smtp_server()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


async def add_webhook(runtime: Runtime, user: User, url: str, **fields: Any) -> tuple[Any, str]:
    async with transaction(runtime.sessionmaker) as session:
        return await channels.create(
            session=session, user=user, data=WebhookCreate(url=url, **fields),
            settings=runtime.settings,
        )


async def add_digest(
    runtime: Runtime, user: User, *, channels: tuple[str, ...], title: str = "Morning digest",
    digest: dict[str, Any] | None = None, kind: str = "digest", run_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A notification with its deliveries, as the worker writes a run's digest."""
    async with transaction(runtime.sessionmaker) as session:
        notification_id = await notify(
            session=session, user_id=user.id, key=f"test:{uuid.uuid4()}", kind=kind,
            title=title, body="The summary.", channels=channels,
            data={"digest": digest} if digest is not None else {}, run_id=run_id,
        )
    assert notification_id is not None
    return notification_id


async def deliveries(runtime: Runtime, notification_id: uuid.UUID) -> list[Delivery]:
    async with transaction(runtime.sessionmaker) as session:
        rows = await session.execute(
            select(Delivery).where(Delivery.notification_id == notification_id)
            .order_by(Delivery.channel, Delivery.target)
        )
        return list(rows.scalars())


async def delivery(runtime: Runtime, notification_id: uuid.UUID, channel: str) -> Delivery:
    found = [d for d in await deliveries(runtime, notification_id) if d.channel == channel]
    assert len(found) == 1, found
    return found[0]


async def notifications(runtime: Runtime, user: User) -> list[Notification]:
    async with transaction(runtime.sessionmaker) as session:
        rows = await session.execute(
            select(Notification).where(Notification.user_id == user.id)
            .order_by(Notification.created_at)
        )
        return list(rows.scalars())


async def send_until_settled(sender: DeliverySender, runtime: Runtime,
                             notification_id: uuid.UUID, rounds: int = 100) -> list[Delivery]:
    """Run the sender until no delivery of the notification is pending (retries included)."""
    for _ in range(rounds):
        await sender.run_once()
        rows = await deliveries(runtime, notification_id)
        if all(d.status != "pending" for d in rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"still pending after {rounds} rounds: {rows}")
