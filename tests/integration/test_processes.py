"""The service as users run it: real processes, real HTTP, a real database."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import update

from app.core.db import transaction
from app.core.runtime import Runtime
from app.instructions.models import Instruction
from tests import factories
from tests.fakes.gemini import FakeGemini
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


@dataclass
class Served:
    """A running `pilotlight serve` on a fresh data folder, with the local user's token."""

    base: str
    headers: dict[str, str]
    token: str
    log: Path
    code: int | None = None

    def first_digest(self) -> dict[str, Any]:
        def digest() -> dict[str, Any] | None:
            page = httpx.get(f"{self.base}/api/v1/notifications", headers=self.headers).json()
            return next((n for n in page["items"] if n["kind"] == "digest"), None)

        return wait_for(digest, 30, "the first digest")

    def get(self, path: str) -> Any:
        return httpx.get(f"{self.base}/api/v1{path}", headers=self.headers).json()


@contextmanager
def served(
    tmp_path: Path, database_url: str, is_postgres: bool, **settings: str
) -> Iterator[Served]:
    """Serve as a newcomer would: on PostgreSQL `migrate` first; SQLite needs nothing. The
    port is the command's option (the links the service makes then use it too)."""
    port = free_port()
    env = pilotlight_env(
        data_dir=tmp_path / "data", database_url=database_url if is_postgres else "",
        **settings,
    )
    if is_postgres:
        subprocess.run(command("migrate"), env=env, cwd=tmp_path, check=True, timeout=60)
    log = tmp_path / "serve.log"
    server = start(command("serve", "--port", str(port)), env, tmp_path, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, server, log)
        token = subprocess.run(
            command("token", "create"), env=env, cwd=tmp_path, check=True, timeout=60,
            capture_output=True, text=True,
        ).stdout.strip()
        result = Served(base, {"Authorization": f"Bearer {token}"}, token, log)
        yield result
    finally:
        code = stop(server)
    result.code = code
    assert stopped_cleanly(code, log), log.read_text()


async def test_serve_first_start_shows_a_digest_within_seconds(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    """What a newcomer sees: serve, a token from the CLI, a digest of the sample mailbox."""
    with served(tmp_path, database_url, is_postgres) as app:
        assert app.token.startswith("plt_")
        assert "\n" not in app.token
        notification = app.first_digest()
        assert notification["title"] == "Morning digest"
        result = notification["data"]["digest"]
        assert result["model"] == "pilotlight-offline"
        cited = {ref["id"] for s in result["sections"] for i in s["items"] for ref in i["refs"]}
        assert cited, "the digest cites the sample mailbox"

        run = app.get(f"/runs/{notification['run_id']}")
        assert run["status"] == "succeeded"
        assert [s["kind"] for s in run["steps"]][0] == "model"
        assert any(s["kind"] == "tool" for s in run["steps"])

        (example,) = app.get("/instructions")["items"]
        assert example["schedule"] == "At 08:00, Monday through Friday (Europe/Berlin)"
        assert httpx.get(f"{app.base}/readyz").status_code == 200
    text = app.log.read_text()
    assert "worker stopped" in text
    assert "scheduler stopped" in text
    assert app.token not in text  # secrets never reach the log


async def test_the_port_option_is_the_port_of_the_links_the_service_makes(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    """`serve --port N` without a public URL: Google's redirect back comes to port N."""
    # With PostgreSQL the key that seals OAuth state is a setting (none is generated).
    with served(tmp_path, database_url, is_postgres, PILOTLIGHT_GOOGLE_CLIENT_ID="client-1",
                PILOTLIGHT_GOOGLE_CLIENT_SECRET="secret-1",
                PILOTLIGHT_SECRET_KEYS=Fernet.generate_key().decode()) as app:
        consent = httpx.get(f"{app.base}/api/v1/google/connect", headers=app.headers)
        assert consent.status_code == 302, consent.text
        redirect_uri = parse_qs(urlsplit(consent.headers["location"]).query)["redirect_uri"]
        assert redirect_uri == [f"{app.base}/oauth/google/callback"]
    assert f"dashboard: {app.base}/" in app.log.read_text()


async def test_api_scheduler_and_worker_as_separate_processes(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(
        runtime, user, trigger={"type": "interval", "seconds": 3600}
    )
    port = free_port()
    env = pilotlight_env(
        data_dir=tmp_path / "data", database_url=database_url, PILOTLIGHT_PORT=str(port),
        PILOTLIGHT_WORKER_POLL_SECONDS="0.2", PILOTLIGHT_SCHEDULER_TICK_SECONDS="0.2",
    )
    processes = {
        role: start(command(role), env, tmp_path, tmp_path / f"{role}.log")
        for role in ("api", "scheduler", "worker")
    }
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, processes["api"], tmp_path / "api.log")
        # Run now through the api process; the worker process picks it up.
        queued = httpx.post(f"{base}/api/v1/instructions/{instruction.id}/run", headers=headers)
        assert queued.status_code == 201, queued.text
        assert queued.json()["status"] == "queued"

        def finished(run_id: str) -> dict[str, Any] | None:
            run = httpx.get(f"{base}/api/v1/runs/{run_id}", headers=headers).json()
            return run if run["status"] not in ("queued", "running") else None

        manual = wait_for(lambda: finished(queued.json()["id"]), 30, "the manual run")
        assert manual["status"] == "succeeded", manual

        # Make the instruction due: the scheduler process queues it, the worker runs it.
        async with transaction(runtime.sessionmaker) as session:
            await session.execute(
                update(Instruction).where(Instruction.id == instruction.id)
                .values(next_run_at=datetime.now(UTC))
            )

        def scheduled() -> dict[str, Any] | None:
            runs = httpx.get(
                f"{base}/api/v1/runs", params={"instruction_id": str(instruction.id)},
                headers=headers,
            ).json()["items"]
            done = [r for r in runs if r["reason"] == "schedule" and r["status"] == "skipped"]
            return done[0] if done else None

        # Nothing is new since the manual run, so the scheduled run is skipped.
        assert wait_for(scheduled, 30, "the scheduled run")["error"]
    finally:
        codes = {role: stop(p) for role, p in processes.items()}
    for role, code in codes.items():
        log = tmp_path / f"{role}.log"
        assert stopped_cleanly(code, log), f"{role} exited {code}:\n{log.read_text()}"


def test_roles_refuse_to_start_on_an_unmigrated_database(tmp_path: Path) -> None:
    env = pilotlight_env(data_dir=tmp_path / "data")
    result = subprocess.run(
        command("worker"), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    # Named: from another folder, `data/` is not the database meant.
    database = tmp_path / "data" / "pilotlight.db"
    assert (f"the database has no schema yet (sqlite+aiosqlite:///{database}); run `pilotlight "
            "migrate` first") in result.stderr

async def test_serve_digests_the_sample_through_gemini_when_configured(
    runtime: Runtime, database_url: str, is_postgres: bool, tmp_path: Path
) -> None:
    """With a key and a base URL, the first digest comes through the Gemini path."""
    with FakeGemini() as fake, served(
        tmp_path, database_url, is_postgres, PILOTLIGHT_GEMINI_API_KEY=fake.api_key,
        PILOTLIGHT_GEMINI_BASE_URL=fake.url,
    ) as app:
        notification = app.first_digest()
        run = app.get(f"/runs/{notification['run_id']}")
    assert run["model"] == "gemini-3.5-flash"
    assert notification["data"]["digest"]["model"] == "gemini-3.5-flash"
    assert run["input_tokens"] > 0
    assert run["cost_usd"] > 0
    turns = [r for r in fake.requests() if r.status == 200]
    assert len(turns) >= 2  # the first turn, then the function results
    assert fake.api_key not in app.log.read_text()


async def test_the_api_believes_x_forwarded_for_only_behind_a_proxy(
    runtime: Runtime, database_url: str, tmp_path: Path  # runtime: the schema is made
) -> None:
    """Reached directly (no PUBLIC_URL), the api takes the connection's address: a local
    process that says X-Forwarded-For is not another client to the sign-in failure limit.
    With a PUBLIC_URL users reach elsewhere (behind a proxy on this machine, as the README
    has it), the proxy's X-Forwarded-For names the client."""
    setups = {"direct": {}, "proxied": {"PILOTLIGHT_PUBLIC_URL": "https://pilot.example.com"}}
    ports = {name: free_port() for name in setups}
    processes = {
        name: start(command("api"), pilotlight_env(
            data_dir=tmp_path / name, database_url=database_url,
            PILOTLIGHT_PORT=str(ports[name]), **extra,
        ), tmp_path, tmp_path / f"{name}.log")
        for name, extra in setups.items()
    }
    try:
        for name, port in ports.items():
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, processes[name], tmp_path / f"{name}.log")
            refused = httpx.get(f"{base}/login/link", params={"token": "wrong"},
                                headers={"X-Forwarded-For": "203.0.113.7"})
            assert refused.status_code == 401, refused.text
    finally:
        codes = {name: stop(p) for name, p in processes.items()}
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in setups}
    for name, code in codes.items():
        assert stopped_cleanly(code, tmp_path / f"{name}.log"), logs[name]
    assert "failed sign-in (link) from 127.0.0.1:" in logs["direct"]
    assert "203.0.113.7" not in logs["direct"]
    assert "failed sign-in (link) from 203.0.113.7:" in logs["proxied"]
