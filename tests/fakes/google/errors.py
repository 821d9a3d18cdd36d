"""Google's error shapes, and the reply type every handler returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json; charset=UTF-8"

# HTTP status -> the canonical `status` string Google puts in the error body.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


@dataclass
class Reply:
    """One HTTP answer: status, body bytes, content type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(payload, indent=2).encode(), JSON_TYPE, dict(headers or {}))

    @classmethod
    def empty(cls, status: int = 204) -> Reply:
        return cls(status, b"", "")


class ApiError(Exception):
    """An API error in Google's JSON shape: {"error": {code, message, errors, status}}."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str | None = None,
        headers: dict[str, str] | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.domain, self.location, self.location_type = domain, location, location_type
        self.headers = dict(headers or {})
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")

    def reply(self) -> Reply:
        detail: dict[str, Any] = {
            "message": self.message, "domain": self.domain, "reason": self.reason
        }
        if self.location is not None:
            detail["location"] = self.location
            detail["locationType"] = self.location_type or "parameter"
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [detail],
                "status": self.status,
            }
        }
        return Reply.json(body, self.code, self.headers)


def invalid_argument(message: str, location: str | None = None) -> ApiError:
    return ApiError(400, "invalidArgument", message, location=location)


def mail_service_not_enabled() -> ApiError:
    """Gmail's answer to any call for an account that has no Gmail (a Google account made
    with another address, or a Workspace user whose Gmail is off), as callers quote it
    (levz0r/gmail-tester#57, FlowCrypt/flowcrypt-browser#435 and #4838,
    WPManageNinja/fluent-smtp#152)."""
    return ApiError(400, "failedPrecondition", "Mail service not enabled",
                    status="FAILED_PRECONDITION")


def precondition_check_failed() -> ApiError:
    """Gmail's passing 400 failedPrecondition, which the same call gets past a moment later
    (quoted in googleapis/google-api-php-client#2558 and googleapis/google-api-java-client
    #1648; googleapis/google-api-python-client#2723 asks for it to be retried): the same
    reason as `mail_service_not_enabled`, another message."""
    return ApiError(400, "failedPrecondition", "Precondition check failed.",
                    status="FAILED_PRECONDITION")


def not_found(message: str = "Requested entity was not found.") -> ApiError:
    return ApiError(404, "notFound", message)


def unauthenticated(missing: bool) -> ApiError:
    if missing:
        return ApiError(
            401, "required",
            "Request is missing required authentication credential. Expected OAuth 2 access "
            "token, login cookie or other valid authentication credential.",
            location="Authorization", location_type="header",
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        )
    return ApiError(
        401, "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
        location="Authorization", location_type="header",
        headers={
            "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
        },
    )


def insufficient_scopes() -> ApiError:
    return ApiError(
        403, "insufficientPermissions", "Request had insufficient authentication scopes.",
        headers={
            "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
            'error="insufficient_scope"'
        },
    )


def injected(status: int, retry_after: float | None) -> ApiError:
    """The error a `fail_next` fault answers with."""
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    if status == 429:
        return ApiError(429, "rateLimitExceeded", "User-rate limit exceeded.",
                        domain="usageLimits", headers=headers)
    if status == 403:
        return ApiError(403, "userRateLimitExceeded", "User Rate Limit Exceeded",
                        domain="usageLimits", headers=headers)
    if status == 401:
        error = unauthenticated(missing=False)
        error.headers.update(headers or {})
        return error
    if status == 503:
        return ApiError(503, "backendError", "The service is currently unavailable.",
                        headers=headers)
    if status >= 500:
        return ApiError(status, "backendError", "Internal error encountered.", headers=headers)
    if status == 404:
        return not_found()
    return ApiError(status, "invalidArgument", "Fake failure.", headers=headers)
