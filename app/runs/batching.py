"""Coalescing: calls made while a batch is being written join the next batch.

The worker starts its runs in batches (one claim takes many), and runs that take
the same time end together: loading them one by one, or writing each outcome in a
transaction of its own, costs a round trip per statement per run. A `Coalescer`
gathers the calls of one turn of the event loop (and those that arrive while its
previous batch is in flight) and hands them to one function that serves them all,
in one transaction. A lone call waits one turn of the loop, no more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """`await coalescer(item)` returns `handle([..., item, ...])`'s answer for `item`.

    `handle` returns one answer per item, in order; an answer that is an exception is
    raised to that item's caller only. If `handle` raises, every caller of the batch
    gets the error. At most `parallel` batches of at most `max_size` items run at once.
    """

    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[list[R | BaseException]]],
        *,
        max_size: int,
        parallel: int = 1,
    ) -> None:
        self.handle = handle
        self.max_size = max(1, max_size)
        self.parallel = max(1, parallel)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = 0
        self._waiting = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        """Calls waiting for the next batch (not in one being served)."""
        return len(self._pending)

    @property
    def waiting(self) -> int:
        """Calls not answered yet (queued or in a batch being served)."""
        return self._waiting

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._waiting += 1
        self._kick()
        try:
            return await future
        finally:
            self._waiting -= 1

    def _kick(self) -> None:
        if self._scheduled or not self._pending or self._running >= self.parallel:
            return
        # Start on the next turn of the loop: the calls of this turn join the batch.
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        while self._pending and self._running < self.parallel:
            batch = self._pending[: self.max_size]
            del self._pending[: self.max_size]
            # A caller cancelled before its batch started asks for nothing.
            batch = [(item, future) for item, future in batch if not future.done()]
            if not batch:
                continue
            self._running += 1
            task = asyncio.create_task(self._serve(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers = await self.handle([item for item, _future in batch])
        except asyncio.CancelledError:
            for _item, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _item, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_item, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
        finally:
            self._running -= 1
            self._kick()


class HeldConnection:
    """One pooled connection that a hot loop keeps for its statements.

    A checkout from the pool pings the server first (`pool_pre_ping`), which the
    asyncpg dialect does as BEGIN, `;` and ROLLBACK: three round trips per checkout, on
    paths whose work is one or two statements. Kept, the connection costs nothing but
    its statements. In `autocommit` mode no BEGIN and COMMIT are sent either (for work
    that is one atomic statement); otherwise the user begins its own transaction.

    It is kept while `keep` is set (by the loop that owns it, while it runs), else given
    back after each use; after an error it is discarded, so a broken connection is not
    reused. Disposing of the engine closes a connection still kept.
    """

    def __init__(self, engine: AsyncEngine, *, autocommit: bool = True, count: int = 1) -> None:
        self.engine = engine
        self.autocommit = autocommit
        # Set by the loop that owns it while it runs; `close` clears it.
        self.keep = False
        # `count` connections at most, each used by one caller at a time.
        self._connections: list[AsyncConnection | None] = [None] * max(1, count)
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(len(self._connections)):
            self._free.put_nowait(slot)
        event.listen(engine.sync_engine, "engine_disposed", self._on_dispose)

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncConnection]:
        slot = await self._free.get()
        try:
            connection = self._connections[slot]
            if connection is None:
                connection = await self.engine.connect()
                if self.autocommit:
                    connection = await connection.execution_options(
                        isolation_level="AUTOCOMMIT"
                    )
                self._connections[slot] = connection
            try:
                yield connection
            except BaseException:
                await self._drop(slot, invalidate=True)
                raise
            if not self.keep:
                await self._drop(slot, invalidate=False)
        finally:
            self._free.put_nowait(slot)

    async def close(self) -> None:
        """Stop keeping the connections and give them back to the pool."""
        self.keep = False
        slots = [await self._free.get() for _ in self._connections]
        try:
            for slot in slots:
                await self._drop(slot, invalidate=False)
        finally:
            for slot in slots:
                self._free.put_nowait(slot)

    async def _drop(self, slot: int, *, invalidate: bool) -> None:
        connection, self._connections[slot] = self._connections[slot], None
        if connection is None:
            return
        if invalidate:  # after an error its state is unknown: the pool must not reuse it
            with contextlib.suppress(Exception):
                await connection.invalidate()
        with contextlib.suppress(Exception):
            await connection.close()

    def _on_dispose(self, _engine: Any) -> None:
        # Called inside AsyncEngine.dispose() (in its greenlet, so the sync API works):
        # the connections still held are closed with the pool they came from.
        for slot, connection in enumerate(self._connections):
            self._connections[slot] = None
            if connection is None or connection.sync_connection is None:
                continue
            with contextlib.suppress(Exception):
                connection.sync_connection.invalidate()
            with contextlib.suppress(Exception):
                connection.sync_connection.close()
