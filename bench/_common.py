"""Helpers for bench/engine.py: the database, bulk data in SQL, agents, child processes, output.

Bulk data is made by PostgreSQL itself (INSERT ... SELECT FROM generate_series sent
through asyncpg), so a million rows take seconds and never pass through this process's
memory, which the scheduler figure measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import multiprocessing
import re
import signal
import statistics
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from app.agent.digest import CoverWindow, Digest
from app.agent.runner import AgentOutcome
from app.core.config import Settings
from app.core.db import create_engine
from app.core.migrate import upgrade

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

# The schedule of every bench instruction: the factories' "Morning digest" (cron, a zone
# with DST), so the scheduler computes real fire times.
TRIGGER = '{"type": "cron", "cron": "0 8 * * 1-5", "timezone": "Europe/Berlin"}'


# --- database -------------------------------------------------------------------------------


def plain_dsn(url: str) -> str:
    """The URL as asyncpg takes it (no +driver); refuses anything but this machine."""
    parsed = make_url(url)
    if parsed.host not in LOCAL_HOSTS:
        raise SystemExit(f"refusing {parsed.host!r}: the benchmarks only talk to 127.0.0.1")
    if not re.fullmatch(r"[A-Za-z0-9_]+", parsed.database or ""):
        raise SystemExit("the database name may hold only letters, digits and _")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


async def ensure_database(dsn: str) -> None:
    """CREATE DATABASE if missing, from the `postgres` database (what createdb does)."""
    name = make_url(dsn).database
    admin = await asyncpg.connect(make_url(dsn).set(database="postgres").render_as_string(False))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def reset_schema(dsn: str) -> None:
    """Drop everything (ours and pgqueuer's) and migrate to our newest schema."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    engine = create_engine(settings(dsn).effective_database_url, null_pool=True)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def settings(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn, "sample_account": False, "example_instruction": False,
        "log_level": "WARNING",
    }
    return Settings(**{**values, **overrides})


@contextlib.asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def add_users(conn: asyncpg.Connection, count: int) -> None:
    """Users, each with the bundled sample account (the executor needs one source)."""
    await conn.execute(
        """INSERT INTO users (id, email, name, timezone, daily_cost_cap_usd, created_at,
                              updated_at)
           SELECT gen_random_uuid(), 'bench-' || g || '@example.com', '', 'UTC', 1.0, now(),
                  now()
           FROM generate_series(1, $1) g""",
        count,
    )
    await conn.execute(
        """INSERT INTO accounts (id, user_id, kind, email, scopes, sync_cursor, status,
                                 created_at, updated_at)
           SELECT gen_random_uuid(), id, 'sample', email, '{}', '{}', 'active', now(), now()
           FROM users"""
    )


async def add_instructions(
    conn: asyncpg.Connection, count: int, *, chunk: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Active instructions spread over the users, next due between 1 and 2 days from now."""
    users = await conn.fetchval("SELECT count(*) FROM users")
    await conn.execute("SET synchronous_commit = off")
    done = 0
    while done < count:
        size = min(chunk, count - done)
        await conn.execute(
            f"""WITH u AS (SELECT id, (row_number() OVER (ORDER BY id)) - 1 AS n FROM users)
            INSERT INTO instructions (id, user_id, title, text, trigger, sources, channels,
                thinking_level, max_tool_calls, only_new, status, consecutive_failures,
                next_run_at, cursor, created_at, updated_at)
            SELECT gen_random_uuid(), u.id, 'Morning digest',
                'Digest my team''s mail and the documents that changed.', '{TRIGGER}',
                '{{"kinds": []}}', '{{"kinds": []}}', 'medium', 10, true, 'active', 0,
                now() + interval '1 day' + (g % 86400) * interval '1 second', '{{}}',
                now() - interval '30 days', now()
            FROM generate_series($1::bigint, $2::bigint) g JOIN u ON u.n = g % $3""",
            done, done + size - 1, users,
        )
        done += size
        if progress is not None:
            progress(done)
    # Leave nothing for autovacuum to do during the measurement, and no dirty pages.
    for statement in ("VACUUM ANALYZE users", "VACUUM ANALYZE accounts",
                      "VACUUM ANALYZE instructions", "CHECKPOINT"):
        await conn.execute(statement)


async def queue_runs(conn: asyncpg.Connection) -> int:
    """One queued manual run for every instruction, as `run_now` writes it."""
    status = await conn.execute(
        """INSERT INTO runs (id, user_id, instruction_id, reason, scheduled_for, window_end,
               status, attempt, available_at, interaction_ids, input_tokens, output_tokens,
               thought_tokens, cached_tokens, cost_usd, created_at, updated_at)
           SELECT gen_random_uuid(), user_id, id, 'manual', now(), now(), 'queued', 0, now(),
               '{}', 0, 0, 0, 0, 0, now(), now()
           FROM instructions"""
    )
    await conn.execute("VACUUM ANALYZE runs")
    return int(status.split()[-1])


async def unfinished_runs(conn: asyncpg.Connection) -> int:
    """Runs still queued or running (both read from partial indexes)."""
    return int(await conn.fetchval(
        "SELECT (SELECT count(*) FROM runs WHERE status = 'queued')"
        " + (SELECT count(*) FROM runs WHERE status = 'running')"
    ))


# --- agents ----------------------------------------------------------------------------------


def _outcome(request: Any) -> AgentOutcome:
    digest = Digest(
        summary="Nothing new.", model=request.model,
        covers=CoverWindow(start=request.window_start, end=request.now),
    )
    return AgentOutcome(status="succeeded", digest=digest, cursors={})


async def noop_agent(*, llm: Any, sources: Any, cursors: Any, request: Any,
                     record: Any) -> AgentOutcome:
    """Answers at once with a one-line digest, so the notification is written as usual."""
    return _outcome(request)


@dataclass
class SleepingAgent:
    """A model that answers after `seconds`; counts the runs waiting on it."""

    seconds: float
    active: int = 0
    peak: int = 0

    async def __call__(self, *, llm: Any, sources: Any, cursors: Any, request: Any,
                       record: Any) -> AgentOutcome:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.active -= 1
        return _outcome(request)


# --- measurement -----------------------------------------------------------------------------


def rss_mb() -> tuple[float, float]:
    """This process's resident memory now and at its peak (VmHWM), in MiB."""
    values: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", math.nan), values.get("VmHWM", math.nan)


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


async def wait_until(check: Callable[[], Any], *, timeout: float, every: float = 0.02) -> float:
    """Await `check()` until it is true; returns the seconds waited. Raises on timeout."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"not done after {timeout:.0f}s")
        await asyncio.sleep(every)
    return time.perf_counter() - started


# --- child processes -------------------------------------------------------------------------

_SPAWN = multiprocessing.get_context("spawn")


def install_stop(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT stop a child's loops cleanly, as they stop `pilotlight worker`."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


class Child:
    """A spawned process running `target(pipe, params)`; messages are dicts over a pipe."""

    def __init__(self, target: Callable[..., None], params: Mapping[str, Any]) -> None:
        self.pipe, child_end = _SPAWN.Pipe()
        self.process = _SPAWN.Process(target=target, args=(child_end, dict(params)), daemon=True)
        self.process.start()
        child_end.close()

    async def recv(self, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.pipe.poll():
            if not self.process.is_alive():
                raise RuntimeError(f"child {self.process.pid} exited ({self.process.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no word from child {self.process.pid}")
            await asyncio.sleep(0.01)
        message: dict[str, Any] = self.pipe.recv()
        if "error" in message:
            raise RuntimeError(f"child {self.process.pid} failed: {message['error']}")
        return message

    async def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`. A child that has
        sent its figures and is exiting gets a second to do so first: SIGTERM while its
        event loop closes makes Python print a stray "signal wakeup fd" error."""
        settle = time.monotonic() + 1
        while self.process.is_alive() and time.monotonic() < settle:
            await asyncio.sleep(0.02)
        if self.process.is_alive():
            self.process.terminate()
        deadline = time.monotonic() + timeout
        while self.process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.pipe.close()


def child(body: Callable[[Any, dict[str, Any]], Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Wrap a child's async main: it runs in its own event loop, errors go back over the pipe."""

    @functools.wraps(body)
    def main(pipe: Any, params: dict[str, Any]) -> None:
        logging.basicConfig(level=logging.WARNING, format="child: %(levelname)s %(message)s")
        try:
            asyncio.run(body(pipe, params))
        except Exception:
            pipe.send({"error": traceback.format_exc()})

    return main


async def start_benchmark(database_url: str) -> tuple[str, str]:
    """Cancel the running benchmark on SIGTERM or Ctrl-C (its `children` blocks then stop
    every child), make sure the database exists; returns the DSN and the server version."""
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    dsn = plain_dsn(database_url)
    await ensure_database(dsn)
    async with connect(dsn) as conn:
        server = await conn.fetchval("SHOW server_version")
    return dsn, str(server)


@contextlib.asynccontextmanager
async def children(
    target: Callable[..., None], params: Mapping[str, Any], count: int = 1
) -> AsyncIterator[list[Child]]:
    started: list[Child] = []
    try:
        for _ in range(count):
            started.append(Child(target, params))
        yield started
    finally:
        await asyncio.gather(*(child.stop() for child in started))


# --- output ----------------------------------------------------------------------------------


@dataclass
class Report:
    verdicts: list[tuple[str, str, str, bool]] = field(default_factory=list)

    @staticmethod
    def title(number: int | str, text: str) -> None:
        print(f"\n[{number}] {text}", flush=True)

    @staticmethod
    def line(label: str, value: str) -> None:
        print(f"    {label:<34} {value}", flush=True)

    def verdict(self, figure: str, value: str, target: str, passed: bool) -> None:
        self.line("target", f"{target}  ->  {'PASS' if passed else 'MISS'}")
        self.verdicts.append((figure, value, target, passed))

    def summary(self) -> None:
        print("\nSummary", flush=True)
        for figure, value, target, passed in self.verdicts:
            print(f"    {'PASS' if passed else 'MISS'}  {figure:<28} {value:<26} target {target}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def stamp(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")
