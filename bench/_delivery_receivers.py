"""Helpers for bench/delivery.py: the local receivers and the direct-send baseline.

Both run in child processes of their own (spawned, as in bench/engine.py) and talk to
the script over a pipe. Everything listens on and connects to 127.0.0.1 only.

- `receivers_child`: a raw asyncio HTTP/1.1 server that answers every POST with 204 and
  records (webhook-id, arrival time), and an aiosmtpd SMTP server on the same event loop
  that records (Message-ID, arrival time). Arrival times are `time.time()` (wall clock),
  comparable with the notifications' `created_at` written by another process on this
  machine.
- `direct_child`: the baseline of the throughput figure: the same sends without the
  outbox (kept-alive HTTP and SMTP connections), from a plain list in memory, with the
  same concurrency.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
import uuid
from typing import Any

from _common import child, install_stop

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


# --- receivers -------------------------------------------------------------------------------


class _Arrivals:
    def __init__(self) -> None:
        self.webhooks: list[tuple[str, float]] = []
        self.mails: list[tuple[str, float]] = []

    def take(self) -> dict[str, list[tuple[str, float]]]:
        taken = {"webhooks": self.webhooks, "mails": self.mails}
        self.webhooks, self.mails = [], []
        return taken


async def _serve_http(arrivals: _Arrivals, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 with keep-alive: read a request (Content-Length body), answer 204."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            arrivals.webhooks.append((headers.get("webhook-id", ""), time.time()))
            close = headers.get("connection", "").lower() == "close"
            writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n"
                         + (b"connection: close\r\n" if close else b"") + b"\r\n")
            await writer.drain()
            if close:
                return
    finally:
        writer.close()


class _MailHandler:
    def __init__(self, arrivals: _Arrivals) -> None:
        self.arrivals = arrivals

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        found = _MESSAGE_ID.search(envelope.content)
        self.arrivals.mails.append((found.group(1).decode() if found else "", time.time()))
        return "250 Message accepted for delivery"


@child
async def receivers_child(pipe: Any, p: dict[str, Any]) -> None:
    """Both receivers until SIGTERM; on {"cmd": "take"} sends (and forgets) the arrivals."""
    from aiosmtpd.smtp import SMTP

    stop = asyncio.Event()
    install_stop(stop)
    loop = asyncio.get_running_loop()
    arrivals = _Arrivals()
    http = await asyncio.start_server(functools.partial(_serve_http, arrivals), "127.0.0.1", 0,
                                      backlog=1024)
    handler = _MailHandler(arrivals)
    smtp = await loop.create_server(
        lambda: SMTP(handler, hostname="bench.localhost", loop=loop), "127.0.0.1", 0,
        backlog=1024)
    pipe.send({"http_port": http.sockets[0].getsockname()[1],
               "smtp_port": smtp.sockets[0].getsockname()[1]})
    while not stop.is_set():
        if pipe.poll():
            message = pipe.recv()
            if message.get("cmd") == "take":
                pipe.send(arrivals.take())
        await asyncio.sleep(0.02)
    http.close()
    smtp.close()


# --- the direct baseline ----------------------------------------------------------------------


@child
async def direct_child(pipe: Any, p: dict[str, Any]) -> None:
    """The same sends without the outbox, the way a direct sender would make them: for each
    key a signed webhook POST through one shared `httpx.AsyncClient` (kept-alive
    connections), and an email rendered by our `build_message` and sent over one of
    `concurrency` kept `aiosmtplib.SMTP` connections; `concurrency` sends at a time, from
    a list in memory."""
    import aiosmtplib
    import httpx

    from app.channels.service import new_secret
    from app.core.db import utcnow
    from app.delivery.render import build_message
    from app.delivery.webhooks import USER_AGENT, sign
    from app.notifications.models import Notification

    secret = new_secret()
    url = f"http://127.0.0.1:{p['http_port']}/hook"
    room = asyncio.Semaphore(p["concurrency"])
    failures: list[str] = []
    client = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=15)
    connections: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for _ in range(p["concurrency"]):
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=p["smtp_port"], use_tls=False,
                               start_tls=False, timeout=15)
        await smtp.connect()
        connections.put_nowait(smtp)

    def notification(key: str) -> Notification:
        return Notification(id=uuid.UUID(key.split(":")[0]), user_id=uuid.uuid4(), key=key,
                            kind="digest", title="Morning digest", body=p["body"], data={},
                            created_at=utcnow())

    async def post(key: str) -> None:
        async with room:
            n = notification(key)
            body = json.dumps({"type": "digest.created", "timestamp": n.created_at.isoformat(),
                               "data": {"notification_id": str(n.id), "title": n.title,
                                        "body": n.body}}, separators=(",", ":")).encode()
            stamp = int(time.time())
            headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                       "webhook-id": key, "webhook-timestamp": str(stamp),
                       "webhook-signature": sign(secret, key, stamp, body)}
            response = await client.post(url, content=body, headers=headers)
            if not 200 <= response.status_code < 300:
                failures.append(f"POST {response.status_code}")

    async def mail(key: str) -> None:
        async with room:
            message = build_message(notification(key), to="bench@example.com",
                                    from_address=p["smtp_from"], idempotency_key=key)
            smtp = await connections.get()
            try:
                await smtp.send_message(message, recipients=["bench@example.com"])
            except aiosmtplib.SMTPException as exc:
                failures.append(f"SMTP {exc}")
            finally:
                connections.put_nowait(smtp)

    pipe.send({"ready": True})
    started, cpu = time.perf_counter(), time.process_time()
    jobs = []
    for key in p["keys"]:
        jobs.append(mail(f"{key}:email"))
        jobs.append(post(f"{key}:webhook"))
    await asyncio.gather(*jobs)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await client.aclose()
    while not connections.empty():
        await connections.get_nowait().quit()
    pipe.send({"elapsed": elapsed, "cpu": cpu, "failures": failures[:5],
               "failed": len(failures)})
