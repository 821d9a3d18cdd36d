"""LoopService: what wakes the next iteration, and what does not."""

from __future__ import annotations

import asyncio

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
