from __future__ import annotations

from fastapi import APIRouter

from app.core.errors import error_responses
from app.users.deps import CurrentUser
from app.users.schemas import UserOut
from app.users.service import InvalidToken

router = APIRouter(tags=["users"], responses=error_responses(InvalidToken))


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> UserOut:
    """The user the token belongs to."""
    return UserOut.model_validate(user)
