from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.accounts import service
from app.accounts.schemas import AccountOut
from app.accounts.service import AccountNotFound
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.google import oauth
from app.users.deps import CurrentUser
from app.users.service import InvalidToken

router = APIRouter(prefix="/accounts", tags=["accounts"], responses=error_responses(InvalidToken))


@router.get("", response_model=list[AccountOut])
async def list_accounts(user: CurrentUser, session: SessionDep) -> list[AccountOut]:
    """Your source accounts: kind, address, status, and which features each serves."""
    return [service.to_out(a) for a in await service.list_for(session=session, user=user)]


@router.delete(
    "/{account_id}", status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(AccountNotFound),
)
async def delete_account(
    account_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Remove an account and its grant. A Google grant is also revoked at Google (best
    effort: the account is removed here whatever Google answers). Instructions that
    cannot run without it are paused."""
    account = await service.get(session=session, user=user, account_id=account_id)
    token = service.refresh_token_of(account, runtime.settings)
    await service.remove(session=session, account=account)
    if account.kind == "google" and token is not None:
        await oauth.revoke(runtime.settings, token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
