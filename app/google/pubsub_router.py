"""`POST /api/v1/google/pubsub`: Gmail push notifications from Cloud Pub/Sub."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, status
from sqlalchemy import text

from app.core.db import after_commit, db_now
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.google import watch_service
from app.google.push import (
    CertificatesUnavailable,
    PubSubPush,
    PushMessageInvalid,
    PushRefused,
    PushTokenMissing,
    gmail_notification,
    verify_push_token,
)
from app.google.watch import WATCH_CHANNEL

router = APIRouter(prefix="/google", tags=["google"])


async def push_claims(
    runtime: RuntimeDep, authorization: Annotated[str | None, Header()] = None
) -> Mapping[str, Any]:
    """The verified claims of the push's token: checked before the body is even read."""
    return await verify_push_token(authorization, runtime.settings)


PushClaims = Annotated[Mapping[str, Any], Depends(push_claims)]


@router.post(
    "/pubsub", status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        PushTokenMissing, PushRefused, PushMessageInvalid, CertificatesUnavailable
    ),
)
async def gmail_push(
    _claims: PushClaims, push: PubSubPush, session: SessionDep, runtime: RuntimeDep
) -> None:
    """A Gmail push: after its signed token is verified, the watch poller polls that
    account at once. An address with no watched account is acknowledged all the same, so
    that Pub/Sub stops sending it."""
    notification = gmail_notification(push)
    now = await db_now(session)
    accounts = await watch_service.poll_now(
        session=session, email=notification.emailAddress, now=now
    )
    if not accounts:
        return
    if session.get_bind().dialect.name == "postgresql":
        # Wakes the watch poller of every scheduler process once this commits.
        await session.execute(
            text("SELECT pg_notify(:channel, '')"), {"channel": WATCH_CHANNEL}
        )
    after_commit(session, lambda: runtime.wakeups.notify(WATCH_CHANNEL))
