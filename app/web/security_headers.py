"""Security headers on every response of the app: the dashboard's pages, the API, the
OAuth callbacks, the API docs when they are on, errors.

Pure ASGI (headers are added to `http.response.start` and the body passes through as
it comes), so the event stream is not buffered. A header a response already set is
kept: a page with its own Content-Security-Policy (the API docs) keeps it.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Our own scripts and styles only: nothing inline, nothing remote (mail and model text
# can't bring a script or an image in even if escaping failed). It restricts documents
# only: on a JSON answer or the event stream it changes nothing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; worker-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)

HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
)


class SecurityHeaders:
    """ASGI middleware: `HEADERS` on every HTTP response, and `Cache-Control: no-store`
    on HTML (a page shows one user's data) unless it says otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS:
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)
