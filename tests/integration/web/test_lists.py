"""The dashboard's long lists over HTTP: every instruction and every notification is
reachable through the pages' "More" and "Older" links (the API's cursor), a filter is
kept from page to page, and the feed's items are marked read with CSRF-checked forms."""

from __future__ import annotations

import html
import re
import uuid

import httpx
import pytest

from app.core.db import transaction
from app.core.runtime import Runtime
from app.notifications import service as notifications
from app.notifications.models import Notification
from app.users.models import User
from app.web import runs_pages
from tests import factories
from tests.integration.api.helpers import add_run
from tests.integration.web.helpers import browser, sign_in


def _link(page: str, text: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)">{re.escape(text)}</a>', page)
    return html.unescape(found[1]) if found else None


async def _follow(client: httpx.AsyncClient, start: str, link_text: str) -> list[str]:
    """Each page's HTML, from `start` following `link_text` until a page has none."""
    pages: list[str] = []
    url: str | None = start
    while url is not None:
        assert len(pages) < 10, "the pages do not end"
        response = await client.get(url)
        assert response.status_code == 200, response.text
        pages.append(response.text)
        url = _link(response.text, link_text)
    return pages


async def _alerts(runtime: Runtime, user: User, count: int) -> list[uuid.UUID]:
    """`count` unread alerts titled "Alert number NNN", oldest first."""
    ids = []
    async with transaction(runtime.sessionmaker) as session:
        for i in range(count):
            ids.append(await notifications.notify(
                session=session, user_id=user.id, key=f"alert-{i}", kind="alert",
                title=f"Alert number {i:03d}", body="b", channels=[]))
    return ids


async def _read_at(runtime: Runtime, notification_id: uuid.UUID) -> object:
    async with transaction(runtime.sessionmaker) as session:
        row = await session.get(Notification, notification_id)
        assert row is not None
        return row.read_at


async def test_every_instruction_is_reachable_through_more_instructions(
    runtime: Runtime,
) -> None:
    user, _ = await factories.user_with_token(runtime)
    for i in range(201):
        await factories.instruction(runtime, user, title=f"Instruction number {i:03d}")
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        pages = await _follow(client, "/", "More instructions")
    shown = [re.findall(r"Instruction number (\d{3})</a>", p) for p in pages]
    assert [len(s) for s in shown] == [200, 1]
    assert shown[1] == ["000"]  # the oldest, on the second page
    assert sorted(sum(shown, [])) == [f"{i:03d}" for i in range(201)]
    assert "Newest instructions" in pages[1]


async def test_every_notification_is_reachable_through_older(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    await _alerts(runtime, user, 51)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        pages = await _follow(client, "/feed", "Older")
    shown = [re.findall(r"<h2>Alert number (\d{3})</h2>", p) for p in pages]
    assert [len(s) for s in shown] == [50, 1]
    assert shown[1] == ["000"]
    assert sorted(sum(shown, [])) == [f"{i:03d}" for i in range(51)]
    # Only the first page follows the feed live: newer items do not belong on an older one.
    assert 'data-stream="/api/v1/events"' in pages[0]
    assert "data-stream" not in pages[1]


async def test_the_unread_feed_keeps_its_filter_on_older_pages(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    ids = await _alerts(runtime, user, 54)
    async with transaction(runtime.sessionmaker) as session:
        for read in (ids[0], ids[10], ids[20]):
            await notifications.mark_read(session=session, user=user, notification_id=read)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        pages = await _follow(client, "/feed?unread=1", "Older")
        everything = await _follow(client, "/feed", "Older")
    shown = [re.findall(r"<h2>Alert number (\d{3})</h2>", p) for p in pages]
    assert [len(s) for s in shown] == [50, 1]
    assert sorted(sum(shown, [])) == sorted(
        f"{i:03d}" for i in range(54) if i not in (0, 10, 20))
    assert [len(re.findall(r"<h2>Alert number \d{3}</h2>", p)) for p in everything] == [50, 4]


async def test_marking_one_notification_read_needs_the_csrf_token(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    first, second = await _alerts(runtime, user, 2)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        feed = (await client.get("/feed")).text
        # Unread items look unread and each has its own form.
        assert feed.count('class="card feed-item kind-alert unread"') == 2
        assert f'action="/feed/{first}/read"' in feed
        for data in ({}, {"csrf_token": "forged"}):
            refused = await client.post(f"/feed/{first}/read", data=data)
            assert refused.status_code == 403
            assert "CSRF" in refused.text
        assert await _read_at(runtime, first) is None

        marked = await client.post(f"/feed/{first}/read", data={"csrf_token": csrf})
        assert marked.status_code == 303
        assert marked.headers["location"] == f"/feed#n-{first}"
        assert await _read_at(runtime, first) is not None
        assert await _read_at(runtime, second) is None
        feed = (await client.get("/feed")).text
        item = re.search(rf'<li class="([^"]+)" id="n-{first}">(.*?)</li>', feed, re.S)
        assert item is not None
        assert "unread" not in item[1]
        assert "Mark read" not in item[2]
        assert f'id="n-{second}"' in (await client.get("/feed?unread=1")).text
        assert f'id="n-{first}"' not in (await client.get("/feed?unread=1")).text

        # From a filtered, older page, the form goes back to that page.
        again = await client.post(f"/feed/{second}/read", data={
            "csrf_token": csrf, "unread": "1", "cursor": "abc-_"})
        assert again.status_code == 303
        assert again.headers["location"] == f"/feed?unread=1&cursor=abc-_#n-{second}"
        # The API sees what the dashboard marked.
        listed = (await client.get("/api/v1/notifications", params={"unread": "true"})).json()
        assert listed["items"] == []


async def test_mark_all_read_needs_the_csrf_token(runtime: Runtime) -> None:
    user, _ = await factories.user_with_token(runtime)
    other, _ = await factories.user_with_token(runtime)
    ids = await _alerts(runtime, user, 3)
    (others,) = await _alerts(runtime, other, 1)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        assert "Mark all read" in (await client.get("/feed")).text
        refused = await client.post("/feed/read", data={"csrf_token": "forged"})
        assert refused.status_code == 403
        assert [await _read_at(runtime, i) for i in ids] == [None, None, None]

        marked = await client.post("/feed/read", data={"csrf_token": csrf, "unread": "1"})
        assert marked.status_code == 303
        assert marked.headers["location"] == "/feed?unread=1"
        assert None not in [await _read_at(runtime, i) for i in ids]
        unread = (await client.get("/feed?unread=1")).text
        assert "Alert number" not in unread
        assert "Nothing unread." in unread
        assert "Mark read" not in (await client.get("/feed")).text
    assert await _read_at(runtime, others) is None  # only the viewer's own


async def test_runs_of_instructions_beyond_the_filters_choices_keep_their_title(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Titles came from the newest 500 instructions only: a run of an older one was named
    "Deleted instruction"."""
    monkeypatch.setattr(runs_pages, "FILTER_CHOICES", 2)
    user, _ = await factories.user_with_token(runtime)
    oldest = await factories.instruction(runtime, user, title="The oldest one")
    for i in range(2):
        await factories.instruction(runtime, user, title=f"Newer {i}")
    run = await add_run(runtime, user, oldest, status="succeeded")
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        listing = (await client.get("/runs")).text
        detail = (await client.get(f"/runs/{run.id}")).text
        filtered = (await client.get("/runs", params={"instruction_id": str(oldest.id)})).text
    assert "Deleted instruction" not in listing
    assert "<td>The oldest one</td>" in listing
    assert "The oldest one" in detail
    assert f'<option value="{oldest.id}" selected>The oldest one</option>' in filtered
    assert f'<option value="{oldest.id}"' not in listing  # beyond the filter's choices
