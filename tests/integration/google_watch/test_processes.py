"""Watch triggers with real processes: two schedulers polling the same account, a
restart, and the whole service (`pilotlight serve`) against the fake run on its own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select

from app.core.runtime import Runtime
from app.google.watch_models import WatchCursor, WatchHit
from tests import factories
from tests.fakes.google import FakeGoogle
from tests.integration.google_watch.conftest import (
    EMAIL,
    fired_ids,
    google_account,
    pdf,
    watch_runs,
)
from tests.integration.processes import (
    command,
    free_port,
    pilotlight_env,
    start,
    stop,
    stopped_cleanly,
    wait_for,
    wait_healthy,
)

pytestmark = pytest.mark.slow

T = TypeVar("T")
BILLING = "from:billing@example.com has:attachment"


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def history_calls(fake: FakeGoogle) -> int:
    return sum(1 for r in fake.requests if r.method_id == "gmail.users.history.list")


async def test_two_schedulers_fire_one_run_per_message_and_a_restart_fires_none_again(
    runtime: Runtime, database_url: str, tmp_path: Path, fake: FakeGoogle
) -> None:
    user, _headers = await factories.user_with_token(runtime, sample=False)
    account = await google_account(runtime, user, fake)
    instruction = await factories.instruction(
        runtime, user, trigger={"type": "watch", "gmail_query": BILLING}
    )
    settings = runtime.settings
    env = pilotlight_env(
        data_dir=tmp_path / "data", database_url=database_url,
        PILOTLIGHT_GOOGLE_ENDPOINT_ROOT=fake.url,
        PILOTLIGHT_GOOGLE_CLIENT_ID=FakeGoogle.CLIENT_ID,
        PILOTLIGHT_GOOGLE_CLIENT_SECRET=FakeGoogle.CLIENT_SECRET,
        PILOTLIGHT_SECRET_KEYS=settings.secret_keys[0].get_secret_value(),
        PILOTLIGHT_GOOGLE_WATCH_POLL_SECONDS="0.1",
    )

    def scheduler(name: str) -> subprocess.Popen[bytes]:
        return start(command("scheduler"), env, tmp_path, tmp_path / f"{name}.log")

    async def cursor() -> WatchCursor | None:
        async with runtime.sessionmaker() as session:
            return (await session.execute(select(WatchCursor))).scalar_one_or_none()

    async def hits() -> int:
        async with runtime.sessionmaker() as session:
            return int((await session.execute(select(func.count(WatchHit.id)))).scalar_one())

    processes = {name: scheduler(name) for name in ("scheduler-a", "scheduler-b")}
    matching: list[str] = []
    try:
        await eventually(cursor, 60, "the first poll")
        for round_ in range(4):
            for n in range(6):
                matching.append(fake.add_message(
                    EMAIL, sender="billing@example.com", subject=f"Invoice {round_}.{n}",
                    attachments=pdf(),
                ))
                fake.add_message(EMAIL, sender="bob@example.com", subject=f"Chat {round_}.{n}")
            await asyncio.sleep(0.25)

        async def caught_up() -> bool:
            current = await cursor()
            return current is not None and current.history_id == str(fake.history_id(EMAIL))

        await eventually(caught_up, 60, "both schedulers to read all the history")
        await eventually(lambda: _equal(hits(), len(matching)), 60, "a hit per message")
        # Let both poll some more: nothing fires twice.
        calls = history_calls(fake)
        await eventually(lambda: _true(history_calls(fake) >= calls + 10), 60, "more polls")
    finally:
        codes = {name: stop(p) for name, p in processes.items()}
    for name, code in codes.items():
        log = tmp_path / f"{name}.log"
        assert stopped_cleanly(code, log), f"{name} exited {code}:\n{log.read_text()}"
    runs = await watch_runs(runtime, instruction.id)
    assert fired_ids(runs) == sorted(matching)  # 24 messages, 24 runs, each once

    # A restart keeps the cursor and the hits: nothing fires again, a new message does.
    seen = await cursor()
    restarted = scheduler("scheduler-c")
    try:
        calls = history_calls(fake)
        await eventually(lambda: _true(history_calls(fake) >= calls + 3), 60, "polls after restart")
        assert fired_ids(await watch_runs(runtime, instruction.id)) == sorted(matching)
        late = fake.add_message(EMAIL, sender="billing@example.com", attachments=pdf())
        await eventually(lambda: _equal(hits(), len(matching) + 1), 60, "the new message")
    finally:
        code = stop(restarted)
    assert stopped_cleanly(code, tmp_path / "scheduler-c.log")
    assert fired_ids(await watch_runs(runtime, instruction.id)) == sorted([*matching, late])
    assert seen is not None
    assert seen.history_id is not None
    assert account.id == seen.account_id


async def _equal(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _true(value: bool) -> bool:
    return value


def _fake_process(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = tmp_path / "fake-google.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.google", "--port", str(port), "--seed"],
            cwd=Path(__file__).resolve().parents[3], stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the fake exited:\n{log.read_text()}")
        try:
            return httpx.get(f"{base}/_fake/stats", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, "the fake Google server")
    return process, base, log


async def test_show_a_watch_instruction_fires_once_for_a_new_matching_message(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """The issue's "Show": the fake on its own with its seeded mailbox, `pilotlight serve`,
    the account connected in the running service, a watch created through the API, and
    one run for a new matching message (none for a non-matching one)."""
    fake, fake_url, fake_log = _fake_process(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = pilotlight_env(
        data_dir=tmp_path / "data", database_url=database_url,
        PILOTLIGHT_PORT=str(port), PILOTLIGHT_GOOGLE_ENDPOINT_ROOT=fake_url,
        PILOTLIGHT_GOOGLE_CLIENT_ID=FakeGoogle.CLIENT_ID,
        PILOTLIGHT_GOOGLE_CLIENT_SECRET=FakeGoogle.CLIENT_SECRET,
        PILOTLIGHT_GOOGLE_WATCH_POLL_SECONDS="0.5", PILOTLIGHT_EXAMPLE_INSTRUCTION="false",
        PILOTLIGHT_SECRET_KEYS=runtime.settings.secret_keys[0].get_secret_value(),
    )
    log = tmp_path / "serve.log"
    server = start(command("serve"), env, tmp_path, log)
    try:
        wait_healthy(base, server, log)
        token = subprocess.run(
            command("token", "create"), env=env, cwd=tmp_path, check=True, timeout=60,
            capture_output=True, text=True,
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
            connect_google(api)
            created = api.post("/api/v1/instructions", json={
                "title": "Invoices", "text": "Tell me about each new invoice at once.",
                "trigger": {"type": "watch", "gmail_query": BILLING}, "sources": ["gmail"],
            })
            assert created.status_code == 201, created.text
            instruction_id = created.json()["id"]

            def runs() -> list[dict[str, Any]]:
                page = api.get("/api/v1/runs", params={"instruction_id": instruction_id})
                return list(page.json()["items"])

            # The first poll has read the account (the seeded mail fires nothing).
            wait_for(lambda: _stats_has_history(fake_url), 30, "the first watch poll")
            invoice = httpx.post(f"{fake_url}/_fake/messages", json={
                "email": EMAIL, "sender": "Billing <billing@example.com>",
                "subject": "Invoice 2026-118", "text": "Amount due: 240 EUR by 1 Dec.",
                "attachments": [{"filename": "invoice.pdf", "mime_type": "application/pdf",
                                 "data": "JVBERi0xLjQKJSBpbnZvaWNlCg=="}],
            }).json()["id"]
            httpx.post(f"{fake_url}/_fake/messages", json={
                "email": EMAIL, "sender": "Bob <bob@example.com>", "subject": "Lunch?",
                "text": "Shall we?",
            })

            def finished() -> list[dict[str, Any]] | None:
                found = runs()
                done = [r for r in found if r["status"] not in ("queued", "running")]
                return found if found and len(done) == len(found) else None

            fired = wait_for(finished, 60, "the watch run")
            # More polls pass; still exactly one run.
            calls = _history_calls(fake_url)
            wait_for(lambda: _history_calls(fake_url) >= calls + 3, 30, "more polls")
            fired = runs()
            assert [(r["reason"], r["trigger_item"]["id"]) for r in fired] == [
                ("watch", invoice)
            ]
            assert fired[0]["status"] == "succeeded", fired[0]
            cited = {ref["id"] for s in fired[0]["result"]["sections"] for i in s["items"]
                     for ref in i["refs"]}
            assert cited == {invoice}
    finally:
        code = stop(server)
        stop(fake)
    assert stopped_cleanly(code, log), log.read_text()
    assert token not in log.read_text()
    assert "Traceback" not in fake_log.read_text()


def _stats(fake_url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{fake_url}/_fake/stats", timeout=10).json())


def _history_calls(fake_url: str) -> int:
    return sum(
        1 for r in _stats(fake_url)["requests"] if r["method_id"] == "gmail.users.history.list"
    )


def _stats_has_history(fake_url: str) -> bool:
    return any(
        r["method_id"] in ("gmail.users.history.list", "gmail.users.getProfile")
        for r in _stats(fake_url)["requests"]
    )


def connect_google(api: httpx.Client) -> None:
    """Connect alice@example.com through the running service's OAuth flow, as a browser:
    the service's redirect to the consent screen, the fake's back to the callback."""
    to_consent = api.get("/api/v1/google/connect")
    assert to_consent.status_code == 302, to_consent.text
    back = httpx.get(to_consent.headers["location"], timeout=30)  # the fake's consent screen
    assert back.status_code == 302, back.text
    # The service's callback, in the same "browser": it carries the connection's cookie.
    done = api.get(back.headers["location"])
    assert done.status_code == 302, done.text
    assert done.headers["location"].endswith("/settings?google=connected")
    accounts = api.get("/api/v1/accounts").json()
    google = [a for a in accounts if a["kind"] == "google"]
    assert [(a["email"], a["status"]) for a in google] == [(EMAIL, "active")]
