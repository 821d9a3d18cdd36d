from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from app.accounts.queries import NothingToRead
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.core.pagination import PAGE_LIMIT, InvalidCursor, encode_cursor
from app.google.watch_service import WatchNeedsGoogle
from app.instructions import drafting, service
from app.instructions.drafting import (
    DraftIntervalTooShort,
    DraftNotUnderstood,
    DraftWatchNotAvailable,
)
from app.instructions.schemas import (
    DraftIn,
    DraftOut,
    InstructionCreate,
    InstructionOut,
    InstructionPage,
    InstructionUpdate,
)
from app.instructions.service import InstructionNotFound
from app.questions import service as questions_service
from app.runs import costs
from app.runs import service as runs_service
from app.runs.costs import CostCapReached
from app.runs.models import Run
from app.runs.schemas import PreviewIn, RunOut
from app.users.deps import CurrentUser
from app.users.service import InvalidToken

router = APIRouter(
    prefix="/instructions", tags=["instructions"], responses=error_responses(InvalidToken)
)
InstructionId = Annotated[uuid.UUID, "instruction id"]


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=InstructionOut,
    responses=error_responses(NothingToRead, WatchNeedsGoogle),
)
async def create_instruction(
    data: InstructionCreate, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> InstructionOut:
    """Create a standing instruction; it fires on its trigger from now on."""
    instruction = await service.create(
        session=session, user=user, data=data,
        default_max_tool_calls=runtime.settings.agent_default_max_tool_calls,
    )
    return service.to_out(instruction)


# Before the "/{instruction_id}" routes, so that "draft" is never read as an id.
@router.post(
    "/draft", response_model=DraftOut,
    responses=error_responses(
        DraftNotUnderstood, DraftIntervalTooShort, DraftWatchNotAvailable, CostCapReached
    ),
)
async def draft_instruction(
    data: DraftIn, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> DraftOut:
    """Propose an instruction from one sentence, in the user's time zone; creates nothing.

    POST the answer's `instruction` to `/instructions` as is to create it.
    """
    return await drafting.propose(text=data.text, user=user, session=session, runtime=runtime)


@router.get("", response_model=InstructionPage, responses=error_responses(InvalidCursor))
async def list_instructions(
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    status: Literal["active", "paused", "error"] | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description=PAGE_LIMIT)] = 50,
) -> InstructionPage:
    """The user's instructions, newest first."""
    limit = min(limit, runtime.settings.api_page_size_max)
    rows, more = await service.list_page(
        session=session, user=user, status=status, cursor=cursor, limit=limit
    )
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return InstructionPage(items=[service.to_out(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{instruction_id}", response_model=InstructionOut,
    responses=error_responses(InstructionNotFound),
)
async def get_instruction(
    instruction_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> InstructionOut:
    instruction = await service.get(session=session, user=user, instruction_id=instruction_id)
    return service.to_out(instruction)


@router.patch(
    "/{instruction_id}", response_model=InstructionOut,
    responses=error_responses(InstructionNotFound, WatchNeedsGoogle),
)
async def update_instruction(
    instruction_id: uuid.UUID, data: InstructionUpdate, user: CurrentUser, session: SessionDep
) -> InstructionOut:
    """Change some fields; a new trigger takes effect at once."""
    instruction = await service.update(
        session=session, user=user, instruction_id=instruction_id, data=data
    )
    return service.to_out(instruction)


@router.delete(
    "/{instruction_id}", status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(InstructionNotFound),
)
async def delete_instruction(
    instruction_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> Response:
    """Delete an instruction, cancel its queued runs and close its open questions.

    Past runs stay in the history.
    """
    instruction = await service.delete(
        session=session, user=user, instruction_id=instruction_id
    )
    await runs_service.cancel_queued_for(session=session, instruction_id=instruction.id)
    await questions_service.cancel_open_for(session=session, instruction_id=instruction.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{instruction_id}/pause", response_model=InstructionOut,
    responses=error_responses(InstructionNotFound),
)
async def pause_instruction(
    instruction_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> InstructionOut:
    """Stop new runs until resumed; runs of its schedule or watches still queued are
    cancelled (run-now and answered questions go ahead)."""
    instruction = await service.set_paused(
        session=session, user=user, instruction_id=instruction_id, paused=True
    )
    await runs_service.cancel_paused_away(session=session, instruction_id=instruction.id)
    return service.to_out(instruction)


@router.post(
    "/{instruction_id}/resume", response_model=InstructionOut,
    responses=error_responses(InstructionNotFound, NothingToRead, WatchNeedsGoogle),
)
async def resume_instruction(
    instruction_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> InstructionOut:
    """Resume a paused instruction (or one stopped by errors) from the next fire time."""
    instruction = await service.set_paused(
        session=session, user=user, instruction_id=instruction_id, paused=False
    )
    return service.to_out(instruction)


@router.post(
    "/{instruction_id}/preview", status_code=status.HTTP_201_CREATED, response_model=RunOut,
    responses=error_responses(InstructionNotFound, NothingToRead, CostCapReached),
)
async def preview_instruction(
    instruction_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep,
    data: PreviewIn | None = None,
) -> Run:
    """Queue a trial run over the last days (default 7): its digest is shown on the run,
    nothing is delivered and the instruction's cursor does not move. Refused (429) once the
    user's daily cost cap is reached."""
    instruction = await service.get(session=session, user=user, instruction_id=instruction_id)
    await costs.ensure_preview_under_cap(session=session, user=user, settings=runtime.settings)
    return await runs_service.preview(
        session=session, instruction=instruction, days=(data or PreviewIn()).days,
        wakeups=runtime.wakeups,
    )


@router.post(
    "/{instruction_id}/run", status_code=status.HTTP_201_CREATED, response_model=RunOut,
    responses={
        status.HTTP_200_OK: {
            "model": RunOut, "description": "A run now queued before, not started yet",
        },
        **error_responses(InstructionNotFound, NothingToRead),
    },
)
async def run_instruction_now(
    instruction_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep,
    response: Response,
) -> Run:
    """Queue a run now; returns the queued run (201). A run now of the instruction still
    queued and not started is returned instead of a second one (200)."""
    instruction = await service.get(session=session, user=user, instruction_id=instruction_id)
    run, new = await runs_service.queue_run_now(
        session=session, instruction=instruction, wakeups=runtime.wakeups
    )
    if not new:
        response.status_code = status.HTTP_200_OK
    return run
