"""The runs API: list (filtered, paged), read with ordered steps, cancel."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.core.db import utcnow
from app.core.runtime import Runtime
from tests.factories import instruction, user_with_token
from tests.integration.api.helpers import API, add_question, add_run, add_steps, assert_error


async def test_list_filters_by_instruction_and_status(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    first = await instruction(runtime, user, title="first")
    second = await instruction(runtime, user, title="second")
    base = utcnow() - timedelta(hours=1)
    runs = [
        await add_run(runtime, user, first, status="succeeded", created_at=base),
        await add_run(runtime, user, first, status="failed", created_at=base + timedelta(minutes=1),
                      error="boom"),
        await add_run(runtime, user, second, status="succeeded",
                      created_at=base + timedelta(minutes=2)),
        await add_run(runtime, user, first, status="queued",
                      created_at=base + timedelta(minutes=3)),
    ]
    ids = [str(r.id) for r in runs]

    async def listed(**params: Any) -> list[str]:
        response = await client.get(f"{API}/runs", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["items"]]

    assert await listed() == ids[::-1]  # newest first
    assert await listed(instruction_id=str(first.id)) == [ids[3], ids[1], ids[0]]
    assert await listed(instruction_id=str(second.id)) == [ids[2]]
    assert await listed(status="succeeded") == [ids[2], ids[0]]
    assert await listed(status="failed") == [ids[1]]
    assert await listed(status="cancelled") == []
    assert await listed(instruction_id=str(first.id), status="succeeded") == [ids[0]]
    assert await listed(instruction_id=str(uuid.uuid4())) == []

    failed = (await client.get(f"{API}/runs", params={"status": "failed"},
                               headers=headers)).json()["items"][0]
    assert failed["error"] == "boom"
    assert failed["instruction_id"] == str(first.id)
    assert failed["finished_at"] is not None


async def test_list_in_pages(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    mine = await instruction(runtime, user)
    base = utcnow() - timedelta(days=1)
    ids = [
        str((await add_run(runtime, user, mine, status="succeeded",
                           created_at=base + timedelta(minutes=i))).id)
        for i in range(5)
    ]
    # two runs created in the same microsecond are told apart by id
    same = base + timedelta(minutes=10)
    twins = sorted(
        [str((await add_run(runtime, user, mine, status="skipped", created_at=same,
                            scheduled_for=same + timedelta(seconds=i))).id) for i in range(2)],
        reverse=True,
    )
    expected = twins + ids[::-1]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(f"{API}/runs", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [r["id"] for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3

    response = await client.get(f"{API}/runs", params={"cursor": "garbage!"}, headers=headers)
    assert_error(response, 422, "InvalidCursor")


async def test_get_with_steps_in_order(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    mine = await instruction(runtime, user)
    run = await add_run(runtime, user, mine, status="succeeded", attempt=2, model="offline",
                        input_tokens=120, output_tokens=30, cost_usd=0.25,
                        result={"summary": "done"})
    other = await add_run(runtime, user, mine, status="succeeded",
                          created_at=utcnow() - timedelta(hours=2))
    await add_steps(runtime, user, run, [(2, 1), (1, 10), (2, 0), (1, 2), (1, 0), (2, 11)])
    await add_steps(runtime, user, other, [(1, 0), (1, 1)])

    response = await client.get(f"{API}/runs/{run.id}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == str(run.id)
    assert body["status"] == "succeeded"
    assert (body["attempt"], body["model"], body["input_tokens"], body["cost_usd"]) == (
        2, "offline", 120, 0.25)
    assert body["result"] == {"summary": "done"}
    assert [(s["attempt"], s["seq"]) for s in body["steps"]] == [
        (1, 0), (1, 2), (1, 10), (2, 0), (2, 1), (2, 11)
    ]
    assert body["steps"][0]["name"] == "step-1-0"
    assert body["steps"][0]["arguments"] == {"attempt": 1, "seq": 0}

    no_steps = await add_run(runtime, user, mine, status="queued")
    response = await client.get(f"{API}/runs/{no_steps.id}", headers=headers)
    assert response.json()["steps"] == []


async def test_cancel(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    mine = await instruction(runtime, user)
    queued = (await client.post(f"{API}/instructions/{mine.id}/run", headers=headers)).json()

    response = await client.post(f"{API}/runs/{queued['id']}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    stored = (await client.get(f"{API}/runs/{queued['id']}", headers=headers)).json()
    assert stored["status"] == "cancelled"

    again = await client.post(f"{API}/runs/{queued['id']}/cancel", headers=headers)
    assert_error(again, 409, "RunAlreadyFinished", "cancelled")


@pytest.mark.parametrize("status", ["running", "waiting_for_user"])
async def test_cancel_unfinished(
    client: httpx.AsyncClient, runtime: Runtime, status: str
) -> None:
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user), status=status,
                        lease_token=uuid.uuid4() if status == "running" else None)
    response = await client.post(f"{API}/runs/{run.id}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


@pytest.mark.parametrize("status", ["succeeded", "skipped", "failed", "cancelled"])
async def test_cancel_finished_is_409(
    client: httpx.AsyncClient, runtime: Runtime, status: str
) -> None:
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user), status=status)
    response = await client.post(f"{API}/runs/{run.id}/cancel", headers=headers)
    assert_error(response, 409, "RunAlreadyFinished", status)
    stored = (await client.get(f"{API}/runs/{run.id}", headers=headers)).json()
    assert stored["status"] == status


async def test_unknown_run_is_404(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    missing = uuid.uuid4()
    assert_error(await client.get(f"{API}/runs/{missing}", headers=headers), 404,
                 "RunNotFound", str(missing))
    assert_error(await client.post(f"{API}/runs/{missing}/cancel", headers=headers), 404,
                 "RunNotFound", str(missing))


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"status": "exploded"}, "status"),
        ({"status": ""}, "status"),
        ({"instruction_id": "nope"}, "instruction_id"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-5"}, "limit"),
    ],
)
async def test_list_bad_filters_are_422(
    client: httpx.AsyncClient, runtime: Runtime, params: dict[str, str], fragment: str
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.get(f"{API}/runs", params=params, headers=headers)
    assert_error(response, 422, "ValidationError", fragment)


@pytest.mark.parametrize("path", ["runs/not-a-uuid", "runs/not-a-uuid/cancel"])
async def test_non_uuid_run_id_is_422(
    client: httpx.AsyncClient, runtime: Runtime, path: str
) -> None:
    _user, headers = await user_with_token(runtime)
    method = "POST" if path.endswith("cancel") else "GET"
    response = await client.request(method, f"{API}/{path}", headers=headers)
    assert_error(response, 422, "ValidationError", "run_id")


async def test_cancelling_a_waiting_run_closes_its_question(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user),
                        status="waiting_for_user")
    question = await add_question(runtime, user, run)
    response = await client.post(f"{API}/runs/{run.id}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert (await client.get(f"{API}/questions", headers=headers)).json() == []
    answer = await client.post(f"{API}/questions/{question.id}/answer", headers=headers,
                               json={"answer": "too late"})
    # Said as it happened: it did not time out.
    assert_error(answer, 409, "QuestionClosed", "already cancelled")
    shown = (await client.get(f"{API}/questions/{question.id}", headers=headers)).json()
    assert shown["status"] == "cancelled"


async def test_an_answer_to_a_cancelled_question_goes_to_the_later_run_that_asked_it_again(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A later run asked the same question, merged into the first (the user was not asked
    again). Once the first run was cancelled, every notice the user had (the feed, the
    email, the push's buttons, the webhook) named a closed question: answering it was a
    409, and the later run waited unanswered until the question's lifetime ran out."""
    user, headers = await user_with_token(runtime)
    made = await instruction(runtime, user)
    first_run = await add_run(runtime, user, made, status="waiting_for_user")
    first = await add_question(runtime, user, first_run, text="Which project?")
    later_run = await add_run(runtime, user, made, status="waiting_for_user",
                              scheduled_for=utcnow() + timedelta(minutes=1))
    later = await add_question(runtime, user, later_run, text="which  PROJECT?")
    cancel = await client.post(f"{API}/runs/{first_run.id}/cancel", headers=headers)
    assert cancel.status_code == 200, cancel.text
    answer = await client.post(f"{API}/questions/{first.id}/answer", headers=headers,
                               json={"answer": "Apollo"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == str(later.id)
    shown = (await client.get(f"{API}/questions/{later.id}", headers=headers)).json()
    assert (shown["status"], shown["answer"]) == ("answered", "Apollo")
    run = (await client.get(f"{API}/runs/{later_run.id}", headers=headers)).json()
    assert run["status"] == "queued"
    closed = (await client.get(f"{API}/questions/{first.id}", headers=headers)).json()
    assert closed["status"] == "cancelled"
