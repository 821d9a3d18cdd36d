"""The dashboard as its own app, mounted at `/` after the API (so `/api/v1` wins).

Its security headers (CSP, nosniff, frame deny) are set for the whole app by
`app.web.security_headers.SecurityHeaders`, installed in `app.main`."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Scope

from app.core.errors import DomainError, ErrorBody
from app.core.runtime import Runtime
from app.web import auth_pages, instructions_pages, runs_pages, settings_pages
from app.web.deps import NotSignedIn
from app.web.render import HERE, page


def _wants_json(request: Request) -> bool:
    """API paths and clients that don't ask for HTML get the API's error shape."""
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get(
        "accept", ""
    )


class DashboardMount(Mount):
    """The dashboard at `/`, consulted only for paths no other route of the app knows.

    A plain Mount at `/` matches every path, so a wrong method on an API path (a
    partial match there) would become the dashboard's 404 instead of the API's 405.
    """

    def __init__(self, app: ASGIApp, *, siblings: Sequence[BaseRoute]) -> None:
        super().__init__("/", app=app, name="dashboard")
        self.siblings = list(siblings)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if any(route.matches(scope)[0] != Match.NONE for route in self.siblings):
            return Match.NONE, {}
        return super().matches(scope)


def create_web_app(runtime: Runtime, *, embedded: bool) -> FastAPI:
    web = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    web.state.runtime = runtime
    web.state.embedded = embedded
    web.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (auth_pages, instructions_pages, runs_pages, settings_pages):
        web.include_router(module.router)

    @web.get("/sw.js", include_in_schema=False)
    async def service_worker() -> FileResponse:
        """The service worker, served from the root so that its scope is the whole app."""
        return FileResponse(
            HERE / "static" / "sw.js", media_type="text/javascript",
            headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"},
        )

    @web.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        if (isinstance(exc, NotSignedIn) and request.method == "GET"
                and not request.url.path.startswith("/api/")):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        if _wants_json(request):
            body = ErrorBody(error=type(exc).__name__, detail=exc.detail)
            return JSONResponse(body.model_dump(exclude_none=True), exc.status_code)
        return page(request, "error.html", None, status_code=exc.status_code,
                    title=_TITLES.get(exc.status_code, "Something went wrong"),
                    detail=exc.detail, error=type(exc).__name__)

    @web.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', '')}"
            for e in exc.errors()
        ) or "invalid request"
        if _wants_json(request):
            body = ErrorBody(error="ValidationError", detail=problems)
            return JSONResponse(body.model_dump(exclude_none=True), 422)
        return page(request, "error.html", None, status_code=422, title=_TITLES[422],
                    detail=problems, error="ValidationError")

    @web.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_json(request):
            name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
            body = ErrorBody(error=name, detail=str(exc.detail))
            return JSONResponse(body.model_dump(exclude_none=True), exc.status_code)
        return page(request, "error.html", None, status_code=exc.status_code,
                    title=_TITLES.get(exc.status_code, "Something went wrong"),
                    detail=str(exc.detail), error="")

    return web


_TITLES = {
    401: "Please sign in", 403: "Refused", 404: "Not found", 409: "Not possible now",
    422: "That did not work",
}
