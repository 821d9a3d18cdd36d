"""First start in embedded mode: the local user, the sample mailbox, an example."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.accounts.models import Account
from app.core.db import transaction
from app.core.errors import DomainError
from app.core.runtime import Runtime
from app.core.validation import check_timezone, timezones
from app.instructions import service as instructions
from app.instructions.schemas import CronTriggerIn, InstructionCreate
from app.runs import service as runs
from app.users import service as users
from app.users.models import User

log = logging.getLogger(__name__)

EXAMPLE_TEXT = (
    "Digest what is new in my mail and documents: what needs my attention first, "
    "then team mail and changed documents, and list the action items with owners "
    "and due dates."
)


@dataclass
class Bootstrap:
    user: User
    created: bool


def local_timezone(configured: str) -> str:
    """The configured time zone, else the machine's, else UTC.

    A configured zone that is not one is refused (Settings checks it too), never
    replaced by another: the user would get digests at the wrong hour without a word.
    """
    if configured:
        return check_timezone(configured)
    try:
        from tzlocal import get_localzone_name

        machine = get_localzone_name() or ""
    except Exception:  # tzlocal raises several kinds when the machine's zone is unclear
        machine = ""
    return machine if machine in timezones() else "UTC"


def sample_account(user_id: uuid.UUID) -> Account:
    """The bundled sample mailbox and documents, as an account of the user's."""
    return Account(user_id=user_id, kind="sample", email="me@northwind.example",
                   scopes={"read": ["mail", "files"]}, sync_cursor={}, status="active")


async def ensure_local_user(runtime: Runtime) -> Bootstrap:
    """Create the local user once, with the sample account and the example instruction:
    in an empty database only, so that a changed PILOTLIGHT_LOCAL_USER_EMAIL is refused
    rather than made a second, empty user."""
    settings = runtime.settings
    async with transaction(runtime.sessionmaker) as session:
        found = await users.get_by_email(session=session, email=settings.local_user_email)
        if found is not None:
            return Bootstrap(found, created=False)
        others = list((await session.execute(
            select(User.email).order_by(User.created_at).limit(3))).scalars())
    if others:
        # Most likely the variable was changed after a first start. A new user there
        # would start empty while the instructions stay with the old address.
        raise DomainError(
            f"PILOTLIGHT_LOCAL_USER_EMAIL is {settings.local_user_email}, which no user has, "
            f"and the database has other users ({', '.join(others)}): set it to one of them, "
            f"give one of them this address with `pilotlight user email OLD "
            f"{settings.local_user_email}`, or create the user with `pilotlight user create "
            f"{settings.local_user_email}`")
    try:
        async with transaction(runtime.sessionmaker) as session:
            user = await users.create_user(
                session=session, email=settings.local_user_email, name="Local user",
                timezone=local_timezone(settings.timezone),
            )
            if settings.sample_account:
                session.add(sample_account(user.id))
                await session.flush()
            # Without the sample it would have nothing to read until Google is connected.
            if settings.example_instruction and settings.sample_account:
                instruction = await instructions.create(
                    session=session, user=user,
                    data=InstructionCreate(
                        title="Morning digest",
                        text=EXAMPLE_TEXT,
                        trigger=CronTriggerIn(
                            type="cron", cron="0 8 * * 1-5", timezone=user.timezone
                        ),
                    ),
                    default_max_tool_calls=settings.agent_default_max_tool_calls,
                )
                # The first run is queued at once so a newcomer sees a digest now,
                # not tomorrow at 8.
                await runs.run_now(
                    session=session, instruction=instruction, wakeups=runtime.wakeups
                )
    except IntegrityError:
        # Another process created the local user at the same moment.
        async with transaction(runtime.sessionmaker) as session:
            found = await users.get_by_email(session=session, email=settings.local_user_email)
            assert found is not None
            return Bootstrap(found, created=False)
    return Bootstrap(user, created=True)
