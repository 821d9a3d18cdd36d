"""Expired sign-in rows are deleted: browser sessions, login links, OAuth states and the
failed sign-ins counted by `app.auth.throttle`.

Each is useless once expired (or revoked, or used), and nothing else removes them: a
busy service would otherwise keep every session it ever started. A loop of the
scheduler role deletes them a day after they stopped working, in bounded batches.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import LoginLink, SignInFailure, WebSession
from app.core.db import db_now, transaction
from app.core.loops import LoopService
from app.google.models import OAuthState

log = logging.getLogger(__name__)

# Once an hour; a row is kept a day after it stopped working (for a look when a
# sign-in fails); at most this many rows of a table per statement.
EVERY_SECONDS = 3600.0
KEPT_FOR = timedelta(days=1)
BATCH = 1000


class ExpiredSignInPurger(LoopService):
    name = "sign-in purge"

    def __init__(self, *, sessionmaker: async_sessionmaker[AsyncSession],
                 interval: float = EVERY_SECONDS) -> None:
        super().__init__(interval=interval)
        self.sessionmaker = sessionmaker

    async def run_once(self) -> int:
        """Delete what stopped working more than a day ago; returns how many rows."""
        deleted = 0
        async with transaction(self.sessionmaker) as session:
            before = await db_now(session) - KEPT_FOR
        for model, stopped in (
            (WebSession, or_(WebSession.expires_at < before, WebSession.revoked_at < before)),
            (LoginLink, or_(LoginLink.expires_at < before, LoginLink.used_at < before)),
            (OAuthState, or_(OAuthState.expires_at < before, OAuthState.used_at < before)),
            # Counted for at most a day (the longest window); kept no longer than that.
            (SignInFailure, SignInFailure.created_at < before),
        ):
            while True:
                count = await self._delete_batch(model, stopped)
                deleted += count
                if count < BATCH:
                    break
        if deleted:
            log.info("deleted %d expired sign-in row(s)", deleted)
        return deleted

    async def _delete_batch(self, model: Any, stopped: Any) -> int:
        async with transaction(self.sessionmaker) as session:
            ids = select(model.id).where(stopped).limit(BATCH).scalar_subquery()
            result = await session.execute(
                delete(model).where(model.id.in_(ids)).execution_options(
                    synchronize_session=False
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
