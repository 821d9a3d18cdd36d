"""GET /events: the user's notifications, questions and run changes as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from app.core.db import utcnow
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.core.runtime import Runtime
from app.events import service
from app.events.service import Cursor, EventHub, InvalidEventId
from app.users.deps import CurrentSignIn, SignIn
from app.users.service import InvalidToken

log = logging.getLogger(__name__)

router = APIRouter(prefix="/events", tags=["events"], responses=error_responses(InvalidToken))

# How often a stream looks for new events without a wake-up: every second on
# SQLite (no NOTIFY), rarely on PostgreSQL while the LISTEN connection is up.
POLL_SECONDS = 1.0
LISTENING_POLL_SECONDS = 10.0
# How soon a stream reads again when rows of its user wait for older transactions to
# end: their end is not announced.
HELD_BACK_POLL_SECONDS = 0.5
# How often a stream checks that its token or session still works (one indexed query),
# and ends if not: revoking a token or signing out stops the stream within this time.
CHECK_SECONDS = 5.0


def hub_of(request: Request, runtime: Runtime) -> EventHub:
    hub: EventHub | None = getattr(request.app.state, "events", None)
    if hub is None:
        hub = request.app.state.events = EventHub()
    hub.start(runtime)
    return hub


async def _stream(
    request: Request, runtime: Runtime, hub: EventHub, sign_in: SignIn, cursor: Cursor,
    backlog: list[service.Event], heartbeat: float,
) -> AsyncIterator[str]:
    user_id = sign_in.user.id
    woken, unsubscribe = hub.subscribe(user_id)
    loop = asyncio.get_running_loop()
    next_heartbeat = loop.time() + heartbeat
    # The request checked the credential just now; a session also ends when it expires.
    next_check = loop.time() + CHECK_SECONDS
    expires_at = sign_in.expires_at
    # How long a client waits before reconnecting, and a first line so it knows it is open.
    yield "retry: 2000\n: connected\n\n"
    read = True  # read at once: what committed since the request read the cursor
    next_read = loop.time()
    try:
        for event in backlog:
            yield event.encode()
        while True:
            woken.clear()
            checking = loop.time() >= next_check or (expires_at and utcnow() >= expires_at)
            if checking or read:
                # A short session per query: the stream holds no connection while it waits.
                async with runtime.sessionmaker() as session:
                    if checking:
                        try:
                            expires_at = await sign_in.check(
                                session=session, settings=runtime.settings
                            )
                        except InvalidToken:
                            # The client reconnects and is refused with 401.
                            yield ": signed out\n\n"
                            return
                        next_check = loop.time() + CHECK_SECONDS
                    if read:
                        batch = await service.new_events(
                            session=session, user_id=user_id, cursor=cursor
                        )
                if read:
                    cursor = batch.cursor
                    for event in batch.events:
                        yield event.encode()
                    poll = LISTENING_POLL_SECONDS if hub.listening else POLL_SECONDS
                    if batch.held_back:
                        poll = min(poll, HELD_BACK_POLL_SECONDS)
                    next_read = loop.time() + poll
            if hub.closing.is_set() or await request.is_disconnected():
                return
            # Idle streams cost the sign-in check and a rare poll; a NOTIFY reads at once.
            wake_at = min(next_heartbeat, next_check, next_read)
            if expires_at is not None:
                wake_at = min(wake_at, loop.time() + (expires_at - utcnow()).total_seconds())
            timeout = max(0.0, wake_at - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout)
            if hub.closing.is_set():
                return
            read = woken.is_set() or loop.time() >= next_read
            if loop.time() >= next_heartbeat:
                yield ": heartbeat\n\n"
                next_heartbeat = loop.time() + heartbeat
    finally:
        unsubscribe()


@router.get(
    "",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}},
              "description": "A server-sent event stream; it ends only when its sign-in "
                             "stops working or the server stops"},
        **error_responses(InvalidEventId),
    },
)
async def stream_events(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    sign_in: CurrentSignIn,
    last_event_id: Annotated[str | None, Header(description="Resume after this event id")] = None,
    heartbeat: Annotated[
        float, Query(ge=0.1, le=300, description="Seconds between heartbeat comments")
    ] = 15.0,
) -> StreamingResponse:
    """Server-sent events: `notification`, `question` and `run`, with heartbeat comments.

    Without `Last-Event-ID` the stream starts now; with it, it resumes after that
    event, with what the client lacks from before it (rows committed late) and
    without what it had. The stream ends (after a `signed out` comment) within a few
    seconds of its token being revoked or its session ending, and when the session
    expires; reconnecting is then refused with 401.
    """
    backlog: list[service.Event] = []
    if not last_event_id:
        cursor = await service.start_cursor(session=session, user_id=sign_in.user.id)
    else:
        resumed = service.decode(last_event_id)
        if isinstance(resumed, Cursor) and (
            max([resumed.seq, *(at for at, _row in resumed.skip)])
            > await service.highest_given(session)
        ):
            # An id this database never gave (it was restored, or moved from SQLite to
            # PostgreSQL, or its counter restarted): resuming after it would send nothing
            # until the numbers caught up. A 4xx would stop the browser reconnecting: the
            # stream starts now instead, as a new one does.
            log.info("event stream of user %s: Last-Event-ID ahead of this database; "
                     "starting from now", sign_in.user.id)
            cursor = await service.start_cursor(session=session, user_id=sign_in.user.id)
        elif isinstance(resumed, Cursor):
            cursor = resumed
        else:
            backlog, cursor = await service.resume_older(
                session=session, user_id=sign_in.user.id, older=resumed
            )
    hub = hub_of(request, runtime)
    return StreamingResponse(
        _stream(request, runtime, hub, sign_in, cursor, backlog, heartbeat),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
