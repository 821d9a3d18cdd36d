"""The webhook channel: a signed POST per Standard Webhooks (https://www.standardwebhooks.com).

`webhook-id` is the delivery's idempotency key, the same on every retry, so a
receiver de-duplicates on it; the signature covers id, timestamp and body. For a day
after a new secret, a second signature with the secret before it follows the first.
Only 2xx is success; 410 disables the endpoint; 429 and 5xx are retried
(honouring Retry-After); any other answer, a redirect included, fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from app.channels import service as channels
from app.core.config import Settings
from app.core.crypto import SecretKeyError, secret_box
from app.core.db import utcnow
from app.delivery.base import SENT, Deadline, Job, Result, failed, parse_retry_after, retry
from app.delivery.ssrf import (
    PinnedClient,
    ResolveFailed,
    Resolver,
    UrlRefused,
    check_url,
    origin,
    system_resolve,
)
from app.notifications.models import Notification

USER_AGENT = "Pilotlight-Webhooks/1"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,` + base64(HMAC-SHA256(key, id.timestamp.body))."""
    key = channels.signing_key(secret)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# Bookkeeping of ours in a notification's data, not part of the event: the model's call
# that sent an alert and which claim of the run made it (app/runs/steps.py).
_INTERNAL_DATA = frozenset({"call_id", "claim"})


def payload(notification: Notification, event_type: str) -> bytes:
    body: dict[str, Any] = {
        "type": event_type,
        "timestamp": notification.created_at.isoformat(),
        "data": {
            **{k: v for k, v in notification.data.items() if k not in _INTERNAL_DATA},
            "notification_id": str(notification.id),
            "kind": notification.kind,
            "title": notification.title,
            "body": notification.body,
            "run_id": str(notification.run_id) if notification.run_id else None,
            "instruction_id": (
                str(notification.instruction_id) if notification.instruction_id else None
            ),
            "created_at": notification.created_at.isoformat(),
        },
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookChannel:
    def __init__(self, settings: Settings, *, resolve: Resolver = system_resolve) -> None:
        self.settings = settings
        self.resolve = resolve
        self.client = PinnedClient(resolve=resolve)

    async def send(self, job: Job, *, deadline: Deadline) -> Result:
        webhook = job.webhook
        if not job.delivery.target:
            return failed(
                "you had no webhook when this was written: add one with POST "
                "/api/v1/webhooks, or take webhook off the instruction's channels"
            )
        if webhook is None:
            return failed("the webhook was deleted", tell_user=False)
        if not webhook.enabled:
            return failed("the webhook is disabled", tell_user=False)
        event_type = channels.event_type(job.notification.kind, job.notification.run_id)
        if event_type is None:
            return failed(f"no webhook event for a '{job.notification.kind}' notification")
        box = secret_box(self.settings)
        try:
            # After a rotation, for a while, the secret before it signs too (space-separated
            # signatures, as Standard Webhooks allows): the receiver may still hold it.
            keys = [channels.secret_of(webhook, box),
                    channels.previous_secret_of(webhook, box, utcnow())]
            url = channels.url_of(webhook, box)
        except SecretKeyError as exc:
            return failed(exc.detail)
        body = payload(job.notification, event_type)
        msg_id = job.delivery.idempotency_key
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(
                sign(key, msg_id, timestamp, body) for key in keys if key is not None),
        }
        allow_private = self.settings.webhook_allow_private
        # Named by its origin only: the rest of the URL may be the webhook's credential.
        shown = origin(url)
        try:
            check_url(url, allow_private=allow_private)
        except UrlRefused as exc:
            return failed(f"refused to call {shown}: {exc}")
        try:
            response = await self.client.post(url, content=body, headers=headers,
                                             allow_private=allow_private,
                                             timeout=deadline.step_timeout())
        except UrlRefused as exc:
            return failed(f"refused to call {shown}: {exc}")
        except (ResolveFailed, httpx.TransportError) as exc:
            return retry(f"POST {shown} failed: {_why(exc)}")
        return self._judge(response, shown)

    @staticmethod
    def _judge(response: httpx.Response, shown: str) -> Result:
        code = response.status_code
        if 200 <= code < 300:
            return SENT
        answer = f"{shown} answered {code} {response.reason_phrase}".strip()
        if code == 410:
            # The sender says whether that turned the webhook off (it may have moved).
            return failed(f"{answer}: the endpoint is gone", disable_webhook=True)
        if code == 429 or code >= 500:
            return retry(answer, parse_retry_after(response.headers.get("retry-after")))
        if 300 <= code < 400:
            return failed(f"{answer}: redirects are not followed; register the final URL")
        return failed(answer)

    async def aclose(self) -> None:
        await self.client.aclose()


def _why(exc: Exception) -> str:
    """What went wrong, in words: httpx's timeouts say nothing of themselves."""
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    said = str(exc).strip()
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__
