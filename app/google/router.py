"""Connecting Google: `GET /api/v1/google/connect` sends the browser to Google's consent
screen; Google sends it back to `GET /oauth/google/callback`, which stores the grant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import RedirectResponse

from app.auth import service as auth
from app.core.config import Settings
from app.core.crypto import SecretKeyError
from app.core.db import transaction, utcnow
from app.core.deps import RuntimeDep, SessionDep
from app.core.errors import error_responses
from app.google import oauth, service
from app.google.oauth import CodeRejected, ConsentRefused, GoogleNotConfigured, GoogleUnavailable
from app.google.service import START_AGAIN, OAuthStateInvalid
from app.users.deps import CurrentUser
from app.users.service import InvalidToken

router = APIRouter(prefix="/google", tags=["google"], responses=error_responses(InvalidToken))
# Not under /api/v1 and without a bearer token: the browser comes back from Google.
callback_router = APIRouter(tags=["google"])

_PARAM = Query(max_length=4096)
STATE_COOKIE = "pilotlight_google_state"
_MAX_COOKIE = 4096


def state_cookie(settings: Settings) -> tuple[str, str, bool]:
    """The state cookie's name, path and Secure flag for this public URL."""
    return settings.cookie(STATE_COOKIE, oauth.CALLBACK_PATH)


@router.get(
    "/connect", status_code=status.HTTP_302_FOUND, response_class=RedirectResponse,
    responses={
        302: {"description": "To Google's consent screen"},
        **error_responses(GoogleNotConfigured, SecretKeyError),
    },
)
async def connect(
    user: CurrentUser, session: SessionDep, runtime: RuntimeDep,
    gmail_send: Annotated[
        bool, Query(description="Also ask to send digests through your Gmail (gmail.send).")
    ] = False,
) -> RedirectResponse:
    """Connect (or reconnect) your Google account: a redirect to Google's consent screen
    asking for read access to Gmail and Drive (and sending, with `gmail_send=true`)."""
    settings = runtime.settings
    started = await service.start_connect(
        session=session, user=user, settings=settings, gmail_send=gmail_send
    )
    response = RedirectResponse(started.url, status_code=status.HTTP_302_FOUND)
    # Binds the consent to this browser: the callback must come back to it (Lax: the
    # cookie rides along on the top-level redirect back from Google). A random value,
    # not the state, which anyone who sees the consent URL knows.
    name, path, secure = state_cookie(settings)
    response.set_cookie(
        name, started.browser_secret, max_age=settings.google_oauth_state_ttl_seconds,
        path=path, httponly=True, samesite="lax", secure=secure,
    )
    return response


@callback_router.get(
    oauth.CALLBACK_PATH, status_code=status.HTTP_302_FOUND, response_class=RedirectResponse,
    responses={
        302: {"description": "To the dashboard's settings, connected"},
        **error_responses(
            OAuthStateInvalid, ConsentRefused, CodeRejected, GoogleNotConfigured,
            GoogleUnavailable, SecretKeyError,
        ),
    },
)
async def google_callback(
    request: Request,
    runtime: RuntimeDep,
    state: Annotated[str | None, _PARAM] = None,
    code: Annotated[str | None, _PARAM] = None,
    error: Annotated[str | None, _PARAM] = None,
) -> RedirectResponse:
    """Where Google sends the browser after the consent screen. It completes only in
    the browser that started the connection (its state cookie), and not in a browser
    signed in to the dashboard as another user (see `service.consume_state`)."""
    settings = runtime.settings
    oauth.require_configured(settings)
    name, path, secure = state_cookie(settings)
    browser_secret = request.cookies.get(name)
    if browser_secret is not None and len(browser_secret) > _MAX_COOKIE:
        browser_secret = None
    # Three steps, so that no transaction is held while Google answers: the state is
    # used up first (a failure later does not make it usable again), then the code is
    # exchanged, then the grant is stored.
    async with transaction(runtime.sessionmaker) as session:
        signed_in = None
        cookie = request.cookies.get(auth.session_cookie(settings)[0])
        if cookie:
            found = await auth.live_session(
                session=session, token=cookie, now=utcnow(),
                max_age_seconds=settings.web_session_max_age_seconds,
            )
            signed_in = found[1].id if found is not None else None
        pending = await service.consume_state(
            session=session, state=state or "", browser_secret=browser_secret,
            signed_in_user_id=signed_in, settings=settings,
        )
    if error:
        raise ConsentRefused(
            f"Google's consent screen answered {error[:100]!r}: nothing was stored; to connect "
            f"Google, {START_AGAIN}"
        )
    if not code:
        raise CodeRejected(f"the callback has no authorization code; {START_AGAIN}")
    grant = await oauth.complete_consent(
        settings, code=code, code_verifier=pending.code_verifier, scopes=pending.scopes,
        redirect=pending.redirect_uri,
    )
    async with transaction(runtime.sessionmaker) as session:
        await service.store_grant(session=session, pending=pending, grant=grant, settings=settings)
    response = RedirectResponse(
        f"{settings.effective_public_url}/settings?google=connected",
        status_code=status.HTTP_302_FOUND,
    )
    response.delete_cookie(name, path=path, secure=secure, httponly=True, samesite="lax")
    return response
