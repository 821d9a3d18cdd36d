"""Testing only: PILOTLIGHT_TEST_FAULT makes a process SIGKILL or SIGSTOP itself at a
named point, so crash tests can stop a real worker exactly there."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from app.core.db import sqlite_transaction_open

log = logging.getLogger(__name__)


class FaultPoints:
    """Fires the configured fault once, at its point; does nothing when none is set."""

    def __init__(self, spec: str) -> None:
        self.action, _, self.point = spec.partition(":")
        self.fired = False

    def __call__(self, point: str) -> None:
        if point != self.point or self.fired:
            return
        self.fired = True
        log.warning("test fault: %s at %s", self.action, point)
        os.kill(os.getpid(), signal.SIGKILL if self.action == "kill" else signal.SIGSTOP)

    async def reached(self, point: str) -> None:
        """As calling it, but a stop first waits (up to 10 s) until no SQLite transaction
        of this process is open. Another task's transaction (the delivery sender's poll,
        a lease renewal) frozen with the process would hold the database's write lock,
        and every other process would fail on it instead of taking the run over."""
        if point == self.point and not self.fired and self.action == "stop":
            for _ in range(1000):
                if not sqlite_transaction_open():
                    break
                await asyncio.sleep(0.01)
        self(point)
