"""The delivery sender: sends what waits in the outbox, by channel, with retries.

One loop per worker process. Each iteration claims a batch of due deliveries
in one transaction, sends them (no transaction is held while sending), and
writes each outcome in its own transaction, fenced by the claimed attempt.
A process that dies after sending and before writing leaves the row pending:
when its claim runs out it is sent again with the same idempotency key
(`webhook-id`, the email's Message-ID), and the receiver de-duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping

from app.channels import push as push_subscriptions
from app.channels import service as channels
from app.core.db import transaction
from app.core.faults import FaultPoints
from app.core.loops import LoopService
from app.core.runtime import Runtime
from app.delivery import repository
from app.delivery.base import ChannelSender, Claimed, Job, Result, failed
from app.delivery.mail import EmailChannel
from app.delivery.push import PushChannel
from app.delivery.webhooks import WebhookChannel
from app.notifications import service as notifications

log = logging.getLogger(__name__)

CHANNEL_NAMES = {"email": "email", "webhook": "webhook", "push": "push notification"}


def default_channels(runtime: Runtime) -> dict[str, ChannelSender]:
    return {"email": EmailChannel(runtime.settings), "webhook": WebhookChannel(runtime.settings),
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
        self._room = asyncio.Semaphore(self.settings.delivery_concurrency)
        self.fault = FaultPoints(self.settings.test_fault)

    async def run_once(self) -> int:
        """Claim a batch of due deliveries and send them; returns how many were claimed."""
        async with transaction(self.runtime.sessionmaker) as session:
            claims = await repository.claim(
                session=session, channels=self.channels, limit=self.settings.delivery_batch_size,
                lease_seconds=self.settings.delivery_claim_seconds,
            )
        results = await asyncio.gather(*(self._deliver(c) for c in claims),
                                       return_exceptions=True)
        for claimed, outcome in zip(claims, results, strict=True):
            if isinstance(outcome, BaseException):
                # Left pending: it is tried again when the claim runs out.
                log.error("delivery %s crashed the sender", claimed.id, exc_info=outcome)
        if len(claims) == self.settings.delivery_batch_size:
            self.wake()  # there may be more
        return len(claims)

    async def _deliver(self, claimed: Claimed) -> None:
        async with self._room:
            async with transaction(self.runtime.sessionmaker) as session:
                job = await repository.load(session=session, claimed=claimed)
            if job is None:
                await self._failed(claimed, None, failed("the notification is gone",
                                                         tell_user=False))
                return
            if claimed.attempt > self.settings.delivery_max_attempts:
                # Every earlier attempt died before writing its outcome.
                await self._failed(claimed, job, failed(
                    f"gave up: {claimed.attempt - 1} attempts stopped before they finished"))
                return
            result = await self.channels[claimed.channel].send(job)
        if result.status == "sent":
            self.fault("delivery_sent")
            async with transaction(self.runtime.sessionmaker) as session:
                if not await repository.mark_sent(session=session, claimed=claimed):
                    log.warning("delivery %s: claim lost before it was marked sent", claimed.id)
            return
        if result.status == "retry" and claimed.attempt < self.settings.delivery_max_attempts:
            delay = self.retry_delay(claimed.attempt, result.retry_after)
            log.info("delivery %s (%s) attempt %d: %s; retry in %.1fs", claimed.id,
                     claimed.channel, claimed.attempt, result.reason, delay)
            async with transaction(self.runtime.sessionmaker) as session:
                await repository.retry_later(session=session, claimed=claimed,
                                             delay_seconds=delay, reason=result.reason)
            return
        if result.status == "retry":
            result = failed(f"gave up after {claimed.attempt} attempts: {result.reason}")
        await self._failed(claimed, job, result)

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
            if not await repository.mark_failed(session=session, claimed=claimed,
                                                reason=result.reason):
                return
            if result.disable_webhook and job is not None and job.webhook is not None:
                await channels.disable(session=session, user_id=claimed.user_id,
                                       webhook_id=job.webhook.id, reason=result.reason)
            if result.remove_push_subscription and job is not None \
                    and job.push_subscription is not None:
                await push_subscriptions.remove(session=session, user_id=claimed.user_id,
                                                subscription_id=job.push_subscription.id)
            if not result.tell_user or job is None:
                return
            what = CHANNEL_NAMES.get(claimed.channel, claimed.channel)
            where = f" to {job.webhook.url}" if job.webhook is not None else ""
            body = f"“{job.notification.title}” was not delivered by {what}{where}: {result.reason}"
            if result.disable_webhook and job.webhook is not None:
                body += (f"\n\nTurn the webhook on again (PATCH /api/v1/webhooks/"
                         f"{job.webhook.id} with enabled true) once the endpoint works.")
            # No run_id: a failed delivery is not a failed run (nor a run.failed webhook event).
            await notifications.notify(
                session=session, user_id=claimed.user_id, key=f"delivery:{claimed.id}:failed",
                kind="error", title=f"Could not deliver by {what}", body=body, channels=[],
                data={"delivery_id": str(claimed.id), "channel": claimed.channel,
                      "notification_id": str(claimed.notification_id), "error": result.reason},
                instruction_id=job.notification.instruction_id,
            )

    async def on_stop(self) -> None:
        for sender in self.channels.values():
            await sender.aclose()
