"""Run-engine benchmarks on PostgreSQL: five figures, each against its target, and one
diagnostic.

    .venv/bin/python bench/engine.py --quick
    .venv/bin/python bench/engine.py --only throughput,runnow

Figures: throughput (our worker vs pgqueuer), statements (diagnostic: the worker's
two statements alone vs pgqueuer, what the throughput could reach with no Python),
queue (design experiment: the same with the claim in a narrow queue table), tick
(scheduler tick with a huge instruction table), burst (10,000 instructions due in one
second), runnow (run-now to running with LISTEN/NOTIFY vs polling) and inflight (runs
held at once by one worker). Every measured process is a fresh child process, so its
memory and event loop are its own; every child is stopped (SIGTERM, then SIGKILL)
before the next figure. Only 127.0.0.1 is contacted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from _common import (
    Report,
    SleepingAgent,
    add_instructions,
    add_users,
    child,
    children,
    connect,
    install_stop,
    median,
    ms,
    noop_agent,
    percentile,
    queue_runs,
    reset_schema,
    rss_mb,
    settings,
    start_benchmark,
    unfinished_runs,
    wait_until,
)

from app.accounts.models import Account
from app.agent.offline import OfflineModel
from app.core import heap
from app.core.db import transaction
from app.core.loops import LoopService
from app.core.runtime import Runtime, Wakeups
from app.instructions import service as instructions
from app.instructions.schemas import InstructionCreate
from app.runs.execute import RunExecutor
from app.runs.scheduler import SchedulerTick
from app.runs.service import run_now
from app.runs.worker import Worker
from app.users import service as users

FIGURES = ("throughput", "statements", "queue", "tick", "burst", "runnow", "inflight")
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/pilotlight_bench"


# --- child processes (each a fresh interpreter; results go back over a pipe) ----------------


def pgqueuer_version() -> str:
    try:
        return version("pgqueuer")
    except PackageNotFoundError:
        return "not installed (.venv/bin/pip install -r bench/requirements.txt)"


@child
async def worker_child(pipe: Any, p: dict[str, Any]) -> None:
    """Our Worker + RunExecutor; runs until the queue is drained, or until SIGTERM."""
    stop = asyncio.Event()
    install_stop(stop)
    runtime = Runtime.build(settings(
        p["dsn"], worker_concurrency=p["concurrency"], worker_poll_seconds=p["poll"],
    ))
    agent = SleepingAgent(p["sleep"]) if p.get("sleep") else noop_agent
    executor = RunExecutor(sessionmaker=runtime.sessionmaker, settings=runtime.settings,
                           llm=OfflineModel(), agent=agent)
    worker = Worker(runtime=runtime, executor=executor)
    heap.settle()  # as `pilotlight worker` does before its loops start
    # Without LISTEN the worker is the plain polling loop (Worker.run adds only the listener).
    loop = worker.run(stop) if p["listen"] else LoopService.run(worker, stop)
    rss_idle = rss_mb()[0]
    async with connect(p["dsn"]) as conn:
        pipe.send({"ready": True})
        if not p["until_drained"]:
            await loop
            await runtime.close()
            return
        started, cpu = time.perf_counter(), time.process_time()
        task = asyncio.create_task(loop)
        peak_inflight = peak_running = 0
        while await unfinished_runs(conn):
            if task.done():
                task.result()
                raise RuntimeError("the worker stopped early")
            peak_inflight = max(peak_inflight, len(worker.inflight))
            if p.get("sleep"):
                running = await conn.fetchval("SELECT count(*) FROM runs WHERE status='running'")
                peak_running = max(peak_running, running)
            await asyncio.sleep(0.02)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        stop.set()
        await task
    await runtime.close()
    pipe.send({"elapsed": elapsed, "cpu": cpu, "peak_inflight": peak_inflight,
               "peak_running": peak_running,
               "peak_agent": getattr(agent, "peak", 0), "rss_idle": rss_idle,
               "rss_peak": rss_mb()[1]})


@child
async def pgqueuer_child(pipe: Any, p: dict[str, Any]) -> None:
    """pgqueuer's QueueManager with one entrypoint that does nothing, until its table is empty."""
    import asyncpg
    from pgqueuer import QueueManager
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries

    pool = await asyncpg.create_pool(p["dsn"], min_size=p["pool"], max_size=p["pool"])
    qm = QueueManager(Queries.from_asyncpg_pool(pool))

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    async with connect(p["dsn"]) as conn:
        pipe.send({"ready": True})
        started, cpu = time.perf_counter(), time.process_time()
        task = asyncio.create_task(
            qm.run(batch_size=p["batch"], max_concurrent_tasks=p["concurrency"])
        )
        while await conn.fetchval("SELECT count(*) FROM pgqueuer"):
            if task.done():
                task.result()
                raise RuntimeError("pgqueuer stopped early")
            await asyncio.sleep(0.02)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        qm.shutdown.set()
        await task
    await pool.close()
    pipe.send({"elapsed": elapsed, "cpu": cpu})


# Parts of the outcome statement a diagnostic leaves out: (what it says, what it then says).
_CUTS = {
    "move": ("WHERE instructions.id = done.instruction_id",
             "WHERE instructions.id = done.instruction_id AND false"),
    "note": ("JOIN plain ON plain.id = done.instruction_id\n        ON CONFLICT",
             "JOIN plain ON plain.id = done.instruction_id WHERE false\n        ON CONFLICT"),
    "delivery": (") AS c\n        RETURNING deliveries.id",
                 ") AS c WHERE false\n        RETURNING deliveries.id"),
    "lock": ("ORDER BY i.id\n        FOR UPDATE", "ORDER BY i.id"),
    # The run fenced by its queue row (figure 1c), which the statement deletes.
    "queue": ("WHERE runs.id = v.id AND runs.lease_token = v.token AND runs.status = 'running'",
              "JOIN gone ON gone.run_id = v.id WHERE runs.id = v.id AND runs.status = 'queued'"),
}


def _statements_sql(
    runs_only: bool, cuts: tuple[str, ...] = ()
) -> tuple[str, tuple[str, ...], str, tuple[str, ...]]:
    """The worker's claim-and-load statement and its outcome statement, compiled for
    asyncpg; `runs_only` keeps of the outcome only the runs' update (no instruction
    moved, no notification, no delivery, no NOTIFY); `cuts` leave out those parts."""
    from sqlalchemy import text
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

    from app.runs import outcomes_sql
    from app.runs.context import CLAIM_AND_LOAD

    outcome = outcomes_sql._SUCCEEDED.text
    for cut in ("move", "note", "delivery") if runs_only else cuts:
        part, by = _CUTS[cut]
        if part not in outcome:
            raise RuntimeError(f"statements: the outcome statement changed ({part!r})")
        outcome = outcome.replace(part, by)
    if "queue" in cuts:
        outcome = outcome.replace("    done AS (", """    gone AS (
        DELETE FROM run_queue q USING v WHERE q.run_id = v.id AND q.lease_token = v.token
        RETURNING q.run_id
    ),
    done AS (""", 1)
    if runs_only:
        outcome = re.sub(r"pg_notify\(:\w+, [^)]*\)", "1", outcome)
    dialect = PGDialect_asyncpg()
    claim = CLAIM_AND_LOAD.compile(dialect=dialect)
    write = text(outcome).compile(dialect=dialect)
    return (str(claim), tuple(claim.positiontup or ()), str(write),
            tuple(write.positiontup or ()))


def _outcome_params(rows: list[Any], token: uuid.UUID) -> dict[str, Any]:
    """The outcome statement's parameters for these claimed runs, built as simply as they
    can be (a fixed digest)."""
    import datetime as dt

    runs = {row["id"]: row for row in rows}
    ids, n = list(runs), len(runs)
    now = dt.datetime.now(dt.UTC)
    return {"ids": ids, "tokens": [token] * n,
            "instruction_ids": [runs[i]["instruction_id"] for i in ids],
            "status": ["succeeded"] * n, "finished_at": [now] * n,
            "result": ['{"summary": "Nothing new."}'] * n, "model": ["offline"] * n,
            "error": [None] * n, "interaction_ids": ['{"ids": []}'] * n,
            "agent_state": ["null"] * n, "input_tokens": [0] * n,
            "output_tokens": [0] * n, "thought_tokens": [0] * n,
            "cached_tokens": [0] * n, "cost_usd": [0.0] * n,
            "m_run": ids, "m_cursor": ["{}"] * n, "m_window_end": [now] * n,
            "n_id": [uuid.uuid4() for _ in ids],
            "n_user": [runs[i]["user_id"] for i in ids],
            "n_key": [f"run:{i}:digest" for i in ids], "n_body": ["Nothing new."] * n,
            "n_data": ['{"digest": {"summary": "Nothing new."}}'] * n, "n_run": ids,
            "day_start": [now] * n, "now": now, "events": "pilotlight_events",
            "deliveries": "pilotlight_deliveries"}


async def _drain_lanes(
    pipe: Any, connections: list[Any], lane: Callable[[Any], Awaitable[int]]
) -> None:
    """Tell the parent the child is ready, run one `lane` per connection until the queue
    is empty, then send the time, the CPU time and the runs done, and close them."""
    pipe.send({"ready": True})
    started, cpu = time.perf_counter(), time.process_time()
    counts = await asyncio.gather(*(lane(conn) for conn in connections))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    for conn in connections:
        await conn.close()
    pipe.send({"elapsed": elapsed, "cpu": cpu, "done": sum(counts)})


@child
async def statements_child(pipe: Any, p: dict[str, Any]) -> None:
    """The worker's two statements from raw asyncpg, `lanes` connections each claiming
    `batch` runs and writing their outcomes, with as little Python as they need."""
    import asyncpg

    claim_sql, claim_names, write_sql, write_names = _statements_sql(p["runs_only"])
    connections = [await asyncpg.connect(p["dsn"]) for _ in range(p["lanes"])]

    async def lane(conn: asyncpg.Connection) -> int:
        done = 0
        while True:
            c = {"limit": p["batch"], "token": uuid.uuid4(), "lease_seconds": 60.0,
                 "worker_id": "statements", "events": "pilotlight_events"}
            rows = await conn.fetch(claim_sql, *[c[name] for name in claim_names])
            if not rows:
                return done
            w = _outcome_params(rows, c["token"])
            async with conn.transaction():
                await conn.fetch(write_sql, *[w[name] for name in write_names])
            done += len(rows)

    await _drain_lanes(pipe, connections, lane)


# Figure 1c: the runs to claim in a narrow table of their own, as pgqueuer keeps its jobs.
_QUEUE_TABLE = """
CREATE TABLE run_queue (run_id uuid PRIMARY KEY, available_at timestamptz NOT NULL,
    lease_token uuid, lease_expires_at timestamptz, attempt integer NOT NULL DEFAULT 0)
    WITH (fillfactor = 70);
CREATE INDEX ix_run_queue_ready ON run_queue (available_at) WHERE lease_token IS NULL;
CREATE INDEX ix_run_queue_lease ON run_queue (lease_expires_at) WHERE lease_token IS NOT NULL;
INSERT INTO run_queue (run_id, available_at)
    SELECT id, available_at FROM runs WHERE status = 'queued';
"""
# The claim: the queue rows leased, with each run's row, instruction, user and accounts
# (what the worker's claim reads); `runs` is not written.
_QUEUE_CLAIM = """
WITH picked AS (
    SELECT run_id FROM run_queue WHERE lease_token IS NULL AND available_at <= now()
    ORDER BY available_at LIMIT $1 FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE run_queue q SET lease_token = $2, lease_expires_at = now() + interval '60 s',
        attempt = q.attempt + 1
    FROM picked WHERE q.run_id = picked.run_id
    RETURNING q.run_id
)
SELECT r.id AS run_id, r.instruction_id AS run_instruction, r.user_id AS run_user,
    r.*, i.*, u.*, a.*
FROM claimed JOIN runs r ON r.id = claimed.run_id
JOIN instructions i ON i.id = r.instruction_id JOIN users u ON u.id = r.user_id
LEFT JOIN accounts a ON a.user_id = r.user_id ORDER BY a.created_at
"""
# The outcome cut to the runs' one update, fenced by the queue row it deletes.
_QUEUE_RUNS_ONLY = """
WITH gone AS (
    DELETE FROM run_queue WHERE run_id = ANY($1::uuid[]) AND lease_token = $2
    RETURNING run_id
)
UPDATE runs SET status = 'succeeded', started_at = $3, finished_at = $3,
    result = '{"summary": "Nothing new."}', model = 'offline', attempt = 1, updated_at = $3
FROM gone WHERE runs.id = gone.run_id
"""


@child
async def queue_child(pipe: Any, p: dict[str, Any]) -> None:
    """Runs claimed from `run_queue` on `lanes` connections of `batch` runs each; their
    outcomes by the runs' update alone (`cuts` None) or by the worker's outcome statement
    fenced by the queue row, less `cuts`."""
    import datetime as dt

    import asyncpg

    cuts = p["cuts"]
    if cuts is not None:
        _claim, _names, write_sql, write_names = _statements_sql(False, ("queue", *cuts))
    connections = [await asyncpg.connect(p["dsn"]) for _ in range(p["lanes"])]

    async def lane(conn: asyncpg.Connection) -> int:
        done = 0
        while True:
            token = uuid.uuid4()
            rows = await conn.fetch(_QUEUE_CLAIM, p["batch"], token)
            if not rows:
                return done
            runs = {row["run_id"]: {"id": row["run_id"], "instruction_id": row["run_instruction"],
                                    "user_id": row["run_user"]} for row in rows}
            ids = list(runs)
            async with conn.transaction():
                if cuts is None:
                    await conn.execute(_QUEUE_RUNS_ONLY, ids, token, dt.datetime.now(dt.UTC))
                else:
                    w = _outcome_params(list(runs.values()), token)
                    await conn.fetch(write_sql, *[w[name] for name in write_names])
            done += len(ids)

    await _drain_lanes(pipe, connections, lane)


@child
async def tick_child(pipe: Any, p: dict[str, Any]) -> None:
    """Times SchedulerTick.run_once() with the same instructions re-armed before each tick,
    holding its connection between ticks as its loop (`pilotlight scheduler`) does."""
    runtime = Runtime.build(settings(p["dsn"]))
    scheduler = SchedulerTick(sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
                              settings=runtime.settings)
    due = [uuid.UUID(i) for i in p["due"]]
    heap.settle()  # as `pilotlight scheduler` does

    async with connect(p["dsn"]) as conn, scheduler.holding():
        async def timed_tick(rearm: bool) -> float:
            if rearm:
                await conn.execute(
                    "UPDATE instructions SET next_run_at = clock_timestamp() - interval '1s'"
                    " WHERE id = ANY($1::uuid[])", due,
                )
            started = time.perf_counter()
            queued = await scheduler.run_once()
            elapsed = time.perf_counter() - started
            if queued != (len(due) if rearm else 0):
                raise RuntimeError(f"tick queued {queued} runs")
            return elapsed

        await timed_tick(True)  # warm-up: connections, statement caches
        await timed_tick(False)
        rss_before = rss_mb()[0]
        busy = [await timed_tick(True) for _ in range(p["ticks"])]
        idle = [await timed_tick(False) for _ in range(p["ticks"])]
        rss_after = rss_mb()[0]
    await runtime.close()
    pipe.send({"busy": median(busy), "idle": median(idle), "rss_before": rss_before,
               "rss_after": rss_after})


@child
async def scheduler_child(pipe: Any, p: dict[str, Any]) -> None:
    """What `pilotlight scheduler` runs: the tick loop (default interval 1 s) until SIGTERM."""
    stop = asyncio.Event()
    install_stop(stop)
    runtime = Runtime.build(settings(p["dsn"]))
    tick = SchedulerTick(sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups,
                         settings=runtime.settings)
    heap.settle()
    pipe.send({"ready": True, "interval": tick.interval})
    await tick.run(stop)
    await runtime.close()


# --- figures ---------------------------------------------------------------------------------


async def throughput(dsn: str, args: argparse.Namespace, report: Report) -> None:
    n, conc = (1_000 if args.quick else 10_000), args.concurrency
    pool = settings(dsn).database_pool_size
    report.title(1, f"Throughput: {n:,} runs / jobs with a no-op agent, concurrency {conc}")
    params = {"dsn": dsn, "concurrency": conc, "poll": 1.0, "listen": True, "until_drained": True}
    ours, done, notes = await _drain(dsn, n, worker_child, params)
    if done != n or notes != n:
        raise RuntimeError(f"expected {n} succeeded runs and notifications: {done}, {notes}")

    theirs = await _pgqueuer(dsn, n, conc, pool)
    ours_rate, their_rate = n / ours["elapsed"], n / theirs["elapsed"]
    ratio = ours_rate / their_rate
    report.line("ours (Worker + RunExecutor)", f"{ours_rate:,.0f} runs/s  ({ours['elapsed']:.2f} s;"
                f" worker_concurrency={conc}, pool {pool} + 1 LISTEN connection)")
    report.line(f"baseline (pgqueuer {pgqueuer_version()})",
                f"{their_rate:,.0f} jobs/s  ({theirs['elapsed']:.2f} s; max_concurrent_tasks="
                f"{conc}, batch_size={theirs['batch']}, asyncpg pool {theirs['pool']})")
    report.line("process CPU per run / job", f"ours {ours['cpu'] / n * 1e3:.2f} ms, pgqueuer "
                f"{theirs['cpu'] / n * 1e3:.2f} ms (the measured process only)")
    report.line("ratio ours/pgqueuer", f"{ratio:.2f}x (higher is better)")
    report.verdict("throughput", f"{ours_rate:,.0f}/s = {ratio:.2f}x pgq", ">= 1.0x", ratio >= 1.0)


async def _drain(
    dsn: str, n: int, target: Any, params: dict[str, Any], *, also: str = ""
) -> tuple[dict[str, Any], int, int]:
    """n runs of n instructions queued after a reset (then the SQL `also`), drained by the
    child `target`: its figures, then the runs succeeded and the notifications written."""
    await reset_schema(dsn)
    async with connect(dsn) as conn:
        await add_users(conn, max(1, n // 10))
        await add_instructions(conn, n)
        await queue_runs(conn)
        if also:
            await conn.execute(also)
            await conn.execute("VACUUM ANALYZE run_queue")
            await conn.execute("CHECKPOINT")
    async with children(target, params) as [kid]:
        await kid.recv()
        res = await kid.recv()
    async with connect(dsn) as conn:
        done = await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'succeeded'")
        notes = await conn.fetchval("SELECT count(*) FROM notifications")
    return res, int(done), int(notes)


async def _pgqueuer(dsn: str, n: int, conc: int, pool: int) -> dict[str, Any]:
    """pgqueuer draining n empty jobs at concurrency `conc` (batch half of it), after a
    reset of the database; its child's figures and its settings."""
    try:
        from pgqueuer.queries import Queries
    except ImportError:
        raise SystemExit(f"throughput: pgqueuer is {pgqueuer_version()}") from None

    await reset_schema(dsn)
    async with connect(dsn) as conn:
        queries = Queries.from_asyncpg_connection(conn)
        await queries.install()
        for start in range(0, n, 5_000):
            size = min(5_000, n - start)
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
    params = {"dsn": dsn, "concurrency": conc, "batch": max(1, conc // 2), "pool": pool + 1}
    async with children(pgqueuer_child, params) as [kid]:
        await kid.recv()
        theirs = await kid.recv()
    return {**theirs, "batch": params["batch"], "pool": params["pool"]}


async def statements(dsn: str, args: argparse.Namespace, report: Report) -> None:
    """Diagnostic, no target: the worker's claim and outcome statements alone."""
    n, conc = (1_000 if args.quick else 10_000), args.concurrency
    lanes, batch = 2, max(1, conc // 2)
    report.title("1b", f"Statements: our claim and outcome statements alone, {n:,} runs, "
                 f"{lanes} connections claiming {batch} each (diagnostic, no target)")
    rates = {}
    for runs_only in (False, True):
        params = {"dsn": dsn, "lanes": lanes, "batch": batch, "runs_only": runs_only}
        res, done, notes = await _drain(dsn, n, statements_child, params)
        if res["done"] != n or done != n or notes != (0 if runs_only else n):
            raise RuntimeError(f"statements: {res['done']} claimed, {done} succeeded, "
                               f"{notes} notifications of {n}")
        rates[runs_only] = n / res["elapsed"]
        label = "runs' two updates only" if runs_only else "as the worker sends them"
        report.line(label, f"{rates[runs_only]:,.0f} runs/s  ({res['elapsed']:.2f} s; "
                    f"{res['cpu'] / n * 1e3:.3f} ms of client CPU per run)")
    theirs = await _pgqueuer(dsn, n, conc, settings(dsn).database_pool_size)
    their_rate = n / theirs["elapsed"]
    report.line(f"baseline (pgqueuer {pgqueuer_version()})",
                f"{their_rate:,.0f} jobs/s  (max_concurrent_tasks={conc}, "
                f"batch_size={theirs['batch']})")
    report.line("ratio statements/pgqueuer", f"{rates[False] / their_rate:.2f}x as sent, "
                f"{rates[True] / their_rate:.2f}x runs' updates only (higher is better)")


# Figure 1c's variants: (label, what the outcome statement leaves out; None: all of it
# but the runs' update).
_QUEUE_VARIANTS: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("runs' update only", None),
    ("the whole outcome", ()),
    ("  no instruction lock", ("lock",)),
    ("  no lock, no in-app row", ("lock", "delivery")),
)


async def queue_design(dsn: str, args: argparse.Namespace, report: Report) -> None:
    """Diagnostic, no target: the statements with the claim in a narrow queue table."""
    n, conc = (1_000 if args.quick else 10_000), args.concurrency
    lanes, batch = 2, max(1, conc // 2)
    report.title("1c", f"Queue: the claim in a narrow table of its own, {n:,} runs, {lanes} "
                 f"connections claiming {batch} each (design experiment, no target)")
    rates = []
    for label, cuts in _QUEUE_VARIANTS:
        params = {"dsn": dsn, "lanes": lanes, "batch": batch, "cuts": cuts}
        res, done, notes = await _drain(dsn, n, queue_child, params, also=_QUEUE_TABLE)
        if res["done"] != n or done != n or notes != (0 if cuts is None else n):
            raise RuntimeError(f"queue: {res['done']} claimed, {done} succeeded, {notes} "
                               f"notifications of {n}")
        rates.append((label, n / res["elapsed"]))
    theirs = await _pgqueuer(dsn, n, conc, settings(dsn).database_pool_size)
    their_rate = n / theirs["elapsed"]
    for label, rate in rates:
        report.line(label, f"{rate:,.0f} runs/s = {rate / their_rate:.2f}x pgqueuer")
    report.line(f"baseline (pgqueuer {pgqueuer_version()})",
                f"{their_rate:,.0f} jobs/s  (max_concurrent_tasks={conc}, "
                f"batch_size={theirs['batch']})")


async def tick(dsn: str, args: argparse.Namespace, report: Report) -> None:
    big, small, due, ticks = (100_000 if args.quick else 1_000_000), 10_000, 100, 10
    report.title(2, f"Scheduler tick: {due} due among {small:,} (baseline) and {big:,} "
                 "instructions")
    await reset_schema(dsn)
    results = {}
    async with connect(dsn) as conn:
        await add_users(conn, 1_000)
        await add_instructions(conn, small)
        ids = [str(r["id"]) for r in await conn.fetch(f"SELECT id FROM instructions LIMIT {due}")]
    for size in (small, big):
        if size > small:
            started = time.perf_counter()
            async with connect(dsn) as conn:
                await add_instructions(conn, size - small)
            elapsed = time.perf_counter() - started
            report.line("bulk insert", f"{size - small:,} more instructions in {elapsed:.1f} s")
        async with children(tick_child, {"dsn": dsn, "due": ids, "ticks": ticks}) as [kid]:
            results[size] = await kid.recv(timeout=300)
    for size, res in results.items():
        report.line(f"median tick, {size:,} instructions",
                    f"{ms(res['busy'])} with {due} due; {ms(res['idle'])} with none due")
        report.line("  process RSS before / after", f"{res['rss_before']:.1f} / "
                    f"{res['rss_after']:.1f} MiB ({ticks} busy + {ticks} idle ticks)")
    b, s = results[big], results[small]
    report.line(f"ratio {big:,} / {small:,}", f"{b['busy'] / s['busy']:.2f}x tick time, "
                f"{b['rss_after'] / s['rss_after']:.2f}x RSS (1.0 = does not grow)")
    grown = max(b["rss_after"] - s["rss_after"], b["rss_after"] - b["rss_before"])
    report.verdict("tick (100 due)", ms(b["busy"]), "< 10 ms", b["busy"] < 0.010)
    report.verdict("tick memory", f"+{grown:.1f} MiB", "grows < 5 MiB with the table", grown < 5)


async def burst(dsn: str, args: argparse.Namespace, report: Report) -> None:
    n = 3_000 if args.quick else 10_000
    report.title(3, f"{n:,} instructions due in the same second, {args.schedulers} scheduler "
                 "process(es) ticking as `pilotlight scheduler`")
    await reset_schema(dsn)
    async with connect(dsn) as conn:
        await add_users(conn, 1_000)
        await add_instructions(conn, n)
        async with children(scheduler_child, {"dsn": dsn}, args.schedulers) as kids:
            interval = [(await kid.recv())["interval"] for kid in kids][-1]
            await asyncio.sleep(1.5)  # every scheduler is ticking
            due_at = await conn.fetchval(
                "SELECT date_trunc('second', clock_timestamp()) + interval '2 seconds'")
            await conn.execute("UPDATE instructions SET next_run_at = $1", due_at)

            async def all_queued() -> bool:
                return await conn.fetchval("SELECT count(*) FROM runs") >= n

            await wait_until(all_queued, timeout=300, every=0.1)
        lags = [r[0] for r in await conn.fetch(
            "SELECT extract(epoch FROM created_at - scheduled_for)::float8 FROM runs")]
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    report.line("tick interval", f"{interval:.1f} s, batch {settings(dsn).scheduler_batch_size}")
    report.line("lag due -> queued p50 / p99 / max", f"{ms(p50)} / {ms(p99)} / {ms(max(lags))}")
    report.verdict("burst p99 lag", ms(p99), "< 2 s", p99 < 2.0)


async def runnow(dsn: str, args: argparse.Namespace, report: Report) -> None:
    samples = 15 if args.quick else 50
    report.title(4, f"Run-now to running: {samples} samples, idle worker in another process")
    await reset_schema(dsn)
    runtime = Runtime.build(settings(dsn))
    async with transaction(runtime.sessionmaker) as session:
        user = await users.create_user(session=session, email="now@example.com", timezone="UTC")
        session.add(Account(user_id=user.id, kind="sample", email=user.email, scopes={},
                            sync_cursor={}, status="active"))
    async with transaction(runtime.sessionmaker) as session:
        instruction = await instructions.create(
            session=session, user=user, default_max_tool_calls=10, data=InstructionCreate(
                title="Now", text="Digest my mail.",
                trigger={"type": "cron", "cron": "0 8 * * 1-5", "timezone": "UTC"}))
    lags: dict[str, list[float]] = {}
    # Pauses between samples: short with LISTEN; with polling spread over a whole poll
    # interval, so a sample lands at a random phase of the loop (the worker's clock restarts
    # when the previous run ends).
    modes = (("LISTEN/NOTIFY, poll 5 s", True, 5.0, 0.2), ("polling only, poll 1 s", False, 1.0,
                                                             1.0))
    async with connect(dsn) as conn:
        for label, listen, poll, spread in modes:
            params = {"dsn": dsn, "concurrency": 20, "poll": poll, "listen": listen,
                      "until_drained": False}
            async with children(worker_child, params) as [kid]:
                await kid.recv()
                if listen:
                    async def listening() -> bool:
                        return bool(await conn.fetchval(
                            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
                            " AND datname = current_database()"))
                    await wait_until(listening, timeout=30)
                await asyncio.sleep(poll + 0.5)  # past the worker's first iteration: idle
                lags[label] = []
                for _ in range(samples):
                    await asyncio.sleep(0.1 + random.uniform(0, spread))
                    async with transaction(runtime.sessionmaker) as session:
                        run = await run_now(session=session, instruction=instruction,
                                            wakeups=Wakeups())  # nothing local: only NOTIFY

                    async def finished(run_id: uuid.UUID = run.id) -> bool:
                        return bool(await conn.fetchval(
                            "SELECT finished_at IS NOT NULL FROM runs WHERE id = $1", run_id))

                    await wait_until(finished, timeout=30, every=0.005)
                    row = await conn.fetchrow("SELECT created_at, started_at FROM runs"
                                              " WHERE id = $1", run.id)
                    lags[label].append((row["started_at"] - row["created_at"]).total_seconds())
    await runtime.close()
    (ours_label, ours), (base_label, base) = lags.items()
    for label, values in lags.items():
        report.line(f"{label}", f"p50 {ms(median(values))}, p90 {ms(percentile(values, 90))},"
                    f" max {ms(max(values))}")
    report.line("ratio LISTEN / polling (p50)", f"{median(ours) / median(base):.3f}x "
                "(lower is better)")
    report.verdict("run-now p50", ms(median(ours)), "< 100 ms", median(ours) < 0.100)


async def inflight(dsn: str, args: argparse.Namespace, report: Report) -> None:
    conc, sleep = args.inflight, 2.0
    pool = settings(dsn).database_pool_size
    report.title(5, f"In flight in one worker process: {conc:,} runs queued, model answers after "
                 f"{sleep:.0f} s, worker_concurrency={conc}, pool {pool}")
    await reset_schema(dsn)
    async with connect(dsn) as conn:
        await add_users(conn, max(1, conc // 10))
        await add_instructions(conn, conc)
        await queue_runs(conn)
    params = {"dsn": dsn, "concurrency": conc, "poll": 1.0, "listen": True, "sleep": sleep,
              "until_drained": True}
    async with children(worker_child, params) as [kid]:
        await kid.recv()
        res = await kid.recv(timeout=600)
    report.line("peak waiting on the model at once", f"{res['peak_agent']:,}")
    report.line("peak held by the worker / running", f"{res['peak_inflight']:,} / "
                f"{res['peak_running']:,} (worker.inflight / status 'running' in the table)")
    report.line("all done in", f"{res['elapsed']:.1f} s (one wave would be {sleep:.0f} s)")
    report.line("process RSS idle / peak", f"{res['rss_idle']:.0f} / {res['rss_peak']:.0f} MiB")
    report.verdict("in flight at once", f"{res['peak_agent']:,}", ">= 1,000",
                   res["peak_agent"] >= 1000)


# --- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL,
                        help="PostgreSQL on this machine; created if missing, its schema reset")
    parser.add_argument("--quick", action="store_true", help="small sizes: under ~2 minutes")
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated figures to run, of: {','.join(FIGURES)}")
    parser.add_argument("--concurrency", type=int, default=20,
                        help="throughput: worker_concurrency and pgqueuer max_concurrent_tasks")
    parser.add_argument("--schedulers", type=int, default=1,
                        help="burst: scheduler processes ticking at once")
    parser.add_argument("--inflight", type=int, default=1500,
                        help="inflight: worker_concurrency and runs queued")
    args = parser.parse_args()
    args.only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(args.only) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(sorted(unknown))}")
    return args


async def main() -> None:
    args = parse_args()
    dsn, server = await start_benchmark(args.database_url)
    print(f"Pilotlight engine benchmarks ({'quick' if args.quick else 'full'}) on {dsn}")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL "
          f"{server}, pgqueuer {pgqueuer_version()}; everything on this one machine "
          "(client, workers and PostgreSQL share the cores)")
    print("load average at start: {:.2f} {:.2f} {:.2f} (other work on the machine skews every"
          " figure)".format(*os.getloadavg()))
    report = Report()
    figures = {"throughput": throughput, "statements": statements, "queue": queue_design,
               "tick": tick,
               "burst": burst, "runnow": runnow, "inflight": inflight}
    started = time.perf_counter()
    for name in FIGURES:
        if name in args.only:
            await figures[name](dsn, args, report)
    report.summary()
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end: "
          "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        print("\ninterrupted; child processes stopped", file=sys.stderr)
        sys.exit(130)
