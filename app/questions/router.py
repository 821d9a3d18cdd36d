from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.questions import service
from app.questions.schemas import AnswerIn, QuestionOut, to_out
from app.questions.service import NoSuchChoice, QuestionClosed, QuestionNotFound
from app.users.deps import CurrentUser
from app.users.service import InvalidToken

router = APIRouter(
    prefix="/questions", tags=["questions"], responses=error_responses(InvalidToken)
)


@router.get("", response_model=list[QuestionOut])
async def list_open_questions(user: CurrentUser, session: SessionDep) -> list[QuestionOut]:
    """Questions the agent asked that wait for an answer, oldest first."""
    return [to_out(q) for q in await service.list_open(session=session, user=user)]


@router.get("/{question_id}", response_model=QuestionOut,
            responses=error_responses(QuestionNotFound))
async def get_question(question_id: uuid.UUID, user: CurrentUser,
                       session: SessionDep) -> QuestionOut:
    """One question in any state: open, answered (with its answer), expired (nobody
    answered in time) or cancelled (its run was cancelled or its instruction deleted)."""
    return to_out(await service.get(session=session, user=user, question_id=question_id))


@router.post(
    "/{question_id}/answer", response_model=QuestionOut,
    responses=error_responses(QuestionNotFound, QuestionClosed, NoSuchChoice),
)
async def answer_question(
    question_id: uuid.UUID, data: AnswerIn, user: CurrentUser, session: SessionDep,
    runtime: RuntimeDep,
) -> QuestionOut:
    """Answer a question, in words or by a choice's index; its run is queued again to
    resume."""
    question = await service.answer(
        session=session, user=user, question_id=question_id, text=data.answer,
        choice=data.choice, wakeups=runtime.wakeups,
    )
    return to_out(question)
