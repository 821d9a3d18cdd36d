from __future__ import annotations

from fastapi import APIRouter

from app.core.deps import SessionDep
from app.core.errors import error_responses
from app.users import service
from app.users.deps import CurrentUser
from app.users.schemas import UserOut, UserUpdate
from app.users.service import InvalidToken

router = APIRouter(tags=["users"], responses=error_responses(InvalidToken))


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> UserOut:
    """The user the token belongs to."""
    return UserOut.model_validate(user)


@router.patch("/me", response_model=UserOut)
async def update_me(data: UserUpdate, user: CurrentUser, session: SessionDep) -> UserOut:
    """Change the time zone or the daily cost cap. A new time zone moves the cron
    instructions that ran in the old one, unless `move_instructions` is false."""
    await service.update_profile(session=session, user=user, timezone=data.timezone,
                                 daily_cost_cap_usd=data.daily_cost_cap_usd,
                                 move_instructions=data.move_instructions)
    return UserOut.model_validate(user)
