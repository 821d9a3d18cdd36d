"""ask_user pauses a run and an answer (or expiry) resumes it; notify_now alerts once.

Through the real google-genai SDK over HTTP to the fake Interactions API, on the
real database. "Every process restarted" means a new engine, runtime, app,
model client and worker: only the fake server and the database survive.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from app.agent.gemini import GeminiModel
from app.agent.prompt import (
    ALERT_ALREADY_SENT,
    ALERT_SENT,
    NEW_ITEMS_LABEL,
    NO_ANSWER,
    SENT_ALERTS_LABEL,
    parse_fences,
)
from app.core.config import Settings
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.instructions.models import Instruction
from app.main import create_app
from app.notifications.models import AlertedItem
from app.questions.models import Question
from app.runs.models import Run
from tests import factories
from tests.fakes.gemini import Calls, FakeGemini, Text
from tests.integration.runs.helpers import (
    deliveries_of,
    get_run,
    make_worker,
    notifications_of,
    steps_of,
    work_once,
)
from tests.integration.runs.test_worker import run_now

API = "/api/v1"
INVOICE_ID = "1795086141.M1P2041.sample"
OTHER_ID = "1795102807.M2P2041.sample"
DIGEST = {
    "summary": "The Skyline Cloud invoice for Apollo is due.",
    "sections": [{"title": "Needs your attention", "items": [
        {"title": "Skyline Cloud invoice", "detail": "Due soon.", "message_ids": [INVOICE_ID]},
    ]}],
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture
def gemini_runtime(runtime: Runtime, fake: FakeGemini) -> Runtime:
    fake.reset()
    point_at_fake(runtime.settings, fake)
    return runtime


def point_at_fake(settings: Settings, fake: FakeGemini) -> None:
    settings.gemini_api_key = SecretStr(fake.api_key)
    settings.gemini_base_url = fake.url
    settings.gemini_max_retries = 0


def gemini_for(settings: Settings) -> GeminiModel:
    assert settings.gemini_api_key is not None
    return GeminiModel(
        settings.gemini_api_key.get_secret_value(), model=settings.gemini_model,
        base_url=settings.gemini_base_url, max_retries=settings.gemini_max_retries,
    )


@asynccontextmanager
async def process(settings: Settings) -> AsyncIterator[tuple[Runtime, GeminiModel]]:
    """A process of its own: fresh settings, engine, runtime and model client."""
    fresh = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=settings.database_url, data_dir=settings.data_dir,
        worker_poll_seconds=0.05, worker_retry_base_seconds=0.1, timezone="Europe/Berlin",
        gemini_api_key=settings.gemini_api_key, gemini_base_url=settings.gemini_base_url,
        gemini_max_retries=0,
    )
    runtime = Runtime.build(fresh)
    llm = gemini_for(fresh)
    try:
        yield runtime, llm
    finally:
        await llm.aclose()
        await runtime.close()


@asynccontextmanager
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://pilotlight.test") as c:
        yield c


async def questions_of(runtime: Runtime, instruction_id: uuid.UUID) -> list[Question]:
    async with transaction(runtime.sessionmaker) as session:
        rows = await session.execute(
            select(Question).where(Question.instruction_id == instruction_id)
            .order_by(Question.created_at, Question.id)
        )
        return list(rows.scalars())


async def instruction_cursor(runtime: Runtime, instruction_id: uuid.UUID) -> dict[str, Any]:
    async with transaction(runtime.sessionmaker) as session:
        found = await session.get(Instruction, instruction_id)
        assert found is not None
        return found.cursor


def ask(question: str = "Which project should the digest cover?", **more: Any) -> Calls:
    return Calls([("ask_user", {"question": question, **more})], ids=[f"call_{uuid.uuid4().hex}"])


async def test_a_question_pauses_the_run_and_the_answer_resumes_it_after_a_full_restart(
    gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    runtime = gemini_runtime
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app", "email"])
    fake.script(
        Calls(
            [("read_message", {"id": INVOICE_ID}),
             ("ask_user", {"question": "Which project?", "choices": ["Apollo", "Gemini"]})],
            ids=["call_read", "call_ask"],
        ),
        Text(json.dumps(DIGEST)),
    )
    llm = gemini_for(runtime.settings)
    worker = make_worker(runtime, llm)
    run_id = await run_now(runtime, instruction)
    assert await work_once(worker) == 1
    await llm.aclose()

    run = await get_run(runtime, run_id)
    assert run.status == "waiting_for_user", run.error
    assert (run.lease_token, run.lease_expires_at, run.worker_id) == (None, None, None)
    assert worker.inflight == {}
    assert run.finished_at is None
    asking = fake.requests()[0].response
    assert run.agent_state is not None
    state = run.agent_state["state"]
    assert state["interaction_id"] == asking["id"]
    assert state["call_id"] == "call_ask"
    assert [r["call_id"] for r in state["results"]] == ["call_read"]
    assert run.input_tokens == asking["usage"]["total_input_tokens"]
    assert await instruction_cursor(runtime, instruction.id) == {}  # only once it succeeds

    (question,) = await questions_of(runtime, instruction.id)
    assert (question.run_id, question.interaction_id, question.call_id) == (
        run_id, asking["id"], "call_ask")
    assert (question.text, question.choices, question.status) == (
        "Which project?", {"choices": ["Apollo", "Gemini"]}, "open")
    assert question.expires_at is not None
    ttl = question.expires_at - question.created_at
    assert abs(ttl - timedelta(seconds=86400)) < timedelta(minutes=1)
    (asked,) = await notifications_of(runtime, user.id)
    assert (asked.kind, asked.key, asked.body) == (
        "question", f"run:{run_id}:question:call_ask", "Which project?")
    assert asked.data["question_id"] == str(question.id)
    assert {d.channel: d.status for d in await deliveries_of(runtime, asked.id)} == {
        "email": "pending", "in_app": "sent"}

    # Every process goes away; only the fake Gemini and the database stay.
    async with process(runtime.settings) as (restarted, llm2):
        async with api(restarted) as client:
            listed = (await client.get(f"{API}/questions", headers=headers)).json()
            assert [q["id"] for q in listed] == [str(question.id)]
            response = await client.post(
                f"{API}/questions/{question.id}/answer", json={"answer": "Apollo"},
                headers=headers,
            )
            assert response.status_code == 200, response.text
        assert (await get_run(restarted, run_id)).status == "queued"
        assert await work_once(make_worker(restarted, llm2)) == 1
        run = await get_run(restarted, run_id)

    assert run.status == "succeeded", run.error
    assert run.agent_state is None
    records = fake.requests()
    assert [r.status for r in records] == [200, 200]
    resume = records[1].body
    assert resume["previous_interaction_id"] == asking["id"]
    assert [(r["type"], r["call_id"], r["name"]) for r in resume["input"]] == [
        ("function_result", "call_read", "read_message"),
        ("function_result", "call_ask", "ask_user"),
    ]
    # The read result shows the message under its short id (kept in the paused state).
    assert "USD 2,418.60" in resume["input"][0]["result"]
    assert resume["input"][1]["result"] == "The user answered: Apollo"
    assert run.interaction_ids == {"ids": [asking["id"], records[1].response["id"]]}
    billed = sum(r.response["usage"]["total_input_tokens"] for r in records)
    assert run.input_tokens == billed

    assert run.result is not None
    refs = [ref for s in run.result["sections"] for i in s["items"] for ref in i["refs"]]
    assert [r["id"] for r in refs] == [INVOICE_ID]  # seen before the pause, resolved after
    kinds = [n.kind for n in await notifications_of(runtime, user.id)]
    assert kinds == ["question", "digest"]
    assert await instruction_cursor(runtime, instruction.id) != {}
    steps = [(s.attempt, s.kind, s.name) for s in await steps_of(runtime, run_id)]
    assert steps == [
        (1, "model", "gemini-3.5-flash"), (1, "tool", "read_message"), (1, "tool", "ask_user"),
        (2, "tool", "ask_user"), (2, "model", "gemini-3.5-flash"),
    ]


async def test_an_expired_question_resumes_the_run_with_no_answer(
    gemini_runtime: Runtime, fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    runtime = gemini_runtime
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    asking = ask()
    fake.script(asking, Text(json.dumps(DIGEST)))
    llm = gemini_for(runtime.settings)
    worker = make_worker(runtime, llm)
    run_id = await run_now(runtime, instruction)
    await work_once(worker)
    (question,) = await questions_of(runtime, instruction.id)

    assert await work_once(worker) == 0  # not due yet: the run keeps waiting
    assert (await get_run(runtime, run_id)).status == "waiting_for_user"
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(Question).where(Question.id == question.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await work_once(worker) == 1
    await llm.aclose()

    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error
    (question,) = await questions_of(runtime, instruction.id)
    assert question.status == "expired"
    assert question.answer is None
    assert asking.ids is not None
    resume = fake.requests()[1].body
    assert resume["input"] == [{
        "type": "function_result", "call_id": asking.ids[0], "name": "ask_user",
        "result": NO_ANSWER,
    }]
    assert run.result is not None
    assert any("did not answer" in note for note in run.result["notes"])
    late = await client.post(f"{API}/questions/{question.id}/answer", json={"answer": "x"},
                             headers=headers)
    assert late.status_code == 409


async def test_a_question_that_outlasts_the_stored_conversation_finishes_from_the_previews(
    gemini_runtime: Runtime, fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    # Gemini deletes stored interactions after a day on the free tier, the default time a
    # question waits: the resume chains to an interaction that is gone (404).
    runtime = gemini_runtime
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    fake.script(ask())
    llm = gemini_for(runtime.settings)
    worker = make_worker(runtime, llm)
    run_id = await run_now(runtime, instruction)
    await work_once(worker)
    (question,) = await questions_of(runtime, instruction.id)
    fake.forget(fake.requests()[0].response["id"])

    response = await client.post(f"{API}/questions/{question.id}/answer",
                                 json={"answer": "Apollo"}, headers=headers)
    assert response.status_code == 200, response.text
    assert await work_once(worker) == 1
    await llm.aclose()

    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error  # not failed, to be retried on the same 404
    assert [r.status for r in fake.requests()] == [200, 404]
    assert run.result is not None
    assert [s["title"] for s in run.result["sections"]] == ["New mail", "Documents changed"]
    assert any("no longer kept this run's conversation" in n for n in run.result["notes"])
    steps = [(s.kind, s.name, s.error is not None) for s in await steps_of(runtime, run_id)]
    assert steps[-1] == ("model", "gemini-3.5-flash", True)  # the refused turn is traced
    kinds = [n.kind for n in await notifications_of(runtime, user.id)]
    assert kinds == ["question", "digest"]


async def test_a_repeated_question_is_asked_once_and_one_answer_resumes_both_runs(
    gemini_runtime: Runtime, fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    runtime = gemini_runtime
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    first, second = ask("Which project?"), ask("  which   PROJECT? ")
    fake.script(first, second)
    llm = gemini_for(runtime.settings)
    worker = make_worker(runtime, llm)
    run_a = await run_now(runtime, instruction)
    assert await work_once(worker) == 1
    run_b = await run_now(runtime, instruction)  # while the first waits for its answer
    assert await work_once(worker) == 1
    assert {(await get_run(runtime, r)).status for r in (run_a, run_b)} == {"waiting_for_user"}

    qa, qb = await questions_of(runtime, instruction.id)
    assert (qa.run_id, qb.run_id) == (run_a, run_b)
    assert qb.expires_at == qa.expires_at  # one question to the user
    notes = await notifications_of(runtime, user.id)
    assert [(n.kind, n.run_id) for n in notes] == [("question", run_a)]
    listed = (await client.get(f"{API}/questions", headers=headers)).json()
    assert [q["id"] for q in listed] == [str(qa.id)]

    response = await client.post(f"{API}/questions/{qa.id}/answer", json={"answer": "Apollo"},
                                 headers=headers)
    assert response.status_code == 200, response.text
    assert {q.status for q in await questions_of(runtime, instruction.id)} == {"answered"}
    assert {(await get_run(runtime, r)).status for r in (run_a, run_b)} == {"queued"}
    fake.script(Text(json.dumps(DIGEST)), Text(json.dumps(DIGEST)))
    await work_once(worker)
    await work_once(worker)
    await llm.aclose()

    assert {(await get_run(runtime, r)).status for r in (run_a, run_b)} == {"succeeded"}
    resumes = {r.body["previous_interaction_id"]: r.body["input"] for r in fake.requests()[2:]}
    asked_in = {r.response["id"]: r.response["steps"][-1]["id"] for r in fake.requests()[:2]}
    assert resumes == {
        interaction: [{"type": "function_result", "call_id": call, "name": "ask_user",
                       "result": "The user answered: Apollo"}]
        for interaction, call in asked_in.items()
    }
    kinds = sorted(n.kind for n in await notifications_of(runtime, user.id))
    assert kinds == ["digest", "digest", "question"]


async def alert_then_retry(
    runtime: Runtime, fake: FakeGemini, instruction: Instruction,
    alert: tuple[str, dict[str, Any]], *retry: Any,
) -> uuid.UUID:
    """A run whose first attempt alerts and then fails (the script runs out: a 500),
    and whose second, scripted `retry`, succeeds. Returns the run's id."""
    fake.script(Calls([alert], ids=["call_alert"]))
    llm = gemini_for(runtime.settings)
    worker = make_worker(runtime, llm)
    run_id = await run_now(runtime, instruction)
    await work_once(worker)
    run = await get_run(runtime, run_id)
    assert (run.status, run.attempt) == ("queued", 1), run.error

    fake.script(*retry)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(available_at=utcnow()))
    await work_once(worker)
    await llm.aclose()
    run = await get_run(runtime, run_id)
    assert (run.status, run.attempt) == ("succeeded", 2), run.error
    return run_id


async def test_notify_now_alerts_once_even_when_the_run_is_retried(
    gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    runtime = gemini_runtime
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, channels=["in_app", "push"])
    alert = ("notify_now", {"title": "Invoice overdue", "message": "Skyline is overdue.",
                            "to": "boss@example.com"})
    run_id = await alert_then_retry(
        runtime, fake, instruction, alert, Calls([alert], ids=["call_alert"]),
        Text(json.dumps(DIGEST)),
    )
    alerts = [n for n in await notifications_of(runtime, user.id) if n.kind == "alert"]
    assert len(alerts) == 1
    (sent,) = alerts
    assert sent.key == f"run:{run_id}:notify:call_alert"
    assert (sent.title, sent.body) == ("Morning digest: Invoice overdue", "Skyline is overdue.")
    assert {d.channel for d in await deliveries_of(runtime, sent.id)} == {"in_app", "push"}
    retried = fake.requests()[-1].body["input"]
    assert retried[0]["result"] == ALERT_ALREADY_SENT
    steps = [s for s in await steps_of(runtime, run_id) if s.name == "notify_now"]
    assert [s.attempt for s in steps] == [1, 2]


async def alerted_items(runtime: Runtime, instruction_id: uuid.UUID) -> list[AlertedItem]:
    async with transaction(runtime.sessionmaker) as session:
        return list((await session.scalars(
            select(AlertedItem).where(AlertedItem.instruction_id == instruction_id)
        )).all())


async def test_an_alert_about_an_item_is_sent_once_whatever_its_words(
    gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    """A retried attempt that alerts about the same mail in other words (which the
    exact-repeat check cannot catch, and the model was told not to) sends nothing."""
    runtime = gemini_runtime
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    first = ("notify_now", {"title": "Invoice overdue", "message": "Skyline is overdue.",
                            "about": [INVOICE_ID]})
    again = ("notify_now", {"title": "Skyline bill late", "message": "Pay Skyline today.",
                            "about": [INVOICE_ID]})
    run_id = await alert_then_retry(
        runtime, fake, instruction, first, Calls([again]), Text(json.dumps(DIGEST)),
    )
    assert fake.requests()[-1].body["input"][0]["result"] == ALERT_ALREADY_SENT
    (sent,) = [n for n in await notifications_of(runtime, user.id) if n.kind == "alert"]
    assert sent.title == "Morning digest: Invoice overdue"
    (item,) = await alerted_items(runtime, instruction.id)
    account_id = item.item.removesuffix(f":message:{INVOICE_ID}")
    assert uuid.UUID(account_id)  # the mailbox's account: ids are only unique within one
    assert sent.data["about"] == [item.item]
    assert item.run_id == run_id


async def test_a_later_run_alerts_only_about_items_not_alerted_about_before(
    gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    """A run that waits for the user's answer has not moved its instruction's cursors,
    so the next run sees the same mail: its alert goes out only if it names an item not
    alerted about before. Another instruction of the same user alerts about its own."""
    runtime = gemini_runtime
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    other = await factories.instruction(runtime, user, title="Invoices")
    fake.script(Calls([
        ("notify_now", {"title": "Invoice", "message": "Due.", "about": [INVOICE_ID]}),
        ("ask_user", {"question": "Which project should the digest cover?"}),
    ]))
    await work_once_with(runtime, gemini_for(runtime.settings), instruction)
    fake.script(
        Calls([("notify_now", {"title": "Still due", "message": "Due!", "about": [INVOICE_ID]}),
               ("notify_now", {"title": "Two things", "message": "Both.",
                               "about": [INVOICE_ID, OTHER_ID]})]),
        Text(json.dumps(DIGEST)),
    )
    await work_once_with(runtime, gemini_for(runtime.settings), instruction)
    assert [r["result"] for r in fake.requests()[-1].body["input"]] == [
        ALERT_ALREADY_SENT, ALERT_SENT]
    (waiting,) = await questions_of(runtime, instruction.id)
    assert waiting.status == "open"  # the first run still waits for its answer
    fake.script(
        Calls([("notify_now", {"title": "Invoice", "message": "Due.", "about": [INVOICE_ID]})]),
        Text(json.dumps(DIGEST)),
    )
    await work_once_with(runtime, gemini_for(runtime.settings), other)

    alerts = [n for n in await notifications_of(runtime, user.id) if n.kind == "alert"]
    assert sorted(n.title for n in alerts) == [
        "Invoices: Invoice", "Morning digest: Invoice", "Morning digest: Two things"]
    assert sorted(i.item.split(":message:")[1] for i in
                  await alerted_items(runtime, instruction.id)) == [INVOICE_ID, OTHER_ID]


def first_prompts(fake: FakeGemini) -> list[str]:
    """The first-turn prompt of each attempt the fake was asked, in order."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and value.startswith("# Standing instruction"):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for request in fake.requests():
        walk(request.body.get("input"))
    return found


async def test_a_retried_attempt_is_shown_the_alerts_sent_before(
    gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    """A retry starts a new conversation: told nothing, a model alerts again in new
    words (the exact-repeat check above cannot catch that). It is shown, as data, what
    the attempts before it sent."""
    runtime = gemini_runtime
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    alert = ("notify_now", {"title": "Invoice <overdue>", "message": "Skyline is overdue."})
    # The retry, told, does not alert again.
    await alert_then_retry(runtime, fake, instruction, alert, Text(json.dumps(DIGEST)))
    first, retry = first_prompts(fake)
    assert parse_fences(first)[-1].label == NEW_ITEMS_LABEL  # attempt 1: nothing sent yet
    shown = parse_fences(retry)[-1]
    assert shown.label == SENT_ALERTS_LABEL
    # As the model wrote them, without the instruction's title the notification adds.
    assert shown.records == [{"title": "Invoice <overdue>", "message": "Skyline is overdue."}]
    assert "<overdue>" not in retry  # data: its "<" is escaped like the mail's
    assert "Do not send them again" in retry
    alerts = [n for n in await notifications_of(runtime, user.id) if n.kind == "alert"]
    assert [n.title for n in alerts] == ["Morning digest: Invoice <overdue>"]


async def test_a_retried_resume_is_shown_its_alert_and_does_not_alert_twice(
    gemini_runtime: Runtime, fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    """A resumed run alerts, then a later turn fails: the retry resumes from the same
    paused turn, in a conversation that does not hold the alert, and the model alerts
    again under a new call id in new words. The retry's resume turn shows it the alert
    sent (as data, after the answer); and, should it alert again all the same, an alert
    that names no items and repeats the title (or the message) of one this run sent is
    not sent again."""
    runtime = gemini_runtime
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    fake.script(ask("Which project?"))
    llm = gemini_for(runtime.settings)
    worker = make_worker(runtime, llm)
    run_id = await run_now(runtime, instruction)
    await work_once(worker)
    (question,) = await questions_of(runtime, instruction.id)
    answered = await client.post(f"{API}/questions/{question.id}/answer",
                                 json={"answer": "Apollo"}, headers=headers)
    assert answered.status_code == 200, answered.text

    # The resume alerts; the next turn fails (the script runs out: a 500).
    fake.script(Calls([("notify_now", {"title": "Invoice due",
                                       "message": "The Apollo invoice is due today."})]))
    await work_once(worker)
    run = await get_run(runtime, run_id)
    assert run.status == "queued", run.error
    first_resume = fake.requests()[1].body
    assert first_resume["input"][-1]["result"] == "The user answered: Apollo"

    fake.script(
        Calls([("notify_now", {"title": "Invoice due!",
                               "message": "Apollo: the invoice is due today."}),
               ("notify_now", {"title": "Budget", "message": "Sign off the Q4 budget."})]),
        Text(json.dumps(DIGEST)),
    )
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(available_at=utcnow()))
    await work_once(worker)
    await llm.aclose()
    run = await get_run(runtime, run_id)
    assert run.status == "succeeded", run.error

    retried = fake.requests()[3].body
    assert retried["previous_interaction_id"] == first_resume["previous_interaction_id"]
    answer, note = retried["input"][-1]["result"].split("\n\n", 1)
    assert answer == "The user answered: Apollo"
    assert "Do not send them again" in note
    assert parse_fences(note)[-1].records == [
        {"title": "Invoice due", "message": "The Apollo invoice is due today."}]
    # Another alert, in other words, still goes out.
    assert [r["result"] for r in fake.requests()[4].body["input"]] == [
        ALERT_ALREADY_SENT, ALERT_SENT]
    alerts = [n for n in await notifications_of(runtime, user.id) if n.kind == "alert"]
    assert [(n.title, n.body) for n in alerts] == [
        ("Morning digest: Invoice due", "The Apollo invoice is due today."),
        ("Morning digest: Budget", "Sign off the Q4 budget."),
    ]


async def test_a_resume_refused_for_the_api_key_waits_and_resumes_with_the_answer(
    gemini_runtime: Runtime, fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    """A rejected key is not the run's failure: the answered run goes back to the queue
    with its paused state, its attempt uncounted, and resumes with the answer once the
    key works."""
    runtime = gemini_runtime
    runtime.settings.worker_max_attempts = 1
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    fake.script(ask("Which project?"))
    llm = gemini_for(runtime.settings)
    run_id = await run_now(runtime, instruction)
    await work_once(make_worker(runtime, llm))
    (question,) = await questions_of(runtime, instruction.id)
    answered = await client.post(f"{API}/questions/{question.id}/answer",
                                 json={"answer": "Apollo"}, headers=headers)
    assert answered.status_code == 200, answered.text
    paused = (await get_run(runtime, run_id)).agent_state

    revoked = GeminiModel("revoked", base_url=fake.url, max_retries=0)
    await work_once(make_worker(runtime, revoked))
    await revoked.aclose()
    run = await get_run(runtime, run_id)
    assert (run.status, run.attempt, run.agent_state) == ("queued", 1, paused)
    assert fake.requests()[-1].status == 400

    fake.script(Text(json.dumps(DIGEST)))
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id == run_id).values(available_at=utcnow()))
    await work_once(make_worker(runtime, llm))
    await llm.aclose()
    run = await get_run(runtime, run_id)
    assert (run.status, run.attempt) == ("succeeded", 2), run.error
    resumed = fake.requests()[-1].body
    assert resumed["previous_interaction_id"] == paused["state"]["interaction_id"]
    assert resumed["input"][0]["result"] == "The user answered: Apollo"
    assert sorted(n.kind for n in await notifications_of(runtime, user.id)) == [
        "digest", "question"]


async def test_question_text_with_markup_is_stored_and_served_as_plain_text(
    gemini_runtime: Runtime, fake: FakeGemini, client: httpx.AsyncClient
) -> None:
    runtime = gemini_runtime
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    html = '<b>Which</b> project?\x00 <img src=x onerror="alert(1)">'
    fake.script(ask(html, choices=["<i>Apollo</i>", "Gemini & co", "x" * 300]))
    llm = gemini_for(runtime.settings)
    await work_once_with(runtime, llm, instruction)

    (question,) = await questions_of(runtime, instruction.id)
    plain = '<b>Which</b> project? <img src=x onerror="alert(1)">'
    assert question.text == plain  # the characters as written, no NUL, never rendered
    choices = question.choices["choices"]
    assert choices[:2] == ["<i>Apollo</i>", "Gemini & co"]
    assert len(choices[2]) == 100
    (asked,) = await notifications_of(runtime, user.id)
    assert asked.body == plain
    response = await client.get(f"{API}/questions", headers=headers)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()[0]["text"] == plain


async def work_once_with(runtime: Runtime, llm: GeminiModel, instruction: Instruction) -> None:
    await run_now(runtime, instruction)
    await work_once(make_worker(runtime, llm))
    await llm.aclose()


async def test_two_different_alerts_of_one_attempt_are_both_sent(
    gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    """Only an earlier attempt's alert is compared by its words: within one attempt two
    invoices may both be "New invoice", and the second was dropped."""
    runtime = gemini_runtime
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    fake.script(
        Calls([("notify_now", {"title": "New invoice",
                               "message": "Acme sent invoice 17 for $400."}),
               ("notify_now", {"title": "New invoice",
                               "message": "Globex sent invoice 9 for $1,200."})]),
        Text(json.dumps(DIGEST)),
    )
    run_id = await run_now(runtime, instruction)
    llm = gemini_for(runtime.settings)
    await work_once(make_worker(runtime, llm))
    await llm.aclose()
    assert (await get_run(runtime, run_id)).status == "succeeded"
    alerts = sorted(n.body for n in await notifications_of(runtime, user.id)
                    if n.kind == "alert")
    assert alerts == ["Acme sent invoice 17 for $400.", "Globex sent invoice 9 for $1,200."]
