"""The worker: claims queued runs, holds their leases while they execute."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from app.core.db import transaction
from app.core.loops import LoopService
from app.core.pubsub import PgListener
from app.core.runtime import Runtime
from app.questions import service as questions
from app.runs import metrics, queue
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
        runtime.wakeups.subscribe(WORKER_CHANNEL, self.wake)

    async def run_once(self) -> int:
        """Re-queue runs of dead workers and runs whose question expired, then claim as
        many runs as there is room for."""
        async with transaction(self.runtime.sessionmaker) as session:
            rescued = await queue.rescue_expired(session=session)
        if rescued:
            metrics.LEASE_RESCUES.inc(rescued)
            log.warning("re-queued %d run(s) whose lease expired", rescued)
        async with transaction(self.runtime.sessionmaker) as session:
            expired = await questions.expire_due(session=session, limit=EXPIRE_BATCH)
        if expired:
            log.info("%d question(s) expired unanswered; their runs resume without", expired)
        room = self.settings.worker_concurrency - len(self.inflight)
        if room <= 0:
            return 0
        async with transaction(self.runtime.sessionmaker) as session:
            claims = await queue.claim(
                session=session, worker_id=self.worker_id, limit=room,
                lease_seconds=self.settings.worker_lease_seconds,
            )
        for claim in claims:
            if claim.due_at is not None and claim.claimed_at is not None:
                metrics.START_LAG.observe(max((claim.claimed_at - claim.due_at).total_seconds(), 0))
            task = asyncio.create_task(self._hold(claim), name=f"run-{claim.run_id}")
            self.inflight[claim.run_id] = (claim, task)
        return len(claims)

    async def _hold(self, claim: queue.Claim) -> None:
        """Execute one run while renewing its lease; stop if the lease is lost."""
        execution = asyncio.create_task(self.executor.execute(claim))
        renewer = asyncio.create_task(self._renew(claim, execution))
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
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            self.inflight.pop(claim.run_id, None)
            self.wake()

    async def _renew(self, claim: queue.Claim, execution: asyncio.Task[None]) -> None:
        every = self.settings.worker_lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            try:
                async with transaction(self.runtime.sessionmaker) as session:
                    held = await queue.renew(
                        session=session, claim=claim,
                        lease_seconds=self.settings.worker_lease_seconds,
                    )
            except Exception:
                log.exception("renewing the lease of run %s failed; will retry", claim.run_id)
                continue
            if not held:
                log.warning("run %s: lease lost (cancelled or taken over); stopping", claim.run_id)
                execution.cancel()
                return

    async def run(self, stop: asyncio.Event) -> None:
        """Claim runs until stopped; on PostgreSQL, NOTIFY wakes the loop at once."""
        if self.runtime.engine.dialect.name != "postgresql":
            await super().run(stop)
            return
        listener = PgListener(self.runtime.engine.url, {queue.RUNS_CHANNEL: self.wake})
        listening = asyncio.create_task(listener.run(stop), name="worker-listen")
        try:
            await super().run(stop)
        finally:
            await asyncio.gather(listening, return_exceptions=True)

    async def on_stop(self) -> None:
        """No new claims; let running runs finish for a while, then give the rest back."""
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
