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


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error as the API words it."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        # pydantic puts the character offset where a field name would be.
        reason = (error.get("ctx") or {}).get("error", "invalid")
        at = f" at character {loc[1]}" if len(loc) > 1 else ""
        return {"field": "body", "message": f"the body is not valid JSON ({reason}{at})",
                "type": "json_invalid"}
    return {"field": _loc(loc), "message": str(error.get("msg", "")), "type": error.get("type")}


def _not_json(request: Request, errors: list[dict[str, Any]]) -> str | None:
    """The Content-Type of a request whose JSON body was not read as JSON because of it."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return None
    # Without a Content-Type the body is not read as JSON either (FastAPI's strict
    # content type): it reaches the endpoint as bytes, "not a valid dictionary".
    whole_body = [e for e in errors if tuple(e.get("loc", ())) == ("body",)]
    if whole_body and all(e.get("type") in ("model_attributes_type", "dict_type")
                          for e in whole_body):
        return content_type
    return None


# What FastAPI answers when reading a JSON body failed otherwise than by a syntax error.
_UNPARSED = "There was an error parsing the body"


def _unreadable_json(exc: StarletteHTTPException) -> str | None:
    """Why a body sent as JSON could not be read, when FastAPI's 400 says only that it
    could not (the cause is chained): not UTF-8, nested too deeply, or a number too long
    for Python to read."""
    if exc.status_code != 400 or exc.detail != _UNPARSED:
        return None
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not valid JSON (not UTF-8 at byte offset {cause.start})"
    if isinstance(cause, RecursionError):
        return "the body is not valid JSON that can be read (it is nested too deeply)"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "the body is not valid JSON that can be read (a number has too many digits)"
    return "the body is not valid JSON"


def document_errors(app: FastAPI) -> None:
    """The OpenAPI document with the error body the handlers below send: its 422 responses
    name `ErrorBody`, not FastAPI's own validation error shape (which nothing sends)."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = default()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorBody", ErrorBody.model_json_schema())
        error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                invalid = operation.get("responses", {}).get("422")
                if invalid is not None:
                    invalid["content"] = error_body
                    if invalid.get("description") == "Validation Error":
                        invalid["description"] = "ValidationError"
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> JSONResponse:
        body = ErrorBody(error=type(exc).__name__, detail=exc.detail)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(body.model_dump(exclude_none=True), exc.status_code, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = _not_json(request, list(exc.errors()))
        if content_type is not None:
            sent = f"this request's is {content_type[:100]}" if content_type else "it has none"
            detail = f"the body must be JSON, sent with Content-Type: application/json ({sent})"
            unsupported = ErrorBody(error="UnsupportedMediaType", detail=detail)
            return JSONResponse(unsupported.model_dump(exclude_none=True), 415)
        errors = [_problem(e) for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        body = ErrorBody(error="ValidationError", detail=detail, errors=errors)
        return JSONResponse(jsonable_encoder(body.model_dump(exclude_none=True)), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if (unreadable := _unreadable_json(exc)) is not None:
            problem = {"field": "body", "message": unreadable, "type": "json_invalid"}
            invalid = ErrorBody(error="ValidationError", detail=f"body: {unreadable}",
                                errors=[problem])
            return JSONResponse(invalid.model_dump(exclude_none=True), 422)
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
