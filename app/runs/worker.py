"""The worker: claims queued runs, holds their leases while they execute."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import transaction
from app.core.loops import FailureLog, LoopService
from app.core.pubsub import PgListener
from app.core.runtime import Runtime
from app.questions import service as questions
from app.runs import metrics, queue
from app.runs.batching import HeldConnection
from app.runs.execute import RunExecutor
from app.runs.service import WORKER_CHANNEL

log = logging.getLogger(__name__)

# Unanswered questions expired per iteration; the rest wait for the next one.
EXPIRE_BATCH = 100


class Worker(LoopService):
    name = "worker"

    def __init__(self, *, runtime: Runtime, executor: RunExecutor) -> None:
        super().__init__(interval=runtime.settings.worker_poll_seconds)
        self.runtime = runtime
        self.settings = runtime.settings
        self.executor = executor
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.inflight: dict[uuid.UUID, tuple[queue.Claim, asyncio.Task[None]]] = {}
        # Each held run's execution, which a lost lease cancels.
        self._executions: dict[uuid.UUID, asyncio.Task[None]] = {}
        # One task renews the leases of every held run, in one statement each time.
        self._renewer: asyncio.Task[None] | None = None
        # True while `run` does the upkeep in a loop of its own (every poll interval).
        self._upkeep_apart = False
        # PostgreSQL: the connection claims are made on (no checkout per claim).
        self._claims = (
            HeldConnection(runtime.engine) if runtime.engine.dialect.name == "postgresql"
            else None
        )
        runtime.wakeups.subscribe(WORKER_CHANNEL, self.wake)
        executor.on_writing = self.wake

    async def run_once(self) -> int:
        """Re-queue runs of dead workers and runs whose question expired (unless the
        upkeep loop of `run` does that), then claim runs for the room there is."""
        if not self._upkeep_apart:
            await self.upkeep()
        room = self.room()
        if room <= 0:
            return 0
        claims = await self._claim(room)
        for claim in claims:
            if claim.due_at is not None and claim.claimed_at is not None:
                metrics.START_LAG.observe(max((claim.claimed_at - claim.due_at).total_seconds(), 0))
            task = asyncio.create_task(self._hold(claim), name=f"run-{claim.run_id}")
            self.inflight[claim.run_id] = (claim, task)
        return len(claims)

    def room(self) -> int:
        """How many more runs to claim. `worker_concurrency` bounds the runs at work
        (loading, the agent); a run whose work is done and whose outcome waits for the
        next batch write (one statement for many) no longer counts, as a queue's
        completed job whose acknowledgement is buffered. So up to as many more runs
        are held, waiting only for that write."""
        concurrency = self.settings.worker_concurrency
        at_work = len(self.inflight) - min(self.executor.writing, concurrency)
        return concurrency - at_work

    async def _claim(self, limit: int) -> list[queue.Claim]:
        """Claim runs and read what they need. On PostgreSQL on the held connection, in
        autocommit: one atomic statement does both."""
        if self._claims is None:
            async with transaction(self.runtime.sessionmaker) as session:
                claims = await queue.claim(
                    session=session, worker_id=self.worker_id, limit=limit,
                    lease_seconds=self.settings.worker_lease_seconds,
                )
                await self.executor.preload(session, claims)
            return claims
        async with self._claims.use() as connection:
            async with AsyncSession(bind=connection, expire_on_commit=False,
                                    autoflush=False) as session:
                claims = await self.executor.claim_and_load(
                    session, worker_id=self.worker_id, limit=limit,
                    lease_seconds=self.settings.worker_lease_seconds,
                )
                await session.commit()
        return claims

    async def upkeep(self) -> None:
        """Re-queue runs whose worker stopped renewing, and runs whose question expired."""
        async with transaction(self.runtime.sessionmaker) as session:
            rescued = await queue.rescue_expired(session=session)
        if rescued:
            metrics.LEASE_RESCUES.inc(rescued)
            log.warning("re-queued %d run(s) whose lease expired", rescued)
        async with transaction(self.runtime.sessionmaker) as session:
            expired = await questions.expire_due(session=session, limit=EXPIRE_BATCH)
        if expired:
            log.info("%d question(s) expired unanswered; their runs resume without", expired)
            self.wake()

    async def _upkeep_loop(self, stop: asyncio.Event) -> None:
        """The upkeep every poll interval, apart from the claims: a worker woken by every
        finished run claims at once without it."""
        failures = FailureLog("worker upkeep", log)
        while not stop.is_set():
            try:
                await self.upkeep()
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def _hold(self, claim: queue.Claim) -> None:
        """Execute one run while the worker renews its lease; stop if the lease is lost."""
        execution = asyncio.create_task(self.executor.execute(claim))
        self._executions[claim.run_id] = execution
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew(), name="worker-renew")
        try:
            await execution
        except asyncio.CancelledError:
            if not execution.done():
                execution.cancel()
                # Let it unwind (roll back its transaction) before anyone releases the
                # run: on SQLite an open write transaction would block the release.
                await asyncio.gather(execution, return_exceptions=True)
            raise
        except Exception:
            log.exception("run %s crashed the executor", claim.run_id)
        finally:
            self._executions.pop(claim.run_id, None)
            self.inflight.pop(claim.run_id, None)
            self.wake()

    async def _renew(self) -> None:
        """Every lease/3 seconds, renew the leases of all held runs in one statement;
        cancel the runs whose lease was lost. Ends when nothing is held.

        A run claimed just after a renewal waits at most lease/3 for its first one, so
        a live worker's lease never has less than 2/3 of its time left."""
        every = self.settings.worker_lease_seconds / 3
        while self.inflight:
            await asyncio.sleep(every)
            claims = [claim for claim, _task in self.inflight.values()]
            if not claims:
                return
            try:
                held = await self._renew_many(claims)
            except Exception:
                log.exception("renewing the leases of %d run(s) failed; will retry", len(claims))
                continue
            for claim in claims:
                execution = self._executions.get(claim.run_id)
                if claim.run_id in held or execution is None or execution.done():
                    continue
                log.warning("run %s: lease lost (cancelled or taken over); stopping", claim.run_id)
                execution.cancel()

    async def _renew_many(self, claims: list[queue.Claim]) -> set[uuid.UUID]:
        """One statement for all the leases. On PostgreSQL on the claims' connection: a
        renewal must not wait for a pooled connection that the runs' steps hold."""
        lease = self.settings.worker_lease_seconds
        if self._claims is None:
            async with transaction(self.runtime.sessionmaker) as session:
                return await queue.renew_many(session=session, claims=claims, lease_seconds=lease)
        async with self._claims.use() as connection:
            async with AsyncSession(bind=connection, expire_on_commit=False,
                                    autoflush=False) as session:
                held = await queue.renew_many(session=session, claims=claims, lease_seconds=lease)
                await session.commit()
                return held

    async def run(self, stop: asyncio.Event) -> None:
        """Claim runs until stopped; on PostgreSQL, NOTIFY wakes the loop at once."""
        self._upkeep_apart = True
        tasks = [asyncio.create_task(self._upkeep_loop(stop), name="worker-upkeep")]
        # While the loop runs, its hot paths keep their connections (closed in on_stop).
        if self._claims is not None:
            self._claims.keep = True
        if self.executor.writes is not None:
            self.executor.writes.keep = True
        if self.runtime.engine.dialect.name == "postgresql":
            listener = PgListener(self.runtime.engine.url, {queue.RUNS_CHANNEL: self.wake})
            tasks.append(asyncio.create_task(listener.run(stop), name="worker-listen"))
        try:
            await super().run(stop)
        finally:
            self._upkeep_apart = False
            await asyncio.gather(*tasks, return_exceptions=True)

    async def on_stop(self) -> None:
        """No new claims; let running runs finish for a while, then give the rest back."""
        try:
            await self._give_back()
        finally:
            if self._renewer is not None:
                self._renewer.cancel()
                await asyncio.gather(self._renewer, return_exceptions=True)
            await self.executor.close()
            if self._claims is not None:
                await self._claims.close()

    async def _give_back(self) -> None:
        held = list(self.inflight.values())
        if not held:
            return
        timeout = self.settings.worker_shutdown_seconds
        log.info("stopping: waiting up to %.0fs for %d running run(s)", timeout, len(held))
        _done, pending = await asyncio.wait([task for _c, task in held], timeout=timeout)
        unfinished = [(claim, task) for claim, task in held if task in pending]
        for _claim, task in unfinished:
            task.cancel()
        await asyncio.gather(*(task for _claim, task in unfinished), return_exceptions=True)
        released = 0
        held = unfinished
        for claim, _task in held:
            try:
                async with transaction(self.runtime.sessionmaker) as session:
                    # Fenced: a run that finished while being cancelled stays finished.
                    released += await queue.release(session=session, claim=claim)
            except Exception:
                log.exception("could not release run %s; its lease will expire", claim.run_id)
        if released:
            log.info("released %d run(s) on shutdown", released)
