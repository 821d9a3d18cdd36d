"""Request-scoped dependencies: the runtime and the request's session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import commit
from app.core.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed when the endpoint returns, else rolled back."""
    async with runtime.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            session.info.pop("after_commit", None)
            await session.rollback()
            raise
        await commit(session)


# scope="function": the commit happens before the response is sent, so a
# failed commit becomes an error response instead of a lost write.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
