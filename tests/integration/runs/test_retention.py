"""PILOTLIGHT_RETENTION_DAYS: what old runs read, and old notifications, are deleted."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import update

from app import cli
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.notifications import service as notifications_service
from app.notifications.models import Delivery, Notification
from app.runs.models import Run
from app.runs.retention import RetentionPurger
from tests import factories
from tests.integration.runs.helpers import (
    deliveries_of,
    get_run,
    make_worker,
    notifications_of,
    steps_of,
    work_once,
)
from tests.integration.runs.test_worker import run_now
from tests.integration.web.helpers import question_for, sign_in

API = "/api/v1"


async def test_old_runs_lose_what_they_read_and_old_notifications_go(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """Each run's steps kept what its tools returned, mail and document excerpts, and its
    digest said it again, for ever: a copy of the user's mail for a leaked database or
    backup to give away, years after anyone looked at it."""
    user, headers = await factories.user_with_token(runtime)
    old = await factories.instruction(runtime, user, channels=["in_app", "email"])
    recent = await factories.instruction(runtime, user, title="Recent")
    worker = make_worker(runtime)
    first = await run_now(runtime, old)
    assert await work_once(worker) == 1
    kept = await run_now(runtime, recent)
    assert await work_once(worker) == 1
    waiting, question = await question_for(runtime, user, old.id)
    async with transaction(runtime.sessionmaker) as session:  # as the worker tells it
        await notifications_service.notify(
            session=session, user_id=user.id, key=f"run:{waiting}:question:1", kind="question",
            title="Which project?", body="", channels=[], run_id=waiting,
            instruction_id=old.id, data={"question_id": str(question)},
        )
    (digest,) = [n for n in await notifications_of(runtime, user.id) if n.run_id == first]
    assert await steps_of(runtime, first)
    long_ago = utcnow() - timedelta(days=400)
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Run).where(Run.id.in_([first, waiting])).values(
            created_at=long_ago, finished_at=long_ago))
        await session.execute(update(Notification).where(Notification.user_id == user.id)
                              .where(Notification.run_id.in_([first, waiting]))
                              .values(created_at=long_ago))

    purger = RetentionPurger(sessionmaker=runtime.sessionmaker, days=365)
    # The digest's email is still to be sent: its notification stays until it is.
    assert {d.channel: d.status for d in await deliveries_of(runtime, digest.id)} == {
        "email": "pending", "in_app": "sent"}
    assert await purger.run_once() == (1, 0)
    run = await get_run(runtime, first)
    assert (run.status, run.result) == ("succeeded", None)
    assert run.input_tokens > 0  # its totals stay, for /usage
    assert await steps_of(runtime, first) == []
    assert await steps_of(runtime, kept)
    assert (await get_run(runtime, kept)).result is not None

    async with transaction(runtime.sessionmaker) as session:
        await session.execute(update(Delivery).where(Delivery.notification_id == digest.id)
                              .values(status="sent"))
    assert await purger.run_once() == (0, 1)
    left = await notifications_of(runtime, user.id)
    assert digest.id not in {n.id for n in left}
    # The question of a run still waiting for its answer stays, however old.
    assert [(n.kind, n.run_id) for n in left if n.run_id != kept] == [("question", waiting)]
    assert (await get_run(runtime, waiting)).status == "waiting_for_user"
    assert await purger.run_once() == (0, 0)

    shown = await client.get(f"{API}/runs/{first}", headers=headers)
    assert shown.status_code == 200
    assert (shown.json()["status"], shown.json()["steps"]) == ("succeeded", [])
    await sign_in(runtime, client, user)
    page = await client.get(f"/runs/{first}")
    assert page.status_code == 200
    assert "deleted 365 days after it finished" in page.text
    assert "none called" not in page.text


async def test_the_scheduler_role_purges_unless_everything_is_kept(runtime: Runtime) -> None:
    settings = runtime.settings
    purgers = [loop for loop in cli._loops(runtime, scheduler=True, worker=False)
               if isinstance(loop, RetentionPurger)]
    assert [p.days for p in purgers] == [settings.retention_days] == [365]
    settings.retention_days = 0
    assert not [loop for loop in cli._loops(runtime, scheduler=True, worker=False)
                if isinstance(loop, RetentionPurger)]
