"""Small loop services: one `run_once()` per iteration, a wake-up, a clean stop.

The scheduler tick, the worker's claim loop and the lease rescuer are loops.
Tests drive them one iteration at a time by calling `run_once()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)

# How often a failure that keeps coming back (the database down: every iteration fails
# alike) is told again, in one line, after its first telling with the traceback.
REPEAT_SECONDS = 60.0


class FailureLog:
    """A loop's failures, told without flooding the log: a failure with its traceback; the
    same failure again (same type and message) once a minute in one line with its count;
    and, in one line, the first success after failures. During a database outage every
    loop fails every second, and each failure was a traceback of about 100 lines."""

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what
        self.logger = logger
        self._last: tuple[type[BaseException], str] | None = None
        self._count = 0
        self._told_at = 0.0

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        key = (type(exc), str(exc))
        if key != self._last:
            self.logger.error("%s failed", self.what, exc_info=exc)
            self._last, self._told_at = key, now
        elif now - self._told_at >= REPEAT_SECONDS:
            self.logger.error("%s failed again, %d times in a row: %s: %s", self.what,
                              self._count + 1, type(exc).__name__, exc)
            self._told_at = now
        self._count += 1

    def succeeded(self) -> None:
        if self._count:
            self.logger.info("%s works again, after %d failure(s)", self.what, self._count)
        self._last, self._count = None, 0


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
        failures = FailureLog(f"{self.name} iteration")
        try:
            while not stop.is_set():
                timeout = self.interval
                failed = False
                # Cleared before the iteration: a wake-up that comes while it runs (a Gmail
                # push in the middle of a poll) starts the next one at once.
                self._wake.clear()
                try:
                    await self.run_once()
                except Exception as exc:
                    failed = True
                    failures.failed(exc)
                    self._wake.clear()  # after a failure the loop waits the whole interval
                else:
                    failures.succeeded()
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
