"""Small loop services: one `run_once()` per iteration, a wake-up, a clean stop.

The scheduler tick, the worker's claim loop and the lease rescuer are loops.
Tests drive them one iteration at a time by calling `run_once()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)


class LoopService(ABC):
    name: str = "loop"

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self._wake = asyncio.Event()

    @abstractmethod
    async def run_once(self) -> object:
        """Do one iteration's work (what it returns is for tests and logs)."""

    async def plan_wait(self) -> float:
        """Seconds to wait after an iteration unless woken: the interval, by default."""
        return self.interval

    def wake(self) -> None:
        """Run the next iteration now instead of after the interval."""
        self._wake.set()

    async def on_stop(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what the loop holds; called once when it stops."""

    async def run(self, stop: asyncio.Event) -> None:
        log.info("%s started (every %.2fs)", self.name, self.interval)
        try:
            while not stop.is_set():
                timeout = self.interval
                failed = False
                # Cleared before the iteration: a wake-up that comes while it runs (a Gmail
                # push in the middle of a poll) starts the next one at once.
                self._wake.clear()
                try:
                    await self.run_once()
                except Exception:
                    failed = True
                    log.exception("%s iteration failed", self.name)
                    self._wake.clear()  # after a failure the loop waits the whole interval
                if not failed:
                    try:
                        timeout = await self.plan_wait()
                    except Exception:
                        log.exception("%s: planning the next wait failed", self.name)
                waiters = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(self._wake.wait()),
                ]
                try:
                    await asyncio.wait(
                        waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await waiter
        finally:
            await self.on_stop()
            log.info("%s stopped", self.name)
