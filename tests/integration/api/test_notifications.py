"""The notifications API: the feed with its deliveries, unread filter, mark read."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.core.db import utcnow
from app.core.runtime import Runtime
from tests.factories import instruction, user_with_token
from tests.integration.api.helpers import (
    API,
    add_notification,
    add_run,
    assert_error,
    parse_time,
)


async def test_list_with_deliveries(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    run = await add_run(runtime, user, await instruction(runtime, user), status="succeeded")
    first = await add_notification(runtime, user, title="First", run=run,
                                   channels=("email", "webhook"))
    second = await add_notification(runtime, user, title="Second", kind="alert")

    response = await client.get(f"{API}/notifications", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    assert [n["id"] for n in body["items"]] == [str(second), str(first)]  # newest first

    newest, oldest = body["items"]
    assert newest["kind"] == "alert"
    assert newest["run_id"] is None
    assert [(d["channel"], d["status"]) for d in newest["deliveries"]] == [("in_app", "sent")]

    assert oldest["title"] == "First"
    assert oldest["body"] == "First: body"
    assert oldest["data"] == {"source": "test"}
    assert oldest["run_id"] == str(run.id)
    assert oldest["instruction_id"] == str(run.instruction_id)
    assert oldest["read_at"] is None
    deliveries = {d["channel"]: d for d in oldest["deliveries"]}
    assert sorted(deliveries) == ["email", "in_app", "webhook"]
    assert deliveries["in_app"]["status"] == "sent"
    assert deliveries["in_app"]["sent_at"] is not None
    assert (deliveries["email"]["status"], deliveries["email"]["attempts"]) == ("pending", 0)
    assert deliveries["email"]["sent_at"] is None


async def test_list_in_pages(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    ids = [str(await add_notification(runtime, user, title=f"n{i}")) for i in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(f"{API}/notifications", params=params, headers=headers)).json()
        seen += [n["id"] for n in page["items"]]
        assert all(n["deliveries"] for n in page["items"])
        cursor = page["next_cursor"]
    assert seen == ids[::-1]
    assert cursor is None


async def test_unread_filter_and_mark_one_read(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    user, headers = await user_with_token(runtime)
    first = await add_notification(runtime, user, title="First", channels=("email",))
    second = await add_notification(runtime, user, title="Second")

    response = await client.post(f"{API}/notifications/{first}/read", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == str(first)
    assert parse_time(body["read_at"]) <= utcnow()
    assert [d["channel"] for d in body["deliveries"]] == ["email", "in_app"]

    # marking again keeps the first time
    again = await client.post(f"{API}/notifications/{first}/read", headers=headers)
    assert again.json()["read_at"] == body["read_at"]

    unread = await client.get(f"{API}/notifications", params={"unread": "true"},
                              headers=headers)
    assert [n["id"] for n in unread.json()["items"]] == [str(second)]
    everything = await client.get(f"{API}/notifications", params={"unread": "false"},
                                  headers=headers)
    assert [n["id"] for n in everything.json()["items"]] == [str(second), str(first)]


async def test_mark_all_read(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    ids = [await add_notification(runtime, user, title=f"n{i}") for i in range(3)]
    await client.post(f"{API}/notifications/{ids[0]}/read", headers=headers)

    response = await client.post(f"{API}/notifications/read", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"marked": 2}

    unread = await client.get(f"{API}/notifications", params={"unread": True}, headers=headers)
    assert unread.json()["items"] == []
    items = (await client.get(f"{API}/notifications", headers=headers)).json()["items"]
    assert all(n["read_at"] is not None for n in items)

    again = await client.post(f"{API}/notifications/read", headers=headers)
    assert again.json() == {"marked": 0}


async def test_unknown_notification_is_404(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user, headers = await user_with_token(runtime)
    await add_notification(runtime, user)
    missing = uuid.uuid4()
    response = await client.post(f"{API}/notifications/{missing}/read", headers=headers)
    assert_error(response, 404, "NotificationNotFound", str(missing))
    response = await client.post(f"{API}/notifications/nope/read", headers=headers)
    assert_error(response, 422, "ValidationError", "notification_id")
    response = await client.get(f"{API}/notifications/{missing}", headers=headers)
    assert response.status_code in (404, 405)
    assert set(response.json()) == {"error", "detail"}


@pytest.mark.parametrize(
    ("params", "fragment", "error"),
    [
        ({"unread": "maybe"}, "unread", "ValidationError"),
        ({"limit": "0"}, "limit", "ValidationError"),
        ({"cursor": "%%%"}, "cursor", "InvalidCursor"),
    ],
)
async def test_list_bad_query_is_422(
    client: httpx.AsyncClient, runtime: Runtime, params: dict[str, str], fragment: str,
    error: str,
) -> None:
    _user, headers = await user_with_token(runtime)
    response = await client.get(f"{API}/notifications", params=params, headers=headers)
    assert_error(response, 422, error, fragment)
