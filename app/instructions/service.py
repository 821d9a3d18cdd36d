"""Standing instructions: create, change, pause, resume, delete."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import queries as accounts
from app.core.db import utcnow
from app.core.errors import Conflict, NotFound
from app.core.pagination import newest_first
from app.google import watch_service
from app.instructions import triggers
from app.instructions.models import Instruction
from app.instructions.schemas import InstructionCreate, InstructionOut, InstructionUpdate
from app.users.models import User


class InstructionNotFound(NotFound):
    pass


class InstructionNotActive(Conflict):
    pass


async def _trigger_spec(
    session: AsyncSession, trigger: Any, user: User, *, zone: str | None = None
) -> dict[str, Any]:
    """The trigger as stored; a watch trigger needs a Google account that can serve it.
    A cron without a time zone is in `zone` (an updated cron's own), else the user's."""
    spec: dict[str, Any] = trigger.model_dump(exclude_none=trigger.type == "watch")
    if spec["type"] == "cron" and not spec.get("timezone"):
        spec["timezone"] = zone or user.timezone
    if spec["type"] == "watch":
        await watch_service.require_watchable(session=session, user_id=user.id, spec=spec)
    return spec


async def require_runnable(*, session: AsyncSession, instruction: Instruction) -> None:
    """Refuse to set an instruction running when it could only fail: a watch needs a
    Google account that can serve it, any other trigger an account a run can read."""
    if instruction.trigger.get("type") == "watch":
        await watch_service.require_watchable(
            session=session, user_id=instruction.user_id, spec=instruction.trigger)
    else:
        await accounts.require_something_to_read(
            session=session, user_id=instruction.user_id,
            kinds=instruction.sources.get("kinds", []))


def schedule_next(instruction: Instruction, *, now: datetime) -> None:
    """Point next_run_at at the first fire time after now (or clear it when not active);
    an active watch watches from now on."""
    if instruction.status != "active" or instruction.deleted_at is not None:
        instruction.next_run_at = None
        return
    if instruction.trigger.get("type") == "watch":
        instruction.watch_since = now
    instruction.next_run_at = triggers.next_after(
        instruction.trigger, now, anchor=instruction.created_at
    )


def to_out(instruction: Instruction) -> InstructionOut:
    return InstructionOut(
        id=instruction.id,
        title=instruction.title,
        text=instruction.text,
        trigger=instruction.trigger,
        schedule=triggers.describe(instruction.trigger),
        sources=list(instruction.sources.get("kinds", [])),
        channels=list(instruction.channels.get("kinds", [])),
        thinking_level=instruction.thinking_level,
        max_tool_calls=instruction.max_tool_calls,
        only_new=instruction.only_new,
        status=instruction.status,
        status_detail=instruction.status_detail,
        consecutive_failures=instruction.consecutive_failures,
        next_run_at=instruction.next_run_at,
        last_run_at=instruction.last_run_at,
        created_at=instruction.created_at,
        updated_at=instruction.updated_at,
    )


async def create(
    *, session: AsyncSession, user: User, data: InstructionCreate, default_max_tool_calls: int
) -> Instruction:
    """Create an active instruction with its first fire time."""
    trigger = await _trigger_spec(session, data.trigger, user)
    if trigger["type"] != "watch":
        await accounts.require_something_to_read(
            session=session, user_id=user.id, kinds=data.sources)
    else:
        # Its start is taken after: a poll that moves an account's cursor on either sees
        # this watch committed or moved it before the watch began.
        await watch_service.hold_new_watch(session=session, user_id=user.id)
    now = utcnow()
    instruction = Instruction(
        id=uuid.uuid4(),
        user_id=user.id,
        title=data.title,
        text=data.text,
        trigger=trigger,
        sources={"kinds": sorted(set(data.sources))},
        channels={"kinds": sorted(set(data.channels))},
        thinking_level=data.thinking_level,
        max_tool_calls=(
            default_max_tool_calls if data.max_tool_calls is None else data.max_tool_calls
        ),
        only_new=data.only_new,
        status="active",
        created_at=now,
        updated_at=now,
    )
    schedule_next(instruction, now=now)
    session.add(instruction)
    await session.flush()
    return instruction


async def get(
    *, session: AsyncSession, user: User, instruction_id: uuid.UUID, for_update: bool = False
) -> Instruction:
    """One of the user's instructions; another user's is not found."""
    stmt = select(Instruction).where(
        Instruction.id == instruction_id,
        Instruction.user_id == user.id,
        Instruction.deleted_at.is_(None),
    )
    if for_update:
        stmt = stmt.with_for_update()
    instruction = (await session.execute(stmt)).scalar_one_or_none()
    if instruction is None:
        raise InstructionNotFound(f"instruction {instruction_id} not found")
    return instruction


async def list_page(
    *, session: AsyncSession, user: User, status: str | None, cursor: str | None, limit: int
) -> tuple[Sequence[Instruction], bool]:
    stmt = select(Instruction).where(
        Instruction.user_id == user.id, Instruction.deleted_at.is_(None)
    )
    if status:
        stmt = stmt.where(Instruction.status == status)
    stmt = newest_first(stmt, Instruction.created_at, Instruction.id, cursor=cursor, limit=limit)
    rows = (await session.execute(stmt)).scalars().all()
    return rows[:limit], len(rows) > limit


async def update(
    *, session: AsyncSession, user: User, instruction_id: uuid.UUID, data: InstructionUpdate
) -> Instruction:
    """Apply the given fields; a new trigger takes effect at once."""
    instruction = await get(
        session=session, user=user, instruction_id=instruction_id, for_update=True
    )
    trigger_type = data.trigger.type if data.trigger is not None else (
        instruction.trigger.get("type"))
    if data.sources is not None and instruction.status == "active" and trigger_type != "watch":
        # Runs that could read none of the sources it would name would only fail. Checked
        # before any field is set: a caller that says why keeps the instruction as it was.
        await accounts.require_something_to_read(
            session=session, user_id=user.id, kinds=sorted(set(data.sources)))
    fields = data.model_dump(exclude_unset=True)
    for name in ("title", "text", "thinking_level", "max_tool_calls", "only_new"):
        if name in fields and fields[name] is not None:
            setattr(instruction, name, fields[name])
    if data.sources is not None:
        instruction.sources = {"kinds": sorted(set(data.sources))}
    if data.channels is not None:
        instruction.channels = {"kinds": sorted(set(data.channels))}
    now = utcnow()
    if data.trigger is not None:
        # A new cron expression alone keeps the zone the instruction's cron was in.
        trigger = await _trigger_spec(session, data.trigger, user,
                                      zone=instruction.trigger.get("timezone"))
        # Only a different trigger is rescheduled: the dashboard sends the trigger with
        # every save, and rescheduling the same one would drop a fire time that is due
        # but not queued yet, or the watched items that came since the last poll.
        if trigger != instruction.trigger:
            instruction.trigger = trigger
            schedule_next(instruction, now=now)
            await watch_service.forget_folder(session=session, instruction_id=instruction.id)
    instruction.updated_at = now
    await session.flush()
    return instruction


async def move_time_zone(
    *, session: AsyncSession, user: User, old: str, new: str
) -> list[Instruction]:
    """The user moved from time zone `old` to `new`: their cron instructions that run in
    `old` run at the same hours in `new` from now on (an active one's next fire time is
    taken again, as for any change of trigger). Those in another zone, named for itself
    ("in New York time"), stay. Returns the instructions moved."""
    if old == new:
        return []
    rows = (await session.execute(
        select(Instruction).where(
            Instruction.user_id == user.id, Instruction.deleted_at.is_(None)
        ).order_by(Instruction.id).with_for_update()
    )).scalars().all()
    now = utcnow()
    moved = []
    for instruction in rows:
        trigger = instruction.trigger or {}
        if trigger.get("type") != "cron" or trigger.get("timezone") != old:
            continue
        instruction.trigger = {**trigger, "timezone": new}
        schedule_next(instruction, now=now)
        instruction.updated_at = now
        moved.append(instruction)
    await session.flush()
    return moved


async def set_paused(
    *, session: AsyncSession, user: User, instruction_id: uuid.UUID, paused: bool
) -> Instruction:
    """Pause (no new runs) or resume (also clears an error state) an instruction."""
    instruction = await get(
        session=session, user=user, instruction_id=instruction_id, for_update=True
    )
    now = utcnow()
    if instruction.status == ("paused" if paused else "active"):
        return instruction  # already so: its schedule stays as it is
    if paused:
        instruction.status = "paused"
    else:
        await require_runnable(session=session, instruction=instruction)
        instruction.status = "active"
        instruction.status_detail = None
        instruction.consecutive_failures = 0
    schedule_next(instruction, now=now)
    instruction.updated_at = now
    await session.flush()
    return instruction


async def deleted_title(
    *, session: AsyncSession, user: User, instruction_id: uuid.UUID
) -> str | None:
    """The title of one of the user's deleted instructions (None if it is not one)."""
    return (await session.execute(
        select(Instruction.title).where(
            Instruction.id == instruction_id, Instruction.user_id == user.id,
            Instruction.deleted_at.is_not(None),
        )
    )).scalar_one_or_none()


async def delete(*, session: AsyncSession, user: User, instruction_id: uuid.UUID) -> Instruction:
    """Soft-delete: the instruction disappears, its past runs stay in the history."""
    instruction = await get(
        session=session, user=user, instruction_id=instruction_id, for_update=True
    )
    now = utcnow()
    instruction.deleted_at = now
    instruction.next_run_at = None
    await watch_service.forget_folder(session=session, instruction_id=instruction.id)
    instruction.updated_at = now
    await session.flush()
    return instruction
