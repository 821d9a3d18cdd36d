from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.core.pagination import PAGE_LIMIT, InvalidCursor, encode_cursor
from app.questions import service as questions
from app.runs import costs, service
from app.runs.models import Run
from app.runs.schemas import RunDetail, RunOut, RunPage, RunStatus, RunStepOut
from app.runs.service import RunAlreadyFinished, RunNotFound
from app.users.deps import CurrentUser
from app.users.service import InvalidToken

router = APIRouter(prefix="/runs", tags=["runs"], responses=error_responses(InvalidToken))
usage_router = APIRouter(tags=["usage"], responses=error_responses(InvalidToken))


@usage_router.get("/usage", response_model=costs.Usage)
async def get_usage(
    user: CurrentUser, session: SessionDep, days: Annotated[int, Query(ge=1, le=90)] = 30
) -> costs.Usage:
    """Tokens and cost of your runs over the last days: per day (in your time zone), per
    instruction, and in all."""
    return await costs.usage(session=session, user=user, days=days)


@router.get("", response_model=RunPage, responses=error_responses(InvalidCursor))
async def list_runs(
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    instruction_id: uuid.UUID | None = None,
    status: RunStatus | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description=PAGE_LIMIT)] = 50,
) -> RunPage:
    """The user's runs, newest first, optionally of one instruction or in one status."""
    limit = min(limit, runtime.settings.api_page_size_max)
    rows, more = await service.list_page(
        session=session, user=user, instruction_id=instruction_id, status=status,
        cursor=cursor, limit=limit,
    )
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return RunPage(items=[RunOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{run_id}", response_model=RunDetail, responses=error_responses(RunNotFound))
async def get_run(run_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> RunDetail:
    """A run with its ordered steps: each model turn and tool call."""
    run = await service.get(session=session, user=user, run_id=run_id)
    steps = await service.steps(session=session, run=run)
    return RunDetail(
        **RunOut.model_validate(run).model_dump(),
        steps=[RunStepOut.model_validate(s) for s in steps],
    )


@router.post(
    "/{run_id}/cancel", response_model=RunOut,
    responses=error_responses(RunNotFound, RunAlreadyFinished),
)
async def cancel_run(run_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Run:
    """Cancel a queued, waiting or running run; a question it waits on is closed."""
    run = await service.cancel(session=session, user=user, run_id=run_id)
    await questions.cancel_open_for_run(session=session, run_id=run.id)
    return run
