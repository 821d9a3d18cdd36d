"""A push notification's action answers the question: the exact requests the service
worker (`app/web/static/sw.js`) makes, with the dashboard's session cookie, and the run
resumes with that answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from app.core.runtime import Runtime
from app.delivery.push import payload
from tests import factories
from tests.fakes.gemini import Calls, FakeGemini, Text
from tests.integration.runs.helpers import get_run, make_worker, notifications_of, work_once
from tests.integration.runs.test_questions_flow import gemini_for, questions_of
from tests.integration.runs.test_worker import run_now
from tests.integration.web.helpers import browser, sign_in

SW_JS = Path(__file__).resolve().parents[3] / "app" / "web" / "static" / "sw.js"


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
def gemini_runtime(runtime: Runtime, gemini: FakeGemini) -> Runtime:
    gemini.reset()
    settings = runtime.settings.model_copy(update={
        "gemini_api_key": SecretStr(gemini.api_key), "gemini_base_url": gemini.url,
        "gemini_max_retries": 0,
    })
    return Runtime(settings, runtime.engine, runtime.sessionmaker, runtime.wakeups)


def test_the_service_worker_makes_the_requests_this_test_makes() -> None:
    """If sw.js changes how it answers, this test must change with it."""
    script = SW_JS.read_text()
    assert 'fetch("/session/csrf", { credentials: "same-origin" })' in script
    assert ("fetch(`/api/v1/questions/${encodeURIComponent(questionId)}/answer`"
            in script)
    assert 'method: "POST"' in script
    assert '"Content-Type": "application/json", "X-CSRF-Token": token' in script
    assert "JSON.stringify({ choice })" in script
    assert 'const chosen = /^choice:(\\d+)$/.exec(event.action || "");' in script
    assert "answer(data.question_id, Number(chosen[1]))" in script


LONG = "Move the launch to next Tuesday and tell the whole team by email today"


async def test_a_push_action_answers_with_its_whole_choice_and_the_run_resumes(
    gemini_runtime: Runtime, gemini: FakeGemini
) -> None:
    runtime = gemini_runtime
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app"])
    gemini.script(
        Calls([("ask_user", {"question": "Which plan?", "choices": ["Keep the date", LONG]})],
              ids=["call_ask"]),
        Text(json.dumps({"summary": "Tuesday it is.", "sections": []})),
    )
    llm = gemini_for(runtime.settings)
    worker = make_worker(runtime, llm)
    run_id = await run_now(runtime, instruction)
    assert await work_once(worker) == 1
    (asked,) = await notifications_of(runtime, user.id)
    pushed = json.loads(payload(asked))  # what the service worker's push event receives
    chosen = next(a for a in pushed["actions"] if a["action"] == "choice:1")
    # The button shows the choice cut short; the action answers with all of it.
    assert chosen["title"] != LONG
    assert chosen["title"].endswith("\u2026")
    index = int(chosen["action"].removeprefix("choice:"))

    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        # answer(questionId, choice), as sw.js does it: the token first, then the answer.
        token_response = await client.get("/session/csrf")
        assert token_response.status_code == 200
        token = token_response.json()["csrf_token"]
        path = f"/api/v1/questions/{quote(pushed['question_id'], safe='')}/answer"
        body = json.dumps({"choice": index})
        refused = await client.post(path, content=body,
                                    headers={"Content-Type": "application/json"})
        assert refused.status_code == 403, refused.text  # the cookie alone is not enough
        response = await client.post(
            path, content=body,
            headers={"Content-Type": "application/json", "X-CSRF-Token": token},
        )
        assert response.status_code == 200, response.text
        assert response.json()["answer"] == LONG

    assert (await get_run(runtime, run_id)).status == "queued"
    assert await work_once(worker) == 1
    await llm.aclose()
    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error
    (question,) = await questions_of(runtime, instruction.id)
    assert (question.status, question.answer) == ("answered", LONG)
    resume = gemini.requests()[1].body
    assert [(r["call_id"], r["result"]) for r in resume["input"]] == [
        ("call_ask", f"The user answered: {LONG}")]
