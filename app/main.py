"""The FastAPI application: REST API under /api/v1, health, the OpenAPI document (and its
interactive docs when `PILOTLIGHT_API_DOCS` is on), the dashboard at /."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Sequence

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.accounts.router import router as accounts_router
from app.channels.push_router import router as push_router
from app.channels.router import router as webhooks_router
from app.core.body_limit import BodyLimit
from app.core.errors import document_errors, install_error_handlers
from app.core.loops import LoopService
from app.core.runtime import Runtime
from app.events.router import router as events_router
from app.google.pubsub_router import router as google_pubsub_router
from app.google.router import callback_router as google_callback_router
from app.google.router import router as google_router
from app.instructions.router import router as instructions_router
from app.notifications.router import router as notifications_router
from app.questions.router import router as questions_router
from app.runs.metrics import refresh_database_gauges
from app.runs.router import router as runs_router
from app.runs.router import usage_router
from app.users.deps import document_session_cookie
from app.users.router import router as users_router
from app.web.app import DashboardMount, create_web_app
from app.web.security_headers import SecurityHeaders

API_PREFIX = "/api/v1"
# The API docs' pages, when turned on, may load exactly what FastAPI's Swagger UI and
# ReDoc pages load (scripts and styles from cdn.jsdelivr.net, ReDoc's fonts from Google
# Fonts, the favicon from fastapi.tiangolo.com, a worker from a blob) and run the one
# inline script that starts Swagger UI (allowed by its hash, not 'unsafe-inline'):
# no other host, no form, no frame.
DOCS_CSP = (
    "default-src 'none'; script-src https://cdn.jsdelivr.net {scripts}; "
    "style-src https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
    "font-src https://fonts.gstatic.com data:; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'; object-src 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)



def create_app(
    runtime: Runtime, *, loops: Sequence[LoopService] = (), embedded: bool = False
) -> FastAPI:
    """Build the app; `loops` (scheduler, worker) run beside it in `serve` mode.

    `embedded` (`serve`): the dashboard signs the local user in on loopback.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(loop.run(stop), name=loop.name) for loop in loops]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if getattr(_app.state, "events", None) is not None:
                await _app.state.events.close()  # the event streams' LISTEN connection

    app = FastAPI(
        title="Pilotlight",
        version="0.1.0",
        description="Standing instructions over your mail and documents, run by an agent.",
        lifespan=lifespan,
        # Off: FastAPI's pages load third-party scripts; see _api_docs.
        docs_url=None, redoc_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    document_errors(app)
    document_session_cookie(app)
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.api_max_body_bytes)
    app.add_middleware(SecurityHeaders)  # outermost of ours: every answer gets them

    api = APIRouter(prefix=API_PREFIX)
    for router in (
        users_router, instructions_router, runs_router, questions_router, notifications_router,
        usage_router, webhooks_router, push_router, events_router, accounts_router,
        google_router, google_pubsub_router,
    ):
        api.include_router(router)
    app.include_router(api)
    app.include_router(google_callback_router)

    # HEAD too (uptime monitors and load balancers often probe with it), outside the
    # document: one operation a path and method there.
    @app.head("/healthz", include_in_schema=False)
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.head("/readyz", include_in_schema=False)
    @app.get("/readyz", tags=["health"], responses={503: {"description": "Database unreachable"}})
    async def readyz() -> JSONResponse:
        """The database answers."""
        try:
            async with runtime.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=5)
        except Exception as exc:  # any failure to reach the database means not ready
            return JSONResponse(
                {"error": "NotReady", "detail": f"database unreachable: {type(exc).__name__}"},
                status_code=503,
            )
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics: this process's counters and the database-wide queue gauges."""
        async with runtime.sessionmaker() as session:
            await refresh_database_gauges(session)
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    if runtime.settings.api_docs:
        _api_docs(app)

    # Last: the dashboard takes every path the API and health routes did not.
    web = create_web_app(runtime, embedded=embedded)
    app.router.routes.append(DashboardMount(web, siblings=list(app.router.routes)))
    return app


def _with_docs_csp(response: HTMLResponse) -> HTMLResponse:
    """The page with `DOCS_CSP`, its inline scripts allowed by their SHA-256."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(bytes(response.body).decode())
    )
    response.headers["Content-Security-Policy"] = DOCS_CSP.format(scripts=hashes)
    return response


def _api_docs(app: FastAPI) -> None:
    """/docs and /redoc (`PILOTLIGHT_API_DOCS`): FastAPI's pages, with a policy that lets
    them load what they need from their CDN and nothing else."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _with_docs_csp(get_swagger_ui_html(openapi_url=openapi_url, title=app.title))

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _with_docs_csp(get_redoc_html(openapi_url=openapi_url, title=app.title))
