"""What a process holds: settings, the engine, the session factory and wake-ups.

Built once per process and handed to the api, loops and CLI commands, so that
tests can build one against their own database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker

if TYPE_CHECKING:
    from app.agent.llm import LLM


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

    _model: LLM | None = field(default=None, repr=False)

    def model(self) -> LLM:
        """The process's one model client, built on first use (Gemini with an API key,
        else the offline model) and shared by the api's drafting and the worker."""
        if self._model is None:
            from app.agent.factory import build_llm  # the SDK loads only when used

            self._model = build_llm(self.settings)
        return self._model

    def use_model(self, llm: LLM) -> None:
        """Share a model built (and probed) at start instead of building another."""
        self._model = llm

    async def close_model(self) -> None:
        model, self._model = self._model, None
        close = getattr(model, "aclose", None)
        if close is not None:
            await close()

    async def close(self) -> None:
        await self.close_model()
        await self.engine.dispose()
