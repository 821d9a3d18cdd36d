"""The delivery sender: sends what waits in the outbox, by channel, with retries.

One sender per worker process. Its loop claims due deliveries (a short lease each),
loads what they need in the same transaction, and hands them to sending tasks, at most
`delivery_concurrency` sending at once; it claims more as soon as there is room, while
other sends are still in flight, so a slow endpoint holds up only its own delivery.
It is woken when deliveries are written (in this process at once, on PostgreSQL by
NOTIFY from any process) and polls besides, for retries that come due.

No transaction is held while sending. Outcomes are written fenced by the claimed
attempt; "sent" marks are written together, a batch per transaction. A process that
dies after sending and before its mark is written leaves the row pending: when its
claim runs out it is sent again with the same idempotency key (`webhook-id`, the
email's Message-ID), and the receiver de-duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.channels import push as push_subscriptions
from app.channels import service as channels
from app.core.db import transaction
from app.core.faults import FaultPoints
from app.core.loops import FailureLog, LoopService
from app.core.pubsub import PgListener
from app.core.runtime import Runtime
from app.delivery import repository, wakeup
from app.delivery.base import ChannelSender, Claimed, Deadline, Job, Result, failed
from app.delivery.mail import EmailChannel
from app.delivery.push import PushChannel
from app.delivery.webhooks import WebhookChannel
from app.notifications import service as notifications
from app.runs.batching import HeldConnection

log = logging.getLogger(__name__)

# When claims follow each other closely, how long the next one waits for more deliveries.
CLAIM_GATHER_SECONDS = 0.02
# How long the first "sent" mark waits for others to be written in the same transaction.
MARK_GATHER_SECONDS = 0.02

# How much sooner than the send's own deadline a channel is asked to be done (at most a
# tenth of the timeout).
CHANNEL_MARGIN_SECONDS = 0.5

CHANNEL_NAMES = {"email": "email", "webhook": "webhook", "push": "push notification"}


def default_channels(runtime: Runtime) -> dict[str, ChannelSender]:
    return {"email": EmailChannel(runtime.settings, sessionmaker=runtime.sessionmaker),
            "webhook": WebhookChannel(runtime.settings),
            "push": PushChannel(runtime.settings)}


class DeliverySender(LoopService):
    name = "delivery-sender"

    def __init__(
        self, *, runtime: Runtime, channels: Mapping[str, ChannelSender] | None = None
    ) -> None:
        super().__init__(interval=runtime.settings.delivery_poll_seconds)
        self.runtime = runtime
        self.settings = runtime.settings
        self.channels = dict(channels) if channels is not None else default_channels(runtime)
        self.fault = FaultPoints(self.settings.test_fault)
        # Claimed deliveries held by this sender (waiting for a slot or sending) ...
        self.held: dict[uuid.UUID, asyncio.Task[None]] = {}
        # ... those of them not sending yet, and when each was claimed (monotonic).
        self._waiting: dict[uuid.UUID, Claimed] = {}
        self._claimed_at: dict[uuid.UUID, float] = {}
        self._room = asyncio.Semaphore(self.settings.delivery_concurrency)
        # At most this many held: `delivery_concurrency` sending and a batch waiting, so that
        # sends go on while the next claim is being made.
        self.capacity = self.settings.delivery_batch_size + self.settings.delivery_concurrency
        self._backlog = False  # the last claim was full: more may be due than there was room for
        self._to_mark: list[Claimed] = []
        self._marking: asyncio.Task[None] | None = None
        # On PostgreSQL the claims and the "sent" marks run on connections kept while `run`
        # runs, in autocommit mode (a claim and a mark are one atomic statement each): no
        # pool checkout, so no pre-ping (three round trips with asyncpg), BEGIN or COMMIT.
        # Two: a claim need not wait for a mark. SQLite uses a transaction each.
        self._held: HeldConnection | None = (
            HeldConnection(runtime.engine, count=2)
            if runtime.engine.dialect.name == "postgresql" else None
        )

    async def run_once(self) -> int:
        """Claim what there is room for, send it and write the outcomes; returns how many
        were claimed. (`run` does not wait like this: it claims while sends are in flight.)"""
        claims = await self._claim()
        await asyncio.gather(*(self.held[c.id] for c in claims if c.id in self.held),
                             return_exceptions=True)
        await self._flush_marks()
        return len(claims)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim whenever woken (deliveries written, room freed) or every poll interval,
        until stopped; then let the sends in flight finish and give back the rest."""
        log.info("%s started (concurrency %d, polling every %.2fs)", self.name,
                 self.settings.delivery_concurrency, self.interval)
        unsubscribe = wakeup.subscribe(self.wake)
        listening: asyncio.Task[None] | None = None
        if self.runtime.engine.dialect.name == "postgresql":
            listener = PgListener(self.runtime.engine.url, {wakeup.DELIVERY_CHANNEL: self.wake})
            listening = asyncio.create_task(listener.run(stop), name="delivery-listen")
        if self._held is not None:
            self._held.keep = True
        failures = FailureLog(f"{self.name}: claiming", log)
        try:
            last_claim = -1.0
            while not stop.is_set():
                if time.monotonic() - last_claim < CLAIM_GATHER_SECONDS * 5:
                    # Deliveries are coming in fast: let a few more arrive, and claim them
                    # together (a claim costs the same few round trips for one or fifty).
                    await asyncio.sleep(CLAIM_GATHER_SECONDS)
                self._wake.clear()
                last_claim = time.monotonic()
                try:
                    await self._claim()
                except Exception as exc:
                    failures.failed(exc)
                else:
                    failures.succeeded()
                    if self._backlog and self._room_for_more():
                        continue  # a full batch, and room for more: claim the next at once
                await self._sleep(stop)
        finally:
            unsubscribe()
            await self._stop_sending()
            if self._held is not None:
                await self._held.close()
            if listening is not None:
                await asyncio.gather(listening, return_exceptions=True)
            await self.on_stop()
            log.info("%s stopped", self.name)

    async def _sleep(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    async def _claim(self) -> list[Claimed]:
        """Claim due deliveries up to the room left, load their jobs, start their tasks."""
        room = min(self.capacity - len(self.held), self.settings.delivery_batch_size)
        if room <= 0:
            self._backlog = True
            return []
        if self._held is None:
            async with transaction(self.runtime.sessionmaker) as session:
                claims = await repository.claim(
                    session=session, channels=self.channels, limit=room,
                    lease_seconds=self.settings.delivery_claim_seconds,
                )
                jobs = await repository.load_many(session=session, claims=claims)
        else:
            claims = []
            try:
                async with self._held.use() as connection:
                    # The claim commits on its own; what the deliveries need is read after it.
                    claims = await repository.claim(
                        session=connection, channels=self.channels, limit=room,
                        lease_seconds=self.settings.delivery_claim_seconds,
                    )
                    jobs = {}
                    if claims:
                        async with AsyncSession(bind=connection, autoflush=False,
                                                expire_on_commit=False) as session:
                            jobs = await repository.load_many(session=session, claims=claims)
            except Exception:
                await self._give_back(claims, "reading the claimed deliveries failed")
                raise
        self._backlog = len(claims) == room
        now = time.monotonic()
        for claimed in claims:
            self._waiting[claimed.id] = claimed
            self._claimed_at[claimed.id] = now
            task = asyncio.create_task(self._deliver(claimed, jobs.get(claimed.id)),
                                       name=f"delivery-{claimed.id}")
            self.held[claimed.id] = task
            task.add_done_callback(functools.partial(self._done, claimed))
        return claims

    async def _give_back(
        self, claims: list[Claimed], why: str, *, level: int = logging.WARNING
    ) -> None:
        """Give back claims that were not sent (due again at once, the attempt not
        counted), rather than leave them until their claim runs out. If that fails too,
        the claim running out is the fallback."""
        if not claims:
            return
        try:
            async with transaction(self.runtime.sessionmaker) as session:
                released = await repository.release_many(session=session, claims=claims)
        except Exception:
            log.exception("could not give back %d claimed deliveries; due again when their "
                          "claim runs out", len(claims))
            return
        log.log(level, "%s: gave back %d of %d claimed deliveries not sent", why, released,
                len(claims))

    def _room_for_more(self) -> bool:
        """Room for half a batch: worth a claim (small claims would cost as much each)."""
        return self.capacity - len(self.held) >= max(self.settings.delivery_batch_size // 2, 1)

    def _done(self, claimed: Claimed, task: asyncio.Task[None]) -> None:
        self.held.pop(claimed.id, None)
        self._waiting.pop(claimed.id, None)
        self._claimed_at.pop(claimed.id, None)
        if not task.cancelled() and task.exception() is not None:
            # Left pending: it is tried again when the claim runs out.
            log.error("delivery %s crashed the sender", claimed.id, exc_info=task.exception())
        if self._backlog and self._room_for_more():
            self.wake()  # claim more while the rest is being sent

    async def _deliver(self, claimed: Claimed, job: Job | None) -> None:
        # A send must start while the claim still outlasts it: otherwise the claim could run
        # out mid-send and another sender send it again. A delivery that cannot have a slot
        # by then is given back unsent, its attempt not counted (a backlog must not use up
        # attempts), and at that moment, not once a slot is free: by then its claim may have
        # run out and been taken again (by this sender too), and the give-back, fenced by the
        # attempt, would fail and the attempt be lost.
        claimed_at = self._claimed_at.get(claimed.id, time.monotonic())
        start_by = claimed_at + (self.settings.delivery_claim_seconds
                                 - self.settings.delivery_timeout_seconds)
        if not await self._slot_by(start_by):
            held_for = time.monotonic() - claimed_at
            await self._give_back(
                [claimed], f"delivery {claimed.id} waited {held_for:.0f}s for a slot")
            return
        try:
            self._waiting.pop(claimed.id, None)
            result = await self._attempt(claimed, job)
        finally:
            self._room.release()
        if result is None:
            return
        if result.status == "sent":
            self.fault("delivery_sent")
            self._mark_sent(claimed)
            # The operator's trace of a delivery that went out (httpx's own request line,
            # with the URL's origin, is at DEBUG only): the delivery's id, never its URL.
            log.info("delivery %s (%s) sent, attempt %d", claimed.id, claimed.channel,
                     claimed.attempt)
            return
        if result.status == "retry" and claimed.attempt < self.settings.delivery_max_attempts:
            delay = self.retry_delay(claimed.attempt, result.retry_after)
            if result.cut_off:
                delay = max(delay, self._claim_left(claimed))
            log.info("delivery %s (%s) attempt %d: %s; retry in %.1fs", claimed.id,
                     claimed.channel, claimed.attempt, result.reason, delay)
            async with transaction(self.runtime.sessionmaker) as session:
                await repository.retry_later(session=session, claimed=claimed,
                                             delay_seconds=delay, reason=result.reason)
            return
        if result.status == "retry":
            result = failed(f"gave up after {claimed.attempt} attempts: {result.reason}")
        await self._failed(claimed, job, result)

    async def _slot_by(self, start_by: float) -> bool:
        """Take a sending slot if one is free by `start_by` (`time.monotonic()`)."""
        wait = start_by - time.monotonic()
        if wait <= 0:
            return False
        try:
            async with asyncio.timeout(wait):
                await self._room.acquire()
        except TimeoutError:
            return False
        return True

    async def _attempt(self, claimed: Claimed, job: Job | None) -> Result | None:
        """Send, in a slot; None when there is nothing to send (the delivery failed)."""
        if job is None:
            await self._failed(claimed, None, failed("the notification is gone",
                                                     tell_user=False))
            return None
        if job.question_status not in (None, "open"):
            # Retried after the user answered in the app (or it expired, or its run was
            # cancelled): it would ask what is no longer asked. Not a failure to tell of.
            await self._failed(claimed, job, failed(
                f"not sent: the question was {job.question_status} before it could be",
                tell_user=False))
            return None
        if claimed.attempt > self.settings.delivery_max_attempts:
            # Every earlier attempt died before writing its outcome.
            await self._failed(claimed, job, failed(
                f"gave up: {claimed.attempt - 1} attempts stopped before they finished"))
            return None
        # One deadline for the whole send. httpx's timeout bounds each connect, read and
        # write, not the request (an endpoint dripping its answer a byte at a time would
        # hold it for ever), DNS has none, and the email channel makes several calls: the
        # `late` check above and the settings' check (the claim outlasts the timeout) rely
        # on every send being over within `delivery_timeout_seconds`, or the claim could
        # run out mid-send and another sender send it again. The channel is given its
        # deadline a little before ours, to end with a result of its own.
        timeout = self.settings.delivery_timeout_seconds
        deadline = Deadline.within(timeout - min(CHANNEL_MARGIN_SECONDS, timeout / 10))
        cut = asyncio.timeout(timeout)
        try:
            async with cut:
                return await self.channels[claimed.channel].send(job, deadline=deadline)
        except TimeoutError:
            if not cut.expired():
                raise
        # Cancelling the await ends what runs on the event loop (the connection is closed);
        # work in a thread (the Google client's calls, a DNS lookup) goes on. The Google
        # client shuts its sockets at the deadline so that such a call sends nothing more,
        # and the retry is not due before this attempt's claim would have run out (see
        # `_deliver`), so no second attempt starts while anything of this one may still run.
        # The receiver de-duplicates what got through (`webhook-id`, the Message-ID, which
        # the Gmail path looks for before it sends again).
        return Result("retry", f"the send took longer than {timeout:g}s "
                      "(PILOTLIGHT_DELIVERY_TIMEOUT_SECONDS)", cut_off=True)

    def _claim_left(self, claimed: Claimed) -> float:
        """Seconds until the claim runs out (as this sender reckons it: from the claim)."""
        claimed_at = self._claimed_at.get(claimed.id, time.monotonic())
        return max(claimed_at + self.settings.delivery_claim_seconds - time.monotonic(), 0.0)

    def _mark_sent(self, claimed: Claimed) -> None:
        """Queue the mark; one task writes the queued marks, a batch per transaction."""
        self._to_mark.append(claimed)
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._write_marks(), name="delivery-marks")

    async def _write_marks(self) -> None:
        while self._to_mark:
            # Let the sends finishing about now join this transaction. A mark written a
            # little later changes nothing but the window in which a crash would have a
            # sent delivery sent again (with the same idempotency key).
            await asyncio.sleep(MARK_GATHER_SECONDS)
            batch, self._to_mark = self._to_mark, []
            try:
                marked = await self._mark_sent_many(batch)
            except Exception:
                log.exception("could not mark %d sent deliveries; they are sent again (same "
                              "idempotency keys) when their claims run out", len(batch))
                continue
            if marked < len(batch):
                log.warning("%d sent deliveries had lost their claims before they were marked",
                            len(batch) - marked)

    async def _mark_sent_many(self, batch: list[Claimed]) -> int:
        if self._held is not None:
            try:
                async with self._held.use() as connection:  # one statement, autocommit
                    return await repository.mark_sent_many(session=connection, claims=batch)
            except Exception:
                # A kept connection can have gone stale (the server restarted) where a pool
                # checkout would have been pinged first. The mark is fenced, so writing it
                # again is harmless; not writing it would send these again.
                log.warning("marking %d sent deliveries on the kept connection failed; "
                            "trying a new one", len(batch), exc_info=True)
        async with transaction(self.runtime.sessionmaker) as session:
            return await repository.mark_sent_many(session=session, claims=batch)

    async def _flush_marks(self) -> None:
        while self._marking is not None and not self._marking.done():
            await asyncio.shield(self._marking)

    async def _stop_sending(self) -> None:
        """Give back the claims not sending yet, let the sends in flight finish (each is
        cut off at the delivery timeout, see `_attempt`), and write their marks."""
        waiting = list(self._waiting.values())
        for claimed in waiting:
            task = self.held.get(claimed.id)
            if task is not None:
                task.cancel()
        await asyncio.gather(*self.held.values(), return_exceptions=True)
        await self._flush_marks()
        await self._give_back(waiting, "stopping", level=logging.INFO)

    def retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, at least Retry-After, at most the maximum."""
        ceiling = self.settings.delivery_retry_base_seconds * 2 ** max(attempt - 1, 0)
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.settings.delivery_retry_max_seconds)

    async def _failed(self, claimed: Claimed, job: Job | None, result: Result) -> None:
        """Fail the delivery and, unless the user caused it, tell them in the feed."""
        log.warning("delivery %s (%s) failed: %s", claimed.id, claimed.channel, result.reason)
        async with transaction(self.runtime.sessionmaker) as session:
            reason = result.reason
            kept_on = False
            if result.disable_webhook and job is not None and job.webhook is not None:
                turned_off = await channels.disable(
                    session=session, user_id=claimed.user_id, webhook_id=job.webhook.id,
                    url_encrypted=job.webhook.url_encrypted, reason=result.reason,
                )
                # Not turned off: another delivery's 410 did it and said so, or the user
                # moved it to another address meanwhile (the old one's end is no news).
                kept_on = not turned_off
                reason += ("; the webhook was not disabled: it had been moved or turned off "
                           "meanwhile" if kept_on else ", so the webhook was disabled")
            if not await repository.mark_failed(session=session, claimed=claimed,
                                                reason=reason):
                await session.rollback()  # another sender has it: nothing of this attempt
                return
            if kept_on:
                return
            if result.remove_push_subscription and job is not None \
                    and job.push_subscription is not None:
                await push_subscriptions.remove(session=session, user_id=claimed.user_id,
                                                subscription_id=job.push_subscription.id)
            if not result.tell_user or job is None:
                return
            what = CHANNEL_NAMES.get(claimed.channel, claimed.channel)
            # The reason names the webhook's host; its URL may carry a secret.
            where = f" (webhook {job.webhook.id})" if job.webhook is not None else ""
            body = f"“{job.notification.title}” was not delivered by {what}{where}: {reason}"
            if result.disable_webhook and job.webhook is not None:
                body += ("\n\nTurn the webhook on again once the endpoint works: Turn on, "
                         "under Webhooks in Settings, or PATCH /api/v1/webhooks/"
                         f"{job.webhook.id} with enabled true.")
            # No run_id: a failed delivery is not a failed run (nor a run.failed webhook event).
            await notifications.notify(
                session=session, user_id=claimed.user_id, key=f"delivery:{claimed.id}:failed",
                kind="error", title=f"Could not deliver by {what}", body=body, channels=[],
                data={"delivery_id": str(claimed.id), "channel": claimed.channel,
                      "notification_id": str(claimed.notification_id), "error": reason},
                instruction_id=job.notification.instruction_id,
            )

    async def on_stop(self) -> None:
        for sender in self.channels.values():
            await sender.aclose()
