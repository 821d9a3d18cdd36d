"""The `CurrentUser` dependency: a bearer token, or the dashboard's session cookie.

`CurrentSignIn` is the same with the credential, for a response that outlives the
request (the event stream) to check again that it still works.

A request signed in by cookie that changes something must carry the session's
CSRF token in the `X-CSRF-Token` header: a cross-site page can make the browser
send the cookie, but cannot read the token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.requests import HTTPConnection
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import service as auth
from app.core.config import Settings
from app.core.db import utcnow
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import Forbidden
from app.core.request_shape import as_declared
from app.core.runtime import Runtime
from app.users import service
from app.users.models import User

_bearer = HTTPBearer(auto_error=False, description="A personal access token (plt_…)")


class SessionCookie(APIKeyCookie):
    """The dashboard's session cookie as a security scheme, read under the name chosen for
    the public URL (`auth.session_cookie`) rather than the one fixed at import: on https
    a plain `pilotlight_session`, which a sibling subdomain can set, is no session. The
    app's OpenAPI document names the cookie the same way (`document_session_cookie`)."""

    async def __call__(self, request: HTTPConnection) -> str | None:
        name, _secure = auth.session_cookie(request.app.state.runtime.settings)
        return self.check_api_key(request.cookies.get(name))


_cookie = SessionCookie(
    name=auth.SESSION_COOKIE, scheme_name="APIKeyCookie", auto_error=False,
    description="The dashboard's session; requests other than GET also need X-CSRF-Token.",
)


def document_session_cookie(app: FastAPI) -> None:
    """The app's OpenAPI document names the session cookie its public URL uses."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        schema = default()
        schemes = schema.get("components", {}).get("securitySchemes", {})
        if _cookie.scheme_name in schemes:
            name, _secure = auth.session_cookie(app.state.runtime.settings)
            schemes[_cookie.scheme_name]["name"] = name
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(Forbidden):
    pass


@dataclass(frozen=True)
class SignIn:
    """Who a request is signed in as, and with what: enough to check it again later (an
    open event stream does, so that revoking a token or signing out ends the stream)."""

    user: User
    # The bearer token, when the request has one, else the session cookie: secrets, kept
    # out of the repr (a log line of this object must not show them).
    token: str | None = field(repr=False)
    cookie: str | None = field(repr=False)
    # When it stops working unless renewed; None for a token, which works until revoked.
    expires_at: datetime | None

    async def check(self, *, session: AsyncSession, settings: Settings) -> datetime | None:
        """Still signed in? Returns `expires_at` as it is now; raises InvalidToken when
        the token was revoked, the session ended or expired, or the user is gone.

        Reads only: unlike a request, checking does not extend the session."""
        if self.token is not None:
            await service.token_owner(session=session, token=self.token)
            return None
        if self.cookie:
            found = await auth.live_session(
                session=session, token=self.cookie, now=utcnow(),
                max_age_seconds=settings.web_session_max_age_seconds,
            )
            if found is not None:
                return found[0].expires_at
        raise service.InvalidToken("the session ended: sign in again")


async def get_sign_in(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> SignIn:
    sign_in = await _signed_in(request, session, runtime, credentials, cookie)
    # Signed in, the request's shape is checked (a caller who is not learns nothing of it):
    # what the endpoint does not take is refused rather than ignored.
    await as_declared(request)
    return sign_in


async def _signed_in(
    request: Request, session: AsyncSession, runtime: Runtime,
    credentials: HTTPAuthorizationCredentials | None, cookie: str | None,
) -> SignIn:
    if credentials is not None:
        user = await service.authenticate(session=session, token=credentials.credentials)
        return SignIn(user=user, token=credentials.credentials, cookie=None, expires_at=None)
    if cookie:
        found = await auth.resolve_session(
            session=session, token=cookie, ttl_seconds=runtime.settings.web_session_ttl_seconds,
            max_age_seconds=runtime.settings.web_session_max_age_seconds,
        )
        if found is not None:
            web_session, user = found
            if request.method not in SAFE_METHODS and not auth.csrf_matches(
                cookie, request.headers.get(auth.CSRF_HEADER)
            ):
                raise CsrfRefused(
                    f"a request signed in by the session cookie needs the {auth.CSRF_HEADER} "
                    "header with the page's CSRF token"
                )
            return SignIn(user=user, token=None, cookie=cookie, expires_at=web_session.expires_at)
    raise service.InvalidToken(
        "missing bearer token: create one with `pilotlight token create`"
    )


async def get_current_user(sign_in: Annotated[SignIn, Depends(get_sign_in)]) -> User:
    return sign_in.user


CurrentSignIn = Annotated[SignIn, Depends(get_sign_in)]
CurrentUser = Annotated[User, Depends(get_current_user)]
