"""Gmail incremental sync through the real client against the fake: history, resync, batches."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from app.core.config import Settings
from app.google import gmail
from app.google.gmail import SEEN_MAX
from app.google.source import GoogleSource
from tests.fakes.google import FakeGoogle
from tests.integration.google.conftest import ALICE, google_account


def mail(fake: FakeGoogle, n: int, subject: str = "Note") -> list[str]:
    return [
        fake.add_message(ALICE, sender=f"Bob {i} <bob{i}@example.com>", to=[ALICE],
                         subject=f"{subject} {i}", text=f"Body of {subject.lower()} {i}.")
        for i in range(n)
    ]


def units_metric(source: GoogleSource) -> float:
    value = REGISTRY.get_sample_value(
        "pilotlight_google_quota_units_total", {"account": source.client.account_id, "api": "gmail"}
    )
    return value or 0.0


def gmail_calls(fake: FakeGoogle) -> list[str]:
    return [r.path for r in fake.requests if "/gmail/" in r.path]


async def test_first_sync_then_only_new_mail_then_one_history_call(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    old = mail(fake, 3, "Old")

    first = await source.delta(None, files=False, limit=10)
    assert [c.id for c in first.messages] == list(reversed(old))  # newest first
    assert first.messages[0].subject == "Old 2"
    assert first.messages[0].sender == "Bob 2 <bob2@example.com>"
    assert first.messages[0].to == [ALICE]
    assert first.messages[0].snippet == ""  # Gmail's own may hold hidden text: not kept
    assert set(first.cursor) == {"gmail"}

    new = mail(fake, 2, "New")
    second = await source.delta(first.cursor, files=False, limit=10)
    assert [c.id for c in second.messages] == list(reversed(new))

    fake.reset_counters()
    before = units_metric(source)
    third = await source.delta(second.cursor, files=False, limit=10)
    assert third.messages == []
    assert gmail_calls(fake) == ["/gmail/v1/users/me/history"]  # one history.list
    assert fake.quota_units(ALICE) == 2
    assert units_metric(source) - before == 2  # what /metrics exports for the account


async def test_a_burst_over_the_limit_waits_for_the_next_delta(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    start = await source.delta(None, files=False, limit=5)
    burst = mail(fake, 8, "Burst")

    fake.reset_counters()
    part1 = await source.delta(start.cursor, files=False, limit=5)
    assert fake.batch_sizes == [5]  # metadata only for what the delta shows
    part2 = await source.delta(part1.cursor, files=False, limit=5)
    part3 = await source.delta(part2.cursor, files=False, limit=5)
    assert [c.id for c in part1.messages] == list(reversed(burst))[:5]
    assert [c.id for c in part2.messages] == list(reversed(burst))[5:]
    assert part3.messages == []


async def test_expired_history_id_resyncs_within_the_bound(
    fake: FakeGoogle, google_settings: Settings
) -> None:
    bounded = google_settings.model_copy(update={"google_resync_messages": 10})
    source = GoogleSource(google_account(fake, bounded), bounded)
    seen = mail(fake, 4, "Seen")
    first = await source.delta(None, files=False, limit=50)
    assert len(first.messages) == 4

    missed = mail(fake, 6, "Missed")
    fake.expire_history(ALICE)
    fake.reset_counters()
    resync = await source.delta(first.cursor, files=False, limit=50)
    # Only what is new: the seen mail is listed again but not shown again.
    assert [c.id for c in resync.messages] == list(reversed(missed))
    assert not {c.id for c in resync.messages} & set(seen)
    lists = [r for r in fake.requests if r.path == "/gmail/v1/users/me/messages"]
    assert len(lists) == 1  # bounded: one page of at most google_resync_messages

    # The cursor now holds a live historyId: the next delta is incremental again.
    later = mail(fake, 1, "Later")
    fake.reset_counters()
    after = await source.delta(resync.cursor, files=False, limit=50)
    assert [c.id for c in after.messages] == later
    assert "/gmail/v1/users/me/messages" not in gmail_calls(fake)


async def test_a_burst_waiting_for_the_next_delta_survives_an_expired_history(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    """The older part of a burst waits in `pending`; Gmail may drop the history before the
    next delta (a weekly digest): the resync still shows what waited, though it arrived
    before the newest message already shown."""
    first = await source.delta(None, files=False, limit=3)
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    burst = [
        fake.add_message(ALICE, sender="Bob <bob@example.com>", to=[ALICE],
                         subject=f"Burst {i}", date=t0 + timedelta(seconds=i))
        for i in range(8)
    ]
    second = await source.delta(first.cursor, files=False, limit=3)
    assert [c.id for c in second.messages] == burst[:-4:-1]  # the newest three
    waiting = burst[-4::-1]  # the five older ones

    fake.expire_history(ALICE)
    new = fake.add_message(ALICE, sender="Carol <carol@example.com>", to=[ALICE],
                           subject="After the gap")
    third = await source.delta(second.cursor, files=False, limit=4)
    assert [c.id for c in third.messages] == [new, *waiting[:3]]
    # What the limit left out keeps waiting, and comes next, once.
    fourth = await source.delta(third.cursor, files=False, limit=10)
    assert [c.id for c in fourth.messages] == waiting[3:]
    fifth = await source.delta(fourth.cursor, files=False, limit=10)
    assert fifth.messages == []


async def test_a_resync_shows_at_most_the_bound(
    fake: FakeGoogle, google_settings: Settings
) -> None:
    bounded = google_settings.model_copy(update={"google_resync_messages": 10})
    source = GoogleSource(google_account(fake, bounded), bounded)
    first = await source.delta(None, files=False, limit=50)
    missed = mail(fake, 25, "Missed")
    fake.expire_history(ALICE)
    resync = await source.delta(first.cursor, files=False, limit=50)
    assert [c.id for c in resync.messages] == list(reversed(missed))[:10]


async def test_metadata_is_fetched_in_batches_of_at_most_50(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    ids = mail(fake, 120, "Many")
    fake.reset_counters()
    delta = await source.delta(None, files=False, limit=120)
    assert len(delta.messages) == 120
    assert {c.id for c in delta.messages} == set(ids)
    gets = [r for r in fake.requests if r.in_batch and "/messages/" in r.path]
    assert len(gets) == 120
    sizes = fake.batch_sizes
    assert sizes
    assert max(sizes) <= 50
    assert sum(sizes) == 120


async def test_mail_changes_is_the_cheap_detector(fake: FakeGoogle, source: GoogleSource) -> None:
    start = await source.mail_changes(None)
    assert start.added_message_ids == []
    fake.reset_counters()
    same = await source.mail_changes(start.history_id)
    assert same.added_message_ids == []
    assert fake.quota_units(ALICE) == 2
    new = mail(fake, 2, "Invoice")
    changed = await source.mail_changes(same.history_id)
    assert changed.added_message_ids == new
    assert not changed.expired
    fake.expire_history(ALICE)
    expired = await source.mail_changes(changed.history_id)
    assert expired.expired
    assert expired.added_message_ids == []
    assert await source.search_mail_ids("subject:Invoice") == list(reversed(new))


async def test_mail_taken_out_of_spam_or_trash_is_new_mail_once(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    """"Not spam" and "restore from trash" add no message to Gmail's history, only a
    labelsRemoved (SPAM or TRASH) record: a message that was never shown arrives then."""
    first = await source.delta(None, files=False, limit=10)
    spam = fake.add_message(ALICE, sender="Billing <billing@example.com>", to=[ALICE],
                            subject="Invoice 42", labels=("SPAM", "UNREAD"))
    filtered = fake.add_message(ALICE, sender="News <news@example.com>", to=[ALICE],
                                subject="Filtered to the trash", labels=("TRASH",))
    second = await source.delta(first.cursor, files=False, limit=10)
    assert second.messages == []

    fake.modify_labels(ALICE, spam, add=["INBOX"], remove=["SPAM"])
    fake.modify_labels(ALICE, filtered, remove=["TRASH"])
    third = await source.delta(second.cursor, files=False, limit=10)
    assert sorted(c.id for c in third.messages) == sorted([spam, filtered])
    assert {c.subject for c in third.messages} == {"Invoice 42", "Filtered to the trash"}

    # Once: to the trash and back again, it is not new again.
    fake.modify_labels(ALICE, spam, add=["TRASH"])
    fake.modify_labels(ALICE, spam, remove=["TRASH"])
    fourth = await source.delta(third.cursor, files=False, limit=10)
    assert fourth.messages == []


async def test_mail_trashed_and_restored_is_shown_once(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    first = await source.delta(None, files=False, limit=10)
    shown = fake.add_message(ALICE, sender="Bob <bob@example.com>", to=[ALICE], subject="Hi")
    quick = fake.add_message(ALICE, sender="Bob <bob@example.com>", to=[ALICE],
                             subject="Trashed before any delta saw it")
    fake.modify_labels(ALICE, quick, add=["TRASH"], remove=["INBOX"])
    sent = fake.add_message(ALICE, sender=ALICE, to=["bob@example.com"], subject="Sent",
                            labels=("SENT",))
    second = await source.delta(first.cursor, files=False, limit=10)
    assert [c.id for c in second.messages] == [shown]

    for message in (shown, sent):
        fake.modify_labels(ALICE, message, add=["TRASH"])
    for message in (shown, quick, sent):
        fake.modify_labels(ALICE, message, remove=["TRASH"])
    third = await source.delta(second.cursor, files=False, limit=10)
    # The one never shown now is; the shown one is not shown again, nor is sent mail.
    assert [c.id for c in third.messages] == [quick]
    changes = await source.mail_changes(str(second.cursor["gmail"]["history_id"]))
    assert changes.added_message_ids == []
    assert changes.rescued_message_ids == [shown, quick]  # sent mail never arrives

    # Reading, starring (label changes) cost nothing more: one history.list.
    fake.modify_labels(ALICE, quick, remove=["UNREAD"])
    fake.modify_labels(ALICE, quick, add=["STARRED"])
    fake.reset_counters()
    fourth = await source.delta(third.cursor, files=False, limit=10)
    assert fourth.messages == []
    assert gmail_calls(fake) == ["/gmail/v1/users/me/history"]


async def test_mail_restored_after_seen_let_go_of_it_is_not_shown_again(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    """`seen` keeps the last SEEN_MAX ids: a message shown before those, trashed and then
    restored, might be shown twice, so mail that comes back from spam or trash is new
    only if it arrived after what `seen` let go of."""
    t0 = datetime.now(UTC)
    first = await source.delta(None, files=False, limit=10)
    shown = fake.add_message(ALICE, sender="Bob <bob@example.com>", to=[ALICE],
                             subject="Shown long ago", date=t0 - timedelta(hours=3))
    second = await source.delta(first.cursor, files=False, limit=10)
    assert [c.id for c in second.messages] == [shown]

    fake.modify_labels(ALICE, shown, add=["TRASH"])
    spam = fake.add_message(ALICE, sender="Billing <billing@example.com>", to=[ALICE],
                            subject="Invoice 42", labels=("SPAM",),
                            date=t0 - timedelta(hours=2))
    many = [fake.add_message(ALICE, sender="News <news@example.com>", to=[ALICE],
                             subject=f"News {n}", date=t0 - timedelta(hours=1, seconds=-n))
            for n in range(SEEN_MAX)]
    third = await source.delta(second.cursor, files=False, limit=SEEN_MAX)
    assert len(third.messages) == len(many)
    assert shown not in third.cursor["gmail"]["seen"]

    fake.modify_labels(ALICE, shown, remove=["TRASH"])
    fake.modify_labels(ALICE, spam, add=["INBOX"], remove=["SPAM"])
    fourth = await source.delta(third.cursor, files=False, limit=10)
    assert [c.id for c in fourth.messages] == [spam]


async def test_a_cursor_from_before_seen_at_still_works(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    first = await source.delta(None, files=False, limit=10)
    shown = mail(fake, 2, "Shown")
    second = await source.delta(first.cursor, files=False, limit=10)
    old_shape = {"gmail": {k: v for k, v in second.cursor["gmail"].items()
                           if k not in ("seen_at", "floor")}}
    new = mail(fake, 1, "New")
    fake.modify_labels(ALICE, shown[0], add=["TRASH"])
    fake.modify_labels(ALICE, shown[0], remove=["TRASH"])
    third = await source.delta(old_shape, files=False, limit=10)
    assert [c.id for c in third.messages] == new
    part = third.cursor["gmail"]
    assert len(part["seen_at"]) == len(part["seen"]) == 3


async def test_a_resync_does_not_show_old_mail_the_first_sync_left_out(
    fake: FakeGoogle, source: GoogleSource
) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for n in range(6):
        fake.add_message(ALICE, sender="Old <old@example.com>", to=[ALICE], subject=f"Old {n}",
                         text="old", date=yesterday + timedelta(minutes=n))
    first = await source.delta(None, files=False, limit=2)
    assert [c.subject for c in first.messages] == ["Old 5", "Old 4"]
    new = mail(fake, 3, "New")
    fake.expire_history(ALICE)
    resync = await source.delta(first.cursor, files=False, limit=50)
    assert [c.id for c in resync.messages] == list(reversed(new))


async def test_mail_read_in_bulk_does_not_push_new_mail_out_of_the_digest(
    fake: FakeGoogle, source: GoogleSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message read ("Mark all as read": UNREAD removed) or archived is a
    labelsRemoved record in the same history pages as new mail. They must not count
    against the budget of HISTORY_PAGE x HISTORY_PAGES_MAX records (10,000; shrunk here
    to 2 x 2, so 5 reads stand for 10,001): a delta stopped inside them would leave the
    mail after them to the next digest, whose window (`since`) is past it: lost."""
    monkeypatch.setattr(gmail, "HISTORY_PAGE", 2)
    monkeypatch.setattr(gmail, "HISTORY_PAGES_MAX", 2)
    old = mail(fake, 5, "Old")
    start = await source.delta(None, files=False, limit=10)
    for mid in old:  # "mark all as read"
        fake.modify_labels(ALICE, mid, remove=["UNREAD"])
    new = fake.add_message(ALICE, subject="Contract signed", text="Signed today.")

    first_read = datetime.now(UTC)
    first = await source.delta(start.cursor, files=False, limit=10)
    second = await source.delta(first.cursor, files=False, limit=10, since=first_read)
    assert [m.id for m in first.messages] == [new]
    assert second.messages == []
    # The watch poller's detector reads the same history: the new mail is in it.
    changes = await source.mail_changes(str(start.cursor["gmail"]["history_id"]))
    assert changes.added_message_ids == [new]
    assert not changes.expired


async def test_new_mail_over_the_history_budget_waits_for_the_next_delta(
    fake: FakeGoogle, source: GoogleSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget still holds for records that add mail: past it, the delta resumes from
    the last record read next time (reads in between do not count)."""
    monkeypatch.setattr(gmail, "HISTORY_PAGE", 2)
    monkeypatch.setattr(gmail, "HISTORY_PAGES_MAX", 2)
    start = await source.delta(None, files=False, limit=10)
    burst = mail(fake, 6, "Burst")
    first = await source.delta(start.cursor, files=False, limit=10)
    second = await source.delta(first.cursor, files=False, limit=10)
    assert [m.id for m in first.messages] == list(reversed(burst[:4]))
    assert [m.id for m in second.messages] == list(reversed(burst[4:]))


async def test_history_too_long_to_read_through_is_resynced_and_new_mail_shown(
    fake: FakeGoogle, source: GoogleSource, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Reads past the separate cap on pages in all (HISTORY_SCAN_PAGES_MAX; 2 here): the
    history is resynced as for a 404, with a warning, and the new mail is shown; the
    watch detector reports it expired (the watch poller then resyncs its queries)."""
    monkeypatch.setattr(gmail, "HISTORY_PAGE", 2)
    monkeypatch.setattr(gmail, "HISTORY_SCAN_PAGES_MAX", 2)
    old = mail(fake, 5, "Old")
    start = await source.delta(None, files=False, limit=10)
    for mid in old:
        fake.modify_labels(ALICE, mid, add=["STARRED"], remove=["UNREAD", "INBOX"])
    new = fake.add_message(ALICE, subject="Contract signed", text="Signed today.")

    changes = await source.mail_changes(str(start.cursor["gmail"]["history_id"]))
    assert changes.expired
    with caplog.at_level(logging.WARNING, logger="app.google.gmail"):
        first = await source.delta(start.cursor, files=False, limit=10)
    assert [m.id for m in first.messages] == [new]
    assert "resyncing" in caplog.text
    later = await source.delta(first.cursor, files=False, limit=10)
    assert later.messages == []
