"""GET /events against a real api process: events written by other processes arrive."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, update

from app.auth import service as auth
from app.auth.models import WebSession
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.notifications.models import Notification
from app.users import service as users
from app.users.models import User
from tests import factories
from tests.integration.api.helpers import add_notification, parse_time
from tests.integration.processes import (
    command,
    free_port,
    pilotlight_env,
    start,
    stop,
    stopped_cleanly,
    wait_healthy,
)

pytestmark = pytest.mark.slow

EVENTS = "/api/v1/events"
WAIT = 20.0  # seconds to wait for one line of the stream before failing


@dataclass
class Sse:
    """One received SSE block: an event (with id, name, data) or a comment."""

    id: str | None = None
    event: str | None = None
    data: Any = None
    comment: str | None = None


class Stream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def next(self) -> Sse:
        """The next event or comment, as the parts of one block."""
        block = Sse()
        while True:
            line = await asyncio.wait_for(anext(self.lines), WAIT)
            if line == "":
                if block.event or block.comment is not None:
                    return block
                continue
            if line.startswith(":"):
                block.comment = line[1:].strip()
            elif line.startswith("id: "):
                block.id = line[4:]
            elif line.startswith("event: "):
                block.event = line[7:]
            elif line.startswith("data: "):
                block.data = json.loads(line[6:])

    async def next_event(self) -> Sse:
        """The next event, skipping comments (heartbeats)."""
        while True:
            block = await self.next()
            if block.event:
                return block


@dataclass
class Api:
    base: str
    env: dict[str, str]


def _stopped(process: subprocess.Popen[bytes], role: str, log: Path) -> None:
    code = stop(process)
    assert stopped_cleanly(code, log), f"{role} exited {code}:\n{log.read_text()}"


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """An api process on the test database, shared by the module's tests.

    No worker runs beside it between tests: each test's reset of the tables (TRUNCATE
    on PostgreSQL) would meet a polling worker's claim and one of them would fail on a
    deadlock. A test that needs a worker starts its own (`worker`).
    """
    tmp = tmp_path_factory.mktemp("events")
    port = free_port()
    env = pilotlight_env(
        data_dir=tmp / "data", database_url=database_url, PILOTLIGHT_PORT=str(port),
        PILOTLIGHT_WORKER_POLL_SECONDS="0.2",
    )
    log = tmp / "api.log"
    process = start(command("api"), env, tmp, log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log)
        yield Api(f"http://127.0.0.1:{port}", env)
    finally:
        _stopped(process, "api", log)


@pytest.fixture
def worker(runtime: Runtime, api: Api, tmp_path: Path) -> Iterator[None]:
    """A worker process for one test, started after its reset of the tables (`runtime`)
    and stopped, its log checked, before the next test's."""
    log = tmp_path / "worker.log"
    process = start(command("worker"), api.env, tmp_path, log)
    try:
        yield
    finally:
        _stopped(process, "worker", log)


@asynccontextmanager
async def events(
    api: Api, headers: dict[str, str], *, last_event_id: str | None = None,
    heartbeat: float | None = None,
) -> AsyncIterator[Stream]:
    """An open stream; it is known to be open (the server wrote its first line) on entry."""
    headers = dict(headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    params = {"heartbeat": str(heartbeat)} if heartbeat is not None else {}
    async with (
        httpx.AsyncClient(base_url=api.base, timeout=WAIT) as client,
        client.stream("GET", EVENTS, headers=headers, params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-content-type-options"] == "nosniff"  # not buffered by it
        stream = Stream(response)
        assert (await stream.next()).comment == "connected"
        yield stream


async def test_a_notification_written_by_another_process_arrives(
    runtime: Runtime, api: Api
) -> None:
    user, headers = await factories.user_with_token(runtime)
    async with events(api, headers) as stream:
        notification_id = await add_notification(runtime, user, title="Fresh digest")
        event = await stream.next_event()
    assert event.event == "notification"
    assert event.id
    assert event.data["id"] == str(notification_id)
    assert event.data["title"] == "Fresh digest"
    assert event.data["kind"] == "digest"


async def test_a_question_is_its_own_event(runtime: Runtime, api: Api) -> None:
    user, headers = await factories.user_with_token(runtime)
    async with events(api, headers) as stream:
        await add_notification(runtime, user, title="Which team?", kind="question")
        event = await stream.next_event()
    assert event.event == "question"
    assert event.data["title"] == "Which team?"


async def test_run_status_changes_from_the_worker_process_arrive(
    runtime: Runtime, api: Api, worker: None
) -> None:
    user, headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    async with events(api, headers) as stream:
        async with httpx.AsyncClient(base_url=api.base) as client:
            queued = await client.post(
                f"/api/v1/instructions/{instruction.id}/run", headers=headers
            )
        assert queued.status_code == 201, queued.text
        run_id = queued.json()["id"]
        statuses: list[str] = []
        while not statuses or statuses[-1] in ("queued", "running"):
            event = await stream.next_event()
            if event.event == "run":
                assert event.data["id"] == run_id
                assert event.data["instruction_id"] == str(instruction.id)
                statuses.append(event.data["status"])
    # Polling may merge quick changes, but never reorders them.
    assert statuses[-1] == "succeeded", statuses
    order = ["queued", "running", "succeeded"]
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)


async def test_last_event_id_resumes_after_that_event(runtime: Runtime, api: Api) -> None:
    user, headers = await factories.user_with_token(runtime)
    async with events(api, headers) as stream:
        first = await add_notification(runtime, user, title="first")
        first_event = await stream.next_event()
        assert first_event.data["id"] == str(first)
        second = await add_notification(runtime, user, title="second")
        assert (await stream.next_event()).data["id"] == str(second)
    third = await add_notification(runtime, user, title="third")  # while disconnected
    assert first_event.id
    async with events(api, headers, last_event_id=first_event.id) as stream:
        resumed = [await stream.next_event(), await stream.next_event()]
        assert [e.data["id"] for e in resumed] == [str(second), str(third)]
        fourth = await add_notification(runtime, user, title="fourth")
        assert (await stream.next_event()).data["id"] == str(fourth)
    # Resuming from the last event gets nothing old: the next event is a new one.
    async with events(api, headers, last_event_id=resumed[-1].id) as stream:
        fifth = await add_notification(runtime, user, title="fifth")
        assert (await stream.next_event()).data["id"] == str(fourth)
        assert (await stream.next_event()).data["id"] == str(fifth)


async def _add_late(runtime: Runtime, user: User, *, title: str, created_at: datetime) -> str:
    """A notification stamped at `created_at` that commits now: as a writer whose
    transaction took a while commits it."""
    notification = Notification(
        id=uuid.uuid4(), user_id=user.id, key=f"test:{uuid.uuid4()}", kind="digest",
        title=title, body="", data={}, created_at=created_at,
    )
    async with transaction(runtime.sessionmaker) as session:
        session.add(notification)
    return str(notification.id)


async def _until(stream: Stream, notification_id: uuid.UUID) -> list[str]:
    """The ids of the notifications the stream sends, up to and with this one."""
    ids: list[str] = []
    while not ids or ids[-1] != str(notification_id):
        ids.append((await stream.next_event()).data["id"])
    return ids


async def test_a_resumed_stream_gets_a_row_stamped_before_its_last_event_but_committed_later(
    runtime: Runtime, api: Api
) -> None:
    user, headers = await factories.user_with_token(runtime)
    async with events(api, headers) as stream:
        await add_notification(runtime, user, title="B")
        b = await stream.next_event()
    # Stamped before B, committed after the client had B and went away.
    late = await _add_late(
        runtime, user, title="A", created_at=parse_time(b.data["created_at"]) - timedelta(seconds=2)
    )
    assert b.id
    async with events(api, headers, last_event_id=b.id) as stream:
        marker = await add_notification(runtime, user, title="C")
        # A comes; B, which the client had, does not come again.
        assert await _until(stream, marker) == [late, str(marker)]


async def test_a_new_stream_gets_a_row_stamped_before_it_opened_but_committed_later(
    runtime: Runtime, api: Api
) -> None:
    user, headers = await factories.user_with_token(runtime)
    before = utcnow()
    await add_notification(runtime, user, title="committed before the stream opened")
    async with events(api, headers) as stream:
        late = await _add_late(runtime, user, title="late", created_at=before)
        marker = await add_notification(runtime, user, title="marker")
        assert await _until(stream, marker) == [late, str(marker)]


async def test_a_resumed_stream_after_a_burst_sends_nothing_the_client_had(
    runtime: Runtime, api: Api
) -> None:
    user, headers = await factories.user_with_token(runtime)
    burst = 100  # more rows than an event id could list, all stamped within a second
    async with events(api, headers) as stream:
        now = utcnow()
        async with transaction(runtime.sessionmaker) as session:
            for i in range(burst):
                session.add(Notification(
                    id=uuid.uuid4(), user_id=user.id, key=f"test:{uuid.uuid4()}",
                    kind="digest", title=f"burst {i}", body="", data={},
                    created_at=now + i * timedelta(milliseconds=1),
                ))
        received = [await stream.next_event() for _ in range(burst)]
    assert len({e.data["id"] for e in received}) == burst
    last = received[-1].id
    assert last
    async with events(api, headers, last_event_id=last) as stream:
        marker = await add_notification(runtime, user, title="after the burst")
        # None of the burst comes again: the next event is the new one.
        assert (await stream.next_event()).data["id"] == str(marker)


async def test_a_row_committed_long_after_its_timestamp_still_arrives(
    runtime: Runtime, api: Api
) -> None:
    # A writer whose clock is a minute behind, or whose transaction took a minute.
    user, headers = await factories.user_with_token(runtime)
    async with events(api, headers) as stream:
        await add_notification(runtime, user, title="before")
        before = await stream.next_event()
        a_minute_ago = utcnow() - timedelta(minutes=1)
        late = await _add_late(runtime, user, title="late", created_at=a_minute_ago)
        marker = await add_notification(runtime, user, title="marker")
        assert await _until(stream, marker) == [late, str(marker)]
    # A stream resumed from before it gets it too.
    assert before.id
    async with events(api, headers, last_event_id=before.id) as stream:
        assert await _until(stream, marker) == [late, str(marker)]


async def test_an_event_waits_for_an_older_transaction_still_open(
    runtime: Runtime, api: Api, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("SQLite runs one write transaction at a time")
    user, headers = await factories.user_with_token(runtime)
    async with events(api, headers) as stream:
        async with transaction(runtime.sessionmaker) as open_long:
            # Stamped a minute ago by a transaction still open: committed last, and
            # without a NOTIFY.
            first = Notification(
                id=uuid.uuid4(), user_id=user.id, key=f"test:{uuid.uuid4()}", kind="digest",
                title="long transaction", body="", data={},
                created_at=utcnow() - timedelta(minutes=1),
            )
            open_long.add(first)
            await open_long.flush()
            # Written after it, committed before it.
            marker = await add_notification(runtime, user, title="marker")
        # Both come, in the order their transactions began, once it has committed.
        assert await _until(stream, marker) == [str(first.id), str(marker)]


async def test_a_stream_opened_beside_an_older_open_transaction_sends_only_what_is_new(
    runtime: Runtime, api: Api, is_postgres: bool
) -> None:
    if not is_postgres:
        pytest.skip("SQLite runs one write transaction at a time")
    user, headers = await factories.user_with_token(runtime)
    async with AsyncExitStack() as stack:
        async with transaction(runtime.sessionmaker) as open_long:
            older = Notification(
                id=uuid.uuid4(), user_id=user.id, key=f"test:{uuid.uuid4()}", kind="digest",
                title="older transaction", body="", data={},
            )
            open_long.add(older)
            await open_long.flush()
            # Committed before the stream opens, while an older transaction is open.
            await add_notification(runtime, user, title="committed before the stream opened")
            stream = await stack.enter_async_context(events(api, headers))
        # The older transaction committed after the stream opened: its row comes.
        marker = await add_notification(runtime, user, title="marker")
        received = [await stream.next_event(), await stream.next_event()]
    assert [e.data["id"] for e in received] == [str(older.id), str(marker)]
    # Resumed from the first event, the row the client had from before still does not come.
    assert received[0].id
    async with events(api, headers, last_event_id=received[0].id) as resumed:
        assert await _until(resumed, marker) == [str(marker)]


def _older_id(at: datetime, row_id: str, *, listed: str) -> str:
    """An event id of the older form: the positions, by timestamp, of the last
    notification and the last run change the client had, and the rows it had listed."""
    micros = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return f"n{micros}_{uuid.UUID(row_id).hex}.r{micros}_{uuid.UUID(int=0).hex}{listed}"


@pytest.mark.parametrize("listed", ["", ".s", ".sABCDEFGH"])
async def test_an_event_id_of_the_older_form_still_resumes(
    runtime: Runtime, api: Api, listed: str
) -> None:
    user, headers = await factories.user_with_token(runtime)
    async with events(api, headers) as stream:
        await add_notification(runtime, user, title="first")
        first = await stream.next_event()
        second = await add_notification(runtime, user, title="second")
        assert (await stream.next_event()).data["id"] == str(second)
    older = _older_id(parse_time(first.data["created_at"]), first.data["id"], listed=listed)
    third = await add_notification(runtime, user, title="third")
    async with events(api, headers, last_event_id=older) as stream:
        resumed = await _until(stream, third)
        assert resumed == [str(second), str(third)]
        fourth = await add_notification(runtime, user, title="fourth")
        assert (await stream.next_event()).data["id"] == str(fourth)


@pytest.mark.parametrize("ahead", ["x4611686018427387904", "x4611686018427387904_n"
                                   "00000000000000000000000000000001", "x1.k4611686018427387904n"
                                   "00000000000000000000000000000001"])
async def test_an_event_id_ahead_of_this_database_starts_the_stream_now(
    runtime: Runtime, api: Api, ahead: str
) -> None:
    """An id above every event_seq this database has given (it was restored, moved from
    SQLite to PostgreSQL, or its counter restarted) is no position in it: the stream
    starts now, as a new one does, instead of sending nothing until the numbers catch
    up (and not a 4xx, after which a browser's EventSource stops reconnecting)."""
    user, headers = await factories.user_with_token(runtime)
    before = await add_notification(runtime, user, title="before the reconnect")
    async with events(api, headers, last_event_id=ahead) as stream:
        after = await add_notification(runtime, user, title="after the reconnect")
        # Heartbeats keep each line's wait short: bound the whole wait.
        assert (await asyncio.wait_for(stream.next_event(), WAIT)).data["id"] == str(after)
    assert before != after


async def test_heartbeats_arrive(runtime: Runtime, api: Api) -> None:
    _user, headers = await factories.user_with_token(runtime)
    async with events(api, headers, heartbeat=0.2) as stream:
        assert (await stream.next()).comment == "heartbeat"
        assert (await stream.next()).comment == "heartbeat"


async def test_another_users_events_never_appear(runtime: Runtime, api: Api) -> None:
    alice, alice_headers = await factories.user_with_token(runtime)
    bob, bob_headers = await factories.user_with_token(runtime)
    async with events(api, alice_headers) as alice_stream, events(api, bob_headers) as bob_stream:
        await add_notification(runtime, alice, title="for alice")
        await add_notification(runtime, bob, title="for bob")
        bob_event = await bob_stream.next_event()
        alice_event = await alice_stream.next_event()
    assert bob_event.data["title"] == "for bob"
    assert alice_event.data["title"] == "for alice"


async def _web_session(runtime: Runtime, user: User) -> tuple[uuid.UUID, dict[str, str]]:
    """A dashboard session for the user, as signing in starts one, and its cookie header."""
    async with transaction(runtime.sessionmaker) as session:
        row, token = await auth.start_session(
            session=session, user=user, method="link", ttl_seconds=3600,
            max_age_seconds=86400
        )
    return row.id, {"Cookie": f"{auth.SESSION_COOKIE}={token}"}


async def _revoke_token(runtime: Runtime, user: User, _session_id: uuid.UUID) -> None:
    async with transaction(runtime.sessionmaker) as session:
        [token] = await users.list_tokens(session=session, user=user)
        await users.revoke_token(session=session, user=user, token_id=token.id)


async def _sign_out(runtime: Runtime, _user: User, session_id: uuid.UUID) -> None:
    async with transaction(runtime.sessionmaker) as session:
        web_session = await session.get(WebSession, session_id)
        assert web_session is not None
        await auth.end_session(session=session, web_session=web_session)


async def _expire_session(runtime: Runtime, _user: User, session_id: uuid.UUID) -> None:
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(WebSession).where(WebSession.id == session_id).values(expires_at=utcnow())
        )


async def _outlive_max_age(runtime: Runtime, _user: User, session_id: uuid.UUID) -> None:
    """The session signed in longer ago than its max age (it slid on until now)."""
    signed_in = utcnow() - timedelta(seconds=runtime.settings.web_session_max_age_seconds + 1)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(WebSession).where(WebSession.id == session_id).values(created_at=signed_in)
        )


async def _delete_user(runtime: Runtime, user: User, _session_id: uuid.UUID) -> None:
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(delete(User).where(User.id == user.id))


@pytest.mark.parametrize(("credential", "end"), [
    ("token", _revoke_token),
    ("token", _delete_user),
    ("cookie", _sign_out),
    ("cookie", _expire_session),
    ("cookie", _outlive_max_age),
    ("cookie", _delete_user),
])
async def test_the_stream_ends_when_its_sign_in_stops_working(
    runtime: Runtime, api: Api, credential: str,
    end: Callable[[Runtime, User, uuid.UUID], Awaitable[None]],
) -> None:
    user, headers = await factories.user_with_token(runtime)
    session_id, cookie = await _web_session(runtime, user)
    if credential == "cookie":
        headers = cookie
    async with events(api, headers) as stream:
        first = await add_notification(runtime, user, title="before")
        assert (await stream.next_event()).data["id"] == str(first)
        await end(runtime, user, session_id)
        async with httpx.AsyncClient(base_url=api.base) as client:
            refused = await client.get("/api/v1/notifications", headers=headers)
        assert refused.status_code == 401
        # The stream sees it too and ends by itself: nothing more is delivered on it.
        rest = await asyncio.wait_for(_rest(stream), WAIT)
    assert ": signed out" in rest, rest
    assert not [line for line in rest if line.startswith(("event:", "data:"))], rest
    async with httpx.AsyncClient(base_url=api.base) as client:
        again = await client.get(EVENTS, headers=headers)
    assert again.status_code == 401


async def _rest(stream: Stream) -> list[str]:
    return [line async for line in stream.lines]


async def test_without_a_token_401(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.base) as client:
        response = await client.get(EVENTS)
    assert response.status_code == 401
    assert response.json()["error"] == "InvalidToken"


HEX = "0123456789abcdef" * 2


@pytest.mark.parametrize("last_event_id", [
    "nope",
    f"n100000000000000000000_{HEX}.r0_{HEX}",  # past the year 9999
    f"n0_{HEX}.r-100000000000000000000_{HEX}",
    f"n-62135596800000000_{HEX}.r0_{HEX}",  # the year 1: looking back from it overflows
    f"n-1_{HEX}.r0_{HEX}",
    f"n0_{HEX}.r0_{HEX}.sABCDEFG",  # the received rows' digests are 8 characters each
    f"n0_{HEX}.r0_{HEX}.ABCDEFGH",
    f"n0_{HEX}.r0_{HEX}.sABCDEFGH.sABCDEFGH",
    "x",
    "x-1",
    "x99999999999999999999",  # past what event_seq holds
    f"x1_{HEX}",
    f"x1_q{HEX}",
    f"x1_n{HEX}0",
    "x1.k5",  # a row the client has above the cursor: its event_seq, kind and id
    f"x1.kn{HEX}",
    f"x1.k5q{HEX}",
    f"x1.k99999999999999999999n{HEX}",
])
async def test_a_malformed_last_event_id_422(
    runtime: Runtime, api: Api, last_event_id: str
) -> None:
    _user, headers = await factories.user_with_token(runtime)
    async with httpx.AsyncClient(base_url=api.base) as client:
        response = await client.get(EVENTS, headers={**headers, "Last-Event-ID": last_event_id})
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidEventId"


async def test_an_open_stream_does_not_keep_the_api_from_stopping(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    _user, headers = await factories.user_with_token(runtime)
    port = free_port()
    env = pilotlight_env(
        data_dir=tmp_path / "data", database_url=database_url, PILOTLIGHT_PORT=str(port)
    )
    log = tmp_path / "api.log"
    process = start(command("api"), env, tmp_path, log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log)
        async with events(Api(f"http://127.0.0.1:{port}", env), headers) as stream:
            code = stop(process)
            # The server ended the stream as it stopped: reading it to its end returns.
            rest = [line async for line in stream.lines]
        assert all(line == "" or line.startswith(":") for line in rest), rest
    finally:
        code = stop(process)
    assert stopped_cleanly(code, log), f"api exited {code}:\n{log.read_text()}"
