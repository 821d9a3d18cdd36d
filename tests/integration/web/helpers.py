"""Signing in to the dashboard as the browser does, and test data for its pages."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx

from app.auth import service as auth
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.instructions import service as instructions
from app.main import create_app
from app.questions import service as questions
from app.runs import service as runs
from app.users.models import User

BASE = "http://127.0.0.1:8000"
LOOPBACK_CLIENT = ("127.0.0.1", 50000)


@asynccontextmanager
async def browser(
    runtime: Runtime, *, embedded: bool = False, client: tuple[str, int] = LOOPBACK_CLIENT,
    base_url: str = BASE,
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client that keeps cookies like a browser, against the app over ASGI."""
    transport = httpx.ASGITransport(app=create_app(runtime, embedded=embedded), client=client)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
        yield c


async def login_link(runtime: Runtime, user: User, ttl_seconds: int = 600) -> str:
    async with transaction(runtime.sessionmaker) as session:
        _link, url = await auth.create_login_link(
            session=session, user=user, ttl_seconds=ttl_seconds,
            public_url=runtime.settings.effective_public_url,
        )
    return url


async def open_link(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """Open a one-time link and press its button, as a browser does (same origin)."""
    asked = await client.get(url)
    if asked.status_code != 200:
        return asked
    token = re.search(r'<input type="hidden" name="token" value="([^"]+)">', asked.text)
    assert token, "no sign-in button on the link's page"
    return await client.post("/login/link", data={"token": token[1]},
                             headers={"Sec-Fetch-Site": "same-origin"})


async def sign_in(runtime: Runtime, client: httpx.AsyncClient, user: User) -> str:
    """Sign the client in through a one-time link; returns the page's CSRF token."""
    url = await login_link(runtime, user)
    response = await open_link(client, url.removeprefix(runtime.settings.effective_public_url))
    assert response.status_code == 303, response.text
    return await csrf_of(client)


async def csrf_of(client: httpx.AsyncClient, path: str = "/") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert found, "no CSRF token on the page"
    return found[1]


async def question_for(runtime: Runtime, user: User, instruction_id: uuid.UUID,
                       text: str = "Which project?") -> tuple[uuid.UUID, uuid.UUID]:
    """A run waiting on an open question, as the worker leaves it; (run id, question id)."""
    async with transaction(runtime.sessionmaker) as session:
        instruction = await instructions.get(
            session=session, user=user, instruction_id=instruction_id
        )
        run = await runs.run_now(session=session, instruction=instruction,
                                 wakeups=runtime.wakeups)
        run.status = "waiting_for_user"
        question, _merged = await questions.ask(
            session=session, user_id=user.id, run_id=run.id, instruction_id=instruction_id,
            interaction_id="interaction-1", call_id=f"call-{uuid.uuid4().hex[:6]}", text=text,
            choices=["Apollo", "Gemini"], expires_at=utcnow() + timedelta(hours=1),
        )
        return run.id, question.id

