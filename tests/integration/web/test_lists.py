"""The dashboard's long lists over HTTP: every instruction is reachable through the
page's "More instructions" link (the API's cursor)."""

from __future__ import annotations

import html
import re

import httpx

from app.core.runtime import Runtime
from tests import factories
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

