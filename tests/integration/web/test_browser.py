"""The dashboard in headless Chromium (Debian's) against a real uvicorn server of the app.

One event loop runs the test, the server (api, dashboard and a worker) and Playwright's
async driver. The browser waits for elements; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from app.agent.offline import OfflineModel
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.delivery.push import payload
from app.main import create_app
from app.notifications.service import notify
from app.runs.execute import RunExecutor
from app.runs.models import Run
from app.runs.worker import Worker
from tests import factories
from tests.fakes.gemini import Calls, FakeGemini, Text
from tests.integration.processes import free_port
from tests.integration.runs.helpers import notifications_of
from tests.integration.runs.test_questions_flow import gemini_for, point_at_fake, questions_of
from tests.integration.serving import serving
from tests.integration.web.helpers import login_link, question_for

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 20_000
# Assertions wait as long as actions do (their own default is 5 s): a run on a loaded CI
# machine can take longer than that to reach the status a test waits for.
expect.set_options(timeout=TIMEOUT_MS)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)


@asynccontextmanager
async def served(runtime: Runtime, llm: Any) -> AsyncIterator[str]:
    """The app with a worker, on a real uvicorn server on 127.0.0.1; yields its base URL."""
    port = free_port()
    runtime.settings.public_url = f"http://127.0.0.1:{port}"
    worker = Worker(runtime=runtime, executor=RunExecutor(
        sessionmaker=runtime.sessionmaker, settings=runtime.settings, llm=llm))
    async with serving(create_app(runtime, loops=[worker]), port) as base:
        yield base


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def context(chromium: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh profile per test: no cookies or storage carried over."""
    ctx = await chromium.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    await ctx.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button')]
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                 && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map((e) => e.name || e.id || e.tagName)"""


async def assert_accessible_basics(page: Page) -> None:
    """Every control has a label, and there is one main landmark with one h1."""
    assert await page.evaluate(UNLABELLED) == []
    await expect(page.get_by_role("main")).to_have_count(1)
    await expect(page.locator("h1")).to_have_count(1)


async def signed_in(runtime: Runtime, context: BrowserContext, user: Any) -> Page:
    page = await context.new_page()
    await page.goto(await login_link(runtime, user))
    await page.get_by_role("button", name=f"Sign in as {user.email}").click()
    await expect(page.get_by_role("heading", name="Instructions", level=1)).to_be_visible()
    return page


async def test_draft_save_run_and_the_digest_arrives_in_the_feed(
    runtime: Runtime, context: BrowserContext
) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with served(runtime, OfflineModel()):
        page = await signed_in(runtime, context, user)
        await page.get_by_role("link", name="New instruction").click()
        await page.get_by_label("What should Pilotlight do, and when?").fill(
            "every weekday at 8 tell me what my team sent")
        await page.get_by_role("button", name="Draft it").click()
        await expect(page.locator("#draft-result")).to_contain_text("Understood")
        title = page.get_by_label("Title")
        await expect(title).not_to_have_value("")
        await expect(page.get_by_label("Cron expression")).to_have_value("0 8 * * 1-5")
        readable = page.locator("#schedule-readable")
        await expect(readable).to_contain_text("08:00")
        # The schedule in words follows the fields as they are typed.
        await page.get_by_label("Cron expression").fill("30 9 * * *")
        await expect(readable).to_contain_text("09:30")
        await page.get_by_label("Cron expression").fill("not a schedule")
        await expect(readable).to_have_class(re.compile("problem"))
        await page.get_by_label("Cron expression").fill("30 9 * * 1-5")
        await expect(readable).to_contain_text("09:30")
        name = await title.input_value()
        await assert_accessible_basics(page)
        await page.get_by_role("button", name="Save instruction").click()
        card = page.locator(".instruction", has_text=name)
        await expect(card).to_contain_text("At 09:30")

        feed = await context.new_page()
        await feed.goto(f"{runtime.settings.public_url}/feed")
        await expect(feed.locator("#feed-state")).to_have_text("Live")
        await card.get_by_role("button", name=f"Run now: {name}").click()
        # The run's page follows it to the end and then shows its digest and trace.
        await expect(page.locator("#run-status")).to_have_text("succeeded")
        await expect(page.get_by_role("heading", name="Digest")).to_be_visible()
        await expect(page.locator(".trace .step").first).to_be_visible()
        # The feed got the digest over the event stream, without a reload.
        item = feed.locator(".feed-item.fresh.kind-digest")
        await expect(item).to_contain_text(name)
        assert await feed.evaluate("performance.getEntriesByType('navigation').length") == 1


async def test_the_feed_says_so_when_signing_out_ends_its_stream(
    runtime: Runtime, context: BrowserContext
) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with served(runtime, OfflineModel()):
        page = await signed_in(runtime, context, user)
        feed = await context.new_page()
        await feed.goto(f"{runtime.settings.public_url}/feed")
        await expect(feed.locator("#feed-state")).to_have_text("Live")
        await page.get_by_role("button", name="Sign out").click()
        # The stream checks its session every few seconds, ends, and is refused after.
        await expect(feed.locator("#feed-state")).to_have_text(
            "Signed out: reload the page", timeout=TIMEOUT_MS)


async def test_a_live_feed_item_arrives_unread_and_is_marked_read(
    runtime: Runtime, context: BrowserContext
) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with served(runtime, OfflineModel()) as base:
        page = await signed_in(runtime, context, user)
        await page.goto(f"{base}/feed")
        await expect(page.locator("#feed-state")).to_have_text("Live")
        async with transaction(runtime.sessionmaker) as session:
            await notify(session=session, user_id=user.id, key="live-alert", kind="alert",
                         title="Invoice overdue", body="Skyline Cloud", channels=[])
        # Rendered by the page's script as the server renders it: unread, with its form.
        item = page.locator(".feed-item.fresh.unread", has_text="Invoice overdue")
        await expect(item.locator(".unread-mark")).to_have_text("unread")
        await assert_accessible_basics(page)
        await item.get_by_role("button", name="Mark read: Invoice overdue").click()
        # The form posts with the CSRF token and comes back to the feed, the item read.
        read = page.locator(".feed-item", has_text="Invoice overdue")
        await expect(read).not_to_have_class(re.compile(r"\bunread\b"))
        await expect(read.get_by_role("button", name="Mark read: Invoice overdue")).to_have_count(0)
        await expect(page.locator("#feed-state")).to_have_text("Live")


# A sample CSV's header as a digest item quoted it: one word a phone cannot fit.
UNBROKEN = "category,owner,q4_plan_usd,q4_revised_usd,variance_usd,notes_for_finance_review"


async def test_pages_fit_a_phone_also_with_long_unbroken_words(
    runtime: Runtime, chromium: Browser
) -> None:
    """A digest item quoting a CSV header made a run's page 633 px wide at 390 px, a long
    unbroken title the instructions 1015 px; the settings' hidden table header 4 px."""
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, title=UNBROKEN * 2)
    digest: dict[str, Any] = {
        "summary": UNBROKEN, "model": "pilotlight-offline", "notes": [], "action_items": [],
        "sections": [{"title": UNBROKEN, "items": [{"title": UNBROKEN, "detail": UNBROKEN,
                                                     "refs": []}]}],
    }
    async with transaction(runtime.sessionmaker) as session:
        run = Run(user_id=user.id, instruction_id=instruction.id, reason="manual",
                  scheduled_for=utcnow(), status="succeeded", result=digest,
                  finished_at=utcnow())
        session.add(run)
        await session.flush()
        await notify(session=session, user_id=user.id, key="wide", kind="digest",
                     title=UNBROKEN, body=UNBROKEN, channels=[], run_id=run.id)
    phone = await chromium.new_context(viewport={"width": 375, "height": 800})
    try:
        async with served(runtime, OfflineModel()) as base:
            page = await signed_in(runtime, phone, user)
            for path in ("/", "/runs", f"/runs/{run.id}", "/feed", "/settings",
                         f"/instructions/{instruction.id}"):
                await page.goto(f"{base}{path}")
                wide = await page.evaluate("document.documentElement.scrollWidth")
                assert wide <= 375, f"{path} is {wide} px wide on a 375 px phone"
            await page.goto(f"{base}/runs/{run.id}")
            await expect(page.locator(".digest")).to_contain_text(UNBROKEN)
    finally:
        await phone.close()


async def test_a_live_feed_item_shows_its_time_as_the_server_does_in_the_users_zone(
    runtime: Runtime, chromium: Browser
) -> None:
    """The page's script wrote a live item's time in the browser's zone and locale
    ("Tue, Nov 24, 07:16 PM"), the server the same item in the user's ("Wed 25 Nov 06:16")."""
    user, _ = await factories.user_with_token(runtime)
    async with transaction(runtime.sessionmaker) as session:
        (await session.merge(user)).timezone = "Australia/Lord_Howe"
    browser_elsewhere = await chromium.new_context(timezone_id="America/Los_Angeles",
                                                   locale="en-US")
    try:
        async with served(runtime, OfflineModel()) as base:
            page = await signed_in(runtime, browser_elsewhere, user)
            await page.goto(f"{base}/feed")
            await expect(page.locator("#feed-state")).to_have_text("Live")
            async with transaction(runtime.sessionmaker) as session:
                await notify(session=session, user_id=user.id, key="zoned", kind="alert",
                             title="Invoice overdue", body="Skyline Cloud", channels=[])
            live = page.locator(".feed-item.fresh", has_text="Invoice overdue").locator("time")
            await expect(live).to_have_text(re.compile(r"^\w{3} \d{2} \w{3} \d{2}:\d{2}$"))
            shown_live = await live.inner_text()
            await page.reload()
            served_time = page.locator(".feed-item", has_text="Invoice overdue").locator("time")
            await expect(served_time).to_have_text(shown_live)
    finally:
        await browser_elsewhere.close()


async def test_a_question_asked_while_the_questions_page_is_open_arrives_on_it(
    runtime: Runtime, context: BrowserContext
) -> None:
    """The questions page was not live: a question the agent asked showed only after a
    reload. It arrives over the event stream, rendered as the server renders one (its text
    escaped, never markup), and answers as one does."""
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, title="Invoices <i>all</i>")
    async with served(runtime, OfflineModel()) as base:
        page = await signed_in(runtime, context, user)
        await page.goto(f"{base}/questions")
        await expect(page.get_by_text("No open questions")).to_be_visible()
        await expect(page.locator("#questions-state")).to_have_text("Live")
        run_id, question_id = await question_for(runtime, user, instruction.id,
                                                 text="Which <b>project</b>?")
        async with transaction(runtime.sessionmaker) as session:
            await notify(session=session, user_id=user.id, key=f"q-{question_id}",
                         kind="question", title="Invoices: a question for you",
                         body="Which <b>project</b>?", channels=[], run_id=run_id,
                         instruction_id=instruction.id,
                         data={"question_id": str(question_id), "choices": ["Apollo", "Gemini"]})
        card = page.locator(f'.question.fresh[data-question-id="{question_id}"]')
        await expect(card.get_by_role("heading", level=2)).to_have_text("Which <b>project</b>?")
        assert await card.locator("b, i").count() == 0  # text, not markup
        await expect(card.locator("p.muted")).to_contain_text("Invoices <i>all</i> · asked ")
        await expect(page.get_by_text("No open questions")).to_be_hidden()
        await assert_accessible_basics(page)
        assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1
        await card.get_by_role("button", name="Apollo").click()
        await expect(page.locator("#answered")).to_contain_text("You answered “Apollo”")
    (question,) = await questions_of(runtime, instruction.id)
    assert (question.status, question.answer) == ("answered", "Apollo")


DIGEST = {
    "summary": "The Skyline Cloud invoice for Apollo is due.",
    "sections": [{"title": "Needs your attention", "items": [
        {"title": "Skyline Cloud invoice", "detail": "Due soon.",
         "message_ids": ["1795086141.M1P2041.sample"]},
    ]}],
}


async def test_answering_a_question_resumes_the_run(
    runtime: Runtime, context: BrowserContext, fake: FakeGemini
) -> None:
    fake.reset()
    point_at_fake(runtime.settings, fake)
    fake.script(
        Calls([("ask_user", {"question": "Which project?", "choices": ["Apollo", "Gemini"]})]),
        Text(json.dumps(DIGEST)),
    )
    user, _ = await factories.user_with_token(runtime)
    await factories.instruction(runtime, user, title="Invoices")
    llm = gemini_for(runtime.settings)
    try:
        async with served(runtime, llm):
            page = await signed_in(runtime, context, user)
            await page.get_by_role("button", name="Run now: Invoices").click()
            await expect(page.locator("#run-status")).to_have_text("waiting for user")
            await page.get_by_role("link", name="Answer it").click()
            await expect(page.get_by_role("heading", name="Which project?")).to_be_visible()
            await page.get_by_role("button", name="Apollo").click()
            # Back on the run: it is queued again, resumes and finishes with its digest.
            await expect(page.locator("#run-status")).to_have_text("succeeded")
            await expect(page.locator("#digest")).to_contain_text("Skyline Cloud invoice")
            await expect(page.locator("#digest")).to_contain_text("The Skyline Cloud invoice")
    finally:
        await llm.aclose()
    resumed = fake.requests()[1].body
    assert resumed["input"][0]["result"] == "The user answered: Apollo"


SW_JS = Path(__file__).resolve().parents[3] / "app" / "web" / "static" / "sw.js"
LONG_CHOICE = "Move the launch to next Tuesday and tell the whole team by email today"


def run_the_service_worker(source: str) -> str:
    """A function for `page.evaluate` that runs sw.js as the browser would on a push and a
    click on one of its notification's actions. A page has no `self.registration` or
    `self.clients`: they are stand-ins that record what the worker asks of them; `fetch` is
    the page's own, so the worker's requests reach the real server with the session cookie.
    """
    return """async ({pushed, action}) => {
  const handlers = {}, shown = [], opened = [], waits = [];
  const self = {
    addEventListener: (type, handler) => { handlers[type] = handler; },
    skipWaiting: () => undefined,
    location: window.location,
    registration: { showNotification: async (title, options) => {
      shown.push({ title, options }); } },
    clients: { claim: async () => undefined, matchAll: async () => [],
               openWindow: async (url) => { opened.push(url); } },
  };
  const event = (fields) => ({ ...fields, waitUntil: (promise) => waits.push(promise) });
  (() => {
""" + source + """
  })();
  handlers.push(event({ data: { json: () => pushed, text: () => JSON.stringify(pushed) } }));
  await Promise.all(waits.splice(0));
  const [note] = shown;
  handlers.notificationclick(event({
    action, notification: { data: note.options.data, close: () => undefined } }));
  await Promise.all(waits.splice(0));
  return { buttons: note.options.actions.map((a) => a.title), opened };
}"""


async def test_a_push_notifications_action_answers_with_the_whole_choice(
    runtime: Runtime, context: BrowserContext, fake: FakeGemini
) -> None:
    """sw.js itself, in Chromium, against the app: the button shows a long choice cut short,
    and clicking it answers the question with the whole choice, by its index."""
    fake.reset()
    point_at_fake(runtime.settings, fake)
    fake.script(
        Calls([("ask_user", {"question": "Which plan?",
                             "choices": ["Keep the date", LONG_CHOICE]})]),
        Text(json.dumps(DIGEST)),
    )
    user, _ = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user, title="Launch")
    llm = gemini_for(runtime.settings)
    try:
        async with served(runtime, llm) as base:
            page = await signed_in(runtime, context, user)
            await page.get_by_role("button", name="Run now: Launch").click()
            await expect(page.locator("#run-status")).to_have_text("waiting for user")
            (asked,) = [n for n in await notifications_of(runtime, user.id)
                        if n.kind == "question"]
            pushed = json.loads(payload(asked))  # what the push service hands the worker
            # The run's page reloads itself when its status changes (to show the question,
            # then the digest), which would cut short a script running in it: the worker
            # runs in a page of the same browser, signed in, that follows no run.
            beside = await context.new_page()
            await beside.goto(f"{base}/static/app.css")
            clicked = await beside.evaluate(run_the_service_worker(SW_JS.read_text()),
                                            {"pushed": pushed, "action": "choice:1"})
            await beside.close()
            assert clicked["buttons"][0] == "Keep the date"
            assert clicked["buttons"][1].endswith("\u2026")  # cut to fit a button
            assert clicked["opened"] == []  # answered: nothing to open
            # The run resumes with the answer and finishes with its digest.
            await page.reload()
            await expect(page.locator("#run-status")).to_have_text("succeeded")
    finally:
        await llm.aclose()
    (question,) = await questions_of(runtime, instruction.id)
    assert (question.status, question.answer) == ("answered", LONG_CHOICE)
    resumed = fake.requests()[1].body
    assert resumed["input"][0]["result"] == f"The user answered: {LONG_CHOICE}"


async def test_create_and_revoke_an_api_token(runtime: Runtime, context: BrowserContext) -> None:
    user, _ = await factories.user_with_token(runtime)
    async with served(runtime, OfflineModel()) as base:
        page = await signed_in(runtime, context, user)
        await page.get_by_role("link", name="Settings").click()
        await assert_accessible_basics(page)
        # Keyboard only: the name field, then Tab to its button and Enter.
        await page.get_by_label("Name", exact=True).fill("laptop script")
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("button", name="Create token")).to_be_focused()
        await page.keyboard.press("Enter")
        shown = page.locator("#new-token")
        await expect(shown).to_have_text(re.compile(r"^plt_"))
        token = await shown.inner_text()
        # The form's answer was a redirect: a reload shows the token no more and posts
        # nothing again (no second token).
        await page.reload()
        await expect(page.locator("#new-token")).to_have_count(0)
        await expect(page.locator("tr", has_text="laptop script")).to_have_count(1)
        async with httpx.AsyncClient(base_url=base) as api:
            headers = {"Authorization": f"Bearer {token}"}
            assert (await api.get("/api/v1/me", headers=headers)).status_code == 200
            await page.goto(f"{base}/settings")
            await expect(page.locator("#new-token")).to_have_count(0)  # shown once only
            await page.get_by_role("button", name="Revoke token laptop script").click()
            row = page.locator("tr", has_text="laptop script")
            await expect(row).to_contain_text("revoked")
            assert (await api.get("/api/v1/me", headers=headers)).status_code == 401
