"""POST /instructions/draft: a proposed instruction from one sentence, which creates nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import update

from app.core.db import transaction
from app.core.runtime import Runtime
from app.instructions import triggers
from app.main import create_app
from app.users.models import User
from tests import factories
from tests.factories import user_with_token
from tests.fakes.gemini import FakeGemini, Text
from tests.integration.api.helpers import API, assert_error

DRAFT = f"{API}/instructions/draft"


async def test_draft_needs_a_token(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.post(DRAFT, json={"text": "every day at 8 tell me my mail"})
    assert_error(response, 401, "InvalidToken", "missing bearer token")


@pytest.mark.parametrize(
    ("sentence", "trigger", "schedule"),
    [
        ("every weekday at 8 tell me what my team sent",
         {"type": "cron", "cron": "0 8 * * 1-5", "timezone": "Europe/Berlin"},
         "At 08:00, Monday through Friday (Europe/Berlin)"),
        ("on Tuesdays and Thursdays at 16:00 email me what the sales team sent",
         {"type": "cron", "cron": "0 16 * * 2,4", "timezone": "Europe/Berlin"},
         "At 16:00, only on Tuesday and Thursday (Europe/Berlin)"),
        ("every 2 hours check for invoices in my inbox",
         {"type": "interval", "seconds": 7200}, "Every 2 hours"),
        ("every hour between 9 and 17 on weekdays push urgent mail",
         {"type": "cron", "cron": "0 9-17 * * 1-5", "timezone": "Europe/Berlin"},
         "At 0 minutes past the hour, between 09:00 and 17:59, Monday through Friday "
         "(Europe/Berlin)"),
        ("on weekends at 10 give me a full summary of my documents",
         {"type": "cron", "cron": "0 10 * * 6,0", "timezone": "Europe/Berlin"},
         "At 10:00, only on Saturday and Sunday (Europe/Berlin)"),
        ("every day except Sunday at 8 digest my mail",
         {"type": "cron", "cron": "0 8 * * 1-6", "timezone": "Europe/Berlin"},
         "At 08:00, Monday through Saturday (Europe/Berlin)"),
        ("every hour between 22 and 6 check urgent mail",
         {"type": "cron", "cron": "0 22-23,0-6 * * *", "timezone": "Europe/Berlin"},
         "At 22:00, 23:00, 00:00, 01:00, 02:00, 03:00, 04:00, 05:00 and 06:00 "
         "(Europe/Berlin)"),
        ("every day at 8 in New York time digest my mail",
         {"type": "cron", "cron": "0 8 * * *", "timezone": "America/New_York"},
         "At 08:00 (America/New_York)"),
        # "on a Monday" is on Mondays (was the task's: every day)
        ("at 9 on a Monday summarise my mail",
         {"type": "cron", "cron": "0 9 * * 1", "timezone": "Europe/Berlin"},
         "At 09:00, only on Monday (Europe/Berlin)"),
        # an hour alone from 1 to 6 is the afternoon: what people mean by "at 5"
        ("on Friday at 5 send me the week's invoices",
         {"type": "cron", "cron": "0 17 * * 5", "timezone": "Europe/Berlin"},
         "At 17:00, only on Friday (Europe/Berlin)"),
    ],
)
async def test_a_draft_is_accepted_by_create_as_is(
    client: httpx.AsyncClient, runtime: Runtime, sentence: str, trigger: dict[str, object],
    schedule: str,
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.post(DRAFT, json={"text": sentence}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"instruction", "schedule", "explanation", "drafted_by"}
    assert body["drafted_by"] == "pilotlight-offline"
    assert body["schedule"] == schedule
    assert body["explanation"].startswith("Understood: ")
    proposal = body["instruction"]
    assert set(proposal) == {"title", "text", "trigger", "sources", "channels",
                             "thinking_level", "max_tool_calls", "only_new"}
    assert proposal["trigger"] == trigger
    assert proposal["max_tool_calls"] is None

    # Drafting created nothing.
    listed = await client.get(f"{API}/instructions", headers=headers)
    assert listed.json()["items"] == []

    created = await client.post(f"{API}/instructions", json=proposal, headers=headers)
    assert created.status_code == 201, created.text
    instruction = created.json()
    assert instruction["schedule"] == schedule
    assert instruction["trigger"] == trigger
    assert instruction["title"] == proposal["title"]
    assert instruction["text"] == proposal["text"]
    assert sorted(instruction["sources"]) == sorted(proposal["sources"])
    assert sorted(instruction["channels"]) == sorted(proposal["channels"])
    assert instruction["only_new"] == proposal["only_new"]
    assert instruction["max_tool_calls"] == runtime.settings.agent_default_max_tool_calls
    assert instruction["next_run_at"] is not None


@pytest.mark.parametrize(
    ("sentence", "cron", "schedule", "weekdays"),
    [
        ("every morning at 8 list Friday's meetings", "0 8 * * *", "At 08:00 (Europe/Berlin)",
         set(range(7))),
        ("every day at 9 tell me who is off on Monday", "0 9 * * *", "At 09:00 (Europe/Berlin)",
         set(range(7))),
        ("at 7 each weekday summarise the weekend's mail", "0 7 * * 1-5",
         "At 07:00, Monday through Friday (Europe/Berlin)", {0, 1, 2, 3, 4}),
        ("every Monday at 8 summarise last week's invoices and Friday's orders", "0 8 * * 1",
         "At 08:00, only on Monday (Europe/Berlin)", {0}),
    ],
)
async def test_days_of_the_task_change_neither_the_saved_schedule_nor_its_fire_times(
    client: httpx.AsyncClient, runtime: Runtime, sentence: str, cron: str, schedule: str,
    weekdays: set[int],
) -> None:
    _user, headers = await user_with_token(runtime)
    drafted = (await client.post(DRAFT, json={"text": sentence}, headers=headers)).json()
    trigger = {"type": "cron", "cron": cron, "timezone": "Europe/Berlin"}
    assert drafted["instruction"]["trigger"] == trigger
    assert drafted["schedule"] == schedule
    created = await client.post(f"{API}/instructions", json=drafted["instruction"],
                                headers=headers)
    assert created.status_code == 201, created.text
    saved = created.json()
    assert (saved["trigger"], saved["schedule"]) == (trigger, schedule)
    # The saved instruction fires on the days the draft showed, and on no other.
    fire = datetime.fromisoformat(saved["next_run_at"])
    fired_on = set()
    for _ in range(14):
        local = fire.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (int(cron.split()[1]), 0)
        fired_on.add(local.weekday())
        fire = triggers.next_after(trigger, fire, anchor=None)
        assert fire is not None
    assert fired_on == weekdays


async def test_the_example_sentence(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.post(
        DRAFT, json={"text": "every weekday at 8 tell me what my team sent"}, headers=headers
    )
    assert response.json() == {
        "instruction": {
            "title": "Weekday team mail at 08:00",
            "text": "Every weekday at 8 tell me what my team sent.",
            "trigger": {"type": "cron", "cron": "0 8 * * 1-5", "timezone": "Europe/Berlin"},
            "sources": ["gmail"],
            "channels": ["in_app"],
            "thinking_level": "medium",
            "max_tool_calls": None,
            "only_new": True,
        },
        "schedule": "At 08:00, Monday through Friday (Europe/Berlin)",
        "explanation": "Understood: every weekday at 08:00 (Europe/Berlin); reads Gmail; "
                       "delivers in the app; reports only what is new.",
        "drafted_by": "pilotlight-offline",
    }


async def test_the_draft_is_in_the_users_time_zone(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(User).where(User.id == user.id).values(timezone="America/New_York")
        )
    response = await client.post(
        DRAFT, json={"text": "every evening email me my mail"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["instruction"]["trigger"] == {
        "type": "cron", "cron": "0 18 * * *", "timezone": "America/New_York"
    }
    assert response.json()["schedule"] == "At 18:00 (America/New_York)"


@pytest.mark.parametrize(
    ("sentence", "error", "fragments"),
    [
        ("tell me what my team sent", "DraftNotUnderstood",
         ["when to run", "every weekday at 8 tell me what my team sent"]),
        ("qwerty uiop", "DraftNotUnderstood", ["qwerty uiop"]),
        ("every morning at 6 pm summarize mail", "DraftNotUnderstood", ["not in the morning"]),
        ("every 2 hours at 9 check mail", "DraftNotUnderstood", ["interval", "time of day"]),
        ("every 20 seconds check my inbox", "DraftIntervalTooShort", ["once a minute"]),
        ("every 1" + "0" * 320 + " minutes summarize my mail", "DraftNotUnderstood",
         ["up to a year"]),
        ("when mail from " + "a" * 600 + "@x.com arrives tell me", "DraftNotUnderstood",
         ["the mail to watch for"]),
        ("whenever a document in folder Contracts changes tell me", "DraftWatchNotAvailable",
         ["Drive folder: 'Contracts'", "drive_folder_id", "folder's URL", "every hour"]),
        ("whenever something changes tell me", "DraftWatchNotAvailable",
         ["not what to watch", "whenever mail from"]),
        # said, but not readable: refused rather than proposed as something else
        ("at 8 on weekdays and 10 on weekends digest my mail", "DraftNotUnderstood",
         ['"10"', "make one instruction for each set of days"]),
        ("every 2nd monday at 9 digest my mail", "DraftNotUnderstood", ['"every 2nd monday"']),
        ("on the 30th of february at 9 summarize my documents", "DraftNotUnderstood",
         ['"of february"']),
        ("whenever mail from arrives tell me", "DraftNotUnderstood", ["name the sender"]),
        # misreads: each was drafted as something else, now refused saying what to write
        ("every day at 9 in Springfieldia summarise my mail", "DraftNotUnderstood",
         ['"in Springfieldia" as a place', "no city this knows a time zone of",
          '"in Los Angeles"']),
        ("every day at 9 sixty summarise my mail", "DraftNotUnderstood",
         ['the time "9 sixty"', "no minute 60", '"10:00"']),
        ("every hour between 8 and 8 check mail", "DraftNotUnderstood",
         ['"between 8 and 8"', '"every hour between 8am and 8pm"']),
        ("every day at 10-8/3 check mail", "DraftNotUnderstood",
         ['the hours "10-8/3"', '"every 3 hours between 10 and 8"', "cron trigger"]),
    ],
)
async def test_sentences_it_cannot_draft_are_422(
    client: httpx.AsyncClient, runtime: Runtime, sentence: str, error: str,
    fragments: list[str],
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.post(DRAFT, json={"text": sentence}, headers=headers)
    body = assert_error(response, 422, error, *fragments)
    assert set(body) == {"error", "detail"}


@pytest.mark.parametrize(
    ("sentence", "query", "title", "channels"),
    [
        ("whenever an invoice arrives tell me at once", "subject:invoice OR invoice",
         "New invoices", ["in_app"]),
        ("whenever mail from billing@example.com arrives, push it", "from:billing@example.com",
         "New mail from billing@example.com", ["in_app", "push"]),
    ],
)
async def test_a_mail_event_is_drafted_as_a_watch_that_create_refuses_without_google(
    client: httpx.AsyncClient, runtime: Runtime, sentence: str, query: str, title: str,
    channels: list[str],
) -> None:
    _user, headers = await user_with_token(runtime)  # no connected Google account
    response = await client.post(DRAFT, json={"text": sentence}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["drafted_by"] == "pilotlight-offline"
    assert body["schedule"] == f"When new mail matches '{query}'"
    assert f"one run for each new message that matches the Gmail query {query}" in (
        body["explanation"])
    assert "connected Google account" in body["explanation"]
    proposal = body["instruction"]
    assert proposal["trigger"] == {"type": "watch", "gmail_query": query,
                                   "drive_folder_id": None}
    assert proposal["title"] == title
    assert proposal["sources"] == ["gmail"]
    assert proposal["channels"] == channels

    created = await client.post(f"{API}/instructions", json=proposal, headers=headers)
    assert_error(created, 422, "WatchNeedsGoogle", "needs a connected Google account",
                 "/api/v1/google/connect")
    listed = await client.get(f"{API}/instructions", headers=headers)
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": "every day at 8 tell me my mail", "timezone": "UTC"}, "timezone"),
        ({"text": "every day at 8 tell me my mail", "title": "x"}, "title"),
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": "x" * 1001}, "text"),
        ({"text": "every day at 8\u0000 tell me"}, "text"),
        ({"text": 42}, "text"),
    ],
    ids=["timezone", "title", "missing", "empty", "blank", "too-long", "nul", "not-a-string"],
)
async def test_bad_requests_are_422(
    client: httpx.AsyncClient, runtime: Runtime, payload: dict[str, object], field: str
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.post(DRAFT, json=payload, headers=headers)
    body = assert_error(response, 422, "ValidationError")
    assert any(item["field"] == field for item in body["errors"]), body


async def test_a_long_sentence_at_the_limit_is_read(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await user_with_token(runtime)
    text = "every day at 8 tell me what my team sent " + "please " * 200
    text = text[:1000]
    response = await client.post(DRAFT, json={"text": text}, headers=headers)
    assert response.status_code == 200, response.text


async def test_draft_is_not_read_as_an_instruction_id(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await user_with_token(runtime)
    # POST /instructions/draft is the draft route; other methods on it are not ids either.
    response = await client.post(DRAFT, json={"text": "hourly check my inbox"}, headers=headers)
    assert response.status_code == 200, response.text
    response = await client.get(DRAFT, headers=headers)
    assert response.status_code in (405, 422), response.text
    assert response.json()["error"] in ("MethodNotAllowed", "ValidationError")


async def test_openapi_documents_the_draft_errors(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"][DRAFT]["post"]
    assert set(operation["responses"]) >= {"200", "401", "422"}
    described = operation["responses"]["422"]["description"]
    for name in ("DraftNotUnderstood", "DraftIntervalTooShort", "DraftWatchNotAvailable"):
        assert name in described


# --- with Gemini configured (the fake Interactions API) ----------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture
async def gemini_runtime(runtime: Runtime, fake: FakeGemini) -> AsyncIterator[Runtime]:
    """The test database's runtime with Gemini pointed at the fake; its model is closed
    after the test (the engine belongs to `runtime`)."""
    settings = runtime.settings.model_copy(
        update={"gemini_api_key": SecretStr(fake.api_key), "gemini_base_url": fake.url,
                "gemini_max_retries": 0}
    )
    served = Runtime(settings, runtime.engine, runtime.sessionmaker, runtime.wakeups)
    yield served
    await served.close_model()


@pytest.fixture
async def gemini_client(gemini_runtime: Runtime) -> httpx.AsyncClient:
    app = create_app(gemini_runtime)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://pilotlight.test")


async def test_gemini_drafts_through_structured_output(
    gemini_client: httpx.AsyncClient, runtime: Runtime, fake: FakeGemini
) -> None:
    _user, headers = await user_with_token(runtime)
    fake.script(Text(json.dumps({
        "understood": True, "title": "Team mail", "text": "Weekdays at 8: my team's mail.",
        "trigger": {"type": "cron", "cron": "0 8 * * 1-5"}, "sources": ["gmail"],
        "channels": ["in_app", "push"], "only_new": True,
    })))
    async with gemini_client as client:
        response = await client.post(
            DRAFT, json={"text": "weekdays 8ish, my team's mail, on my phone"}, headers=headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["drafted_by"] == runtime.settings.gemini_model
        assert body["instruction"]["trigger"] == {
            "type": "cron", "cron": "0 8 * * 1-5", "timezone": "Europe/Berlin"
        }
        assert body["instruction"]["channels"] == ["in_app", "push"]
        created = await client.post(f"{API}/instructions", json=body["instruction"],
                                    headers=headers)
        assert created.status_code == 201, created.text

    (request,) = fake.bodies()
    assert request["input"] == "weekdays 8ish, my team's mail, on my phone"
    assert "tools" not in request
    assert request["response_format"]["mime_type"] == "application/json"
    assert "understood" in request["response_format"]["schema"]["properties"]


async def test_gemini_drafts_a_watch_on_mail_and_refuses_one_on_a_named_folder(
    gemini_client: httpx.AsyncClient, runtime: Runtime, fake: FakeGemini
) -> None:
    _user, headers = await user_with_token(runtime)
    answer = {"understood": True, "title": "Invoices", "text": "Tell me about each invoice.",
              "sources": ["gmail"], "channels": ["in_app", "email"], "only_new": True}
    fake.script(
        Text(json.dumps({**answer, "trigger": {"type": "watch",
                                               "gmail_query": "subject:invoice"}})),
        Text(json.dumps({**answer, "trigger": {"type": "watch", "drive_folder": "Contracts"}})),
    )
    async with gemini_client as client:
        mail = await client.post(DRAFT, json={"text": "invoices, as they come, by email"},
                                 headers=headers)
        folder = await client.post(DRAFT, json={"text": "changes in Contracts, right away"},
                                   headers=headers)
    assert mail.status_code == 200, mail.text
    body = mail.json()
    assert body["drafted_by"] == runtime.settings.gemini_model
    assert body["instruction"]["trigger"] == {"type": "watch", "gmail_query": "subject:invoice",
                                              "drive_folder_id": None}
    assert body["instruction"]["channels"] == ["in_app", "email"]
    assert body["schedule"] == "When new mail matches 'subject:invoice'"
    assert_error(folder, 422, "DraftWatchNotAvailable", "Drive folder: 'Contracts'",
                 "drive_folder_id", "folder's URL")


async def test_gemini_output_that_is_not_a_proposal_falls_back_to_the_parser(
    gemini_client: httpx.AsyncClient, runtime: Runtime, fake: FakeGemini
) -> None:
    _user, headers = await user_with_token(runtime)
    fake.script(Text("Sure! Here is your instruction."), Text("{}"))
    async with gemini_client as client:
        ok = await client.post(
            DRAFT, json={"text": "every weekday at 8 tell me what my team sent"},
            headers=headers,
        )
        refused = await client.post(DRAFT, json={"text": "make it nice"}, headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["drafted_by"] == "pilotlight-offline"
    assert_error(refused, 422, "DraftNotUnderstood", "when to run")


async def test_gemini_failing_falls_back_to_the_parser(
    gemini_client: httpx.AsyncClient, runtime: Runtime, fake: FakeGemini
) -> None:
    _user, headers = await user_with_token(runtime)
    fake.fail(503)
    async with gemini_client as client:
        response = await client.post(DRAFT, json={"text": "hourly check my inbox"},
                                     headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["drafted_by"] == "pilotlight-offline"
    assert response.json()["instruction"]["trigger"] == {"type": "interval", "seconds": 3600}


# --- one client per process; drafting turns are paid for and capped -------------------------

PROPOSAL = json.dumps({
    "understood": True, "title": "Team mail", "text": "Weekdays at 8: my team's mail.",
    "trigger": {"type": "cron", "cron": "0 8 * * 1-5"}, "sources": ["gmail"],
    "channels": ["in_app"], "only_new": True,
})


async def test_every_draft_goes_through_the_processs_one_client(
    gemini_client: httpx.AsyncClient, gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    _user, headers = await user_with_token(gemini_runtime)
    fake.script(Text(PROPOSAL), Text(PROPOSAL))
    async with gemini_client as client:
        first = await client.post(DRAFT, json={"text": "weekdays at 8, team"}, headers=headers)
        model = gemini_runtime.model()
        second = await client.post(DRAFT, json={"text": "weekdays at 8, team"}, headers=headers)

    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert gemini_runtime.model() is model  # built once, still open, not one per request
    assert len(fake.requests()) == 2


async def test_a_draft_counts_in_usage_at_what_the_fake_billed(
    gemini_client: httpx.AsyncClient, gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    _user, headers = await user_with_token(gemini_runtime)
    fake.script(Text(PROPOSAL))
    async with gemini_client as client:
        drafted = await client.post(DRAFT, json={"text": "weekdays at 8"}, headers=headers)
        usage = await client.get(f"{API}/usage", headers=headers)

    assert drafted.status_code == 200, drafted.text
    assert usage.status_code == 200, usage.text
    (billed,) = fake.billed()
    total = usage.json()["total"]
    assert (total["runs"], total["model_calls"]) == (0, 1)
    assert total["input_tokens"] == billed["total_input_tokens"]
    assert total["output_tokens"] == billed["total_output_tokens"]
    assert total["thought_tokens"] == billed["total_thought_tokens"]
    expected = (billed["total_input_tokens"] * 1.50 + (
        billed["total_output_tokens"] + billed["total_thought_tokens"]) * 9.00) / 1_000_000
    # as usage shows it, to the micro-dollar
    assert total["cost_usd"] == pytest.approx(expected, abs=0.5e-6)
    assert sum(day["model_calls"] for day in usage.json()["days"]) == 1


async def test_drafting_is_refused_once_the_daily_cap_is_reached(
    gemini_client: httpx.AsyncClient, gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    user, headers = await user_with_token(gemini_runtime)
    async with transaction(gemini_runtime.sessionmaker) as session:
        await session.execute(
            update(User).where(User.id == user.id).values(daily_cost_cap_usd=0.000001)
        )
    fake.script(Text(PROPOSAL), Text(PROPOSAL))
    async with gemini_client as client:
        first = await client.post(DRAFT, json={"text": "weekdays at 8"}, headers=headers)
        second = await client.post(DRAFT, json={"text": "weekdays at 8"}, headers=headers)

    assert first.status_code == 200, first.text  # under the cap before it: it runs
    assert_error(second, 429, "CostCapReached", "daily cost cap")
    assert len(fake.requests()) == 1  # the refused draft never reached the model


async def test_a_preview_is_refused_once_the_daily_cap_is_reached(
    gemini_client: httpx.AsyncClient, gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    user, headers = await user_with_token(gemini_runtime)
    instruction = await factories.instruction(gemini_runtime, user)
    async with transaction(gemini_runtime.sessionmaker) as session:
        await session.execute(
            update(User).where(User.id == user.id).values(daily_cost_cap_usd=0.0)
        )
    async with gemini_client as client:
        response = await client.post(f"{API}/instructions/{instruction.id}/preview",
                                     headers=headers, json={"days": 7})
        runs = await client.get(f"{API}/runs", headers=headers)

    assert_error(response, 429, "CostCapReached", "daily cost cap is $0, which stops paid")
    assert runs.json()["items"] == []  # nothing was queued
    assert fake.requests() == []


async def test_a_draft_cut_off_at_the_output_limit_falls_back_to_the_parser_and_counts(
    gemini_client: httpx.AsyncClient, gemini_runtime: Runtime, fake: FakeGemini
) -> None:
    """An answer cut off at the output token limit (status `incomplete`) is not a proposal,
    even when the text that came is valid JSON (the model went on with blank lines until
    the limit); what it was billed counts in usage."""
    _user, headers = await user_with_token(gemini_runtime)
    fake.max_output_tokens = 100
    fake.script(Text(PROPOSAL + "\n" * 1000))
    async with gemini_client as client:
        drafted = await client.post(DRAFT, json={"text": "weekdays at 8 my team's mail"},
                                    headers=headers)
        usage = await client.get(f"{API}/usage", headers=headers)

    assert drafted.status_code == 200, drafted.text
    assert drafted.json()["drafted_by"] == "pilotlight-offline"
    (cut,) = fake.requests()
    assert cut.response["status"] == "incomplete"
    billed = cut.response["usage"]
    total = usage.json()["total"]
    assert total["model_calls"] == 1
    assert (total["input_tokens"], total["output_tokens"]) == (
        billed["total_input_tokens"], billed["total_output_tokens"])
