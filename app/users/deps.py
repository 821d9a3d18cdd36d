"""The `CurrentUser` dependency: a bearer token resolved to its user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.core.deps import SessionDep
from app.users import service
from app.users.models import User

_bearer = HTTPBearer(auto_error=False, description="A personal access token (plt_…)")


async def get_current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise service.InvalidToken(
            "missing bearer token: create one with `pilotlight token create`"
        )
    return await service.authenticate(session=session, token=credentials.credentials)


CurrentUser = Annotated[User, Depends(get_current_user)]
