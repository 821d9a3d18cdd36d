"""What a channel sender is given (a job) and what it answers (a result)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from app.channels.models import PushSubscription, Webhook
from app.core.db import utcnow
from app.notifications.models import Notification
from app.users.models import User


@dataclass(frozen=True)
class Claimed:
    """A delivery this sender holds; `attempt` (its attempts count) fences every write."""

    id: uuid.UUID
    user_id: uuid.UUID
    notification_id: uuid.UUID
    channel: str
    target: str
    idempotency_key: str
    attempt: int


@dataclass(frozen=True)
class Job:
    delivery: Claimed
    notification: Notification
    user: User
    webhook: Webhook | None = None
    push_subscription: PushSubscription | None = None
    # A question's notification: the question's status when the delivery was claimed.
    question_status: str | None = None


@dataclass(frozen=True)
class Result:
    status: Literal["sent", "retry", "failed"]
    reason: str = ""
    # Seconds the receiver asked us to wait (Retry-After), honoured up to a maximum.
    retry_after: float | None = None
    # False when the user caused it and knows (they deleted or disabled the webhook).
    tell_user: bool = True
    # The endpoint answered 410 Gone: stop calling it.
    disable_webhook: bool = False
    # The push service answered 404 or 410: the browser unsubscribed, so drop it.
    remove_push_subscription: bool = False
    # The send was cut off by its deadline: it may have got through (and work in a thread
    # may still be ending), so it is not tried again before its claim would have run out.
    cut_off: bool = False


SENT = Result("sent")


def retry(reason: str, retry_after: float | None = None) -> Result:
    return Result("retry", reason, retry_after=retry_after)


def failed(
    reason: str, *, tell_user: bool = True, disable_webhook: bool = False,
    remove_push_subscription: bool = False,
) -> Result:
    return Result("failed", reason, tell_user=tell_user, disable_webhook=disable_webhook,
                  remove_push_subscription=remove_push_subscription)


@dataclass(frozen=True)
class Deadline:
    """When a send must be over (`time.monotonic()`): the one budget that every call of
    the send (DNS, connect, each read, each API call, SMTP) shares."""

    at: float

    @classmethod
    def within(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(self.at - time.monotonic(), 0.0)

    def step_timeout(self) -> float:
        """A timeout for each step of a request (httpx's connect, read, write: not the
        whole request, which the sender's cut-off bounds): what is left, never zero."""
        return max(self.remaining(), 0.01)


class ChannelSender(Protocol):
    async def send(self, job: Job, *, deadline: Deadline) -> Result: ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - utcnow()).total_seconds(), 0.0)
