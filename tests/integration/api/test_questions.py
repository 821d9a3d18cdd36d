"""The questions API: list the open ones, answer one (its run resumes), refuse bad answers."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.core.db import utcnow
from app.core.runtime import Runtime
from app.runs.service import WORKER_CHANNEL
from tests.factories import instruction, user_with_token
from tests.integration.api.helpers import API, add_question, add_run, assert_error, parse_time


async def test_list_open_questions_oldest_first(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    mine = await instruction(runtime, user)
    run = await add_run(runtime, user, mine, status="waiting_for_user")
    base = utcnow() - timedelta(hours=1)
    newer = await add_question(runtime, user, run, text="Newer?",
                               created_at=base + timedelta(minutes=1))
    older = await add_question(runtime, user, run, text="Which project?",
                               choices=["Apollo", "Gemini"], created_at=base)
    await add_question(runtime, user, run, text="Done", status="answered")
    await add_question(runtime, user, run, text="Too late", status="expired")

    response = await client.get(f"{API}/questions", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [q["id"] for q in body] == [str(older.id), str(newer.id)]
    first = body[0]
    assert first["text"] == "Which project?"
    assert first["choices"] == ["Apollo", "Gemini"]
    assert first["status"] == "open"
    assert first["answer"] is None
    assert first["run_id"] == str(run.id)
    assert first["instruction_id"] == str(mine.id)
    assert body[1]["choices"] == []


async def test_answer_requeues_the_run(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user),
                        status="waiting_for_user")
    question = await add_question(runtime, user, run, choices=["Apollo", "Gemini"])
    woken: list[str] = []
    runtime.wakeups.subscribe(WORKER_CHANNEL, lambda: woken.append("worker"))

    response = await client.post(f"{API}/questions/{question.id}/answer",
                                 json={"answer": "Apollo"}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "answered"
    assert body["answer"] == "Apollo"
    assert parse_time(body["answered_at"]) <= utcnow()
    assert woken == ["worker"]

    stored = (await client.get(f"{API}/runs/{run.id}", headers=headers)).json()
    assert stored["status"] == "queued"
    assert (await client.get(f"{API}/questions", headers=headers)).json() == []

    again = await client.post(f"{API}/questions/{question.id}/answer",
                              json={"answer": "Gemini"}, headers=headers)
    assert_error(again, 409, "QuestionClosed", "answered")
    assert (await client.get(f"{API}/runs/{run.id}", headers=headers)).json()[
        "status"] == "queued"


LONG_CHOICE = "Move the launch to next Tuesday and tell the whole team by email today"


async def test_a_choice_by_its_index_answers_with_the_whole_choice(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """What a push notification's action sends: its title may be cut, its index is not."""
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user),
                        status="waiting_for_user")
    question = await add_question(runtime, user, run, choices=["Keep the date", LONG_CHOICE])

    response = await client.post(f"{API}/questions/{question.id}/answer",
                                 json={"choice": 1}, headers=headers)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["answer"]) == ("answered", LONG_CHOICE)
    assert (await client.get(f"{API}/runs/{run.id}", headers=headers)).json()[
        "status"] == "queued"


@pytest.mark.parametrize(("choices", "index", "fragments"), [
    pytest.param(["Apollo", "Gemini"], 2, ["no choice 2", "0 to 1"], id="past-the-last"),
    pytest.param([], 0, ["no choice 0", "no choices"], id="no-choices"),
])
async def test_a_choice_the_question_does_not_have_is_refused_and_leaves_it_open(
    client: httpx.AsyncClient, runtime: Runtime, choices: list[str], index: int,
    fragments: list[str],
) -> None:
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user),
                        status="waiting_for_user")
    question = await add_question(runtime, user, run, choices=choices)
    response = await client.post(f"{API}/questions/{question.id}/answer",
                                 json={"choice": index}, headers=headers)
    assert_error(response, 422, "NoSuchChoice", *fragments)
    open_questions = (await client.get(f"{API}/questions", headers=headers)).json()
    assert [q["id"] for q in open_questions] == [str(question.id)]
    assert (await client.get(f"{API}/runs/{run.id}", headers=headers)).json()[
        "status"] == "waiting_for_user"


@pytest.mark.parametrize("status", ["answered", "expired"])
async def test_answer_closed_question_is_409(
    client: httpx.AsyncClient, runtime: Runtime, status: str
) -> None:
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user),
                        status="waiting_for_user")
    question = await add_question(runtime, user, run, status=status)
    response = await client.post(f"{API}/questions/{question.id}/answer",
                                 json={"answer": "late"}, headers=headers)
    assert_error(response, 409, "QuestionClosed", status)
    assert (await client.get(f"{API}/runs/{run.id}", headers=headers)).json()[
        "status"] == "waiting_for_user"


async def test_answer_when_run_was_cancelled_leaves_it_cancelled(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user), status="cancelled")
    question = await add_question(runtime, user, run)
    response = await client.post(f"{API}/questions/{question.id}/answer",
                                 json={"answer": "anyway"}, headers=headers)
    assert response.status_code == 200, response.text
    assert (await client.get(f"{API}/runs/{run.id}", headers=headers)).json()[
        "status"] == "cancelled"


BAD_ANSWERS: list[Any] = [
    pytest.param({"answer": ""}, ["answer"], id="empty"),
    pytest.param({}, ["answer"], id="missing"),
    pytest.param({"answer": None}, ["answer"], id="null"),
    pytest.param({"answer": 42}, ["answer"], id="number"),
    pytest.param({"answer": "x" * 2001}, ["answer", "2000"], id="too-long"),
    pytest.param({"answer": "nul \u0000 byte"}, ["answer"], id="nul"),
    pytest.param({"answer": "   "}, ["answer", "blank"], id="blank"),
    pytest.param({"answer": "\t\n"}, ["answer", "blank"], id="whitespace"),
    pytest.param({"answer": "yes", "run_id": str(uuid.uuid4())}, ["run_id"], id="unknown-field"),
    pytest.param({"text": "yes"}, ["text"], id="wrong-field-name"),
    pytest.param({"answer": "yes", "choice": 0}, ["answer", "choice"], id="text-and-choice"),
    pytest.param({"choice": -1}, ["choice"], id="negative-choice"),
    pytest.param({"choice": "0"}, ["choice"], id="choice-as-text"),
    pytest.param({"choice": True}, ["choice"], id="choice-as-bool"),
    pytest.param({"choice": 1.5}, ["choice"], id="fractional-choice"),
    pytest.param(["yes"], ["request"], id="list"),
    pytest.param("yes", ["request"], id="string"),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_ANSWERS)
async def test_bad_answer_is_422(
    client: httpx.AsyncClient, runtime: Runtime, body: Any, fragments: list[str]
) -> None:
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user),
                        status="waiting_for_user")
    question = await add_question(runtime, user, run)
    response = await client.post(f"{API}/questions/{question.id}/answer", json=body,
                                 headers=headers)
    assert_error(response, 422, "ValidationError", *fragments)
    open_questions = (await client.get(f"{API}/questions", headers=headers)).json()
    assert [q["id"] for q in open_questions] == [str(question.id)]


async def test_answer_body_not_json_is_422(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    for content in (b"", b"{answer: yes}"):
        response = await client.post(
            f"{API}/questions/{uuid.uuid4()}/answer", content=content,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert_error(response, 422, "ValidationError")


async def test_unknown_question_is_404(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    missing = uuid.uuid4()
    response = await client.post(f"{API}/questions/{missing}/answer", json={"answer": "yes"},
                                 headers=headers)
    assert_error(response, 404, "QuestionNotFound", str(missing))
    response = await client.post(f"{API}/questions/nope/answer", json={"answer": "yes"},
                                 headers=headers)
    assert_error(response, 422, "ValidationError", "question_id")


async def test_deleting_the_instruction_closes_its_questions(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    doomed = await instruction(runtime, user, title="doomed")
    kept = await instruction(runtime, user, title="kept")
    run = await add_run(runtime, user, doomed, status="waiting_for_user")
    question = await add_question(runtime, user, run)
    other = await add_question(
        runtime, user, await add_run(runtime, user, kept, status="waiting_for_user")
    )

    response = await client.delete(f"{API}/instructions/{doomed.id}", headers=headers)
    assert response.status_code == 204
    listed = (await client.get(f"{API}/questions", headers=headers)).json()
    assert [q["id"] for q in listed] == [str(other.id)]
    response = await client.post(f"{API}/questions/{question.id}/answer",
                                 json={"answer": "too late"}, headers=headers)
    assert_error(response, 409, "QuestionClosed")
    # the run of a deleted instruction is not queued again
    assert (await client.get(f"{API}/runs/{run.id}", headers=headers)).json()[
        "status"] != "queued"


async def test_deleting_the_instruction_cancels_its_waiting_run(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    doomed = await instruction(runtime, user)
    run = await add_run(runtime, user, doomed, status="waiting_for_user")
    await add_question(runtime, user, run)
    assert (await client.delete(f"{API}/instructions/{doomed.id}", headers=headers)
            ).status_code == 204
    assert (await client.get(f"{API}/runs/{run.id}", headers=headers)).json()[
        "status"] == "cancelled"
