from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.channels import push as service
from app.channels.push import (
    PushEndpointRefused,
    PushSubscriptionNotFound,
    TooManyPushSubscriptions,
)
from app.channels.schemas import (
    PushSubscriptionCreate,
    PushSubscriptionDelete,
    PushSubscriptionOut,
    VapidPublicKey,
)
from app.core.crypto import SecretKeyError
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.core.vapid import VapidKeyError, public_key_of, vapid_key
from app.users.deps import CurrentUser
from app.users.service import InvalidToken

router = APIRouter(prefix="/push", tags=["push"], responses=error_responses(InvalidToken))


@router.get("/vapid-public-key", response_model=VapidPublicKey,
            responses=error_responses(VapidKeyError))
async def get_vapid_public_key(user: CurrentUser, runtime: RuntimeDep) -> VapidPublicKey:
    """The applicationServerKey to subscribe with."""
    return VapidPublicKey(public_key=public_key_of(vapid_key(runtime.settings)))


@router.post(
    "/subscriptions", status_code=status.HTTP_201_CREATED, response_model=PushSubscriptionOut,
    responses=error_responses(PushEndpointRefused, TooManyPushSubscriptions, SecretKeyError),
)
async def subscribe(
    data: PushSubscriptionCreate, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> PushSubscriptionOut:
    """Register this browser (its PushSubscription JSON); the same endpoint again updates it."""
    subscription = await service.subscribe(
        session=session, user=user, data=data, settings=runtime.settings
    )
    return service.to_out(subscription)


@router.get("/subscriptions", response_model=list[PushSubscriptionOut])
async def list_subscriptions(user: CurrentUser, session: SessionDep) -> list[PushSubscriptionOut]:
    return [service.to_out(s) for s in await service.list_for(session=session, user=user)]


@router.delete("/subscriptions", status_code=status.HTTP_204_NO_CONTENT,
               responses=error_responses(PushSubscriptionNotFound))
async def unsubscribe_endpoint(
    data: PushSubscriptionDelete, user: CurrentUser, session: SessionDep
) -> Response:
    """Unsubscribe a browser by its endpoint."""
    await service.unsubscribe(session=session, user=user, endpoint=data.endpoint)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/subscriptions/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=error_responses(PushSubscriptionNotFound))
async def unsubscribe(
    subscription_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> Response:
    """Unsubscribe a browser by its id."""
    await service.unsubscribe(session=session, user=user, subscription_id=subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
