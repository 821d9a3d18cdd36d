"""Connecting Google: `GET /api/v1/google/connect` sends the browser to Google's consent
screen; Google sends it back to `GET /oauth/google/callback`, which stores the grant."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Cookie, Query, status
from fastapi.responses import RedirectResponse

from app.core.crypto import SecretKeyError
from app.core.db import transaction
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
    url = await service.start_connect(
        session=session, user=user, settings=settings, gmail_send=gmail_send
    )
    response = RedirectResponse(url, status_code=status.HTTP_302_FOUND)
    # Binds the consent to this browser: the callback must come back to it (Lax: the
    # cookie rides along on the top-level redirect back from Google).
    response.set_cookie(
        STATE_COOKIE, parse_qs(urlsplit(url).query)["state"][0],
        max_age=settings.google_oauth_state_ttl_seconds, path=oauth.CALLBACK_PATH,
        httponly=True, samesite="lax",
        secure=settings.effective_public_url.startswith("https://"),
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
    runtime: RuntimeDep,
    browser_state: Annotated[str | None, Cookie(alias=STATE_COOKIE, max_length=4096)] = None,
    state: Annotated[str | None, _PARAM] = None,
    code: Annotated[str | None, _PARAM] = None,
    error: Annotated[str | None, _PARAM] = None,
) -> RedirectResponse:
    """Where Google sends the browser after the consent screen."""
    settings = runtime.settings
    oauth.require_configured(settings)
    # Three steps, so that no transaction is held while Google answers: the state is
    # used up first (a failure later does not make it usable again), then the code is
    # exchanged, then the grant is stored.
    async with transaction(runtime.sessionmaker) as session:
        pending = await service.consume_state(
            session=session, state=state or "", browser_state=browser_state, settings=settings
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
    response.delete_cookie(STATE_COOKIE, path=oauth.CALLBACK_PATH)
    return response
