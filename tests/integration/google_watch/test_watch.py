"""The watch poller over the real Google clients and the fake: each matching message or
file fires exactly one run, a burst is never dropped, an expired history resyncs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.accounts.models import Account
from app.agent.llm import TurnRequest, TurnResponse
from app.agent.offline import OfflineModel
from app.core.config import Settings
from app.core.db import db_now, transaction
from app.core.runtime import Runtime
from app.google import gmail, watch_service
from app.google.scopes import GMAIL_READONLY
from app.google.source import GoogleSource
from app.google.watch import PollReport, WatchPoller
from app.google.watch_models import WatchCursor, WatchHit, WatchPendingFile
from app.google.watch_service import FileVersion
from app.instructions import service as instructions
from app.instructions.schemas import InstructionCreate
from app.runs.scheduler import SchedulerTick
from app.sources.base import MailChanges, Source, WatchableSource
from app.sources.registry import source_for
from tests.factories import instruction, instruction_body, user_with_token
from tests.fakes.google import FakeGoogle
from tests.integration.google_watch.conftest import (
    EMAIL,
    fired_ids,
    google_account,
    pdf,
    poller,
    watch_runs,
)
from tests.integration.runs.helpers import get_run, make_worker, work_once

API = "/api/v1"
FOLDER = "application/vnd.google-apps.folder"
PDF = b"%PDF-1.4\n% a scanned invoice\n"
BILLING = "from:billing@example.com has:attachment"


async def create_watch(client: httpx.AsyncClient, headers: dict[str, str], **trigger: str) -> str:
    response = await client.post(
        f"{API}/instructions", headers=headers,
        json=instruction_body(title="Invoices", text="Tell me about each new invoice.",
                              trigger={"type": "watch", **trigger}),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["next_run_at"] is None
    return str(body["id"])


async def _take_away(
    client: httpx.AsyncClient, headers: dict[str, str], instruction_id: Any, how: str
) -> None:
    """End a watch through the API: "deleted", "paused", or "trigger_changed" (to a
    daily schedule)."""
    if how == "deleted":
        answer = await client.delete(f"{API}/instructions/{instruction_id}", headers=headers)
    elif how == "paused":
        answer = await client.post(f"{API}/instructions/{instruction_id}/pause",
                                   headers=headers)
    else:
        answer = await client.patch(
            f"{API}/instructions/{instruction_id}", headers=headers,
            json={"trigger": {"type": "cron", "cron": "0 8 * * *", "timezone": "UTC"}},
        )
    assert answer.status_code in (200, 204), answer.text


async def test_a_watch_fires_once_per_matching_message_and_never_for_others(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    fake.add_message(EMAIL, sender="billing@example.com", subject="Old invoice", attachments=pdf(),
                     date=datetime.now(UTC) - timedelta(days=3))
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    watch = poller(runtime)

    first = await watch.run_once()  # never polled: due at once, and nothing new yet
    assert (first.polled, first.runs) == (1, [])

    invoice = fake.add_message(EMAIL, sender="Billing <billing@example.com>",
                               subject="Invoice 42", text="Amount due: 12 EUR", attachments=pdf())
    fake.add_message(EMAIL, sender="billing@example.com", subject="No attachment")
    fake.add_message(EMAIL, sender="bob@example.com", subject="A pdf", attachments=pdf())
    report = await watch.poll_accounts([account.id])

    assert len(report.runs) == 1
    runs = await watch_runs(runtime, instruction_id)
    assert fired_ids(runs) == [invoice]
    assert runs[0].trigger_item == {"account_id": str(account.id), "kind": "message",
                                    "id": invoice}
    assert runs[0].status == "queued"

    # Polled again (also by a new poller: a restart): nothing fires twice.
    fake.reset_counters()
    again = await poller(runtime).poll_accounts([account.id])
    assert again.runs == []
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [invoice]
    # Nothing changed: one history.list, 2 quota units, and no query.
    assert fake.quota_units(EMAIL) == 2
    assert [r.method_id for r in fake.requests] == ["gmail.users.history.list"]


class _Prompts:
    """The offline model, keeping each first prompt it is sent."""

    def __init__(self) -> None:
        self.inner = OfflineModel()
        self.name = self.inner.name
        self.prompts: list[str] = []

    async def turn(self, request: TurnRequest) -> TurnResponse:
        if isinstance(request.input, str):
            self.prompts.append(request.input)
        return await self.inner.turn(request)


async def test_run_now_on_a_watch_reads_what_came_since_the_run_it_covers_from(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """It read, as new, every mail of the first look-back (last week's too), under
    "since" the last watch run: a watch's runs leave the instruction's cursors alone."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    fake.add_message(EMAIL, sender="billing@example.com", subject="Last week's invoice",
                     attachments=pdf(), date=datetime.now(UTC) - timedelta(days=3))
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    watch = poller(runtime)
    await watch.run_once()
    fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 42",
                     attachments=pdf())
    assert len((await watch.poll_accounts([account.id])).runs) == 1
    model = _Prompts()
    worker = make_worker(runtime, model)
    assert await work_once(worker) == 1
    await asyncio.sleep(1.1)  # Gmail's after: counts in seconds
    fake.add_message(EMAIL, sender="carol@example.com", subject="Lunch on Friday")

    queued = await client.post(f"{API}/instructions/{instruction_id}/run", headers=headers)
    assert queued.status_code == 201, queued.text
    assert await work_once(worker) == 1
    manual = await get_run(runtime, uuid.UUID(queued.json()["id"]))
    assert manual.status == "succeeded", manual.error
    prompt = model.prompts[-1]
    assert "Lunch on Friday" in prompt
    assert "Last week's invoice" not in prompt


async def test_a_burst_of_30_matching_messages_in_one_poll_gives_30_runs(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    watch = poller(runtime)
    await watch.run_once()

    matching = []
    for n in range(30):
        matching.append(fake.add_message(EMAIL, sender="billing@example.com",
                                          subject=f"Invoice {n}", attachments=pdf()))
        fake.add_message(EMAIL, sender="bob@example.com", subject=f"Chatter {n}")
    report = await watch.poll_accounts([account.id])

    assert len(report.runs) == 30
    assert fired_ids(await watch_runs(runtime, instruction_id)) == sorted(matching)
    async with runtime.sessionmaker() as session:
        hits = (await session.execute(select(WatchHit))).scalars().all()
    assert sorted(h.item_id for h in hits) == sorted(matching)
    assert all(h.run_id is not None for h in hits)


async def test_an_expired_history_resyncs_without_firing_for_older_messages(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    watch = poller(runtime)
    await watch.run_once()
    first = fake.add_message(EMAIL, sender="billing@example.com", subject="One", attachments=pdf())
    await watch.poll_accounts([account.id])
    # Arrived before the last poll, but that poll never saw it (a mailbox import, or mail
    # that came while the history was out of reach): older than the watch's last poll.
    fake.add_message(EMAIL, sender="billing@example.com", subject="Imported", attachments=pdf(),
                     date=datetime.now(UTC) - timedelta(hours=2))
    async with runtime.sessionmaker() as session:
        before = (await session.execute(select(WatchCursor))).scalar_one()

    fake.expire_history(EMAIL)
    second = fake.add_message(EMAIL, sender="billing@example.com", subject="Two",
                              attachments=pdf())
    report = await watch.poll_accounts([account.id])

    assert report.resynced == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == sorted([first, second])
    async with runtime.sessionmaker() as session:
        after = (await session.execute(select(WatchCursor))).scalar_one()
    assert int(after.history_id or 0) == fake.history_id(EMAIL) > int(before.history_id or 0)
    assert after.version == before.version + 1


@pytest.mark.parametrize("history", ["kept", "expired"])
async def test_the_users_own_sent_mail_and_drafts_never_fire_also_after_a_resync(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle, history: str
) -> None:
    """Gmail's `messages.list` (a resync's query) answers sent mail and drafts too; a
    watch fires for the same mail whether its history was kept or had to be resynced."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query="subject:invoice")
    watch = poller(runtime)
    await watch.run_once()

    if history == "expired":
        fake.expire_history(EMAIL)
    fake.add_message(EMAIL, sender=EMAIL, to=["client@example.com"],
                     subject="Invoice 7 for you", labels=("SENT",))
    fake.add_message(EMAIL, sender=EMAIL, to=["client@example.com"],
                     subject="Invoice 8 (draft)", labels=("DRAFT",))
    to_self = fake.add_message(EMAIL, sender=EMAIL, to=[EMAIL], subject="Invoice 9 (a copy)",
                               labels=("SENT", "INBOX"))
    arrived = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 42")
    report = await watch.poll_accounts([account.id])

    assert report.resynced == (history == "expired")
    assert fired_ids(await watch_runs(runtime, instruction_id)) == sorted([to_self, arrived])


@pytest.mark.parametrize("cap", ["read through", "too long: resynced"])
async def test_mail_read_in_bulk_does_not_hold_back_a_watch(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
    monkeypatch: pytest.MonkeyPatch, cap: str,
) -> None:
    """Reading or archiving mail is a labelsRemoved record in the history the poller reads
    (it asks for labelRemoved to see mail rescued from spam): thousands of them (5 here,
    the history budget shrunk to 2 x 2 records) do not stop the poll before the invoice
    that came after; past the cap on pages in all (2 here), the poll resyncs and fires
    it all the same."""
    monkeypatch.setattr(gmail, "HISTORY_PAGE", 2)
    monkeypatch.setattr(gmail, "HISTORY_PAGES_MAX", 2)
    if cap != "read through":
        monkeypatch.setattr(gmail, "HISTORY_SCAN_PAGES_MAX", 2)
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query="subject:invoice")
    watch = poller(runtime)
    await watch.run_once()
    old = [fake.add_message(EMAIL, sender="news@example.com", subject=f"News {n}")
           for n in range(5)]
    await watch.poll_accounts([account.id])

    for mid in old:  # "mark all as read"
        fake.modify_labels(EMAIL, mid, remove=["UNREAD"])
    invoice = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 42")
    report = await watch.poll_accounts([account.id])

    assert report.resynced == (cap != "read through")
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [invoice]


async def test_mail_taken_out_of_spam_fires_a_watch_once(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """"Not spam" adds no message to Gmail's history (a labelsRemoved SPAM record): the
    invoice arrives then, though more than a query's margin of newer invoices came
    since; to the trash and back, it does not fire again."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query="subject:invoice")
    watch = poller(runtime)
    await watch.run_once()

    spam = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 1",
                            labels=("SPAM", "UNREAD"))
    soon = datetime.now(UTC) + timedelta(seconds=5)  # later than the spam (not the watch)
    newer = [fake.add_message(EMAIL, sender="billing@example.com", subject=f"Invoice {n}",
                              date=soon + timedelta(seconds=n))
             for n in range(2, 60)]
    await watch.poll_accounts([account.id])
    assert fired_ids(await watch_runs(runtime, instruction_id)) == sorted(newer)

    fake.modify_labels(EMAIL, spam, add=["INBOX"], remove=["SPAM"])
    report = await watch.poll_accounts([account.id])
    assert len(report.runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == sorted([spam, *newer])

    fake.modify_labels(EMAIL, spam, add=["TRASH"])
    fake.modify_labels(EMAIL, spam, remove=["TRASH"])
    again = await watch.poll_accounts([account.id])
    assert again.runs == []


async def test_mail_taken_out_of_spam_fires_only_a_watch_it_matches_and_is_new_to(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    old = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 0",
                           labels=("SPAM",), date=datetime.now(UTC) - timedelta(days=2))
    instruction_id = await create_watch(client, headers, gmail_query="subject:invoice")
    watch = poller(runtime)
    await watch.run_once()
    other = fake.add_message(EMAIL, sender="bob@example.com", subject="Lunch",
                             labels=("SPAM",))
    await watch.poll_accounts([account.id])

    # Older than the watch, or not matching its query: rescued, but no run.
    fake.modify_labels(EMAIL, old, add=["INBOX"], remove=["SPAM"])
    fake.modify_labels(EMAIL, other, add=["INBOX"], remove=["SPAM"])
    report = await watch.poll_accounts([account.id])
    assert report.runs == []
    assert await watch_runs(runtime, instruction_id) == []


async def test_a_drive_folder_watch_fires_for_new_or_changed_files_in_that_folder_only(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Meeting notes",
                           mime_type="application/vnd.google-apps.folder")
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    watch = poller(runtime)
    await watch.run_once()

    notes = fake.add_file(EMAIL, name="Standup 23 Nov", content="Ship the watch.",
                          parents=(folder,))
    fake.add_file(EMAIL, name="Elsewhere", content="Not watched.", parents=("root",))
    report = await watch.poll_accounts([account.id])

    assert len(report.runs) == 1
    runs = await watch_runs(runtime, instruction_id)
    assert runs[0].trigger_item == {"account_id": str(account.id), "kind": "file", "id": notes}

    assert (await watch.poll_accounts([account.id])).runs == []
    fake.update_file(EMAIL, notes, content="Ship the watch. Then the push.")
    changed = await watch.poll_accounts([account.id])
    assert len(changed.runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [notes, notes]


async def test_a_file_added_before_the_first_poll_of_a_folder_watch_still_fires(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Invoices",
                           mime_type="application/vnd.google-apps.folder")
    old = fake.add_file(EMAIL, name="Last year", content="Paid.", parents=(folder,),
                        modified=datetime.now(UTC) - timedelta(days=30))
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    # Between the watch's creation and the poller's first look at the account.
    early = fake.add_file(EMAIL, name="Invoice 1107", content="Due Friday.",
                          parents=(folder,))
    fake.add_file(EMAIL, name="Elsewhere", content="Not watched.", parents=("root",))
    watch = poller(runtime)

    first = await watch.poll_accounts([account.id])
    assert len(first.runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [early]
    # The change list has started: the next poll fires nothing again, a new file once.
    assert (await watch.poll_accounts([account.id])).runs == []
    later = fake.add_file(EMAIL, name="Invoice 1108", content="Due Monday.",
                          parents=(folder,))
    assert len((await watch.poll_accounts([account.id])).runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [early, later]
    assert old not in fired_ids(await watch_runs(runtime, instruction_id))


async def test_a_folder_watch_on_a_shared_drive_folder_fires_for_its_new_files(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """Drive leaves shared-drive items out of the change list and of folder listings unless
    the call opts in: without it such a watch is accepted and then never fires."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    team = fake.add_shared_drive(EMAIL, "Finance team")
    folder = fake.add_file(EMAIL, name="Invoices",
                           mime_type="application/vnd.google-apps.folder", parents=(team,))
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    # Before the poller's first look: found by listing the folder.
    early = fake.add_file(EMAIL, name="Invoice 1107", content="Due Friday.", parents=(folder,))
    fake.add_file(EMAIL, name="Elsewhere", content="Not watched.", parents=(team,))
    watch = poller(runtime)
    assert len((await watch.poll_accounts([account.id])).runs) == 1

    # After it: found in the change list.
    later = fake.add_file(EMAIL, name="Invoice 1108", content="Due Monday.", parents=(folder,))
    assert len((await watch.poll_accounts([account.id])).runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == sorted([early, later])
    assert (await watch.poll_accounts([account.id])).runs == []


async def test_a_file_uploaded_with_its_own_older_date_fires_a_folder_watch(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """Drive for desktop and API uploads keep a file's modifiedTime (a scan from last
    week): the file is new to the folder all the same, whether it comes before the first
    poll (read from the folder by createdTime) or after (from the change list)."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Invoices", mime_type=FOLDER)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    last_week = datetime.now(UTC) - timedelta(days=7)
    early = fake.add_file(EMAIL, name="invoice-1106.pdf", mime_type="application/pdf",
                          content=PDF, parents=(folder,), modified=last_week)
    watch = poller(runtime)
    await watch.run_once()
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [early]

    later = fake.add_file(EMAIL, name="invoice-1107.pdf", mime_type="application/pdf",
                          content=PDF, parents=(folder,), modified=last_week)
    assert len((await watch.poll_accounts([account.id])).runs) == 1
    assert (await watch.poll_accounts([account.id])).runs == []
    assert fired_ids(await watch_runs(runtime, instruction_id)) == sorted([early, later])


async def test_a_file_moved_into_a_watched_folder_fires_and_a_mere_star_does_not(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """A move leaves modifiedTime as it was; the change list reports the file with its new
    parents. Drive also reports files whose metadata alone changed (starred, viewed): a
    file that was in the folder before the watch began never fires for that, nor does the
    moved one fire again."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    # Another watch first: the account's change list is running when the folder watch
    # starts, so the folder watch starts from it, not from a first poll.
    other = fake.add_file(EMAIL, name="Other", mime_type=FOLDER)
    await create_watch(client, headers, drive_folder_id=other)
    watch = poller(runtime)
    await watch.run_once()

    folder = fake.add_file(EMAIL, name="To review", mime_type=FOLDER)
    there = fake.add_file(EMAIL, name="Old contract", content="Old terms.",
                          parents=(folder,), modified=two_days_ago, created=two_days_ago)
    draft = fake.add_file(EMAIL, name="Contract draft", content="Terms.",
                          parents=("root",), modified=two_days_ago, created=two_days_ago)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    await watch.poll_accounts([account.id])
    assert await watch_runs(runtime, instruction_id) == []

    fake.update_file(EMAIL, draft, parents=[folder])
    assert len((await watch.poll_accounts([account.id])).runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [draft]

    fake.star_file(EMAIL, there)
    fake.star_file(EMAIL, draft)
    assert (await watch.poll_accounts([account.id])).runs == []
    # Out and back again: the same version of the file, already reported.
    fake.update_file(EMAIL, draft, parents=["root"])
    await watch.poll_accounts([account.id])
    fake.update_file(EMAIL, draft, parents=[folder])
    assert (await watch.poll_accounts([account.id])).runs == []
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [draft]


async def poll_at(runtime: Runtime, watch: WatchPoller, account: Account,
                  now: datetime) -> PollReport:
    """Poll the account as if the clock said `now` (a settle period passes at once)."""
    async with transaction(runtime.sessionmaker) as session:
        due = await watch_service.watched_accounts(
            session=session, now=now, account_ids=[account.id]
        )
    return await watch.poll(due, now)


def settling_poller(runtime: Runtime, seconds: float = 300) -> WatchPoller:
    settings = runtime.settings.model_copy(update={"google_watch_settle_seconds": seconds})
    return WatchPoller(
        sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups, settings=settings
    )


async def _a_draft_settling(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> tuple[dict[str, str], Account, str, WatchPoller, str]:
    """A folder watch (settling for 300 s) whose folder just got a draft: polled once,
    the draft's version waits. Returns the auth headers, the account, the instruction's
    id, the poller and the draft's file id."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Drafts", mime_type=FOLDER)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    watch = settling_poller(runtime)
    await watch.run_once()
    draft = fake.add_file(EMAIL, name="Draft", content="Half", parents=(folder,))
    assert (await watch.poll_accounts([account.id])).runs == []
    return headers, account, instruction_id, watch, draft


async def test_a_doc_written_across_several_polls_fires_once_when_it_rests(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """A doc autosaves between every two polls while it is written: its versions wait
    (in the database: a restarted poller still has them) until one has rested for the
    settle time, and that one fires. A file moved in with an older date fires at once."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Meeting notes", mime_type=FOLDER)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    watch = settling_poller(runtime)
    await watch.run_once()

    notes = fake.add_file(EMAIL, name="Standup", content="- ", parents=(folder,))
    agenda = fake.add_file(EMAIL, name="Agenda", content="1.", parents=("root",),
                           modified=datetime.now(UTC) - timedelta(days=1))
    fake.update_file(EMAIL, agenda, parents=[folder])
    assert len((await watch.poll_accounts([account.id])).runs) == 1
    for minute in range(1, 6):
        fake.update_file(EMAIL, notes, content=f"- point {minute}")
        assert (await watch.poll_accounts([account.id])).runs == []
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [agenda]

    restarted = settling_poller(runtime)
    rested = datetime.now(UTC) + timedelta(seconds=301)
    assert len((await poll_at(runtime, restarted, account, rested)).runs) == 1
    assert (await poll_at(runtime, restarted, account, rested)).runs == []
    assert fired_ids(await watch_runs(runtime, instruction_id)) == sorted([agenda, notes])
    async with runtime.sessionmaker() as session:
        hits = (await session.execute(
            select(WatchHit.item_id).where(WatchHit.kind == "file",
                                           WatchHit.item_id.startswith(notes))
        )).scalars().all()
    last = fake.account(EMAIL).drive.files[notes].modified
    assert [datetime.fromisoformat(h.split("@", 1)[1]) for h in hits] == [
        last.replace(microsecond=last.microsecond // 1000 * 1000)
    ]


async def test_a_version_waiting_to_settle_when_its_watch_is_paused_never_fires(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    headers, account, instruction_id, watch, draft = await _a_draft_settling(
        client, runtime, fake)

    for action in ("pause", "resume"):
        answer = await client.post(f"{API}/instructions/{instruction_id}/{action}",
                                   headers=headers)
        assert answer.status_code == 200, answer.text
    later = datetime.now(UTC) + timedelta(seconds=301)
    assert (await poll_at(runtime, watch, account, later)).runs == []
    # A version written after the resume waits and fires as usual.
    fake.update_file(EMAIL, draft, content="Whole")
    assert (await watch.poll_accounts([account.id])).runs == []
    assert len((await poll_at(runtime, watch, account, later + timedelta(seconds=1))).runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [draft]


async def test_a_watch_run_for_a_google_doc_too_large_to_export_succeeds(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """files.export stops at 10 MB (403 exportSizeLimitExceeded): the run still reports the
    file instead of failing on every attempt (and counting towards the failure limit)."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Minutes",
                           mime_type="application/vnd.google-apps.folder")
    await create_watch(client, headers, drive_folder_id=folder)
    watch = poller(runtime)
    await watch.run_once()

    fake.add_file(EMAIL, name="Board pack", content="x" * (10 * 1024 * 1024 + 10),
                  parents=(folder,))
    (run_id,) = (await watch.poll_accounts([account.id])).runs
    await work_once(make_worker(runtime))

    run = await get_run(runtime, run_id)
    assert (run.status, run.attempt, run.error) == ("succeeded", 1, None)


@pytest.mark.parametrize("refusal", ["restricted", "abusive", "quota"])
async def test_a_watch_run_for_a_file_drive_will_not_download_succeeds(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle, refusal: str,
) -> None:
    """files.get alt=media answers 403 for a file that is there but whose content cannot
    be had: its owner disabled download for viewers (cannotDownloadFile), it is flagged as
    malware (cannotDownloadAbusiveFile), or its download quota is used up
    (downloadQuotaExceeded, for hours). The watch run reports the file with a note
    instead of failing on every attempt and counting towards the failure limit."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Minutes", mime_type=FOLDER)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    watch = poller(runtime)
    await watch.run_once()

    notes = fake.add_file(EMAIL, name="notes.txt", mime_type="text/plain",
                          content="Board notes.", parents=(folder,))
    if refusal == "restricted":
        fake.restrict_download(EMAIL, notes, owner="carol@example.com")
    elif refusal == "abusive":
        fake.flag_abuse(EMAIL, notes)
    else:
        fake.exceed_download_quota(EMAIL, notes)
    (run_id,) = (await watch.poll_accounts([account.id])).runs
    await work_once(make_worker(runtime))

    run = await get_run(runtime, run_id)
    assert (run.status, run.attempt, run.error) == ("succeeded", 1, None)
    body = (await client.get(f"{API}/instructions/{instruction_id}", headers=headers)).json()
    assert (body["status"], body["consecutive_failures"]) == ("active", 0)
    media = [r for r in fake.requests if r.query.get("alt") == "media"]
    assert media
    assert not any(r.query.get("acknowledgeAbuse") for r in media)


async def test_the_cron_tick_leaves_watch_instructions_to_the_poller(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query="from:boss@example.com")
    tick = SchedulerTick(sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
                         settings=runtime.settings)
    assert await tick.run_once() == 0
    body = (await client.get(f"{API}/instructions/{instruction_id}", headers=headers)).json()
    assert body["next_run_at"] is None
    assert body["schedule"] == "When new mail matches 'from:boss@example.com'"


@pytest.mark.parametrize(
    ("scopes", "trigger", "fragment"),
    [
        pytest.param(None, {"gmail_query": "from:boss"}, "needs a connected Google account",
                     id="no-account"),
        pytest.param([GMAIL_READONLY], {"drive_folder_id": "folder1"}, "drive.readonly",
                     id="drive-not-granted"),
    ],
)
async def test_a_watch_without_a_google_account_that_can_serve_it_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
    scopes: list[str] | None, trigger: dict[str, str], fragment: str,
) -> None:
    user, headers = await user_with_token(runtime)  # the sample mailbox cannot be watched
    if scopes is not None:
        await google_account(runtime, user, fake, scopes=scopes)
    response = await client.post(
        f"{API}/instructions", headers=headers,
        json=instruction_body(trigger={"type": "watch", **trigger}),
    )
    assert response.status_code == 422
    assert response.json()["error"] == "WatchNeedsGoogle"
    assert fragment in response.json()["detail"]
    assert (await client.get(f"{API}/instructions", headers=headers)).json()["items"] == []


async def test_a_watch_paused_by_its_accounts_removal_resumes_only_once_it_is_back(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """Resumed with no Google account to serve it, a watch would be active and never fire:
    the resume is refused, saying what to connect, until the account is back."""
    user, headers = await user_with_token(runtime)  # the sample mailbox cannot be watched
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    removed = await client.delete(f"{API}/accounts/{account.id}", headers=headers)
    assert removed.status_code == 204, removed.text
    url = f"{API}/instructions/{instruction_id}"
    assert (await client.get(url, headers=headers)).json()["status"] == "paused"

    refused = await client.post(f"{url}/resume", headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "WatchNeedsGoogle"
    assert "connect one at /api/v1/google/connect" in refused.json()["detail"]
    assert (await client.get(url, headers=headers)).json()["status"] == "paused"

    await google_account(runtime, user, fake)
    resumed = await client.post(f"{url}/resume", headers=headers)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "active"


async def test_mail_that_came_while_a_watch_was_paused_never_fires(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    watch = poller(runtime)
    await watch.run_once()
    paused = await client.post(f"{API}/instructions/{instruction_id}/pause", headers=headers)
    assert paused.status_code == 200, paused.text

    fake.add_message(EMAIL, sender="billing@example.com", subject="While paused",
                     attachments=pdf(), date=datetime.now(UTC) - timedelta(seconds=5))
    assert (await watch.poll_accounts([account.id])).polled == 0  # nothing to watch for
    resumed = await client.post(f"{API}/instructions/{instruction_id}/resume", headers=headers)
    assert resumed.status_code == 200, resumed.text
    after = fake.add_message(EMAIL, sender="billing@example.com", subject="After resume",
                             attachments=pdf())
    report = await watch.poll_accounts([account.id])

    assert len(report.runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [after]


async def test_editing_a_watch_without_changing_its_trigger_loses_no_mail(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """The dashboard sends the trigger with every save: a title edit made between a
    message's arrival and the next poll must not move the watch's start past it."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    watch = poller(runtime)
    await watch.run_once()
    invoice = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 43",
                               attachments=pdf())
    await asyncio.sleep(1.1)  # Gmail's after: counts whole seconds
    edited = await client.patch(
        f"{API}/instructions/{instruction_id}", headers=headers,
        json={"title": "Invoices, renamed",
              "trigger": {"type": "watch", "gmail_query": BILLING}},
    )
    assert edited.status_code == 200, edited.text
    report = await watch.poll_accounts([account.id])

    assert len(report.runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [invoice]


async def test_a_revoked_grant_disconnects_the_account_and_pauses_its_watches(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    watch = poller(runtime)
    await watch.run_once()
    fake.revoke(EMAIL)
    fake.expire_access_tokens()

    report = await watch.poll_accounts([account.id])

    assert report.disconnected == 1
    body = (await client.get(f"{API}/instructions/{instruction_id}", headers=headers)).json()
    assert body["status"] == "paused"
    accounts = (await client.get(f"{API}/accounts", headers=headers)).json()
    assert [a["status"] for a in accounts] == ["disconnected"]
    feed = (await client.get(f"{API}/notifications", headers=headers)).json()["items"]
    assert len(feed) == 1
    assert "/api/v1/google/connect" in feed[0]["body"]
    # Nothing is watched any more: the next poll leaves the account alone.
    assert (await watch.run_once()).polled == 0


async def test_an_account_that_loses_gmail_keeps_its_drive_watches_and_says_so_once(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """An administrator turns Gmail off after the account was connected: the poll records
    the account as mailbox-less, pauses its mail watch (nothing could fire it) and tells
    the user once, and polls Drive on: the folder watch fires as before, with Gmail left
    alone from then on."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Invoices", mime_type=FOLDER)
    mail_watch = await create_watch(client, headers, gmail_query=BILLING)
    folder_watch = await create_watch(client, headers, drive_folder_id=folder)
    watch = poller(runtime)
    await watch.run_once()

    fake.disable_gmail(EMAIL)
    first = fake.add_file(EMAIL, name="Invoice 1", content="120 EUR", parents=(folder,))
    report = await watch.poll_accounts([account.id])

    assert fired_ids(await watch_runs(runtime, folder_watch)) == [first]
    assert (report.no_mailbox, report.failed) == (1, 0)
    body = (await client.get(f"{API}/instructions/{mail_watch}", headers=headers)).json()
    assert body["status"] == "paused"
    assert "Gmail is off" in body["status_detail"]
    body = (await client.get(f"{API}/instructions/{folder_watch}", headers=headers)).json()
    assert body["status"] == "active"
    (shown,) = (await client.get(f"{API}/accounts", headers=headers)).json()
    assert shown["status"] == "active"
    assert shown["features"] == {"gmail": False, "drive": True, "gmail_send": False}
    (alert,) = (await client.get(f"{API}/notifications", headers=headers)).json()["items"]
    assert "Gmail is not enabled" in alert["body"]
    assert "1 watch instruction(s) on its mail are paused" in alert["body"]

    fake.reset_counters()
    second = fake.add_file(EMAIL, name="Invoice 2", content="80 EUR", parents=(folder,))
    report = await watch.poll_accounts([account.id])
    assert (report.no_mailbox, report.failed) == (0, 0)
    assert fired_ids(await watch_runs(runtime, folder_watch)) == sorted([first, second])
    assert not [r for r in fake.requests if "/gmail/" in r.path]
    assert len((await client.get(f"{API}/notifications", headers=headers)).json()["items"]) == 1


async def test_a_push_that_comes_during_a_poll_is_polled_at_once(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle
) -> None:
    """Gmail pushes for mail that arrived just after the poll in flight read the history:
    the poll's own next poll time (an hour here) must not overwrite the push's "now"."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    arrived: list[str] = []

    def sources(account: Account, settings: Settings) -> Source | None:
        source = source_for(account, settings)
        assert isinstance(source, GoogleSource)
        read_history = source.mail_changes

        async def mail_changes(start: str | None) -> MailChanges:
            changes = await read_history(start)
            if start is not None and not arrived:  # the second poll, once
                arrived.append(fake.add_message(EMAIL, sender="billing@example.com",
                                                subject="Invoice", attachments=pdf()))
                async with transaction(runtime.sessionmaker) as session:  # the push
                    await watch_service.poll_now(session=session, email=EMAIL,
                                                 now=await db_now(session))
            return changes

        source.mail_changes = mail_changes  # type: ignore[method-assign]
        return source

    watch = WatchPoller(sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
                        settings=runtime.settings, sources=sources)
    await watch.run_once()  # the account's first poll: its cursor starts here
    assert (await watch.poll_accounts([account.id])).runs == []
    assert arrived  # the push came while that poll ran

    report = await watch.run_once()  # the push woke the loop: it polls at once
    assert fired_ids(await watch_runs(runtime, instruction_id)) == arrived
    assert len(report.runs) == 1


async def _pending_files(runtime: Runtime) -> int:
    async with runtime.sessionmaker() as session:
        return (await session.execute(
            select(func.count()).select_from(WatchPendingFile))).scalar_one()


@pytest.mark.parametrize("how", ["trashed", "deleted", "moved_out"])
async def test_a_file_that_leaves_the_folder_while_it_settles_never_fires(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle, how: str,
) -> None:
    """A version waiting to settle is dropped when its file leaves the folder (trashed,
    deleted, moved out) before it rests: no run about a file no longer there."""
    headers, account, instruction_id, watch, draft = await _a_draft_settling(
        client, runtime, fake)
    assert await _pending_files(runtime) == 1
    if how == "trashed":
        fake.update_file(EMAIL, draft, trashed=True)
    elif how == "deleted":
        fake.delete_file(EMAIL, draft)
    else:
        fake.update_file(EMAIL, draft, parents=["root"])
    assert (await watch.poll_accounts([account.id])).runs == []
    assert await _pending_files(runtime) == 0
    later = datetime.now(UTC) + timedelta(seconds=301)
    assert (await poll_at(runtime, watch, account, later)).runs == []
    assert await watch_runs(runtime, instruction_id) == []


async def test_a_file_dated_in_the_future_fires_once_it_has_rested_since_it_was_seen(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
) -> None:
    """An uploader may date its file ahead of the clock (Drive for desktop keeps a local
    file's date; a wrong device clock): it rests the settle time from when it was seen,
    not from its date (here a day ahead)."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Scans", mime_type=FOLDER)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    watch = settling_poller(runtime)
    await watch.run_once()
    scan = fake.add_file(EMAIL, name="scan.pdf", mime_type="application/pdf", content=PDF,
                         parents=(folder,), modified=datetime.now(UTC) + timedelta(days=1),
                         created=datetime.now(UTC))
    assert (await watch.poll_accounts([account.id])).runs == []
    later = datetime.now(UTC) + timedelta(seconds=400)
    assert len((await poll_at(runtime, watch, account, later)).runs) == 1
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [scan]


@pytest.mark.parametrize("how", ["deleted", "trigger_changed"])
async def test_a_folder_watch_deleted_or_changed_keeps_no_membership_or_waiting_rows(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle, how: str,
) -> None:
    """What only a folder watch's polling needs (its folder's membership, up to 10,000
    rows, and the versions waiting to settle) goes when the instruction is deleted (a
    soft delete: its runs stay) or its trigger becomes something else."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Archive", mime_type=FOLDER)
    for n in range(5):
        fake.add_file(EMAIL, name=f"old-{n}", content="x", parents=(folder,),
                      modified=datetime.now(UTC) - timedelta(days=30),
                      created=datetime.now(UTC) - timedelta(days=30))
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    watch = settling_poller(runtime)
    await watch.run_once()
    fake.add_file(EMAIL, name="Draft", content="Half", parents=(folder,))
    await watch.poll_accounts([account.id])
    assert await _pending_files(runtime) == 1
    await _take_away(client, headers, instruction_id, how)
    await poll_at(runtime, watch, account, datetime.now(UTC) + timedelta(seconds=400))
    async with runtime.sessionmaker() as session:
        marks = (await session.execute(select(func.count()).select_from(WatchHit).where(
            WatchHit.kind.in_([watch_service.MEMBER, watch_service.SNAPSHOT])))).scalar_one()
    assert (marks, await _pending_files(runtime)) == (0, 0)
    assert await watch_runs(runtime, instruction_id) == []


async def test_an_older_version_read_late_does_not_drop_a_newer_one_waiting(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
) -> None:
    """Two schedulers read the change list from the same page token: A just before the
    user edits a doc that had rested (V1: fires at once), B just after (V2: waits). B
    writes first; A's V1 fires and leaves V2 waiting, which fires once it rests."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Notes", mime_type=FOLDER)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    watch = settling_poller(runtime)
    await watch.run_once()
    async with transaction(runtime.sessionmaker) as session:
        (watched,) = await watch_service.watched_accounts(
            session=session, now=datetime.now(UTC), account_ids=[account.id])
    (watcher,) = watched.watchers
    now, settle = datetime.now(UTC), timedelta(seconds=300)
    v1_at, v2_at = now - timedelta(seconds=400), now - timedelta(seconds=5)
    v1 = FileVersion(id="doc1", modified=v1_at, key=f"doc1@{v1_at.isoformat()}")
    v2 = FileVersion(id="doc1", modified=v2_at, key=f"doc1@{v2_at.isoformat()}")
    for version in (v2, v1):  # B writes first, then A (which read earlier)
        async with transaction(runtime.sessionmaker) as session:
            await watch_service.record_folder_changes(
                session=session, watcher=watcher, account_id=account.id,
                versions=[version], older=[], left=[], now=now, settle=settle)
    assert len(await watch_runs(runtime, instruction_id)) == 1  # V1
    assert await _pending_files(runtime) == 1  # V2
    async with transaction(runtime.sessionmaker) as session:
        await watch_service.fire_settled(session=session, watchers=[watcher],
                                         account_id=account.id,
                                         now=now + timedelta(seconds=400))
    assert len(await watch_runs(runtime, instruction_id)) == 2


class _HeldFolder:
    """A source whose change list read is announced (`read`) and whose folder read (the
    snapshot) waits for `release`."""

    def __init__(self, inner: Any, read: asyncio.Event, release: asyncio.Event) -> None:
        self.inner, self.read, self.release = inner, read, release

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def file_changes(self, token: Any) -> Any:
        answer = await self.inner.file_changes(token)
        self.read.set()
        return answer

    async def folder_file_ids(self, folder_id: str, *, limit: int) -> list[str]:
        await self.release.wait()
        return list(await self.inner.folder_file_ids(folder_id, limit=limit))


WatchableSource.register(_HeldFolder)


async def test_a_late_second_snapshot_does_not_drop_a_version_waiting_to_settle(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
) -> None:
    """A resumed watch wakes every scheduler: two poll the account from the same cursor
    and both read the folder for its snapshot. B reads the change list first; A reads it
    after a doc was written in the folder, takes the snapshot, keeps the doc waiting to
    settle and moves the cursor on; B's snapshot lands late and changes nothing. The doc
    fires once it has rested."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Minutes", mime_type=FOLDER)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    plain = settling_poller(runtime)
    await plain.run_once()
    for action in ("pause", "resume"):
        answer = await client.post(f"{API}/instructions/{instruction_id}/{action}",
                                   headers=headers)
        assert answer.status_code == 200, answer.text

    read, release = asyncio.Event(), asyncio.Event()
    held = WatchPoller(sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
                       settings=plain.settings,
                       sources=lambda a, s: _HeldFolder(source_for(a, s), read, release))
    async with transaction(runtime.sessionmaker) as session:
        now = await db_now(session)
        due = await watch_service.watched_accounts(session=session, now=now,
                                                   account_ids=[account.id])
    late = asyncio.create_task(held.poll(due, now))
    await asyncio.wait_for(read.wait(), 10)
    doc = fake.add_file(EMAIL, name="Board minutes", content="Draft", parents=(folder,))
    async with transaction(runtime.sessionmaker) as session:
        due = await watch_service.watched_accounts(session=session, now=now,
                                                   account_ids=[account.id])
    assert (await plain.poll(due, now)).cursor_conflicts == 0
    assert await _pending_files(runtime) == 1
    release.set()
    await asyncio.wait_for(late, 10)
    assert await _pending_files(runtime) == 1

    await poll_at(runtime, plain, account, datetime.now(UTC) + timedelta(seconds=400))
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [doc]


class _Held:
    """A source whose `method` announces that it was reached (`reached`) and waits for
    `release` before it answers: a poll held there, between reading its watchers and
    writing what it found."""

    def __init__(self, inner: Any, method: str, reached: asyncio.Event,
                 release: asyncio.Event) -> None:
        self.inner, self.method, self.reached, self.release = inner, method, reached, release

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if name != self.method:
            return found

        async def held(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            await self.release.wait()
            return await found(*args, **kwargs)

        return held


WatchableSource.register(_Held)


async def _hold_a_poll(
    runtime: Runtime, account: Account, watch: WatchPoller, method: str
) -> tuple[asyncio.Task[PollReport], asyncio.Event]:
    """A poll of the account that read its watchers and now waits in `method`; returns
    the poll and the event that lets it go on."""
    reached, release = asyncio.Event(), asyncio.Event()
    held = WatchPoller(sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
                       settings=watch.settings,
                       sources=lambda a, s: _Held(source_for(a, s), method, reached, release))
    async with transaction(runtime.sessionmaker) as session:
        now = await db_now(session)
        due = await watch_service.watched_accounts(session=session, now=now,
                                                   account_ids=[account.id])
    assert [w.id for d in due for w in d.watchers]
    poll = asyncio.create_task(held.poll(due, now))
    await asyncio.wait_for(reached.wait(), 10)
    return poll, release


async def _folder_rows(runtime: Runtime) -> tuple[int, int]:
    """(membership and snapshot rows, versions waiting to settle)."""
    async with runtime.sessionmaker() as session:
        marks = (await session.execute(select(func.count()).select_from(WatchHit).where(
            WatchHit.kind.in_([watch_service.MEMBER, watch_service.SNAPSHOT])))).scalar_one()
    return marks, await _pending_files(runtime)


@pytest.mark.parametrize("held", ["folder_file_ids", "folder_files"])
@pytest.mark.parametrize("how", ["deleted", "trigger_changed"])
async def test_a_poll_in_flight_when_a_folder_watch_is_deleted_writes_nothing_back(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle, how: str, held: str,
) -> None:
    """A poll reads its watchers, then waits for Drive: reading the folder for the
    watch's snapshot (before any write), or for the files that came since the watch
    began (after the snapshot). The instruction is deleted (or its trigger changed),
    which forgets its folder, meanwhile: the poll then writes no membership, snapshot,
    waiting version or run for it, so none stays behind for ever."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Scans", mime_type=FOLDER)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    fake.add_file(EMAIL, name="rested.pdf", mime_type="application/pdf", content=PDF,
                  parents=(folder,), modified=hour_ago)  # created now: fires at once
    fake.add_file(EMAIL, name="Draft", content="Half", parents=(folder,))  # waits
    watch = settling_poller(runtime)

    poll, release = await _hold_a_poll(runtime, account, watch, held)
    await _take_away(client, headers, instruction_id, how)
    release.set()
    report = await asyncio.wait_for(poll, 10)

    assert (report.failed, report.runs) == (0, [])
    assert await _folder_rows(runtime) == (0, 0)
    assert await watch_runs(runtime, instruction_id) == []


async def test_a_folder_watch_polled_while_nothing_interferes_keeps_its_rows(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
) -> None:
    """The same poll, held the same way, with the instruction left alone: it writes
    the snapshot, the membership, the waiting version and the run (what the test above
    shows is left out is there to leave out)."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Scans", mime_type=FOLDER)
    instruction_id = await create_watch(client, headers, drive_folder_id=folder)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    rested = fake.add_file(EMAIL, name="rested.pdf", mime_type="application/pdf",
                           content=PDF, parents=(folder,), modified=hour_ago)
    fake.add_file(EMAIL, name="Draft", content="Half", parents=(folder,))
    watch = settling_poller(runtime)

    poll, release = await _hold_a_poll(runtime, account, watch, "folder_file_ids")
    release.set()
    report = await asyncio.wait_for(poll, 10)

    assert len(report.runs) == 1
    assert await _folder_rows(runtime) == (3, 1)  # the snapshot's mark, two members
    assert fired_ids(await watch_runs(runtime, instruction_id)) == [rested]


async def test_a_poll_in_flight_when_a_mail_watch_is_deleted_queues_no_run(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
) -> None:
    """A mail watch's poll waits for Gmail's answer to its query while the instruction is
    deleted: the message it then finds fires no run for the deleted instruction."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction_id = await create_watch(client, headers, gmail_query=BILLING)
    watch = poller(runtime)
    await watch.run_once()
    fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 7",
                     attachments=pdf())

    poll, release = await _hold_a_poll(runtime, account, watch, "search_mail_ids")
    answer = await client.delete(f"{API}/instructions/{instruction_id}", headers=headers)
    assert answer.status_code in (200, 204), answer.text
    release.set()
    report = await asyncio.wait_for(poll, 10)

    assert (report.failed, report.runs) == (0, [])
    assert await watch_runs(runtime, instruction_id) == []


async def _cursor(runtime: Runtime, account: Account) -> WatchCursor:
    async with runtime.sessionmaker() as session:
        return (await session.execute(
            select(WatchCursor).where(WatchCursor.account_id == account.id)
        )).scalar_one()


@pytest.mark.parametrize("how", ["resumed", "query_changed"])
async def test_mail_arriving_after_a_watch_is_resumed_during_a_poll_fires_once(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle, how: str,
) -> None:
    """A poll reads its watchers and waits for Gmail's history; meanwhile the user pauses
    and resumes the watch (or changes its query: its start moves on either way), and
    then an invoice arrives. The poll finds it, but may not write for the watch as it
    read it: it leaves the account's history cursor where it was, and the next poll,
    which reads the watch as it is now, fires the invoice. Another watch of the account
    that did write in the first poll reads the same history again and fires nothing
    twice."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    resumed = await create_watch(client, headers, gmail_query=BILLING)
    other = await create_watch(client, headers, gmail_query="subject:invoice")
    watch = poller(runtime)
    await watch.run_once()  # the account's history cursor is set
    before = await _cursor(runtime, account)

    poll, release = await _hold_a_poll(runtime, account, watch, "mail_changes")
    if how == "resumed":
        for step in ("pause", "resume"):
            answer = await client.post(f"{API}/instructions/{resumed}/{step}",
                                       headers=headers)
            assert answer.status_code == 200, answer.text
    else:
        answer = await client.patch(
            f"{API}/instructions/{resumed}", headers=headers,
            json={"trigger": {"type": "watch", "gmail_query": "from:billing@example.com"}},
        )
        assert answer.status_code == 200, answer.text
    message = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 8",
                               attachments=pdf())  # after the resume
    release.set()
    report = await asyncio.wait_for(poll, 10)
    assert report.failed == 0
    assert len(report.runs) == 1  # the other watch's
    assert (await _cursor(runtime, account)).history_id == before.history_id
    for _ in range(2):  # later polls
        await watch.poll_accounts([account.id])

    assert fired_ids(await watch_runs(runtime, resumed)) == [message]
    assert fired_ids(await watch_runs(runtime, other)) == [message]
    assert (await _cursor(runtime, account)).history_id != before.history_id


async def test_a_file_arriving_after_a_folder_watch_is_resumed_during_a_poll_fires_once(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
) -> None:
    """The same for a Drive folder watch: the poll waits for Drive's change list, the
    watch is paused and resumed, a scan is uploaded to the folder. The poll's writes
    for the watch as it read it are refused, so the page token stays, and the next poll
    reads the change again with the resumed watch: the scan fires, once. Another folder
    watch of the account that fired it in the first poll does not fire it again."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    folder = fake.add_file(EMAIL, name="Scans", mime_type=FOLDER)
    resumed = await create_watch(client, headers, drive_folder_id=folder)
    other = await create_watch(client, headers, drive_folder_id=folder)
    watch = poller(runtime)
    await watch.run_once()  # the page token and the folder's snapshot are taken
    before = await _cursor(runtime, account)

    poll, release = await _hold_a_poll(runtime, account, watch, "file_changes")
    for step in ("pause", "resume"):
        answer = await client.post(f"{API}/instructions/{resumed}/{step}", headers=headers)
        assert answer.status_code == 200, answer.text
    scan = fake.add_file(EMAIL, name="scan.pdf", mime_type="application/pdf", content=PDF,
                         parents=(folder,))  # after the resume
    release.set()
    report = await asyncio.wait_for(poll, 10)
    assert report.failed == 0
    assert len(report.runs) == 1  # the other watch's
    assert (await _cursor(runtime, account)).drive_page_token == before.drive_page_token
    later = datetime.now(UTC) + timedelta(hours=1)  # whatever settling there is, passed
    for _ in range(2):
        await poll_at(runtime, watch, account, later)

    assert fired_ids(await watch_runs(runtime, resumed)) == [scan]
    assert fired_ids(await watch_runs(runtime, other)) == [scan]
    assert (await _cursor(runtime, account)).drive_page_token != before.drive_page_token


async def test_a_watch_created_during_a_poll_gets_the_mail_that_came_after_it(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle,
) -> None:
    """A watch created while a poll of the account waits for Gmail's history is not
    among the watches that poll read: mail for it that the history holds is left for
    the next poll (the cursor stays), which reads the new watch too."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    await create_watch(client, headers, gmail_query="subject:receipt")
    watch = poller(runtime)
    await watch.run_once()

    poll, release = await _hold_a_poll(runtime, account, watch, "mail_changes")
    created = await create_watch(client, headers, gmail_query=BILLING)
    message = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 9",
                               attachments=pdf())
    release.set()
    assert (await asyncio.wait_for(poll, 10)).runs == []
    await watch.poll_accounts([account.id])

    assert fired_ids(await watch_runs(runtime, created)) == [message]


async def test_a_watch_whose_creation_commits_during_a_poll_gets_the_mail_after_it(
    runtime: Runtime, fake: FakeGoogle,
) -> None:
    """A watch is created (its start taken) but not yet committed when an invoice comes
    and a whole poll of the account runs: the poll cannot see the new watch, so it must
    not move the cursor past that mail before the creation is committed. It waits for
    it, sees the watch, and leaves the mail to the next poll, which fires it."""
    user, _headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    await instruction(runtime, user, trigger={"type": "watch", "gmail_query": "subject:receipt"})
    watch = poller(runtime)
    await watch.run_once()  # the account's history cursor is set

    started, commit = asyncio.Event(), asyncio.Event()

    async def create_and_hold() -> str:
        async with transaction(runtime.sessionmaker) as session:
            created = await instructions.create(
                session=session, user=user, default_max_tool_calls=4,
                data=InstructionCreate(**instruction_body(
                    trigger={"type": "watch", "gmail_query": BILLING})),
            )
            started.set()
            await commit.wait()
        return str(created.id)

    creating = asyncio.create_task(create_and_hold())
    await asyncio.wait_for(started.wait(), 10)  # its start is taken, its row not committed
    message = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 11",
                               attachments=pdf())
    poll = asyncio.create_task(watch.poll_accounts([account.id]))
    await asyncio.sleep(1)  # the poll reads the history, finds no watch for the invoice
    commit.set()
    created = await asyncio.wait_for(creating, 10)
    await asyncio.wait_for(poll, 10)
    await watch.poll_accounts([account.id])

    assert fired_ids(await watch_runs(runtime, created)) == [message]


@pytest.mark.parametrize("how", ["deleted", "paused", "trigger_changed"])
async def test_a_watch_gone_during_a_poll_does_not_hold_the_cursor(
    client: httpx.AsyncClient, runtime: Runtime, fake: FakeGoogle, how: str,
) -> None:
    """A watch deleted, paused, or changed to a schedule while a poll is in flight has
    nothing left to fire: the poll writes nothing for it and still moves the account's
    cursor on, so the account's other watches do not read the same history again and
    again."""
    user, headers = await user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    gone = await create_watch(client, headers, gmail_query=BILLING)
    other = await create_watch(client, headers, gmail_query="subject:invoice")
    watch = poller(runtime)
    await watch.run_once()
    before = await _cursor(runtime, account)

    poll, release = await _hold_a_poll(runtime, account, watch, "mail_changes")
    await _take_away(client, headers, gone, how)
    message = fake.add_message(EMAIL, sender="billing@example.com", subject="Invoice 10",
                               attachments=pdf())
    release.set()
    report = await asyncio.wait_for(poll, 10)

    assert (report.failed, report.polled, len(report.runs)) == (0, 1, 1)
    assert (await _cursor(runtime, account)).history_id != before.history_id
    assert await watch_runs(runtime, gone) == []
    assert fired_ids(await watch_runs(runtime, other)) == [message]
