"""Templates (autoescaped; model and mail text is only ever escaped) and their filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from app.agent.pricing import usd
from app.auth import service as auth
from app.core.validation import timezones
from app.web.deps import Viewer

HERE = Path(__file__).parent
NAV = (
    ("instructions", "/", "Instructions"),
    ("runs", "/runs", "Runs"),
    ("questions", "/questions", "Questions"),
    ("feed", "/feed", "Feed"),
    ("settings", "/settings", "Settings"),
)


def when(value: datetime | None, timezone: str = "UTC", *, now: datetime | None = None) -> str:
    """A moment in the viewer's time zone: `Mon 23 Nov 08:00`, with the year when it is not
    this year's there (`Tue 01 Jun 2027 09:00`). The page's script writes a moment that
    arrives live the same way (`formatWhen` in app.js)."""
    if value is None:
        return "—"
    zone = ZoneInfo(timezone)
    local = value.astimezone(zone)
    this_year = (now or datetime.now(UTC)).astimezone(zone).year
    return local.strftime("%a %d %b %H:%M" if local.year == this_year else "%a %d %b %Y %H:%M")


def duration(ms: int | None) -> str:
    if not ms:
        return "0 ms"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def safe_link(ref: Any) -> str | None:
    """A source's link, only as the app built it and only http(s): never `javascript:`."""
    link = ref.get("link") if isinstance(ref, dict) else None
    if isinstance(link, str) and link.lower().startswith(("https://", "http://")):
        return link
    return None


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, usd=usd, duration=duration, safe_link=safe_link,
                       pretty_json=pretty_json)
    env.globals["nav"] = NAV
    env.globals["csrf_field"] = auth.CSRF_FIELD
    env.globals["timezones"] = sorted(timezones())  # the zones a user or a trigger may name
    return env


ENV = _environment()


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    settings = request.app.state.runtime.settings
    name, secure = auth.session_cookie(settings)
    response.set_cookie(
        name, token, path="/",
        max_age=min(settings.web_session_ttl_seconds, settings.web_session_max_age_seconds),
        httponly=True, samesite="lax", secure=secure,
    )


def delete_session_cookie(response: Response, request: Request) -> None:
    """Expire the session cookie that was set: its name and path, and Secure (a browser
    refuses a `__Host-` cookie without it, the expiring one too)."""
    name, secure = auth.session_cookie(request.app.state.runtime.settings)
    response.delete_cookie(name, path="/", secure=secure)


def page(
    request: Request, template: str, viewer: Viewer | None, *, status_code: int = 200,
    active: str = "", **context: Any,
) -> HTMLResponse:
    html = ENV.get_template(template).render(
        viewer=viewer, user=viewer.user if viewer else None,
        csrf=viewer.csrf if viewer else "", tz=viewer.user.timezone if viewer else "UTC",
        active=active, path=request.url.path, **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    if viewer is not None and viewer.new_cookie:
        set_session_cookie(response, request, viewer.new_cookie)
    return response


def redirect(request: Request, url: str, viewer: Viewer | None = None) -> RedirectResponse:
    """303 after a form: the browser GETs the next page."""
    response = RedirectResponse(url, status_code=303)
    if viewer is not None and viewer.new_cookie:
        set_session_cookie(response, request, viewer.new_cookie)
    return response
