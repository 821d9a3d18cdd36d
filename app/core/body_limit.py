"""A bound on request bodies, before anything reads them.

Nothing the API takes is large (the biggest body is an instruction's text), but a body
is read whole before its route even checks who sent it: without a bound, anyone could
make a process hold hundreds of megabytes. A declared Content-Length over the bound is
refused with 413 at once; a body sent in chunks is counted as it is read and refused
once it passes the bound.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import ErrorBody


class BodyLimit:
    """ASGI middleware: request bodies of at most `max_bytes`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            length = int(declared) if declared.isdigit() else None
            if length is None or length > self.max_bytes:
                status, error, detail = (
                    (400, "BadRequest", "the Content-Length header is not a number")
                    if length is None else (413, "PayloadTooLarge", self._too_large()))
                body = ErrorBody(error=error, detail=detail).model_dump(exclude_none=True)
                response = JSONResponse(body, status, headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside whatever reads the body: the error handlers make it
                    # the same 413 body as above.
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counted, send)
