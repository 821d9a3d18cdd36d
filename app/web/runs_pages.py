"""Runs (history, a run's trace and digest), questions (answer; the run resumes) and the feed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import suppress
from datetime import timedelta
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agent.llm import Usage
from app.agent.offline import notes_its_model
from app.agent.pricing import cost_usd
from app.core.db import utcnow
from app.core.deps import RuntimeDep, SessionDep
from app.core.pagination import encode_cursor
from app.instructions import service as instructions
from app.instructions.models import Instruction
from app.notifications import service as notifications
from app.questions import service as questions
from app.questions.schemas import AnswerIn, QuestionOut, to_out
from app.questions.service import QuestionNotFound
from app.runs import service as runs
from app.runs.models import FINAL_STATUSES, RunStep
from app.runs.schemas import RunStatus
from app.users.models import User
from app.web.deps import FormViewerDep, ViewerDep
from app.web.render import page, redirect

# Pages return responses they build; none has a response model.
router = APIRouter(include_in_schema=False)
PAGE = 50
STATUSES = get_args(RunStatus)


# Instructions offered by the runs page's filter (newest first); the one filtered by is
# always offered.
FILTER_CHOICES = 500


async def _titles(
    session: AsyncSession, user: User, ids: Iterable[uuid.UUID | None]
) -> dict[uuid.UUID, str]:
    """The titles of these instructions, to name runs and questions (deleted ones are
    missing: they are named "Deleted instruction")."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await session.execute(
        select(Instruction.id, Instruction.title).where(
            Instruction.user_id == user.id, Instruction.id.in_(wanted),
            Instruction.deleted_at.is_(None))
    )
    return {row.id: row.title for row in rows}


async def _filter_choices(
    session: AsyncSession, user: User, selected: uuid.UUID | None
) -> dict[uuid.UUID, str]:
    rows, _ = await instructions.list_page(session=session, user=user, status=None, cursor=None,
                                           limit=FILTER_CHOICES)
    choices = {r.id: r.title for r in rows}
    return choices | await _titles(session, user, [selected])


@router.get("/runs", response_class=HTMLResponse)
async def runs_list(
    request: Request, viewer: ViewerDep, session: SessionDep,
    instruction_id: uuid.UUID | None = None,
    status: Annotated[RunStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    rows, more = await runs.list_page(
        session=session, user=viewer.user, instruction_id=instruction_id, status=status,
        cursor=cursor, limit=PAGE,
    )
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return page(
        request, "runs.html", viewer, active="runs", runs=rows,
        titles=await _titles(session, viewer.user, (r.instruction_id for r in rows)),
        choices=await _filter_choices(session, viewer.user, instruction_id),
        statuses=STATUSES, status=status,
        instruction_id=instruction_id, next_cursor=next_cursor,
    )


def _step_cost(step: RunStep, model: str | None, prices: Any) -> float:
    if step.kind != "model" or not model:
        return 0.0
    usage = Usage(input_tokens=step.input_tokens, output_tokens=step.output_tokens,
                  thought_tokens=step.thought_tokens, cached_tokens=step.cached_tokens)
    return cost_usd(model, usage, prices)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_detail(
    request: Request, run_id: uuid.UUID, viewer: ViewerDep, session: SessionDep,
    runtime: RuntimeDep, answered: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    """A run; after a question of it was answered (`answered`, the question's id), the
    answer as it was recorded."""
    run = await runs.get(session=session, user=viewer.user, run_id=run_id)
    steps = await runs.steps(session=session, run=run)
    prices = runtime.settings.gemini_prices
    titles = await _titles(session, viewer.user, [run.instruction_id])
    open_questions = [
        q for q in await questions.list_open(session=session, user=viewer.user)
        if q.run_id == run.id
    ]
    days = runtime.settings.retention_days
    digest = run.result if run.status == "succeeded" else None
    return page(
        request, "run.html", viewer, active="runs", run=run,
        answered=await _answered(session, viewer.user, run.id, answered),
        title=titles.get(run.instruction_id, "Deleted instruction"),
        steps=[(s, _step_cost(s, run.model, prices)) for s in steps],
        digest=digest, written_by=_written_by(digest),
        final=run.status in FINAL_STATUSES, open_questions=[to_out(q) for q in open_questions],
        # Its steps and digest deleted (app/runs/retention.py), or soon to be.
        retention_days=days if days and run.status in FINAL_STATUSES and run.finished_at
        and run.finished_at < utcnow() - timedelta(days=days) else None,
    )


def _written_by(digest: dict[str, Any] | None) -> str | None:
    """Who wrote the digest, for its last line, unless a note of it says so already: the
    offline model's note names it ("Written by Pilotlight's offline model: …"), and the
    page went on "Written by pilotlight-offline." under it."""
    if not digest:
        return None
    if notes_its_model(digest):
        return None
    return str(digest.get("model") or "the model")


async def _answered(
    session: AsyncSession, user: User, run_id: uuid.UUID, question_id: str | None
) -> QuestionOut | None:
    """The question `question_id` if it is this run's and answered, for the notice after
    an answer: it says what is so, however the address is reloaded or bookmarked. (The
    address was `?answered=1`, naming nothing, and the page said nothing.)"""
    if not question_id:
        return None
    with suppress(ValueError, QuestionNotFound):
        question = await questions.get(session=session, user=user,
                                       question_id=uuid.UUID(question_id))
        if question.run_id == run_id and question.status == "answered":
            return to_out(question)
    return None


@router.get("/questions", response_class=HTMLResponse)
async def questions_list(request: Request, viewer: ViewerDep, session: SessionDep) -> HTMLResponse:
    rows = await questions.list_open(session=session, user=viewer.user)
    return page(request, "questions.html", viewer, active="questions",
                questions=[to_out(q) for q in rows],
                titles=await _titles(session, viewer.user, (q.instruction_id for q in rows)),
                single=False, answer_error=None)


@router.get("/questions/{question_id}", response_class=HTMLResponse)
async def question_detail(
    request: Request, question_id: uuid.UUID, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse:
    """One question (a push notification opens this); for one whose run was cancelled,
    the same question a later run asked, should there be one."""
    question = await questions.standing_for(session=session, user=viewer.user,
                                            question_id=question_id)
    return page(request, "questions.html", viewer, active="questions",
                questions=[to_out(question)],
                titles=await _titles(session, viewer.user, [question.instruction_id]),
                single=True, answer_error=None)


@router.post("/questions/{question_id}/answer")
async def answer_question(
    request: Request, question_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep,
    runtime: RuntimeDep, answer: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Answer; the run is queued again and its page shows it resume."""
    try:
        data = AnswerIn(answer=answer.strip())
    except ValidationError:
        # Said under the question, asked again, rather than on an error page leading away.
        question = await questions.get(session=session, user=viewer.user,
                                       question_id=question_id)
        return page(request, "questions.html", viewer, status_code=422, active="questions",
                    questions=[to_out(question)],
                    titles=await _titles(session, viewer.user, [question.instruction_id]),
                    single=True, answer_error="Write an answer: 1 to 2000 characters of "
                    "plain text" + (", or choose one of the choices." if question.choices
                                    else "."))
    question = await questions.answer(
        session=session, user=viewer.user, question_id=question_id, text=data.answer,
        wakeups=runtime.wakeups,
    )
    return redirect(request, f"/runs/{question.run_id}?answered={question.id}", viewer)


def _feed_url(*, unread: bool, cursor: str | None = None) -> str:
    """The feed page with its filter and page: where a mark-read form goes back to."""
    query = urlencode({k: v for k, v in (("unread", "1" if unread else None),
                                         ("cursor", cursor)) if v})
    return f"/feed?{query}" if query else "/feed"


@router.get("/feed", response_class=HTMLResponse)
async def feed(
    request: Request, viewer: ViewerDep, session: SessionDep, unread: bool = False,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """The in-app feed, newest first, a page at a time ("Older" follows the API's cursor),
    all or only the unread; on its first page new items arrive live over the event
    stream (GET /api/v1/events)."""
    rows, _deliveries, more = await notifications.list_page(
        session=session, user=viewer.user, unread=unread, cursor=cursor, limit=PAGE
    )
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return page(request, "feed.html", viewer, active="feed", items=rows, unread=unread,
                cursor=cursor, next_cursor=next_cursor,
                older_url=_feed_url(unread=unread, cursor=next_cursor) if next_cursor else None)


@router.post("/feed/read")
async def mark_all_read(
    request: Request, viewer: FormViewerDep, session: SessionDep,
    unread: Annotated[bool, Form()] = False,
) -> Response:
    """As the API's POST /notifications/read: everything in the feed up to now."""
    await notifications.mark_all_read(session=session, user=viewer.user, before=utcnow())
    return redirect(request, _feed_url(unread=unread), viewer)


@router.post("/feed/{notification_id}/read")
async def mark_read(
    request: Request, notification_id: uuid.UUID, viewer: FormViewerDep, session: SessionDep,
    unread: Annotated[bool, Form()] = False,
    cursor: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    """One item's "Mark read": back to the same page of the feed, at the item."""
    await notifications.mark_read(
        session=session, user=viewer.user, notification_id=notification_id
    )
    return redirect(request, f"{_feed_url(unread=unread, cursor=cursor)}#n-{notification_id}",
                    viewer)
