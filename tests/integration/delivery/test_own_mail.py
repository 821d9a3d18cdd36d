"""Pilotlight's own emails in the user's mailbox are not new mail.

A digest, an alert or a question emailed to the user lands in their inbox (Gmail
send-to-self labels it SENT and INBOX). A watch whose query matches it (`in:inbox`)
would fire on it, run, email a digest, and fire again; a daily digest would report the
last one. The real Google clients against the fake Google, the real worker and sender.
"""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select

from app.agent.prompt import NEW_ITEMS_LABEL, parse_fences
from app.core.db import transaction
from app.core.runtime import Runtime
from app.delivery.sender import DeliverySender
from app.google.watch import WatchPoller
from app.notifications.models import Notification
from tests import factories
from tests.fakes.gemini import FakeGemini, Text
from tests.fakes.google import FakeGoogle
from tests.integration.delivery import test_email_replies
from tests.integration.delivery.conftest import send_until_settled
from tests.integration.delivery.gmail_helpers import ALICE, connect_google, mailbox_raw
from tests.integration.runs.helpers import get_run, make_worker, work_once
from tests.integration.runs.test_questions_flow import first_prompts, gemini_for
from tests.integration.runs.test_worker import run_now

# The fakes and the runtime of the email-reply tests (Gmail send-to-self, a fake Gemini).
google, gemini, reply_runtime = (
    test_email_replies.google, test_email_replies.gemini, test_email_replies.reply_runtime)
DIGEST = json.dumps({"summary": "Bob asks about lunch.", "sections": []})


async def run_and_email(runtime: Runtime, gemini: FakeGemini, run_id: uuid.UUID) -> None:
    """Work the queued run with a scripted digest, then send its email (Gmail send)."""
    gemini.script(Text(DIGEST))
    llm = gemini_for(runtime.settings)
    assert await work_once(make_worker(runtime, llm)) == 1
    await llm.aclose()
    assert (await get_run(runtime, run_id)).status == "succeeded"
    async with transaction(runtime.sessionmaker) as session:
        notification_id = (await session.execute(
            select(Notification.id).where(Notification.run_id == run_id)
        )).scalar_one()
    sent = await send_until_settled(DeliverySender(runtime=runtime), runtime, notification_id)
    assert {(d.channel, d.status) for d in sent} == {("in_app", "sent"), ("email", "sent")}


def inbox_subjects(google: FakeGoogle) -> list[str]:
    return [str(m["Subject"]) for labels, m in mailbox_raw(google, ALICE) if "INBOX" in labels]


async def test_a_watch_does_not_fire_on_the_digest_it_emailed(
    reply_runtime: Runtime, google: FakeGoogle, gemini: FakeGemini
) -> None:
    runtime = reply_runtime
    user, _ = await factories.user_with_token(runtime, ALICE)
    account = await connect_google(runtime, google, user)
    await factories.instruction(
        runtime, user, title="Inbox watch", channels=["email"],
        trigger={"type": "watch", "gmail_query": "in:inbox"})
    watch = WatchPoller(sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
                        settings=runtime.settings)
    await watch.run_once()  # the account's first poll: its cursor starts here
    google.add_message(ALICE, sender="Bob <bob@example.com>", subject="Lunch?", text="Lunch?")
    (run_id,) = (await watch.poll_accounts([account.id])).runs
    await run_and_email(runtime, gemini, run_id)
    assert "Inbox watch" in inbox_subjects(google)  # the digest is in the inbox, unread

    assert (await watch.poll_accounts([account.id])).runs == []
    google.add_message(ALICE, sender="Bob <bob@example.com>", subject="Or dinner?", text="?")
    assert len((await watch.poll_accounts([account.id])).runs) == 1  # new mail still fires


async def test_a_digest_does_not_report_the_last_digest_email(
    reply_runtime: Runtime, google: FakeGoogle, gemini: FakeGemini
) -> None:
    runtime = reply_runtime
    user, _ = await factories.user_with_token(runtime, ALICE)
    await connect_google(runtime, google, user)
    instruction = await factories.instruction(runtime, user, channels=["email"])
    google.add_message(ALICE, sender="Bob <bob@example.com>", subject="Lunch?", text="Lunch?")
    await run_and_email(runtime, gemini, await run_now(runtime, instruction))
    assert "Morning digest" in inbox_subjects(google)
    google.add_message(ALICE, sender="Carol <carol@example.com>", subject="Dinner?", text="?")
    await run_and_email(runtime, gemini, await run_now(runtime, instruction))

    first, second = first_prompts(gemini)
    (shown,) = [f for f in parse_fences(second) if f.label == NEW_ITEMS_LABEL]
    assert [record[3] for record in shown.records] == ["Dinner?"]
    assert "Lunch?" in first
