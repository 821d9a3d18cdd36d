"""The `CurrentUser` dependency: a bearer token, or the dashboard's session cookie.

A request signed in by cookie that changes something must carry the session's
CSRF token in the `X-CSRF-Token` header: a cross-site page can make the browser
send the cookie, but cannot read the token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from app.auth import service as auth
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import Forbidden
from app.users import service
from app.users.models import User

_bearer = HTTPBearer(auto_error=False, description="A personal access token (plt_…)")
_cookie = APIKeyCookie(
    name=auth.SESSION_COOKIE, auto_error=False,
    description="The dashboard's session; requests other than GET also need X-CSRF-Token.",
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(Forbidden):
    pass


async def get_current_user(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> User:
    if credentials is not None:
        return await service.authenticate(session=session, token=credentials.credentials)
    if cookie:
        found = await auth.resolve_session(
            session=session, token=cookie, ttl_seconds=runtime.settings.web_session_ttl_seconds
        )
        if found is not None:
            web_session, user = found
            if request.method not in SAFE_METHODS and not auth.csrf_matches(
                web_session, request.headers.get(auth.CSRF_HEADER)
            ):
                raise CsrfRefused(
                    f"a request signed in by the session cookie needs the {auth.CSRF_HEADER} "
                    "header with the page's CSRF token"
                )
            return user
    raise service.InvalidToken(
        "missing bearer token: create one with `pilotlight token create`"
    )


CurrentUser = Annotated[User, Depends(get_current_user)]
