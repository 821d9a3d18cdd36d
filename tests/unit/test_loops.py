"""LoopService: what wakes the next iteration, and what does not."""

from __future__ import annotations

import asyncio
import logging
import re
import socket

import pytest

from app.core.loops import LoopService


class Recorder(LoopService):
    """Each iteration waits for `release`; `woken_during` wakes the loop while it waits."""

    name = "recorder"

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__(interval=60)  # far longer than any test waits
        self.iterations = 0
        self.fail = fail
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def run_once(self) -> None:
        self.iterations += 1
        self.started.set()
        await self.release.wait()
        if self.fail:
            raise RuntimeError("this iteration failed")


async def _second_iteration_within(loop: Recorder, seconds: float) -> bool:
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(loop.started.wait(), 10)
        loop.wake()  # arrives while the first iteration is still running
        loop.release.set()
        deadline = asyncio.get_running_loop().time() + seconds
        while loop.iterations < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return loop.iterations >= 2
    finally:
        stop.set()
        await running


async def test_a_wake_up_during_an_iteration_starts_the_next_one_at_once() -> None:
    # The interval is 60 s: only the wake-up can start a second iteration within 10 s.
    assert await _second_iteration_within(Recorder(), 10)


async def test_after_a_failed_iteration_the_loop_waits_its_interval() -> None:
    # A failing iteration woken meanwhile is not retried at once (no tight failure loop).
    assert not await _second_iteration_within(Recorder(fail=True), 0.5)


class Outage(LoopService):
    """Each iteration connects to `port` on 127.0.0.1, as a loop reaches its database."""

    name = "outage"

    def __init__(self, port: int) -> None:
        super().__init__(interval=0.01)
        self.port = port
        self.iterations = 0

    async def run_once(self) -> None:
        self.iterations += 1
        _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()
        await writer.wait_closed()


async def test_a_failure_that_keeps_coming_is_told_once_with_its_traceback_then_the_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the database down, every loop failed every second, each time with a traceback
    of about 100 lines: 7,000 lines in 20 seconds from one worker."""
    with socket.socket() as probe:  # a port nobody listens on, for now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop = Outage(port)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="app.core.loops")
    running = asyncio.create_task(loop.run(stop))
    try:
        while loop.iterations < 20:
            await asyncio.sleep(0.01)
        with socket.socket() as server:  # the database is back
            server.bind(("127.0.0.1", port))
            server.listen()
            listening = loop.iterations
            while loop.iterations < listening + 2:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running
    told = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records
            if "started" not in r.getMessage() and "stopped" not in r.getMessage()]
    assert len(told) == 2, told
    assert told[0] == ("ERROR", "outage iteration failed", True)
    level, message, _ = told[1]
    failures = re.fullmatch(r"outage iteration works again, after (\d+) failure\(s\)", message)
    assert level == "INFO", told
    assert failures is not None, told
    assert int(failures[1]) >= 20
