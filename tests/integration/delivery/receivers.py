"""Real receivers on 127.0.0.1: a webhook endpoint that checks signatures, and an SMTP server.

The webhook receiver verifies every request with the `standardwebhooks`
package (an implementation independent of ours) and de-duplicates on
`webhook-id`, as a receiver should.
"""

from __future__ import annotations

import asyncio
import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError
from standardwebhooks.webhooks import Webhook as StandardWebhook

from tests.integration.processes import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str
    verified: bool
    error: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers each request with the next scripted (status, headers), then 200."""

    secret: str = ""
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    processed: int = 0  # requests acted on once each (duplicates by webhook-id are not)
    port: int = 0
    # Cleared: requests are received but not answered until it is set again (a slow endpoint).
    go: threading.Event = field(default_factory=threading.Event)
    # A larger body is refused with 413, as push services refuse more than 4096 bytes.
    max_body: int | None = None

    def __post_init__(self) -> None:
        self.go.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, *statuses: int | tuple[int, dict[str, str]]) -> None:
        for status in statuses:
            self.script.append(status if isinstance(status, tuple) else (status, {}))

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        try:
            StandardWebhook(self.secret).verify(body, headers)
            verified, error = True, ""
        except (WebhookVerificationError, EmptyWebhookSecretError, ValueError) as exc:
            verified, error = False, str(exc)
        self.received.append(Received(headers, body, path, verified, error))
        if self.max_body is not None and len(body) > self.max_body:
            return 413, {}
        self.go.wait(30)
        status, extra = self.script.pop(0) if self.script else (200, {})
        if 200 <= status < 300 and verified and headers.get("webhook-id") not in self.seen_ids:
            self.seen_ids.add(headers["webhook-id"])
            self.processed += 1
        return status, extra


def start_webhook_receiver(
    *, keep_alive: bool = False
) -> tuple[WebhookReceiver, ThreadingHTTPServer]:
    """The receiver on a free port; with `keep_alive`, HTTP/1.1 connections stay open."""
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra = receiver.handle(self.path, headers, body)
            self.send_response(status)
            for name, value in {**extra, "content-length": "0"}.items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return receiver, server


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A receiver on a free port for the block's length."""
    receiver, server = start_webhook_receiver()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    peer: Any = None  # the client's (address, port): the same for one connection


class MailHandler:
    """aiosmtpd handler: keeps every message; answers DATA with the scripted replies first."""

    def __init__(self) -> None:
        self.messages: list[Mail] = []
        self.replies: list[str] = []
        # Seconds the answer to DATA takes, the message kept already (a slow server).
        self.delay = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message,
                                  session.peer))
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.replies.pop(0) if self.replies else "250 Message accepted for delivery"


def start_smtp_server() -> tuple[MailHandler, Controller]:
    handler = MailHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    return handler, controller


@dataclass
class DripServer:
    """An HTTP endpoint on a raw socket that answers its first `slow` requests with a 200
    whose body of `length` bytes comes one byte every `interval` seconds: every read is
    quick, the whole answer is not. Later requests are answered at once."""

    length: int
    interval: float
    slow: int = 1
    requests: list[dict[str, str]] = field(default_factory=list)  # each POST's headers
    port: int = 0
    closing: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def serve(self, sock: Any) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {name.strip().lower(): value.strip()
                       for name, _, value in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            buffer = buffer[length:]
            self.requests.append(headers)
            if len(self.requests) > self.slow:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                continue
            sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {self.length}\r\n\r\n".encode())
            for _ in range(self.length):
                if self.closing.wait(self.interval):
                    return
                sock.sendall(b"x")


def start_drip_server(
    *, length: int, interval: float, slow: int = 1
) -> tuple[DripServer, socketserver.ThreadingTCPServer]:
    drip = DripServer(length=length, interval=interval, slow=slow)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(60)
            try:
                drip.serve(self.request)
            except OSError:
                return  # the client hung up

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    drip.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return drip, server
