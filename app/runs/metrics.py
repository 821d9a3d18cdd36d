"""Prometheus metrics of this process, and the database-wide gauges read at scrape time."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import db_now
from app.runs.models import Run

RUNS_QUEUED = Counter("pilotlight_runs_queued", "Runs queued by this process", ["reason"])
RUNS_FINISHED = Counter(
    "pilotlight_runs_finished", "Runs this process brought to an end, by status", ["status"]
)
RUN_RETRIES = Counter("pilotlight_run_retries", "Failed attempts put back in the queue")
RUNS_WAITING_FOR_KEY = Counter(
    "pilotlight_runs_waiting_for_key",
    "Runs given back to the queue, uncounted, because the model service rejected the API key",
)
MODEL_KEY_REJECTED = Gauge(
    "pilotlight_model_key_rejected",
    "1 after the model service rejected this process's API key (runs wait), 0 once it answers",
)
LEASE_RESCUES = Counter(
    "pilotlight_lease_rescues", "Runs re-queued because their worker stopped renewing the lease"
)
START_LAG = Histogram(
    "pilotlight_run_start_lag_seconds",
    "From when a run was due (its fire time, or its retry time) to a worker starting it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
RUNS_BY_STATUS = Gauge(
    "pilotlight_runs", "Runs in a non-final status, database-wide", ["status"]
)
QUEUE_DEPTH = Gauge("pilotlight_queue_depth", "Queued runs that are due now, database-wide")
OLDEST_DUE = Gauge(
    "pilotlight_queue_oldest_due_seconds", "How long the oldest due queued run has waited"
)

_OPEN_STATUSES = ("queued", "running", "waiting_for_user")


async def refresh_database_gauges(session: AsyncSession) -> None:
    """Read queue figures from the database; every index used is a partial one."""
    now = await db_now(session)
    rows = await session.execute(
        select(Run.status, func.count()).where(Run.status.in_(_OPEN_STATUSES))
        .group_by(Run.status)
    )
    counts = {status: count for status, count in rows}
    for status in _OPEN_STATUSES:
        RUNS_BY_STATUS.labels(status).set(counts.get(status, 0))
    depth, oldest = (
        await session.execute(
            select(func.count(), func.min(Run.available_at)).where(
                Run.status == "queued", Run.available_at <= now
            )
        )
    ).one()
    QUEUE_DEPTH.set(depth)
    OLDEST_DUE.set((now - oldest).total_seconds() if oldest is not None else 0)
