"""Domain errors and the one body shape every error response has.

Services raise subclasses of `DomainError`; one handler turns each into
`{"error": "<ClassName>", "detail": "<reason>"}` with the class's status code.
Request validation errors and unknown routes get the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    error: str
    detail: str
    errors: list[dict[str, Any]] | None = None


class DomainError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class BadRequest(DomainError):
    status_code = 422


class Unauthorized(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


def error_responses(*errors: type[DomainError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the errors an endpoint can raise."""
    responses: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        entry = responses.setdefault(
            err.status_code, {"model": ErrorBody, "description": ""}
        )
        entry["description"] = ", ".join(
            filter(None, [entry["description"], err.__name__])
        )
    return responses


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> JSONResponse:
        body = ErrorBody(error=type(exc).__name__, detail=exc.detail)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(body.model_dump(exclude_none=True), exc.status_code, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": _loc(e.get("loc", ())),
                "message": str(e.get("msg", "")),
                "type": e.get("type"),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        body = ErrorBody(error="ValidationError", detail=detail, errors=errors)
        return JSONResponse(jsonable_encoder(body.model_dump(exclude_none=True)), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {
            400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
            413: "PayloadTooLarge", 415: "UnsupportedMediaType",
        }
        body = ErrorBody(error=names.get(exc.status_code, "HTTPError"), detail=str(exc.detail))
        return JSONResponse(body.model_dump(exclude_none=True), exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        body = ErrorBody(error="InternalError", detail="Something went wrong on our side.")
        return JSONResponse(body.model_dump(exclude_none=True), 500)
