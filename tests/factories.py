"""Test data built through the services, as the API and CLI build it."""

from __future__ import annotations

import uuid
from typing import Any

from app.accounts.models import Account
from app.core.db import transaction
from app.core.runtime import Runtime
from app.instructions import service as instructions
from app.instructions.models import Instruction
from app.instructions.schemas import InstructionCreate
from app.users import service as users
from app.users.models import User


async def user_with_token(
    runtime: Runtime, email: str | None = None, *, sample: bool = True
) -> tuple[User, dict[str, str]]:
    """A user (with the sample account unless told otherwise) and auth headers for them."""
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    async with transaction(runtime.sessionmaker) as session:
        user = await users.create_user(session=session, email=email, timezone="Europe/Berlin")
        if sample:
            session.add(Account(user_id=user.id, kind="sample", email=email, scopes={},
                                sync_cursor={}, status="active"))
        _token, plaintext = await users.create_token(session=session, user=user)
    return user, {"Authorization": f"Bearer {plaintext}"}


def instruction_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Morning digest",
        "text": "Digest my team's mail and the documents that changed.",
        "trigger": {"type": "cron", "cron": "0 8 * * 1-5", "timezone": "Europe/Berlin"},
    }
    body.update(overrides)
    return body


async def instruction(runtime: Runtime, user: User, **overrides: Any) -> Instruction:
    async with transaction(runtime.sessionmaker) as session:
        return await instructions.create(
            session=session, user=user, data=InstructionCreate(**instruction_body(**overrides)),
            default_max_tool_calls=runtime.settings.agent_default_max_tool_calls,
        )
