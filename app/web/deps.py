"""Who is looking at a page: the session cookie, or the local user on loopback (embedded).

Every form and every script request that changes something carries the session's CSRF
token (a hidden `csrf_token` field, or the `X-CSRF-Token` header); without it the
request is refused with 403 and a reason.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from app.auth import service as auth
from app.auth.models import WebSession
from app.core.config import Settings
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import Unauthorized
from app.users import service as users
from app.users.deps import CsrfRefused
from app.users.models import User

PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


class NotSignedIn(Unauthorized):
    pass


@dataclass
class Viewer:
    user: User
    web_session: WebSession
    # The session cookie's token, which the CSRF token is derived from.
    cookie: str
    # Set when this request started the session: the response sets the cookie.
    new_cookie: str | None = None

    @property
    def csrf(self) -> str:
        return auth.csrf_token(self.cookie)


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_sign_in_allowed(request: Request, settings: Settings) -> bool:
    """Embedded mode, a loopback client asking for a loopback host, and nothing in between.

    The Host check stops DNS rebinding (a web page whose name resolves to 127.0.0.1);
    the proxy headers and PUBLIC_URL stop a reverse proxy on the same machine from
    turning every visitor into the local user.
    """
    if not (getattr(request.app.state, "embedded", False) and settings.web_local_sign_in):
        return False
    if request.client is None or not _loopback(request.client.host):
        return False
    if any(name in request.headers for name in PROXY_HEADERS):
        return False
    if not _loopback(urlsplit(f"//{request.headers.get('host', '')}").hostname):
        return False
    return not settings.public_url or _loopback(urlsplit(settings.public_url).hostname)


async def get_viewer(request: Request, session: SessionDep, runtime: RuntimeDep) -> Viewer:
    settings = runtime.settings
    cookie = request.cookies.get(auth.session_cookie(settings)[0])
    if cookie:
        found = await auth.resolve_session(
            session=session, token=cookie, ttl_seconds=settings.web_session_ttl_seconds,
            max_age_seconds=settings.web_session_max_age_seconds,
        )
        if found is not None:
            return Viewer(user=found[1], web_session=found[0], cookie=cookie)
    if local_sign_in_allowed(request, settings):
        user = await users.get_by_email(session=session, email=settings.local_user_email)
        if user is not None:
            web_session, token = await auth.start_session(
                session=session, user=user, method="local",
                ttl_seconds=settings.web_session_ttl_seconds,
                max_age_seconds=settings.web_session_max_age_seconds,
            )
            request.state.new_cookie = token
            return Viewer(user=user, web_session=web_session, cookie=token, new_cookie=token)
    raise NotSignedIn("sign in first")


async def get_form_viewer(
    request: Request, viewer: Annotated[Viewer, Depends(get_viewer)]
) -> Viewer:
    """The viewer of a request that changes something: its CSRF token must match."""
    sent = request.headers.get(auth.CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(auth.CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not auth.csrf_matches(viewer.cookie, sent):
        raise CsrfRefused(
            "this form was refused: it has no valid CSRF token (reload the page and try again)"
        )
    return viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
FormViewerDep = Annotated[Viewer, Depends(get_form_viewer)]
