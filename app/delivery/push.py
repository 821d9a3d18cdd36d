"""The web push channel (RFC 8030): an aes128gcm-encrypted payload, signed with VAPID.

pywebpush encrypts (RFC 8291) and py_vapid signs (RFC 8292); the request goes
out through the same SSRF-guarded, pinned transport as webhooks. 2xx is
success; 404 and 410 mean the browser unsubscribed, so the subscription is
dropped and the delivery fails quietly; 429 and 5xx are retried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from pywebpush import WebPusher

from app.channels.push import auth_of, check_endpoint
from app.core.config import Settings
from app.core.crypto import SecretKeyError, secret_box
from app.core.vapid import VapidKeyError, vapid_key
from app.delivery.base import SENT, Deadline, Job, Result, failed, parse_retry_after, retry
from app.delivery.ssrf import (
    PinnedClient,
    ResolveFailed,
    Resolver,
    UrlRefused,
    origin,
    system_resolve,
)
from app.notifications.models import Notification

MAX_ACTIONS = 4
# Push services must accept 4096 bytes of encrypted payload (RFC 8030 section 7.2) and
# may refuse more (413, which fails the delivery). pywebpush's aes128gcm (RFC 8188, one
# 4096-byte record) adds 103 bytes: a header of 86 (salt 16, record size 4, key id length
# 1, the 65-byte ephemeral public key) and 17 to the record (the padding delimiter, the
# 16-byte tag); so at most 3993 bytes of JSON. Some room is left.
MAX_PAYLOAD_BYTES = 3800
# More than a notification shows; in UTF-8 that may still be too long (CJK text takes 3
# bytes a character, emoji 4): `payload` shortens it further to fit.
MAX_BODY_CHARS = 1000
# An action is a button: a longer choice is cut. Its action, `choice:<index>`, still answers
# with all of it: the service worker sends the index, and the app answers with that choice.
MAX_ACTION_CHARS = 60
VAPID_LIFETIME_SECONDS = 12 * 3600
ELLIPSIS = "\u2026"


def payload(notification: Notification) -> bytes:
    """{title, body, url, actions}: a question's choices become notification actions.

    At most MAX_PAYLOAD_BYTES of UTF-8: when longer, the body is shortened, then the
    choices (each action's title; the action is the choice's index, which the service
    worker answers with, so it still answers with the whole choice), then the title, each
    cut marked with an ellipsis."""
    data = notification.data or {}
    url = "/"
    if data.get("question_id"):
        url = f"/questions/{data['question_id']}"
    elif notification.run_id is not None:
        url = f"/runs/{notification.run_id}"
    choices = [_cut(str(c), MAX_ACTION_CHARS) for c in data.get("choices") or []][:MAX_ACTIONS]

    def encode(title: str, text: str, labels: list[str]) -> bytes:
        body: dict[str, Any] = {
            "title": title,
            "body": text,
            "url": url,
            "actions": [{"action": f"choice:{i}", "title": label}
                        for i, label in enumerate(labels)],
            "notification_id": str(notification.id),
            "kind": notification.kind,
        }
        if data.get("question_id"):
            body["question_id"] = str(data["question_id"])
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    title, text = notification.title, notification.body[:MAX_BODY_CHARS]
    if len(encode(title, text, choices)) <= MAX_PAYLOAD_BYTES:
        return encode(title, text, choices)
    text = _longest(lambda n: encode(title, _cut(text, n), choices), len(text), text)
    if len(encode(title, text, choices)) > MAX_PAYLOAD_BYTES and choices:
        n = _fitting(lambda n: encode(title, text, [_cut(c, n) for c in choices]),
                     max(len(c) for c in choices))
        # Without a character of each choice left, the actions go (the url still opens
        # the question).
        choices = [_cut(c, n) for c in choices] if n > 0 else []
    if len(encode(title, text, choices)) > MAX_PAYLOAD_BYTES:
        title = _longest(lambda n: encode(_cut(title, n), text, choices), len(title), title)
    return encode(title, text, choices)


def _cut(text: str, n: int) -> str:
    """The first `n` characters, with an ellipsis when that is not all of it."""
    return text if n >= len(text) else text[:n].rstrip() + ELLIPSIS if n > 0 else ""


def _fitting(encode: Callable[[int], bytes], most: int) -> int:
    """The largest n in 0..most whose encoding fits (0 if none does): a binary search,
    the encoding growing with n."""
    low, high = 0, most
    while low < high:
        middle = (low + high + 1) // 2
        if len(encode(middle)) <= MAX_PAYLOAD_BYTES:
            low = middle
        else:
            high = middle - 1
    return low


def _longest(encode: Callable[[int], bytes], most: int, text: str) -> str:
    return _cut(text, _fitting(encode, most))


class PushChannel:
    def __init__(self, settings: Settings, *, resolve: Resolver = system_resolve) -> None:
        self.settings = settings
        self.resolve = resolve
        self.client = PinnedClient(resolve=resolve)

    async def send(self, job: Job, *, deadline: Deadline) -> Result:
        if not job.delivery.target:
            return failed("no browser is subscribed to push notifications: allow them in the "
                          "web app, or take push off the instruction's channels")
        subscription = job.push_subscription
        if subscription is None:
            return failed("the push subscription was removed", tell_user=False)
        endpoint = subscription.endpoint
        try:
            check_endpoint(endpoint, self.settings)
        except UrlRefused as exc:
            return failed(f"refused to call the push service {origin(endpoint)}: {exc}")
        try:
            vapid = vapid_key(self.settings)
        except VapidKeyError as exc:
            return failed(exc.detail)
        try:
            auth = auth_of(subscription, secret_box(self.settings))
        except SecretKeyError as exc:
            return failed(exc.detail)
        pusher = WebPusher({"endpoint": endpoint,
                            "keys": {"p256dh": subscription.p256dh, "auth": auth}})
        try:
            encoded = pusher.encode(payload(job.notification), "aes128gcm")
        except Exception as exc:  # a malformed browser key
            return failed(f"the push subscription's keys are not usable: {exc}")
        parts = urlsplit(endpoint)
        claims = {"aud": f"{parts.scheme}://{parts.netloc}",
                  "sub": self.settings.effective_vapid_subject,
                  "exp": int(time.time()) + VAPID_LIFETIME_SECONDS}
        headers = {
            **vapid.sign(claims),
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "ttl": str(self.settings.push_ttl_seconds),
            "urgency": "high" if job.notification.kind in ("question", "error") else "normal",
            "topic": job.delivery.idempotency_key.replace(":", "")[:32],
        }
        allow_private = self.settings.webhook_allow_private
        try:
            response = await self.client.post(endpoint, content=encoded["body"], headers=headers,
                                             allow_private=allow_private,
                                             timeout=deadline.step_timeout())
        except UrlRefused as exc:
            return failed(f"refused to call the push service {origin(endpoint)}: {exc}")
        except (ResolveFailed, httpx.TransportError) as exc:
            return retry(f"POST to the push service failed: {type(exc).__name__}: {exc}")
        return self._judge(response, origin(endpoint))

    @staticmethod
    def _judge(response: httpx.Response, shown: str) -> Result:
        # `shown` comes from the endpoint: the request's own URL names the pinned address.
        code = response.status_code
        if 200 <= code < 300:
            return SENT
        answer = f"the push service {shown} answered {code} {response.reason_phrase}".strip()
        if code in (404, 410):
            return failed(f"{answer}: the browser unsubscribed", tell_user=False,
                          remove_push_subscription=True)
        if code == 429 or code >= 500:
            return retry(answer, parse_retry_after(response.headers.get("retry-after")))
        return failed(answer)

    async def aclose(self) -> None:
        await self.client.aclose()
