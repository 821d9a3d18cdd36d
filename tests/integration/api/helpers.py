"""Shared helpers of the API tests: the error-shape check and rows the API cannot create.

Runs, steps, questions and notifications are written by the scheduler, worker
and agent, so the tests insert them through the ORM (and `notify`), the way
those components do.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.core.config import Settings
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.instructions.models import Instruction
from app.main import create_app
from app.notifications.service import notify
from app.questions.models import Question
from app.runs.models import Run, RunStep
from app.users.models import User

API = "/api/v1"


def assert_error(
    response: httpx.Response, status: int, error: str, *fragments: str
) -> dict[str, Any]:
    """The response is `status` in the one error body shape, naming every fragment."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) <= {"error", "detail", "errors"}, body
    assert body["error"] == error, body
    assert isinstance(body["detail"], str), body
    assert body["detail"].strip(), body
    for fragment in fragments:
        assert fragment.lower() in body["detail"].lower(), (fragment, body["detail"])
    if error == "ValidationError":
        assert isinstance(body["errors"], list), body
        assert body["errors"], body
        for item in body["errors"]:
            assert item["field"], item
            assert item["message"], item
    return body


class _RoutesOnly:
    """What building the app reads of a runtime (its settings); listing the routes
    touches nothing else."""

    settings = Settings()


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of the app, included routers flattened."""
    app = create_app(_RoutesOnly())  # type: ignore[arg-type]
    try:  # FastAPI >= 0.16x includes routers lazily; this walks them
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI copies included routes into app.routes
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    return sorted(
        (method, route.path)
        for route in routes
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    )


def parse_time(value: str | None) -> datetime:
    """A timestamp of a response, which must be there, as an aware UTC datetime."""
    assert value is not None
    return datetime.fromisoformat(value).astimezone(UTC)


async def add_run(
    runtime: Runtime,
    user: User,
    instruction: Instruction | uuid.UUID,
    *,
    status: str = "queued",
    created_at: datetime | None = None,
    **fields: Any,
) -> Run:
    """A run row as the scheduler or worker leaves it."""
    instruction_id = instruction if isinstance(instruction, uuid.UUID) else instruction.id
    created_at = created_at or utcnow()
    fields.setdefault("reason", "schedule")
    fields.setdefault("scheduled_for", created_at)
    if status not in ("queued", "running", "waiting_for_user"):
        fields.setdefault("started_at", created_at)
        fields.setdefault("finished_at", created_at + timedelta(seconds=1))
    run = Run(
        id=uuid.uuid4(), user_id=user.id, instruction_id=instruction_id, status=status,
        created_at=created_at, updated_at=created_at, **fields,
    )
    async with transaction(runtime.sessionmaker) as session:
        session.add(run)
    return run


async def add_steps(
    runtime: Runtime, user: User, run: Run, keys: list[tuple[int, int]]
) -> None:
    """Steps of a run, inserted in the given (attempt, seq) order."""
    async with transaction(runtime.sessionmaker) as session:
        for attempt, seq in keys:
            session.add(RunStep(
                user_id=user.id, run_id=run.id, attempt=attempt, seq=seq,
                kind="tool" if seq % 2 else "model", name=f"step-{attempt}-{seq}",
                arguments={"attempt": attempt, "seq": seq}, duration_ms=seq,
            ))
            await session.flush()


async def add_question(
    runtime: Runtime, user: User, run: Run, *, text: str = "Which project?",
    choices: list[str] | None = None, status: str = "open", created_at: datetime | None = None,
) -> Question:
    """A follow-up question the agent asked during `run`."""
    now = created_at or utcnow()
    question = Question(
        id=uuid.uuid4(), user_id=user.id, run_id=run.id, instruction_id=run.instruction_id,
        interaction_id=f"interaction-{uuid.uuid4().hex[:8]}", call_id="call-1", text=text,
        choices={"choices": choices or []}, status=status, created_at=now, updated_at=now,
    )
    async with transaction(runtime.sessionmaker) as session:
        session.add(question)
    return question


async def add_notification(
    runtime: Runtime, user: User, *, title: str = "Your digest", channels: tuple[str, ...] = (),
    run: Run | None = None, kind: str = "digest",
) -> uuid.UUID:
    """A notification with its deliveries, written as the worker writes it."""
    async with transaction(runtime.sessionmaker) as session:
        notification_id = await notify(
            session=session, user_id=user.id, key=f"test:{uuid.uuid4()}", kind=kind,
            title=title, body=f"{title}: body", channels=channels,
            data={"source": "test"}, run_id=run.id if run else None,
            instruction_id=run.instruction_id if run else None,
        )
    assert notification_id is not None
    return notification_id
