"""Google's batch endpoints: multipart/mixed in, multipart/mixed out, one part per call."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from .errors import ApiError, Reply

MAX_PARTS = 100


@dataclass
class InnerRequest:
    content_id: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


def parse(content_type: str, body: bytes) -> list[InnerRequest]:
    """The calls inside a batch body; 400 when it is not a well-formed batch."""
    if not content_type.startswith("multipart/mixed") or "boundary=" not in content_type:
        raise ApiError(400, "badRequest", "Batch requests must be multipart/mixed with a boundary.")
    envelope = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(envelope)
    parts = message.get_payload()
    if not message.is_multipart() or not isinstance(parts, list) or not parts:
        raise ApiError(400, "badRequest", "The batch request has no parts.")
    if len(parts) > MAX_PARTS:
        raise ApiError(400, "badRequest",
                       f"A batch request may contain at most {MAX_PARTS} calls.")
    requests = []
    for part in parts:
        if not isinstance(part, email.message.Message):
            raise ApiError(400, "badRequest", "Malformed batch part.")
        if part.get_content_type() != "application/http":
            raise ApiError(400, "badRequest", "Each batch part must be application/http.")
        text = part.get_payload(decode=False)
        assert isinstance(text, str)
        request_line, _, rest = text.lstrip("\r\n").partition("\n")
        pieces = request_line.strip().split(" ")
        if len(pieces) < 2:
            raise ApiError(400, "badRequest", f"Malformed request line {request_line!r}.")
        inner = email.parser.Parser(policy=email.policy.compat32).parsestr(rest)
        target = pieces[1]
        if "://" in target:
            target = "/" + target.split("://", 1)[1].split("/", 1)[1]
        path, _, query = target.partition("?")
        payload = inner.get_payload()
        requests.append(InnerRequest(
            content_id=str(part.get("Content-ID", "")),
            method=pieces[0].upper(), path=path, query=query,
            headers={k.lower(): str(v) for k, v in inner.items()},
            body=payload.encode() if isinstance(payload, str) else b"",
        ))
    return requests


def render(answers: list[tuple[InnerRequest, Reply]]) -> Reply:
    boundary = f"batch_{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for request, reply in answers:
        content_id = request.content_id.strip()
        if content_id.startswith("<"):
            content_id = "<response-" + content_id[1:]
        reason = HTTPStatus(reply.status).phrase if reply.status in HTTPStatus._value2member_map_ \
            else "Unknown"
        head = [f"HTTP/1.1 {reply.status} {reason}"]
        if reply.content_type:
            head.append(f"Content-Type: {reply.content_type}")
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        head.append(f"Content-Length: {len(reply.body)}")
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: {content_id}\r\n\r\n"
            .encode() + "\r\n".join(head).encode() + b"\r\n\r\n" + reply.body + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return Reply(200, b"".join(chunks), f"multipart/mixed; boundary={boundary}")


Dispatch = Callable[[InnerRequest], Reply]
