"""Signing in and out: the login page, one-time links, Google, and the CSRF token for
scripts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import service as auth
from app.auth import throttle
from app.auth.service import LoginLinkInvalid, LoginLinkUserGone
from app.auth.throttle import TooManySignInFailures, client_key
from app.core.config import Settings
from app.core.db import transaction
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import DomainError
from app.core.runtime import Runtime
from app.google import oauth, sign_in
from app.google.oauth import CodeRejected, ConsentRefused
from app.google.sign_in import SignInStateInvalid
from app.users.models import User
from app.web.deps import (
    FormViewerDep,
    NotSignedIn,
    ViewerDep,
    get_viewer,
    local_sign_in_allowed,
)
from app.web.render import delete_session_cookie, page, set_session_cookie

# Pages return responses they build; none has a response model.
router = APIRouter(include_in_schema=False)


def _local_path(next_url: str | None) -> str:
    """Only a path on this site: never an open redirect to another. Browsers drop tabs and
    line breaks from a URL and read a backslash as a slash, so "/\t/evil.example" would
    become "//evil.example": a path with any of them, or any other control character or
    space, is refused."""
    if (
        next_url and next_url.startswith("/") and not next_url.startswith("//")
        and "\\" not in next_url
        and all(ch.isprintable() and not ch.isspace() for ch in next_url)
    ):
        return next_url
    return "/"


# Why the sign-in link's button (a POST) signed nobody in, for the login page it leads to
# (POST/redirect/GET: a reload of that page never posts the link again, so it counts no
# second failure). Only a code: the page says what the code means, never the cookie's text.
PROBLEM_COOKIE = "pilotlight_login_problem"
_LINK_PROBLEMS = {"link": LoginLinkInvalid, "link-user": LoginLinkUserGone,
                  "limit": TooManySignInFailures}


@router.get("/login", response_class=HTMLResponse)
async def login(
    request: Request, session: SessionDep, runtime: RuntimeDep,
    next: str | None = None,  # noqa: A002
) -> HTMLResponse:
    """The sign-in page; once after a sign-in link's button was refused, saying why."""
    settings = runtime.settings
    name, path, secure = settings.cookie(PROBLEM_COOKIE, "/login")
    code = request.cookies.get(name)
    problem = await _link_problem(request, session, runtime, code) if code else None
    if problem is not None:
        response = _login_problem(request, runtime, problem)
    else:
        response = page(
            request, "login.html", None, next=_local_path(next),
            local=local_sign_in_allowed(request, settings),
            google_configured=bool(settings.google_client_id),
        )
    if code is not None:  # said once: a reload or a later visit is the plain page
        response.delete_cookie(name, path=path, secure=secure)
    return response


async def _link_problem(
    request: Request, session: AsyncSession, runtime: Runtime, code: str
) -> DomainError | None:
    """What the problem cookie's code stands for now: the limit only while it holds."""
    kind = _LINK_PROBLEMS.get(code)
    if kind is LoginLinkInvalid:
        return LoginLinkInvalid(auth.LINK_UNUSABLE)
    if kind is LoginLinkUserGone:
        return LoginLinkUserGone(auth.LINK_USER_GONE)
    if kind is TooManySignInFailures:
        try:
            await throttle.check(session, runtime.settings, client_key(request))
        except TooManySignInFailures as exc:
            return exc
    return None


def _after_link_problem(runtime: Runtime, exc: DomainError) -> RedirectResponse:
    """The answer to a refused sign-in link's button: to the login page, which says why."""
    code = next((c for c, kind in _LINK_PROBLEMS.items() if type(exc) is kind), "link")
    response = RedirectResponse("/login", status_code=303)
    name, path, secure = runtime.settings.cookie(PROBLEM_COOKIE, "/login")
    response.set_cookie(name, code, max_age=300, path=path, httponly=True, samesite="lax",
                        secure=secure)
    return response


async def _link_user(
    request: Request, runtime: Runtime, session: AsyncSession,
    use: Callable[[], Awaitable[User]],
) -> User | LoginLinkInvalid | TooManySignInFailures:
    """The user of a one-time link (`use` looks it up or uses it up), through the sign-in
    limit: an unusable link counts as a failure of this client; for an unusable link, or
    past the limit (then nothing is looked up), why not."""
    client = client_key(request)
    try:
        await throttle.check(session, runtime.settings, client)
    except TooManySignInFailures as exc:
        return exc
    try:
        return await use()
    except LoginLinkInvalid as exc:
        await throttle.failed(session, client, method="link", reason="unusable login link")
        return exc


def _login_problem(request: Request, runtime: Runtime, exc: DomainError) -> HTMLResponse:
    """The sign-in page, saying what went wrong."""
    response = page(request, "login.html", None, status_code=exc.status_code, next="/",
                    local=False, google_configured=bool(runtime.settings.google_client_id),
                    problem=exc.detail)
    if isinstance(exc, TooManySignInFailures):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@router.get("/login/link", response_model=None)
async def open_link(
    request: Request, session: SessionDep, runtime: RuntimeDep,
    token: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    """A one-time link asks first, naming the account, and is used by the button (a POST):
    a link scanner that opens it uses nothing, and a link someone else sends signs nobody
    in without a click that says as whom."""
    user = await _link_user(request, runtime, session,
                            lambda: auth.login_link_user(session=session, token=token))
    if not isinstance(user, User):
        return _login_problem(request, runtime, user)
    signed_in_as = None
    cookie = request.cookies.get(auth.session_cookie(runtime.settings)[0])
    if cookie:
        found = await auth.resolve_session(
            session=session, token=cookie, ttl_seconds=runtime.settings.web_session_ttl_seconds,
            max_age_seconds=runtime.settings.web_session_max_age_seconds,
        )
        if found is not None and found[1].id != user.id:
            signed_in_as = found[1].email
    response = page(request, "login_link.html", None, token=token, email=user.email,
                    signed_in_as=signed_in_as)
    response.headers["Cache-Control"] = "no-store"
    return response


class LinkPostRefused(DomainError):
    """A sign-in link's button was pressed on another site's page."""

    status_code = 403


def _same_site_post(request: Request, runtime: Runtime) -> bool:
    """The POST comes from this site's own page (or from no browser at all): the browser's
    Sec-Fetch-Site says so, or else its Origin is this site's."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None:
        return True
    ours = {_origin(str(request.url)), _origin(runtime.settings.effective_public_url)}
    return _origin(origin) in ours - {None}


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """A URL's origin as browsers compare it: scheme and host in lower case, the scheme's
    default port made explicit (PUBLIC_URL may say "https://Pilot.example.com:443")."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in _DEFAULT_PORTS:
        return None
    return scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]


@router.post("/login/link", response_model=None)
async def redeem_link(
    request: Request, session: SessionDep, runtime: RuntimeDep,
    token: Annotated[str, Form(max_length=200)] = "",
) -> RedirectResponse | HTMLResponse:
    """Use a one-time link: it signs this browser in and can never be used again. Either
    way the browser is sent on (POST/redirect/GET): to the dashboard, or to the login page
    saying why not, so that a reload never posts the link again. (A post from another
    site's page is answered where it was sent, with a page: nothing there is ours to
    reload into.)"""
    if not _same_site_post(request, runtime):
        return _login_problem(request, runtime, LinkPostRefused(
            "this sign-in was sent from another site's page: open the link itself"))
    user = await _link_user(request, runtime, session,
                            lambda: auth.redeem_login_link(session=session, token=token))
    if not isinstance(user, User):
        return _after_link_problem(runtime, user)
    _row, cookie = await auth.start_session(
        session=session, user=user, method="link",
        ttl_seconds=runtime.settings.web_session_ttl_seconds,
        max_age_seconds=runtime.settings.web_session_max_age_seconds,
    )
    response = RedirectResponse("/", status_code=303)
    set_session_cookie(response, request, cookie)
    return response


def _refused(request: Request, runtime: Runtime, exc: DomainError) -> HTMLResponse:
    response = _login_problem(request, runtime, exc)
    _delete_state_cookie(response, runtime.settings)
    return response


def _delete_state_cookie(response: Response, settings: Settings) -> None:
    name, path, secure = sign_in.state_cookie(settings)
    response.delete_cookie(name, path=path, secure=secure)


@router.get("/login/google", response_model=None)
async def google_login(
    request: Request, runtime: RuntimeDep,
    next: Annotated[str | None, Query(max_length=2000)] = None,  # noqa: A002
) -> RedirectResponse | HTMLResponse:
    """To Google's consent screen for `openid email`, bound to this browser by a cookie."""
    settings = runtime.settings
    try:
        oauth.require_configured(settings)
        url, sealed = sign_in.start(settings, next_path=_local_path(next))
    except DomainError as exc:
        return _refused(request, runtime, exc)
    response = RedirectResponse(url, status_code=302)
    # Lax: the cookie rides along on the top-level redirect back from Google.
    name, path, secure = sign_in.state_cookie(settings)
    response.set_cookie(
        name, sealed, max_age=settings.google_oauth_state_ttl_seconds, path=path,
        httponly=True, samesite="lax", secure=secure,
    )
    return response


def _counts_as_failure(exc: DomainError) -> bool:
    """A refused Google sign-in that someone could be guessing with: a wrong state or
    cookie, a refused code or id_token, an address no user has. Not the user's own
    "Cancel" at Google, a missing configuration or the limit itself."""
    return exc.status_code in (400, 401, 403) and not isinstance(exc, ConsentRefused)


@router.get(sign_in.CALLBACK_PATH, response_model=None)
async def google_login_callback(
    request: Request, runtime: RuntimeDep,
    state: Annotated[str, Query(max_length=4096)] = "",
    code: Annotated[str, Query(max_length=4096)] = "",
    error: Annotated[str, Query(max_length=4096)] = "",
) -> RedirectResponse | HTMLResponse:
    """Google sends the browser back here: the verified address signs its user in."""
    settings = runtime.settings
    cookie = request.cookies.get(sign_in.state_cookie(settings)[0])
    client = client_key(request)
    try:
        async with transaction(runtime.sessionmaker) as session:
            await throttle.check(session, settings, client)
        oauth.require_configured(settings)
        # No transaction is held while Google answers.
        async with transaction(runtime.sessionmaker) as session:
            pending = await sign_in.check_state(
                session=session, settings=settings, state=state, cookie=cookie
            )
        if error:
            raise ConsentRefused(f"Google answered {error[:100]!r}: nobody was signed in")
        if not code:
            raise CodeRejected("Google sent no authorization code: nobody was signed in")
        try:
            email = await sign_in.sign_in_code(settings, pending=pending, code=code)
        except CodeRejected:
            raise CodeRejected(
                f"Google refused the authorization code; {sign_in.START_AGAIN}"
            ) from None
        try:
            async with transaction(runtime.sessionmaker) as session:
                user = await sign_in.finish(
                    session=session, settings=settings, pending=pending, email=email
                )
                _row, token = await auth.start_session(
                    session=session, user=user, method="google",
                    ttl_seconds=settings.web_session_ttl_seconds,
                    max_age_seconds=settings.web_session_max_age_seconds,
                )
        except IntegrityError:  # the same state, finished twice at once
            raise SignInStateInvalid(
                f"this sign-in was already used; {sign_in.START_AGAIN}"
            ) from None
    except DomainError as exc:
        if _counts_as_failure(exc):
            async with transaction(runtime.sessionmaker) as session:
                await throttle.failed(session, client, method="google",
                                      reason=type(exc).__name__)
        return _refused(request, runtime, exc)
    response = RedirectResponse(pending.next, status_code=303)
    set_session_cookie(response, request, token)
    _delete_state_cookie(response, settings)
    return response


@router.get("/logout", response_class=HTMLResponse, response_model=None)
async def logout_page(
    request: Request, session: SessionDep, runtime: RuntimeDep
) -> HTMLResponse | RedirectResponse:
    """/logout typed or followed asks, with the button that signs out: a GET never does
    (any site could link to it). Nobody signed in goes to the login page."""
    try:
        viewer = await get_viewer(request, session, runtime)
    except NotSignedIn:
        return RedirectResponse("/login", status_code=303)
    return page(request, "signout.html", viewer)


@router.post("/logout")
async def logout(request: Request, viewer: FormViewerDep, session: SessionDep) -> RedirectResponse:
    await auth.end_session(session=session, web_session=viewer.web_session)
    response = RedirectResponse("/login", status_code=303)
    delete_session_cookie(response, request)
    return response


@router.get("/session/csrf")
async def csrf_token(viewer: ViewerDep) -> JSONResponse:
    """The session's CSRF token, for the service worker (same-origin reads only: no CORS)."""
    return JSONResponse({"csrf_token": viewer.csrf}, headers={"Cache-Control": "no-store"})
