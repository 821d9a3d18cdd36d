"""Screenshots of every dashboard page at 1280 and 390 px wide (light), into docs/screenshots/.

Starts the app as `pilotlight serve` would on first start (a fresh SQLite database, the
local user, the bundled sample mailbox, the example instruction and its first run, the
offline model), adds a question, a token and a webhook so that every page has something
to show, and drives Debian's Chromium over it:

    python scripts/screenshots.py [--chromium /usr/bin/chromium] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
from datetime import timedelta
from pathlib import Path

import uvicorn
from playwright.async_api import Page, async_playwright
from sqlalchemy import select

from app.agent.offline import OfflineModel
from app.bootstrap import ensure_local_user
from app.channels import service as webhooks
from app.channels.schemas import WebhookCreate
from app.core.config import Settings
from app.core.db import transaction, utcnow
from app.core.migrate import upgrade
from app.core.runtime import Runtime
from app.instructions import service as instructions
from app.instructions.schemas import InstructionCreate, IntervalTriggerIn
from app.main import create_app
from app.questions import service as questions
from app.runs import service as runs
from app.runs.execute import RunExecutor
from app.runs.models import FINAL_STATUSES, Run
from app.runs.worker import Worker
from app.users import service as users

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTHS = (1280, 390)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sample_data(runtime: Runtime) -> dict[str, str]:
    """The first start's data, plus a waiting question, a token and a webhook."""
    boot = await ensure_local_user(runtime)
    user = boot.user
    async with transaction(runtime.sessionmaker) as session:
        await users.create_token(session=session, user=user, name="laptop script")
        await webhooks.create(
            session=session, user=user, settings=runtime.settings,
            data=WebhookCreate(url="http://127.0.0.1:9000/hooks/pilotlight"),
        )
        invoices = await instructions.create(
            session=session, user=user, default_max_tool_calls=10,
            data=InstructionCreate(
                title="Invoices to pay", text="Whenever an invoice arrives, tell me at once "
                "and ask which project it belongs to.",
                trigger=IntervalTriggerIn(type="interval", seconds=3600), sources=["gmail"],
                channels=["in_app", "push"],
            ),
        )
        waiting = await runs.run_now(session=session, instruction=invoices,
                                     wakeups=runtime.wakeups)
        waiting.status = "waiting_for_user"  # as the worker leaves a run that asked
        await questions.ask(
            session=session, user_id=user.id, run_id=waiting.id, instruction_id=invoices.id,
            interaction_id="sample", call_id="call_sample",
            text="The Skyline Cloud invoice (EUR 4,200) is due Friday: which project pays it?",
            choices=["Apollo", "Gemini", "Overhead"], expires_at=utcnow() + timedelta(hours=20),
        )
    return {"email": user.email}


async def finished_run(runtime: Runtime) -> str:
    """The example instruction's first run, once the worker has finished it."""
    while True:
        async with transaction(runtime.sessionmaker) as session:
            run = (await session.execute(
                select(Run).where(Run.reason == "manual", Run.status.in_(FINAL_STATUSES))
            )).scalars().first()
        if run is not None:
            return str(run.id)
        await asyncio.sleep(0.2)


async def shoot(page: Page, out: Path, name: str) -> None:
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        await page.screenshot(path=out / f"{name}-{width}.png", full_page=True)
        print(f"saved {out / f'{name}-{width}.png'}")


async def main(chromium: str, out: Path, scheme: str = "light") -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=Path(data_dir), timezone="Europe/Berlin",
            webhook_allow_private=True, port=port, worker_poll_seconds=0.1,
        )
        runtime = Runtime.build(settings)
        await upgrade(runtime.engine)
        await sample_data(runtime)
        worker = Worker(runtime=runtime, executor=RunExecutor(
            sessionmaker=runtime.sessionmaker, settings=settings, llm=OfflineModel()))
        app = create_app(runtime, loops=[worker], embedded=True)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        try:
            run_id = await finished_run(runtime)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium, args=ARGS)
                context = await browser.new_context(color_scheme=scheme,  # type: ignore[arg-type]
                                                    viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                for name, path in (("instructions", "/"), ("runs", "/runs"),
                                   ("run", f"/runs/{run_id}"), ("questions", "/questions"),
                                   ("feed", "/feed"), ("settings", "/settings")):
                    await page.goto(base + path)
                    if name == "feed":
                        await page.locator("#feed-state").filter(has_text="Live").wait_for()
                    if name == "run":  # one tool call opened: its arguments and result
                        for summary in await page.locator(".step-tool").first.locator(
                                "summary").all():
                            await summary.click()
                    await shoot(page, out, name)
                await page.goto(base + "/instructions/new")
                await page.get_by_label("What should Pilotlight do, and when?").fill(
                    "every weekday at 8 tell me what my team sent and which docs changed")
                await page.get_by_role("button", name="Draft it").click()
                await page.locator("#schedule-next").filter(has_text="Next").wait_for()
                await shoot(page, out, "editor")
                await context.close()
                signed_out = await browser.new_context(color_scheme=scheme)  # type: ignore[arg-type]
                login = await signed_out.new_page()
                await login.goto(base.replace("127.0.0.1", "localhost") + "/login")
                await shoot(login, out, "login")
                await browser.close()
        finally:
            hub = getattr(app.state, "events", None)
            if hub is not None:
                hub.end_streams()
            server.should_exit = True
            await task
            await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "docs" / "screenshots")
    parser.add_argument("--color-scheme", choices=["light", "dark"], default="light",
                        help="the README shows light; dark is for checking the dark theme")
    options = parser.parse_args()
    asyncio.run(main(options.chromium, options.out, options.color_scheme))
