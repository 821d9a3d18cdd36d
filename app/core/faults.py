"""Testing only: PILOTLIGHT_TEST_FAULT makes a process SIGKILL or SIGSTOP itself at a
named point, so crash tests can stop a real worker exactly there."""

from __future__ import annotations

import logging
import os
import signal

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
