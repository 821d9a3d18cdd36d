"""What a process holds: settings, the engine, the session factory and wake-ups.

Built once per process and handed to the api, loops and CLI commands, so that
tests can build one against their own database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker


@dataclass
class Wakeups:
    """In-process wake-ups: a queued run wakes this process's worker at once.

    Across processes, workers poll (and, on PostgreSQL, will LISTEN).
    """

    listeners: dict[str, list[Callable[[], None]]] = field(default_factory=dict)

    def subscribe(self, channel: str, callback: Callable[[], None]) -> None:
        self.listeners.setdefault(channel, []).append(callback)

    def notify(self, channel: str) -> None:
        for callback in self.listeners.get(channel, []):
            callback()


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    wakeups: Wakeups

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = create_engine(
            settings.effective_database_url, pool_size=settings.database_pool_size
        )
        return cls(settings, engine, create_sessionmaker(engine), Wakeups())

    async def close(self) -> None:
        await self.engine.dispose()
