from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.channels import service
from app.channels.schemas import WebhookCreate, WebhookCreated, WebhookOut, WebhookUpdate
from app.channels.service import TooManyWebhooks, WebhookNotFound, WebhookUrlRefused
from app.core.crypto import SecretKeyError
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.users.deps import CurrentUser
from app.users.service import InvalidToken

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=error_responses(InvalidToken))


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated,
    responses=error_responses(WebhookUrlRefused, TooManyWebhooks, SecretKeyError),
)
async def create_webhook(
    data: WebhookCreate, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> WebhookCreated:
    """Register a webhook. The answer holds its signing secret and its whole URL, shown
    only this once: the URL is stored encrypted and shown masked after."""
    webhook, secret = await service.create(
        session=session, user=user, data=data, settings=runtime.settings
    )
    return WebhookCreated(**{**service.to_out(webhook).model_dump(), "url": data.url},
                          secret=secret)


@router.get("", response_model=list[WebhookOut])
async def list_webhooks(user: CurrentUser, session: SessionDep) -> list[WebhookOut]:
    """Your webhooks, newest first (without their secrets; their URLs masked)."""
    return [service.to_out(w) for w in await service.list_for(session=session, user=user)]


@router.get(
    "/{webhook_id}", response_model=WebhookOut, responses=error_responses(WebhookNotFound)
)
async def get_webhook(webhook_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> WebhookOut:
    return service.to_out(await service.get(session=session, user=user, webhook_id=webhook_id))


@router.patch(
    "/{webhook_id}", response_model=WebhookOut,
    responses=error_responses(WebhookNotFound, WebhookUrlRefused, SecretKeyError),
)
async def update_webhook(
    webhook_id: uuid.UUID, data: WebhookUpdate, user: CurrentUser, session: SessionDep,
    runtime: RuntimeDep,
) -> WebhookOut:
    """Change the URL (stored encrypted, answered masked) or events, or turn it off and on
    (`enabled`; on clears the reason)."""
    webhook = await service.update_webhook(
        session=session, user=user, webhook_id=webhook_id, data=data, settings=runtime.settings
    )
    return service.to_out(webhook)


@router.post(
    "/{webhook_id}/secret", response_model=WebhookCreated,
    responses=error_responses(WebhookNotFound, SecretKeyError),
)
async def rotate_webhook_secret(
    webhook_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> WebhookCreated:
    """A new signing secret, shown only this once. For the next 24 hours each request
    carries two signatures, with the new secret and with the one before it, so the
    receiver can move to the new one meanwhile (`previous_secret_until` says until when)."""
    webhook, secret = await service.rotate_secret(
        session=session, user=user, webhook_id=webhook_id, settings=runtime.settings
    )
    return WebhookCreated(**service.to_out(webhook).model_dump(), secret=secret)


@router.delete(
    "/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(WebhookNotFound),
)
async def delete_webhook(webhook_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Delete a webhook; what was still waiting to go to it is not sent."""
    await service.delete(session=session, user=user, webhook_id=webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
