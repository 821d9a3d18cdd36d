"""Instructions: the list (pause, resume, run now) and the editor (draft, fields, preview)."""

from __future__ import annotations

import uuid
from contextlib import suppress
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.queries import NothingToRead
from app.core.db import utcnow
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import BadRequest, ErrorBody
from app.core.pagination import encode_cursor
from app.google.watch_service import WatchNeedsGoogle, require_watchable
from app.instructions import drafting
from app.instructions import service as instructions
from app.instructions.schemas import (
    DRAFT_TEXT_MAX,
    DraftIn,
    InstructionCreate,
    InstructionUpdate,
)
from app.instructions.service import InstructionNotFound
from app.questions import service as questions
from app.runs import costs
from app.runs import service as runs
from app.web.deps import FormViewerDep, Viewer, ViewerDep
from app.web.forms import (
    CHANNEL_LABELS,
    SOURCE_LABELS,
    THINKING_LEVELS,
    EditorValues,
    errors_of,
    schedule_preview,
)
from app.web.render import page, redirect, when

# Pages return responses they build; none has a response model.
router = APIRouter(include_in_schema=False)
LIST_LIMIT = 200


@router.get("/", response_class=HTMLResponse)
async def instructions_list(
    request: Request, viewer: ViewerDep, session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    saved: Annotated[str | None, Query(max_length=64)] = None,
    deleted: Annotated[str | None, Query(max_length=64)] = None,
    paused: Annotated[str | None, Query(max_length=64)] = None,
    resumed: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Newest first, a page at a time: "More instructions" follows the API's cursor.
    After the editor saved one (`saved`) or deleted one (`deleted`), or its Pause or
    Resume button was pressed (`paused`, `resumed`), says so, naming it."""
    rows, more = await instructions.list_page(
        session=session, user=viewer.user, status=None, cursor=cursor, limit=LIST_LIMIT
    )
    saved_title = None
    if saved:  # the editor's redirect after saving
        # A mangled address, an instruction deleted since or another user's: nothing to say.
        with suppress(ValueError, InstructionNotFound):
            saved_title = (await instructions.get(
                session=session, user=viewer.user, instruction_id=uuid.UUID(saved))).title
    deleted_title = None
    if deleted:  # the editor's redirect after deleting: one of the user's, deleted
        with suppress(ValueError):
            deleted_title = await instructions.deleted_title(
                session=session, user=viewer.user, instruction_id=uuid.UUID(deleted))
    paused_title = await _title_if(session, viewer, paused, status="paused")
    resumed_title = await _title_if(session, viewer, resumed, status="active")
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    latest = await runs.latest_by_instruction(
        session=session, user=viewer.user, instruction_ids=[r.id for r in rows]
    )
    usage = await costs.usage(session=session, user=viewer.user, days=30)
    spent = {u.instruction_id: u.cost_usd for u in usage.instructions}
    return page(
        request, "instructions.html", viewer, active="instructions",
        items=[(instructions.to_out(r), latest.get(r.id), spent.get(r.id, 0.0)) for r in rows],
        open_questions=len(await questions.list_open(session=session, user=viewer.user)),
        cursor=cursor, next_cursor=next_cursor, saved_title=saved_title,
        deleted_title=deleted_title, paused_title=paused_title, resumed_title=resumed_title,
    )


async def _title_if(
    session: AsyncSession, viewer: Viewer, instruction_id: str | None, *, status: str
) -> str | None:
    """The title of the user's instruction `instruction_id` while its status is `status`:
    a reload or a bookmark of the address after a Pause never says "Paused" of one that
    was resumed since (nor of another user's, or of a mangled id)."""
    if not instruction_id:
        return None
    with suppress(ValueError, InstructionNotFound):
        instruction = await instructions.get(
            session=session, user=viewer.user, instruction_id=uuid.UUID(instruction_id))
        return instruction.title if instruction.status == status else None
    return None


@router.get("/instructions")
async def instructions_index(request: Request) -> RedirectResponse:
    """The list is at "/": /instructions, typed or bookmarked, goes there (its query too)."""
    query = request.url.query
    return RedirectResponse("/" + (f"?{query}" if query else ""), status_code=303)


def _editor(
    request: Request, viewer: Viewer, values: EditorValues, *, instruction_id: uuid.UUID | None,
    status_code: int = 200, **context: object,
) -> HTMLResponse:
    context.setdefault("errors", [])
    context.setdefault("sentence", "")
    context.setdefault("draft", None)
    context.setdefault("draft_error", None)
    return page(
        request, "editor.html", viewer, status_code=status_code, active="instructions",
        values=values, instruction_id=instruction_id, channel_labels=CHANNEL_LABELS,
        source_labels=SOURCE_LABELS, thinking_levels=THINKING_LEVELS,
        draft_text_max=DRAFT_TEXT_MAX, **context,
    )


@router.get("/instructions/new", response_class=HTMLResponse)
async def new_instruction(request: Request, viewer: ViewerDep) -> HTMLResponse:
    values = EditorValues(timezone=viewer.user.timezone)
    return _editor(request, viewer, values, instruction_id=None)


@router.get("/instructions/schedule")
async def readable_schedule(
    viewer: ViewerDep,
    session: SessionDep,
    trigger_type: Annotated[str, Query(max_length=16)] = "cron",
    cron: Annotated[str, Query(max_length=120)] = "",
    timezone: Annotated[str, Query(max_length=64)] = "",
    interval_minutes: Annotated[str, Query(max_length=12)] = "",
    gmail_query: Annotated[str, Query(max_length=500)] = "",
    drive_folder_id: Annotated[str, Query(max_length=200)] = "",
    instruction_id: uuid.UUID | None = None,
) -> JSONResponse:
    """The schedule in words and its next three fire times, for the editor as you type
    (an instruction's own editor names it: its interval counts from its creation)."""
    anchor = None
    if instruction_id is not None:
        anchor = (await instructions.get(
            session=session, user=viewer.user, instruction_id=instruction_id)).created_at
    values = EditorValues(trigger_type=trigger_type, cron=cron,
                          timezone=timezone or viewer.user.timezone,
                          interval_minutes=interval_minutes, gmail_query=gmail_query.strip(),
                          drive_folder_id=drive_folder_id.strip())
    try:
        words, fires = schedule_preview(values.trigger(), utcnow(), anchor=anchor)
    except ValidationError as exc:
        body = ErrorBody(error="InvalidSchedule", detail="; ".join(errors_of(exc)))
        return JSONResponse(body.model_dump(exclude_none=True), status_code=422)
    return JSONResponse({
        "schedule": words,
        "next": [when(f, values.timezone if trigger_type == "cron" else viewer.user.timezone)
                 for f in fires],
    })


@router.post("/instructions/draft", response_class=HTMLResponse)
async def draft_instruction(
    request: Request, viewer: FormViewerDep, session: SessionDep, runtime: RuntimeDep,
    sentence: Annotated[str, Form(max_length=DRAFT_TEXT_MAX)] = "",
) -> HTMLResponse:
    """Draft from one sentence into the editor's fields; nothing is saved until confirmed."""
    timezone = viewer.user.timezone
    values = EditorValues(timezone=timezone)
    try:  # as the API's body is: blank and NUL are refused before drafting
        DraftIn(text=sentence)
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        return _editor(request, viewer, values, instruction_id=None, status_code=422,
                       sentence=sentence,
                       draft_error=f"Write one sentence: what to do and when ({reasons}).")
    try:  # ends the transaction before the model turn
        draft = await drafting.propose(
            text=sentence, user=viewer.user, session=session, runtime=runtime
        )
    except (BadRequest, costs.CostCapReached) as exc:
        return _editor(request, viewer, values, instruction_id=None, status_code=422,
                       sentence=sentence, draft_error=exc.detail)
    return _editor(request, viewer, EditorValues.of(draft.instruction, timezone),
                   instruction_id=None, sentence=sentence, draft=draft)


@router.post("/instructions", response_class=HTMLResponse)
async def create_instruction(
    request: Request, viewer: FormViewerDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    values = EditorValues.from_form(await request.form(), viewer.user.timezone)
    try:
        data = InstructionCreate.model_validate(values.body())
    except ValidationError as exc:
        return _editor(request, viewer, values, instruction_id=None, status_code=422,
                       errors=errors_of(exc))
    try:
        # It checks what the instruction needs to run before it writes anything.
        instruction = await instructions.create(
            session=session, user=viewer.user, data=data,
            default_max_tool_calls=runtime.settings.agent_default_max_tool_calls,
        )
    except (WatchNeedsGoogle, NothingToRead) as exc:  # said in the form
        return _editor(request, viewer, values, instruction_id=None, status_code=422,
                       errors=[exc.detail])
    return redirect(request, f"/?saved={instruction.id}", viewer)


async def _unwatchable(
    session: AsyncSession, viewer: Viewer, data: InstructionUpdate
) -> str | None:
    """Why a watch trigger cannot be served (no Google account with its scope), if so:
    said in the form before anything is changed (the update sets fields as it goes)."""
    if data.trigger is None or data.trigger.type != "watch":
        return None
    try:
        await require_watchable(session=session, user_id=viewer.user.id,
                                spec=data.trigger.model_dump(exclude_none=True))
    except WatchNeedsGoogle as exc:
        return exc.detail
    return None


@router.get("/instructions/{instruction_id}", response_class=HTMLResponse)
async def edit_instruction(
    request: Request, instruction_id: uuid.UUID, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse:
    instruction = await instructions.get(
        session=session, user=viewer.user, instruction_id=instruction_id
    )
    return _editor(request, viewer, EditorValues.of(instruction, viewer.user.timezone),
                   instruction_id=instruction.id, instruction=instructions.to_out(instruction))


@router.post("/instructions/{instruction_id}", response_class=HTMLResponse)
async def update_instruction(
    request: Request, instruction_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep
) -> Response:
    instruction = await instructions.get(
        session=session, user=viewer.user, instruction_id=instruction_id
    )
    values = EditorValues.from_form(await request.form(), viewer.user.timezone)
    try:
        data = InstructionUpdate.model_validate(values.body())
    except ValidationError as exc:
        return _editor(request, viewer, values, instruction_id=instruction.id,
                       instruction=instructions.to_out(instruction), status_code=422,
                       errors=errors_of(exc))
    if problem := await _unwatchable(session, viewer, data):
        return _editor(request, viewer, values, instruction_id=instruction.id,
                       instruction=instructions.to_out(instruction), status_code=422,
                       errors=[problem])
    try:
        await instructions.update(
            session=session, user=viewer.user, instruction_id=instruction.id, data=data
        )
    except NothingToRead as exc:  # said in the form, which keeps what was typed
        return _editor(request, viewer, values, instruction_id=instruction.id,
                       instruction=instructions.to_out(instruction), status_code=422,
                       errors=[exc.detail])
    return redirect(request, f"/?saved={instruction.id}", viewer)


@router.post("/instructions/{instruction_id}/pause")
@router.post("/instructions/{instruction_id}/resume")
async def pause_or_resume(
    request: Request, instruction_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep
) -> Response:
    """The instruction list's Pause and Resume buttons: the path's last word says which."""
    paused = request.url.path.endswith("/pause")
    await instructions.set_paused(
        session=session, user=viewer.user, instruction_id=instruction_id, paused=paused
    )
    if paused:  # as the API's pause
        await runs.cancel_paused_away(session=session, instruction_id=instruction_id)
    return redirect(request, f"/?{'paused' if paused else 'resumed'}={instruction_id}", viewer)


@router.post("/instructions/{instruction_id}/run")
async def run_now(
    request: Request, instruction_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    instruction = await instructions.get(
        session=session, user=viewer.user, instruction_id=instruction_id
    )
    run = await runs.run_now(session=session, instruction=instruction, wakeups=runtime.wakeups)
    return redirect(request, f"/runs/{run.id}", viewer)


@router.post("/instructions/{instruction_id}/preview")
async def preview(
    request: Request, instruction_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep,
    runtime: RuntimeDep, days: Annotated[int, Form(ge=1, le=90)] = 7,
) -> Response:
    """A trial over the past days: shown on the run, delivered to nobody."""
    instruction = await instructions.get(
        session=session, user=viewer.user, instruction_id=instruction_id
    )
    await costs.ensure_preview_under_cap(
        session=session, user=viewer.user, settings=runtime.settings
    )
    run = await runs.preview(
        session=session, instruction=instruction, days=days, wakeups=runtime.wakeups
    )
    return redirect(request, f"/runs/{run.id}", viewer)


@router.post("/instructions/{instruction_id}/delete")
async def delete(
    request: Request, instruction_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep,
    confirm: Annotated[str | None, Form()] = None,
) -> Response:
    """As the API's DELETE: the instruction goes, its queued runs and open questions close.
    Only with the form's box ticked: one stray click deleted it, with no way back."""
    if confirm != "on":
        instruction = await instructions.get(
            session=session, user=viewer.user, instruction_id=instruction_id
        )
        return _editor(request, viewer, EditorValues.of(instruction, viewer.user.timezone),
                       instruction_id=instruction.id,
                       instruction=instructions.to_out(instruction), status_code=422,
                       errors=["Delete: tick the box to say you want it deleted"])
    instruction = await instructions.delete(
        session=session, user=viewer.user, instruction_id=instruction_id
    )
    await runs.cancel_queued_for(session=session, instruction_id=instruction.id)
    await questions.cancel_open_for(session=session, instruction_id=instruction.id)
    return redirect(request, f"/?deleted={instruction.id}", viewer)
