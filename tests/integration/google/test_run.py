"""A whole run of an instruction through the worker, the offline model reading fake Google."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.accounts.models import Account
from app.accounts.queries import NothingToRead
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime, Wakeups
from app.instructions.models import Instruction
from app.runs import queue
from app.runs import service as runs_service
from tests import factories
from tests.fakes.gemini import Calls, FakeGemini, Text
from tests.fakes.google import FakeGoogle
from tests.integration.google.conftest import ALICE, google_account
from tests.integration.runs.helpers import (
    get_run,
    make_worker,
    notifications_of,
    steps_of,
    work_once,
)
from tests.integration.runs.test_questions_flow import gemini_for

DOC = "application/vnd.google-apps.document"


async def run_now(runtime: Runtime, instruction: Instruction) -> uuid.UUID:
    async with transaction(runtime.sessionmaker) as session:
        run = await runs_service.run_now(
            session=session, instruction=instruction, wakeups=runtime.wakeups
        )
        return run.id


def refs_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    items = [i for s in result["sections"] for i in s["items"]] + result["action_items"]
    return [ref for item in items for ref in item["refs"]]


async def test_a_run_reads_the_google_account_and_writes_a_digest(
    runtime: Runtime, fake: FakeGoogle, google_settings: Any
) -> None:
    google = Runtime(google_settings, runtime.engine, runtime.sessionmaker, Wakeups())
    user, _ = await factories.user_with_token(google, ALICE, sample=False)
    account = google_account(fake, google_settings, user_id=user.id)
    async with transaction(google.sessionmaker) as session:
        session.add(account)
    invoice = fake.add_message(
        ALICE, sender="Billing <billing@example.com>", to=[ALICE], subject="Invoice 42 due Friday",
        text="Please pay invoice 42 of 120 EUR by Friday.",
        attachments=[("invoice-42.pdf", "application/pdf", b"%PDF-1.4\n%%EOF\n")],
    )
    update = fake.add_message(
        ALICE, sender="Bob <bob@example.com>", to=[ALICE], subject="Launch moved to Monday",
        html="<p>The launch moves to <b>Monday</b>. Can you update the plan?</p>",
    )
    plan = fake.add_file(ALICE, name="Launch plan", mime_type=DOC,
                         content="Launch on Monday. Owner: Bob.", modified_by="Bob")
    instruction = await factories.instruction(google, user, channels=["in_app"])

    run_id = await run_now(google, instruction)
    assert await work_once(make_worker(google)) == 1
    run = await get_run(google, run_id)
    assert run.status == "succeeded", run.error
    assert run.result is not None
    (digest,) = await notifications_of(google, user.id)
    assert digest.kind == "digest"
    # Context first: the app read both new messages in full from Gmail before the model's
    # first turn (their excerpts are on the cards), so no tool call had to; any that were
    # made went without errors.
    full_reads = {
        r.path.rsplit("/", 1)[-1] for r in fake.requests
        if r.method_id == "gmail.users.messages.get" and r.query.get("format") == "full"
    }
    assert {invoice, update} <= full_reads
    tools = [s for s in await steps_of(google, run_id) if s.kind == "tool"]
    assert [s.error for s in tools if s.error] == []
    assert "Launch on Monday" in json.dumps(run.result)

    refs = refs_of(run.result)
    cited = {(r["kind"], r["id"]) for r in refs}
    assert ("message", invoice) in cited or ("message", update) in cited
    for ref in refs:
        assert ref["account"] == str(account.id)
        if ref["kind"] == "message":
            assert ref["link"].startswith("https://mail.google.com/mail/")
        else:
            assert ref["link"].startswith("https://drive.google.com/open?id=")
    assert ("file", plan) in cited

    # The instruction's cursor for the account now holds Gmail's and Drive's positions.
    async with transaction(google.sessionmaker) as session:
        stored = await session.get(Instruction, instruction.id)
        assert stored is not None
        cursor = stored.cursor[str(account.id)]
        assert set(cursor) == {"gmail", "drive"}
        assert (await session.execute(select(Account.status))).scalar_one() == "active"

    # Nothing new: the next run is skipped after one history.list and one changes.list.
    fake.reset_counters()
    second = await run_now(google, instruction)
    await work_once(make_worker(google))
    assert (await get_run(google, second)).status == "skipped"
    assert fake.quota_units(ALICE) == 2


async def test_a_digest_reports_the_changes_in_a_shared_drive(
    runtime: Runtime, fake: FakeGoogle, google_settings: Any
) -> None:
    """The team's documents live in a shared drive, which Drive shows only to calls that opt
    in: both the first run's recent files and the next run's changes come from it."""
    google = Runtime(google_settings, runtime.engine, runtime.sessionmaker, Wakeups())
    user, _ = await factories.user_with_token(google, ALICE, sample=False)
    account = google_account(fake, google_settings, user_id=user.id)
    async with transaction(google.sessionmaker) as session:
        session.add(account)
    team = fake.add_shared_drive(ALICE, "Team")
    roadmap = fake.add_file(ALICE, name="Roadmap", mime_type=DOC,
                            content="Q3: open the Berlin office.", parents=(team,))
    instruction = await factories.instruction(google, user, channels=["in_app"])

    first = await run_now(google, instruction)
    await work_once(make_worker(google))
    run = await get_run(google, first)
    assert run.status == "succeeded", run.error
    assert run.result is not None
    assert ("file", roadmap) in {(r["kind"], r["id"]) for r in refs_of(run.result)}

    plan = fake.add_file(ALICE, name="Hiring plan", mime_type=DOC, modified_by="Bob",
                         content="Hire two engineers for Berlin by October.", parents=(team,))
    second = await run_now(google, instruction)
    await work_once(make_worker(google))
    run = await get_run(google, second)
    assert run.status == "succeeded", run.error
    assert run.result is not None
    assert "Hire two engineers" in json.dumps(run.result)
    assert ("file", plan) in {(r["kind"], r["id"]) for r in refs_of(run.result)}


async def test_an_account_whose_gmail_is_turned_off_goes_on_with_drive_and_says_so_once(
    runtime: Runtime, fake: FakeGoogle, google_settings: Any
) -> None:
    """An administrator turns Gmail off after the account was connected (Gmail answers
    "Mail service not enabled"): the run records the account as mailbox-less and goes on
    with its Drive, the user is told once in the app, and an instruction that reads only
    mail fails saying why instead of digesting nothing."""
    google = Runtime(google_settings, runtime.engine, runtime.sessionmaker, Wakeups())
    user, _ = await factories.user_with_token(google, ALICE, sample=False)
    account = google_account(fake, google_settings, user_id=user.id)
    async with transaction(google.sessionmaker) as session:
        session.add(account)
    fake.add_message(ALICE, sender="Bob <bob@example.com>", to=[ALICE], subject="Lunch?",
                     text="Lunch on Friday?")
    plan = fake.add_file(ALICE, name="Launch plan", mime_type=DOC,
                         content="Launch on Monday. Owner: Bob.", modified_by="Bob")
    both = await factories.instruction(google, user, channels=["in_app"])
    mail_only = await factories.instruction(google, user, title="Mail", channels=["in_app"],
                                            sources=["gmail"])
    fake.disable_gmail(ALICE)

    run_id = await run_now(google, both)
    worker = make_worker(google)
    await work_once(worker)  # meets Gmail's answer: records it, gives the run back
    await work_once(worker)

    run = await get_run(google, run_id)
    assert run.status == "succeeded", run.error
    assert run.attempt == 1  # the attempt that met Gmail's answer is not counted
    assert run.result is not None
    assert ("file", plan) in {(r["kind"], r["id"]) for r in refs_of(run.result)}
    async with google.sessionmaker() as session:
        stored = await session.get_one(Account, account.id)
    assert stored.status == "active"
    assert stored.scopes["mailbox"] is False
    assert "Mail service not enabled" in (stored.status_detail or "")
    # The digest of Drive alone says that mail was not read, and why: not "no mail".
    assert [n for n in run.result["notes"] if n.startswith("Mail was not read")] == [
        f"Mail was not read: Gmail is off for {ALICE}: Google says its mail service is not "
        "enabled (\"Mail service not enabled\")."
    ]
    (alert,) = [n for n in await notifications_of(google, user.id) if n.kind == "alert"]
    assert "Gmail is not enabled" in alert.body
    assert "/api/v1/google/connect" in alert.body

    fake.reset_counters()
    # Setting it running now is refused, saying why; a run of its schedule still comes.
    async with transaction(google.sessionmaker) as session:
        with pytest.raises(NothingToRead, match="reads mail only"):
            await runs_service.run_now(session=session, instruction=mail_only,
                                       wakeups=google.wakeups)
    async with transaction(google.sessionmaker) as session:
        failed_id = await queue.enqueue(
            session=session, user_id=user.id, instruction_id=mail_only.id, reason="schedule",
            scheduled_for=utcnow(), window_start=None, window_end=utcnow(),
        )
    assert failed_id is not None
    await work_once(worker)
    failed = await get_run(google, failed_id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert "reads only mail" in failed.error
    assert "Mail service not enabled" in failed.error
    assert not [r for r in fake.requests if "/gmail/" in r.path]  # Gmail is left alone
    told = await notifications_of(google, user.id)
    assert len([n for n in told if n.kind == "alert"]) == 1  # told once
    assert any(n.kind == "error" and "reads only mail" in n.body for n in told)


async def test_a_run_with_nothing_new_on_a_gmail_less_account_says_mail_was_not_read(
    runtime: Runtime, fake: FakeGoogle, google_settings: Any
) -> None:
    """A Google account connected without Gmail, an instruction reading mail and Drive:
    each run reads Drive alone and says that mail was not read and why, in its digest and,
    when nothing is new, in why it was skipped (the run page shows both), never as if there
    were no mail. Gmail is not called."""
    google = Runtime(google_settings, runtime.engine, runtime.sessionmaker, Wakeups())
    user, _ = await factories.user_with_token(google, ALICE, sample=False)
    account = google_account(fake, google_settings, user_id=user.id)
    account.scopes = {**account.scopes, "mailbox": False}  # as connecting it stores it
    async with transaction(google.sessionmaker) as session:
        session.add(account)
    fake.disable_gmail(ALICE)
    fake.add_file(ALICE, name="Launch plan", mime_type=DOC, content="Launch on Monday.")
    instruction = await factories.instruction(google, user, channels=["in_app"])
    worker = make_worker(google)
    said = (f"Mail was not read: Gmail is off for {ALICE}: Google says its mail service is "
            "not enabled (\"Mail service not enabled\").")

    first = await run_now(google, instruction)
    await work_once(worker)
    run = await get_run(google, first)
    assert run.status == "succeeded", run.error
    assert run.result is not None
    assert said in run.result["notes"]
    second = await run_now(google, instruction)
    await work_once(worker)
    run = await get_run(google, second)
    assert run.status == "skipped"
    assert run.error == f"Nothing new since the last run. {said}"
    assert not [r for r in fake.requests if "/gmail/" in r.path]


async def test_gmail_lost_in_the_middle_of_a_run_is_said_to_the_model_and_in_the_digest(
    runtime: Runtime, fake: FakeGoogle, google_settings: Any
) -> None:
    """The account had Gmail when the run started (its first reads got the new mail); an
    administrator turns Gmail off while the model thinks, so its tool calls get "Mail
    service not enabled". The real worker, the google-genai SDK against the fake Gemini
    and the Google client against the fake Google: each mail tool tells the model why
    (not "no mail", not "no such message"), the run ends with its digest (one attempt, no
    retry), which says mail is missing; the account is recorded as mailbox-less and the
    user told once; the next run reads Drive alone, without a call to Gmail."""
    with FakeGemini() as gemini:
        settings = google_settings.model_copy(update={
            "gemini_api_key": SecretStr(gemini.api_key), "gemini_base_url": gemini.url,
            "gemini_max_retries": 0,
        })
        google = Runtime(settings, runtime.engine, runtime.sessionmaker, Wakeups())
        user, _ = await factories.user_with_token(google, ALICE, sample=False)
        account = google_account(fake, settings, user_id=user.id)
        async with transaction(google.sessionmaker) as session:
            session.add(account)
        fake.add_message(ALICE, sender="Billing <billing@example.com>", to=[ALICE],
                         subject="Invoice 42 due Friday", text="Please pay invoice 42.")
        fake.add_file(ALICE, name="Launch plan", mime_type=DOC, content="Launch on Monday.")
        instruction = await factories.instruction(google, user, channels=["in_app"])
        gemini.script(
            Calls([("search_mail", {"query": "invoice"})],
                  meanwhile=lambda: fake.disable_gmail(ALICE)),
            Calls([("read_message", {"id": "m1"})]),  # the new mail its prompt showed
            Text(json.dumps({"summary": "Invoice 42 is due Friday.", "sections": []})),
        )
        llm = gemini_for(settings)
        try:
            run_id = await run_now(google, instruction)
            assert await work_once(make_worker(google, llm)) == 1
        finally:
            await llm.aclose()
        first_turn, after_search, after_read = gemini.bodies()

    run = await get_run(google, run_id)
    assert run.status == "succeeded", run.error
    assert run.attempt == 1
    assert "Invoice 42" in json.dumps(first_turn["input"])  # Gmail was read at the start
    for body, tool in ((after_search, "search_mail"), (after_read, "read_message")):
        (result,) = [i for i in body["input"] if i.get("type") == "function_result"]
        assert result["name"] == tool
        assert "Mail service not enabled" in json.dumps(result["result"]), result
    errors = {s.name: s.error or "" for s in await steps_of(google, run_id) if s.kind == "tool"}
    assert "Mail service not enabled" in errors["search_mail"]
    assert "Mail service not enabled" in errors["read_message"]
    assert run.result is not None
    assert [n for n in run.result["notes"] if "Gmail" in n] == [
        f"Gmail stopped answering for {ALICE} during this run: Google says its mail service "
        "is not enabled (\"Mail service not enabled\": Gmail was turned off for it), so "
        "its mail that the run had not read yet is missing from this digest."
    ]
    async with google.sessionmaker() as session:
        stored = await session.get_one(Account, account.id)
    assert stored.status == "active"
    assert stored.scopes["mailbox"] is False
    (alert,) = [n for n in await notifications_of(google, user.id) if n.kind == "alert"]
    assert "Gmail is not enabled" in alert.body

    fake.reset_counters()
    fake.add_file(ALICE, name="Budget", mime_type=DOC, content="Hire two engineers.")
    next_id = await run_now(google, instruction)
    await work_once(make_worker(google))
    after = await get_run(google, next_id)
    assert after.status == "succeeded", after.error
    assert after.result is not None
    assert any(n.startswith("Mail was not read") for n in after.result["notes"])
    assert not [r for r in fake.requests if "/gmail/" in r.path]
    assert len([n for n in await notifications_of(google, user.id) if n.kind == "alert"]) == 1
