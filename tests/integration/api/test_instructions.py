"""The instructions API: create, list, read, change, pause, resume, run now, delete; bad input."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import delete, update

from app.accounts.models import Account
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY
from app.instructions.models import Instruction
from app.runs.models import Run
from app.users.models import User
from tests.factories import instruction, instruction_body, user_with_token
from tests.integration.api.helpers import API, add_run, assert_error, parse_time

WEEKDAYS_AT_8 = "At 08:00, Monday through Friday (Europe/Berlin)"


def next_local(
    after: datetime, zone: str, at: time, *, weekdays: tuple[int, ...] = tuple(range(7)),
    also: Callable[[date], bool] = lambda _day: False,
) -> datetime:
    """The first `at` (wall clock in `zone`) after `after` on one of `weekdays`, in UTC.

    A day for which `also` is true counts too (crontab's day-of-month OR day-of-week).
    """
    tz = ZoneInfo(zone)
    day = after.astimezone(tz).date()
    for offset in range(63):
        candidate = datetime.combine(day + timedelta(days=offset), at, tzinfo=tz)
        matches = candidate.weekday() in weekdays or also(candidate.date())
        if matches and candidate > after:
            return candidate.astimezone(UTC)
    raise AssertionError("no fire time within two months")


async def create(client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any) -> Any:
    response = await client.post(f"{API}/instructions", json=instruction_body(**overrides),
                                 headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


# --- create -------------------------------------------------------------------


async def test_create_weekday_cron(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    before = utcnow()
    body = await create(client, headers)
    after = utcnow()

    assert body["title"] == "Morning digest"
    assert body["status"] == "active"
    assert body["trigger"] == {"type": "cron", "cron": "0 8 * * 1-5", "timezone": "Europe/Berlin"}
    assert body["schedule"] == WEEKDAYS_AT_8
    assert body["sources"] == ["drive", "gmail"]
    assert body["channels"] == ["in_app"]
    assert body["thinking_level"] == "medium"
    assert body["max_tool_calls"] == runtime.settings.agent_default_max_tool_calls
    assert body["only_new"] is True
    assert body["consecutive_failures"] == 0
    assert body["last_run_at"] is None

    next_run_at = parse_time(body["next_run_at"])
    expected = {
        next_local(moment, "Europe/Berlin", time(8), weekdays=(0, 1, 2, 3, 4))
        for moment in (before, after)
    }
    assert next_run_at in expected, (next_run_at, expected)
    local = next_run_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.weekday() < 5, local.hour, local.minute) == (True, 8, 0)

    again = await client.get(f"{API}/instructions/{body['id']}", headers=headers)
    assert again.status_code == 200
    assert again.json() == body


@pytest.mark.parametrize(
    ("cron", "weekdays"),
    [
        ("0 8 * * 0", (6,)),  # crontab: 0 is Sunday
        ("0 8 * * 7", (6,)),  # ... and so is 7
        ("0 8 * * 6-7", (5, 6)),
        ("0 8 * * mon-fri", (0, 1, 2, 3, 4)),
        ("0 8 * * 1,3,5", (0, 2, 4)),
    ],
)
async def test_cron_weekdays_follow_crontab(
    client: httpx.AsyncClient, runtime: Runtime, cron: str, weekdays: tuple[int, ...]
) -> None:
    _user, headers = await user_with_token(runtime)
    before = utcnow()
    body = await create(client, headers, trigger={"type": "cron", "cron": cron,
                                                  "timezone": "Europe/Berlin"})
    after = utcnow()
    expected = {next_local(m, "Europe/Berlin", time(8), weekdays=weekdays) for m in (before, after)}
    assert parse_time(body["next_run_at"]) in expected, (body["next_run_at"], expected)


async def test_cron_day_of_month_or_weekday(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """With both restricted, crontab fires on either, as the schedule says."""
    _user, headers = await user_with_token(runtime)
    before = utcnow()
    body = await create(client, headers, trigger={"type": "cron", "cron": "0 8 1 * 3",
                                                  "timezone": "Europe/Berlin"})
    after = utcnow()
    assert body["schedule"] == (
        "At 08:00, on day 1 of the month, or on Wednesday (Europe/Berlin)"
    )
    expected = {
        next_local(m, "Europe/Berlin", time(8), weekdays=(2,), also=lambda d: d.day == 1)
        for m in (before, after)
    }
    assert parse_time(body["next_run_at"]) in expected, (body["next_run_at"], expected)


@pytest.mark.parametrize(
    "cron", ["0 8-10/3 * * 1-5", "0,0,00 8,8 * * 1-5", " 0  8 * * 1-5 ", "0 8-8 * * 1-5"])
async def test_a_cron_expression_is_stored_in_its_plain_spelling(
    client: httpx.AsyncClient, runtime: Runtime, cron: str
) -> None:
    """Crontab reads "8-10/3" as 8 (APScheduler refused it) and "8,8" as 8 (it was shown as
    "at 08:00 and 08:00"): stored and shown as the hours they name."""
    _user, headers = await user_with_token(runtime)
    body = await create(client, headers,
                        trigger={"type": "cron", "cron": cron, "timezone": "Europe/Berlin"})
    assert body["trigger"]["cron"] == "0 8 * * 1-5"
    assert body["schedule"] == WEEKDAYS_AT_8


async def test_create_interval(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    body = await create(client, headers, trigger={"type": "interval", "seconds": 3600})
    assert body["schedule"] == "Every hour"
    assert body["trigger"] == {"type": "interval", "seconds": 3600}
    assert parse_time(body["next_run_at"]) == parse_time(body["created_at"]) + timedelta(hours=1)

    body = await create(client, headers, trigger={"type": "interval", "seconds": 90})
    assert body["schedule"] == "Every 90 seconds"
    body = await create(client, headers, trigger={"type": "interval", "seconds": 2 * 86400})
    assert body["schedule"] == "Every 2 days"


async def test_cron_time_zone_defaults_to_the_users(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(User).where(User.id == user.id).values(timezone="Asia/Tokyo")
        )
    before = utcnow()
    body = await create(client, headers, trigger={"type": "cron", "cron": "0 8 * * *"})
    after = utcnow()
    assert body["trigger"]["timezone"] == "Asia/Tokyo"
    assert body["schedule"].endswith("(Asia/Tokyo)")
    expected = {next_local(m, "Asia/Tokyo", time(8)) for m in (before, after)}
    assert parse_time(body["next_run_at"]) in expected


async def test_create_with_every_option(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    body = await create(
        client, headers, sources=["gmail"], channels=["email", "in_app", "email"],
        thinking_level="high", max_tool_calls=0, only_new=False,
    )
    assert body["sources"] == ["gmail"]
    assert body["channels"] == ["email", "in_app"]
    assert body["thinking_level"] == "high"
    assert body["max_tool_calls"] == 0
    assert body["only_new"] is False


# --- list ---------------------------------------------------------------------


async def test_list_newest_first_in_pages(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    ids = [str((await instruction(runtime, user, title=f"n{i}")).id) for i in range(5)]
    other, _ = await user_with_token(runtime)
    await instruction(runtime, other, title="not mine")

    everything = await client.get(f"{API}/instructions", headers=headers)
    assert everything.status_code == 200
    assert [i["id"] for i in everything.json()["items"]] == ids[::-1]
    assert everything.json()["next_cursor"] is None

    seen: list[list[str]] = []
    cursor: str | None = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await client.get(f"{API}/instructions", params=params, headers=headers)
        assert page.status_code == 200, page.text
        seen.append([i["id"] for i in page.json()["items"]])
        cursor = page.json()["next_cursor"]
    assert seen == [ids[4:2:-1], ids[2:0:-1], ids[0:1]]
    assert cursor is None


async def test_list_filters_by_status(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    active = await instruction(runtime, user)
    paused = await instruction(runtime, user)
    await client.post(f"{API}/instructions/{paused.id}/pause", headers=headers)
    for status, expected in (("active", active.id), ("paused", paused.id)):
        response = await client.get(f"{API}/instructions", params={"status": status},
                                    headers=headers)
        assert [i["id"] for i in response.json()["items"]] == [str(expected)]
    response = await client.get(f"{API}/instructions", params={"status": "sleeping"},
                                headers=headers)
    assert_error(response, 422, "ValidationError", "status")


@pytest.mark.parametrize(
    "cursor", ["not-a-cursor", "!!!", "bm90aGluZw", "MjAyNC0wMS0wMVQwMDowMDowMCswMDowMHxub3Bl"]
)
async def test_list_invalid_cursor(
    client: httpx.AsyncClient, runtime: Runtime, cursor: str
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.get(f"{API}/instructions", params={"cursor": cursor},
                                headers=headers)
    assert_error(response, 422, "InvalidCursor", "cursor")


@pytest.mark.parametrize("path", ["instructions", "runs", "notifications"])
async def test_list_cursor_without_offset_is_invalid(
    client: httpx.AsyncClient, runtime: Runtime, path: str
) -> None:
    _user, headers = await user_with_token(runtime)
    raw = f"2024-01-01T00:00:00|{uuid.uuid4()}".encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = await client.get(f"{API}/{path}", params={"cursor": cursor}, headers=headers)
    assert_error(response, 422, "InvalidCursor", "cursor")


@pytest.mark.parametrize("path", ["instructions", "runs", "notifications"])
@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+05:00"])
async def test_list_cursor_out_of_range_in_utc_is_invalid(
    client: httpx.AsyncClient, runtime: Runtime, path: str, stamp: str
) -> None:
    _user, headers = await user_with_token(runtime)
    raw = f"{stamp}|{uuid.uuid4()}".encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = await client.get(f"{API}/{path}", params={"cursor": cursor}, headers=headers)
    assert_error(response, 422, "InvalidCursor", "cursor")


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00"])
async def test_list_cursor_at_the_ends_of_time(
    client: httpx.AsyncClient, runtime: Runtime, stamp: str
) -> None:
    user, headers = await user_with_token(runtime)
    await instruction(runtime, user)
    raw = f"{stamp}|{uuid.uuid4()}".encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = await client.get(f"{API}/instructions", params={"cursor": cursor},
                                headers=headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == (1 if stamp.startswith("9999") else 0)


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten"])
async def test_list_invalid_limit(client: httpx.AsyncClient, runtime: Runtime, limit: str) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.get(f"{API}/instructions", params={"limit": limit}, headers=headers)
    assert_error(response, 422, "ValidationError", "limit")


async def test_a_stored_trigger_that_cannot_be_described_still_lists(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Stored before validation refused it: shown as written, never a 500."""
    user, headers = await user_with_token(runtime)
    stored = await instruction(runtime, user)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Instruction).where(Instruction.id == stored.id).values(
            trigger={"type": "cron", "cron": "0 8 * * 07", "timezone": "UTC"}))
    response = await client.get(f"{API}/instructions", headers=headers)
    assert response.status_code == 200, response.text
    assert [i["schedule"] for i in response.json()["items"]] == ["Cron '0 8 * * 07' (UTC)"]
    one = await client.get(f"{API}/instructions/{stored.id}", headers=headers)
    assert one.json()["schedule"] == "Cron '0 8 * * 07' (UTC)"


# --- change -------------------------------------------------------------------


async def test_patch_trigger_moves_next_run_at(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await user_with_token(runtime)
    created = await create(client, headers)
    before = utcnow()
    response = await client.patch(
        f"{API}/instructions/{created['id']}", headers=headers,
        json={"trigger": {"type": "cron", "cron": "30 21 * * *", "timezone": "UTC"}},
    )
    after = utcnow()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["schedule"] == "At 21:30 (UTC)"
    expected = {next_local(m, "UTC", time(21, 30)) for m in (before, after)}
    assert parse_time(body["next_run_at"]) in expected
    for field in ("title", "text", "sources", "channels", "thinking_level", "max_tool_calls",
                  "only_new", "status", "created_at"):
        assert body[field] == created[field], field
    assert parse_time(body["updated_at"]) > parse_time(created["updated_at"])

    response = await client.patch(
        f"{API}/instructions/{created['id']}", headers=headers,
        json={"trigger": {"type": "interval", "seconds": 600}},
    )
    body = response.json()
    assert body["schedule"] == "Every 10 minutes"
    assert utcnow() < parse_time(body["next_run_at"]) <= utcnow() + timedelta(minutes=10)


async def test_patch_a_cron_expression_alone_keeps_the_instructions_zone(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A PATCH of the expression alone moved a Kathmandu instruction to the user's zone
    (Europe/Berlin): 10:00 became 10:00 somewhere else, without a word."""
    _user, headers = await user_with_token(runtime)
    created = await create(client, headers, trigger={
        "type": "cron", "cron": "0 9 * * *", "timezone": "Asia/Kathmandu"})
    patched = await client.patch(
        f"{API}/instructions/{created['id']}", headers=headers,
        json={"trigger": {"type": "cron", "cron": " 0  10 * * * "}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["trigger"] == {
        "type": "cron", "cron": "0 10 * * *", "timezone": "Asia/Kathmandu"}
    # From an interval there is no zone to keep: the user's, as on create.
    await client.patch(f"{API}/instructions/{created['id']}", headers=headers,
                       json={"trigger": {"type": "interval", "seconds": 600}})
    again = await client.patch(f"{API}/instructions/{created['id']}", headers=headers,
                               json={"trigger": {"type": "cron", "cron": "0 10 * * *"}})
    assert again.json()["trigger"]["timezone"] == "Europe/Berlin"


async def test_patch_partial_leaves_other_fields(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await user_with_token(runtime)
    created = await create(client, headers, channels=["in_app", "email"], max_tool_calls=5)
    url = f"{API}/instructions/{created['id']}"

    response = await client.patch(url, json={"title": "Evening digest"}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["title"] == "Evening digest"
    unchanged = ("text", "trigger", "schedule", "next_run_at", "sources", "channels",
                 "thinking_level", "max_tool_calls", "only_new", "status")
    for field in unchanged:
        assert body[field] == created[field], field

    response = await client.patch(
        url, json={"max_tool_calls": 0, "only_new": False, "sources": ["drive"]}, headers=headers
    )
    body = response.json()
    assert (body["max_tool_calls"], body["only_new"], body["sources"]) == (0, False, ["drive"])
    assert body["title"] == "Evening digest"
    assert body["next_run_at"] == created["next_run_at"]

    response = await client.patch(url, json={}, headers=headers)
    assert response.status_code == 200
    assert response.json()["title"] == "Evening digest"

    stored = (await client.get(url, headers=headers)).json()
    assert stored["title"] == "Evening digest"
    assert stored["max_tool_calls"] == 0


async def test_patch_bad_input(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    created = await create(client, headers)
    url = f"{API}/instructions/{created['id']}"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"title": ""}, "title"),
        ({"title": "   "}, "must not be blank"),
        ({"text": "\n\t"}, "must not be blank"),
        ({"title": "\u200b"}, "must not be blank"),  # a zero-width space
        ({"text": "\ufeff \u200d"}, "must not be blank"),
        ({"trigger": {"type": "cron", "cron": "banana"}}, "invalid cron expression"),
        ({"trigger": {"type": "interval", "seconds": 1}}, "seconds"),
        ({"trigger": {"type": "cron", "cron": "0 8 * * *", "timezone": "Europe"}},
         "unknown time zone"),
        ({"status": "paused"}, "status"),
        ({"thinking_level": "extreme"}, "thinking_level"),
    ]
    for body, fragment in cases:
        response = await client.patch(url, json=body, headers=headers)
        assert_error(response, 422, "ValidationError", fragment)
    assert (await client.get(url, headers=headers)).json() == created


@pytest.mark.parametrize("body", [
    {"title": None},
    {"text": None},
    {"trigger": None, "max_tool_calls": None, "only_new": None},
    {"sources": None, "channels": None, "thinking_level": None},
    {"title": "Evening digest", "only_new": None},
])
async def test_patch_refuses_null(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any]
) -> None:
    """Null would silently change nothing: a field is changed, or left out."""
    _user, headers = await user_with_token(runtime)
    created = await create(client, headers)
    url = f"{API}/instructions/{created['id']}"
    response = await client.patch(url, json=body, headers=headers)
    error = assert_error(response, 422, "ValidationError", "cannot be null")
    assert {e["field"] for e in error["errors"]} == {k for k, v in body.items() if v is None}
    assert (await client.get(url, headers=headers)).json() == created
    # A cron trigger's time zone may be null: the user's time zone.
    response = await client.patch(url, headers=headers, json={
        "trigger": {"type": "cron", "cron": "0 9 * * *", "timezone": None}})
    assert response.status_code == 200, response.text
    assert response.json()["trigger"]["timezone"] == "Europe/Berlin"


# --- pause, resume, run now, delete -------------------------------------------


async def test_pause_and_resume(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    created = await create(client, headers)
    url = f"{API}/instructions/{created['id']}"

    paused = await client.post(f"{url}/pause", headers=headers)
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    assert paused.json()["next_run_at"] is None
    assert (await client.get(url, headers=headers)).json()["next_run_at"] is None

    # a new trigger on a paused instruction does not schedule it
    changed = await client.patch(
        url, json={"trigger": {"type": "interval", "seconds": 60}}, headers=headers
    )
    assert changed.json()["status"] == "paused"
    assert changed.json()["next_run_at"] is None

    resumed = await client.post(f"{url}/resume", headers=headers)
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert body["status"] == "active"
    assert body["status_detail"] is None
    assert utcnow() < parse_time(body["next_run_at"]) <= utcnow() + timedelta(seconds=60)


async def test_pause_cancels_the_queued_runs_of_the_schedule_and_watches_only(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A run of the schedule still queued when the instruction is paused does not come
    back with a resume; run-now and a run resuming from an answer go ahead."""
    user, headers = await user_with_token(runtime)
    created = await create(client, headers)
    url = f"{API}/instructions/{created['id']}"
    instruction_id = uuid.UUID(created["id"])
    scheduled = await add_run(runtime, user, instruction_id, reason="schedule")
    watched = await add_run(runtime, user, instruction_id, reason="watch")
    manual = await add_run(runtime, user, instruction_id, reason="manual")
    answered = await add_run(runtime, user, instruction_id, reason="schedule",
                             agent_state={"attempt": 1, "state": {}})

    assert (await client.post(f"{url}/pause", headers=headers)).status_code == 200
    assert (await client.post(f"{url}/resume", headers=headers)).status_code == 200

    runs = {r["id"]: r for r in (await client.get(
        f"{API}/runs", params={"instruction_id": created["id"]}, headers=headers)).json()["items"]}
    assert runs[str(scheduled.id)]["status"] == "cancelled"
    assert runs[str(scheduled.id)]["error"] == "the instruction was paused"
    assert runs[str(watched.id)]["status"] == "cancelled"
    assert runs[str(manual.id)]["status"] == "queued"
    assert runs[str(answered.id)]["status"] == "queued"


async def test_run_now_queues_a_manual_run(client: httpx.AsyncClient, runtime: Runtime) -> None:
    _user, headers = await user_with_token(runtime)
    created = await create(client, headers)
    response = await client.post(f"{API}/instructions/{created['id']}/run", headers=headers)
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "queued"
    assert run["reason"] == "manual"
    assert run["instruction_id"] == created["id"]
    assert run["attempt"] == 0
    assert run["window_start"] is None

    listed = await client.get(f"{API}/runs", params={"instruction_id": created["id"]},
                              headers=headers)
    assert [r["id"] for r in listed.json()["items"]] == [run["id"]]
    # the instruction's own schedule is untouched
    assert (await client.get(f"{API}/instructions/{created['id']}", headers=headers)).json()[
        "next_run_at"] == created["next_run_at"]


async def test_run_now_pressed_again_before_the_run_starts_returns_that_run(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Ten presses of run now made ten runs, each reading the same mail (nine of them
    with nothing new, or all ten delivering the same digest)."""
    _user, headers = await user_with_token(runtime)
    created = await create(client, headers)
    url = f"{API}/instructions/{created['id']}/run"
    presses = await asyncio.gather(*(client.post(url, headers=headers) for _ in range(5)))
    assert sorted(r.status_code for r in presses) == [200, 200, 200, 200, 201], [
        r.text for r in presses]
    assert len({r.json()["id"] for r in presses}) == 1
    queued = presses[0].json()
    again = await client.post(url, headers=headers)
    assert again.status_code == 200
    assert again.json() == queued

    async with transaction(runtime.sessionmaker) as session:  # a worker takes it
        await session.execute(update(Run).where(Run.id == uuid.UUID(queued["id"])).values(
            status="running", attempt=1))
    started = await client.post(url, headers=headers)
    assert started.status_code == 201
    assert started.json()["id"] != queued["id"]
    listed = await client.get(f"{API}/runs", params={"instruction_id": created["id"]},
                              headers=headers)
    assert len(listed.json()["items"]) == 2


async def test_nothing_is_set_running_with_nothing_to_read(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A user none of whose accounts a run could read: creating, resuming, running now
    and previewing an instruction are refused with what to do, not left to fail."""
    user, headers = await user_with_token(runtime)
    created = await create(client, headers)
    url = f"{API}/instructions/{created['id']}"
    assert (await client.post(f"{url}/pause", headers=headers)).status_code == 200
    async with transaction(runtime.sessionmaker) as session:
        # Gone without the service's pausing (its removal pauses what depends on it).
        await session.execute(delete(Account).where(Account.user_id == user.id))

    for refused in (
        await client.post(f"{API}/instructions", json=instruction_body(), headers=headers),
        await client.post(f"{url}/resume", headers=headers),
        await client.post(f"{url}/run", headers=headers),
        await client.post(f"{url}/preview", json={"days": 1}, headers=headers),
    ):
        assert_error(refused, 422, "NothingToRead", "nothing to read", "Connect Google")
    listed = (await client.get(f"{API}/instructions", headers=headers)).json()["items"]
    assert [(i["id"], i["status"]) for i in listed] == [(created["id"], "paused")]
    assert (await client.get(f"{API}/runs", headers=headers)).json()["items"] == []


async def test_an_instruction_reading_only_mail_needs_an_account_with_mail(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A Google account without Gmail (Gmail answered "Mail service not enabled") reads
    only its Drive: an instruction reading only mail was created and run now, and each of
    its runs failed."""
    user, headers = await user_with_token(runtime, sample=False)
    async with transaction(runtime.sessionmaker) as session:
        session.add(Account(
            id=uuid.uuid4(), user_id=user.id, kind="google", email="a@example.com",
            scopes={"granted": [GMAIL_READONLY, DRIVE_READONLY], "mailbox": False},
            refresh_token_encrypted=b"sealed", sync_cursor={}, status="active",
        ))
    refused = await client.post(f"{API}/instructions", json=instruction_body(sources=["gmail"]),
                                headers=headers)
    assert_error(refused, 422, "NothingToRead", "reads mail only", "Drive too")
    both = await create(client, headers)
    url = f"{API}/instructions/{both['id']}"
    assert_error(await client.patch(url, json={"sources": ["gmail"]}, headers=headers), 422,
                 "NothingToRead", "reads mail only")
    drive = await client.patch(url, json={"sources": ["drive"]}, headers=headers)
    assert drive.status_code == 200, drive.text
    assert (await client.post(f"{url}/run", headers=headers)).status_code == 201


async def test_delete_cancels_queued_runs(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    created = await create(client, headers)
    url = f"{API}/instructions/{created['id']}"
    queued = (await client.post(f"{url}/run", headers=headers)).json()
    finished = await add_run(runtime, user, uuid.UUID(created["id"]), status="succeeded",
                             created_at=utcnow() - timedelta(days=1))
    keep = await instruction(runtime, user, title="keep me")
    other_queued = await add_run(runtime, user, keep)

    response = await client.delete(url, headers=headers)
    assert response.status_code == 204
    assert response.content == b""

    assert_error(await client.get(url, headers=headers), 404, "InstructionNotFound",
                 created["id"])
    assert_error(await client.delete(url, headers=headers), 404, "InstructionNotFound")
    assert_error(await client.patch(url, json={"title": "x"}, headers=headers), 404,
                 "InstructionNotFound")
    assert_error(await client.post(f"{url}/run", headers=headers), 404, "InstructionNotFound")
    listed = (await client.get(f"{API}/instructions", headers=headers)).json()["items"]
    assert [i["id"] for i in listed] == [str(keep.id)]

    cancelled = (await client.get(f"{API}/runs/{queued['id']}", headers=headers)).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert cancelled["error"]
    # past runs stay in the history as they were; other instructions' runs are untouched
    assert (await client.get(f"{API}/runs/{finished.id}", headers=headers)).json()[
        "status"] == "succeeded"
    assert (await client.get(f"{API}/runs/{other_queued.id}", headers=headers)).json()[
        "status"] == "queued"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/resume"),
     ("POST", "/run")],
)
async def test_unknown_instruction_is_404(
    client: httpx.AsyncClient, runtime: Runtime, method: str, suffix: str
) -> None:
    _user, headers = await user_with_token(runtime)
    missing = uuid.uuid4()
    response = await client.request(
        method, f"{API}/instructions/{missing}{suffix}", headers=headers,
        json={"title": "x"} if method == "PATCH" else None,
    )
    assert_error(response, 404, "InstructionNotFound", str(missing))


# --- bad input ----------------------------------------------------------------

CRON = "trigger.cron"
BAD_BODIES: list[Any] = [
    pytest.param({"trigger": {"type": "cron", "cron": "61 8 * * *"}},
                 ["invalid cron expression", CRON], id="cron-minute-61"),
    pytest.param({"trigger": {"type": "cron", "cron": "0 8 * *"}},
                 ["invalid cron expression", CRON], id="cron-four-fields"),
    pytest.param({"trigger": {"type": "cron", "cron": "banana"}},
                 ["invalid cron expression", CRON], id="cron-banana"),
    pytest.param({"trigger": {"type": "cron", "cron": "0 8 * * 8"}},
                 ["invalid cron expression", CRON], id="cron-weekday-8"),
    pytest.param({"trigger": {"type": "cron", "cron": "0 8 * * 5-1"}},
                 ["invalid cron expression", CRON], id="cron-weekday-backwards"),
    pytest.param({"trigger": {"type": "cron", "cron": "0 10-8/3 * * *"}},
                 ["invalid cron expression", CRON, "the range 10-8 of the hour runs backwards",
                  "e.g. 8-10", "e.g. 10-23,0-8"], id="cron-hours-backwards-with-a-step"),
    *[pytest.param({"trigger": {"type": "cron", "cron": cron}},
                   ["invalid cron expression", CRON], id=f"cron-{cron}")
      for cron in ("0 8 * * 07", "0 8 * * 0007", "0 8 * * \u0667", "\u0667 8 * * *")],
    pytest.param({"trigger": {"type": "cron", "cron": "0 8 31 2 *"}},
                 ["invalid cron expression", "never fires"], id="cron-february-31"),
    pytest.param({"trigger": {"type": "cron", "cron": ""}},
                 ["invalid cron expression", CRON], id="cron-empty"),
    pytest.param({"trigger": {"type": "cron", "cron": "0 8 * * *", "timezone": "Mars/Olympus"}},
                 ["unknown time zone", "Mars/Olympus"], id="unknown-timezone"),
    pytest.param({"trigger": {"type": "cron", "cron": "0 8 * * *", "timezone": "../../etc"}},
                 ["unknown time zone"], id="timezone-path"),
    pytest.param({"trigger": {"type": "cron", "cron": "0 8 * * *", "timezone": ""}},
                 ["unknown time zone"], id="timezone-empty"),
    *[pytest.param({"trigger": {"type": "cron", "cron": "0 8 * * *", "timezone": zone}},
                   ["unknown time zone", zone], id=f"timezone-{zone}")
      for zone in ("Europe", "America", "localtime", "posixrules", "right/UTC", "posix/UTC",
                   "Factory")],
    pytest.param({"trigger": {"type": "interval", "seconds": 59}},
                 ["trigger.interval.seconds", "60"], id="interval-59"),
    pytest.param({"trigger": {"type": "interval", "seconds": 90.5}},
                 ["trigger.interval.seconds"], id="interval-fraction"),
    pytest.param({"trigger": {"type": "interval", "seconds": "hourly"}},
                 ["trigger.interval.seconds"], id="interval-string"),
    pytest.param({"trigger": {"type": "interval"}},
                 ["trigger.interval.seconds"], id="interval-missing-seconds"),
    pytest.param({"thinking_level": "extreme"}, ["thinking_level"], id="thinking-extreme"),
    pytest.param({"text": "x" * 4001}, ["text", "4000"], id="text-4001"),
    pytest.param({"title": "x" * 201}, ["title", "200"], id="title-201"),
    pytest.param({"title": ""}, ["title"], id="title-empty"),
    pytest.param({"text": ""}, ["text"], id="text-empty"),
    pytest.param({"title": "   "}, ["title", "blank"], id="title-blank"),
    pytest.param({"text": "   "}, ["text", "blank"], id="text-blank"),
    pytest.param({"title": "   ", "text": "\t\n "}, ["title", "text", "blank"],
                 id="both-blank"),
    pytest.param({"title": "nul \u0000 byte"}, ["title"], id="title-nul"),
    pytest.param({"text": "nul \u0000 byte"}, ["text"], id="text-nul"),
    pytest.param({"owner": "someone-else"}, ["owner", "extra"], id="unknown-field"),
    pytest.param({"trigger": {"type": "cron", "cron": "0 8 * * *", "every": 5}},
                 ["trigger.cron.every"], id="unknown-trigger-field"),
    pytest.param({"trigger": {"type": "sometimes"}}, ["trigger", "sometimes"],
                 id="unknown-trigger-type"),
    pytest.param({"trigger": {"cron": "0 8 * * *"}}, ["trigger", "type"],
                 id="trigger-without-type"),
    pytest.param({"trigger": {"type": "watch"}}, ["exactly one of gmail_query"],
                 id="watch-neither"),
    pytest.param({"trigger": {"type": "watch", "gmail_query": "from:boss",
                              "drive_folder_id": "f1"}}, ["exactly one of gmail_query"],
                 id="watch-both"),
    pytest.param({"trigger": {"type": "watch", "gmail_query": "  "}}, ["must not be blank"],
                 id="watch-blank-query"),
    pytest.param({"trigger": {"type": "watch", "drive_folder_id": "../x"}},
                 ["drive_folder_id"], id="watch-bad-folder"),
    pytest.param({"sources": ["dropbox"]}, ["sources"], id="unknown-source"),
    pytest.param({"sources": []}, ["sources"], id="no-sources"),
    pytest.param({"channels": ["carrier-pigeon"]}, ["channels"], id="unknown-channel"),
    pytest.param({"channels": []}, ["channels"], id="no-channels"),
    pytest.param({"max_tool_calls": -1}, ["max_tool_calls"], id="max-tool-calls-negative"),
    pytest.param({"max_tool_calls": 101}, ["max_tool_calls", "100"], id="max-tool-calls-101"),
    pytest.param({"max_tool_calls": 10**30}, ["max_tool_calls"], id="max-tool-calls-huge"),
    pytest.param({"title": 123}, ["title"], id="title-number"),
    pytest.param({"text": ["a", "b"]}, ["text"], id="text-list"),
    pytest.param({"trigger": "0 8 * * *"}, ["trigger"], id="trigger-string"),
    pytest.param({"sources": "gmail"}, ["sources"], id="sources-string"),
    pytest.param({"only_new": "perhaps"}, ["only_new"], id="only-new-string"),
    pytest.param({"max_tool_calls": "ten"}, ["max_tool_calls"], id="max-tool-calls-string"),
    pytest.param({"title": None}, ["title"], id="title-null"),
    pytest.param(["a", "list"], ["request"], id="body-is-a-list"),
    pytest.param("a string", ["request"], id="body-is-a-string"),
    pytest.param({}, ["title", "text", "trigger"], id="body-is-empty-object"),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_BODIES)
async def test_create_rejects_bad_input(
    client: httpx.AsyncClient, runtime: Runtime, body: Any, fragments: list[str]
) -> None:
    _user, headers = await user_with_token(runtime)
    if isinstance(body, dict) and body:
        body = instruction_body(**body)
    response = await client.post(f"{API}/instructions", json=body, headers=headers)
    assert_error(response, 422, "ValidationError", *fragments)
    listed = await client.get(f"{API}/instructions", headers=headers)
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"{not json", "application/json", id="broken-json"),
        pytest.param(b"title=Morning", "application/json", id="form-as-json"),
        pytest.param(b"", "application/json", id="empty-json"),
        pytest.param(b"", None, id="empty-no-type"),
        pytest.param(b"\xff\xfe\x00garbage", "application/json", id="binary"),
        pytest.param(b"null", "application/json", id="null"),
        pytest.param(b'{"title": "\\ud800", "text": "t", "trigger": {"type": "interval", '
                     b'"seconds": 60}}', "application/json", id="lone-surrogate"),
    ],
)
async def test_create_rejects_non_json(
    client: httpx.AsyncClient, runtime: Runtime, content: bytes, content_type: str | None
) -> None:
    _user, headers = await user_with_token(runtime)
    if content_type:
        headers = {**headers, "Content-Type": content_type}
    response = await client.post(f"{API}/instructions", content=content, headers=headers)
    assert_error(response, 422, "ValidationError")


async def test_deeply_nested_json_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await user_with_token(runtime)
    content = b"[" * 100_000 + b"]" * 100_000
    response = await client.post(f"{API}/instructions", content=content,
                                 headers={**headers, "Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert set(response.json()) <= {"error", "detail", "errors"}
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/resume"),
     ("POST", "/run")],
)
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "0" * 40])
async def test_non_uuid_id_is_422(
    client: httpx.AsyncClient, runtime: Runtime, method: str, suffix: str, bad_id: str
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.request(
        method, f"{API}/instructions/{bad_id}{suffix}", headers=headers,
        json={"title": "x"} if method == "PATCH" else None,
    )
    assert_error(response, 422, "ValidationError", "instruction_id")
