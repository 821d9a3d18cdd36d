"""The Google side of connecting an account: the consent URL, the code exchange, the
account's address and revocation. HTTP only; the database side is `app.google.service`.

The flow is google-auth-oauthlib's `Flow` (requests-oauthlib underneath) with PKCE;
the address comes from Gmail's `users.getProfile` (or, for an account without Gmail,
Drive's `about.get`) through google-api-python-client with its bundled discovery
documents. Both are blocking, so they run in a thread.
Nothing here logs a token.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httplib2
import httpx
import requests
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from google_auth_oauthlib.flow import Flow  # type: ignore[import-untyped]
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from oauthlib.oauth2 import OAuth2Error  # type: ignore[import-untyped]

from app.core.config import Settings
from app.core.errors import Conflict, DomainError
from app.google.client import no_mailbox
from app.google.endpoints import GoogleEndpoints, google_endpoints
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY

log = logging.getLogger(__name__)

# requests-oauthlib logs whole token responses (refresh token included) at DEBUG:
# keep both libraries quiet whatever level the service logs at.
for _name in ("requests_oauthlib", "oauthlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)

HTTP_TIMEOUT_SECONDS = 30
CALLBACK_PATH = "/oauth/google/callback"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class GoogleNotConfigured(Conflict):
    """The Google connection is off: no OAuth client is configured."""


class ConsentRefused(DomainError):
    """The user did not allow access on Google's consent screen."""

    status_code = 400


class CodeRejected(DomainError):
    """Google refused the authorization code (used, expired, or not ours)."""

    status_code = 400


class GoogleUnavailable(DomainError):
    """Google could not be reached, or refused our client credentials."""

    status_code = 502


@dataclass(frozen=True)
class Grant:
    """What a finished consent gave: the tokens and the scopes Google says it granted."""

    access_token: str
    refresh_token: str | None
    scopes: frozenset[str]
    email: str | None = None
    # False: Gmail said the Google account has no mailbox ("Mail service not enabled"),
    # whatever the grant holds.
    mailbox: bool = True

    def __repr__(self) -> str:  # never print a token
        return f"Grant(scopes={sorted(self.scopes)}, email={self.email!r})"


def redirect_uri(settings: Settings) -> str:
    """Where Google sends the browser back: register exactly this in the OAuth client."""
    return f"{settings.effective_public_url}{CALLBACK_PATH}"


def require_configured(settings: Settings) -> tuple[str, str]:
    """The OAuth client id and secret; `GoogleNotConfigured` when they are not set."""
    secret = settings.google_client_secret.get_secret_value() if (
        settings.google_client_secret) else ""
    if not settings.google_client_id or not secret:
        raise GoogleNotConfigured(
            "Google is not configured: set PILOTLIGHT_GOOGLE_CLIENT_ID and "
            "PILOTLIGHT_GOOGLE_CLIENT_SECRET to the OAuth client of a Google Cloud web "
            f"application whose redirect URI is {redirect_uri(settings)} (see 'Connecting "
            "Google' in the README)"
        )
    return settings.google_client_id, secret


def _allow_plain_http_to_loopback(endpoints: GoogleEndpoints) -> None:
    """oauthlib refuses http:// endpoints; the fake Google of the tests and demos is
    plain http on this machine, and nothing else may be."""
    if endpoints.is_google:
        return
    parts = urlsplit(endpoints.token_uri)
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")


def _flow(
    settings: Settings, scopes: Iterable[str], *, redirect: str, code_verifier: str | None = None
) -> Flow:
    client_id, client_secret = require_configured(settings)
    endpoints = google_endpoints(settings)
    _allow_plain_http_to_loopback(endpoints)
    config = {
        "web": {
            "client_id": client_id,
            "client_secret": client_secret,
            "auth_uri": endpoints.auth_uri,
            "token_uri": endpoints.token_uri,
            "redirect_uris": [redirect],
        }
    }
    return Flow.from_client_config(
        config, scopes=list(scopes), redirect_uri=redirect,
        code_verifier=code_verifier, autogenerate_code_verifier=code_verifier is None,
    )


def consent_url(
    settings: Settings, *, scopes: Iterable[str], state: str, redirect: str | None = None,
    offline: bool = True,
) -> tuple[str, str]:
    """Google's consent URL for `scopes` and `state`, and the PKCE code verifier behind
    its challenge (keep it secret until the callback). No network call.

    `offline=False` (signing in to the dashboard) asks for no refresh token and no
    earlier grants: only the identity the scopes name."""
    flow = _flow(settings, scopes, redirect=redirect or redirect_uri(settings))
    flow.oauth2session.close()  # only builds a URL
    extra = {
        "access_type": "offline",  # a refresh token: runs happen while the user is away
        "include_granted_scopes": "true",  # incremental consent keeps earlier grants
        "prompt": "consent",  # Google sends a refresh token only on a consent screen
    } if offline else {"access_type": "online", "prompt": "select_account"}
    url, _state = flow.authorization_url(state=state, **extra)
    assert flow.code_verifier is not None
    return url, flow.code_verifier


async def exchange_code(
    settings: Settings, *, code: str, code_verifier: str, scopes: list[str], redirect: str
) -> dict[str, Any]:
    """The token endpoint's answer for `code` (with the PKCE verifier): the raw token
    dict, `id_token` included when `openid` was granted. Never log it."""
    return await asyncio.to_thread(
        _exchange, settings, code=code, code_verifier=code_verifier, scopes=scopes,
        redirect=redirect,
    )


def _exchange(
    settings: Settings, *, code: str, code_verifier: str, scopes: list[str], redirect: str
) -> dict[str, Any]:
    flow = _flow(settings, scopes, redirect=redirect, code_verifier=code_verifier)
    with flow.oauth2session:  # a requests.Session: its connection is closed after
        return _fetch_token(flow, code)


def _fetch_token(flow: Flow, code: str) -> dict[str, Any]:
    try:
        token: dict[str, Any] = flow.fetch_token(code=code, timeout=HTTP_TIMEOUT_SECONDS)
    except Warning as changed:
        # oauthlib raises (not warns) when Google grants other scopes than asked: fewer
        # when the user unticked one, more with include_granted_scopes. Both are normal;
        # the granted ones are checked by the caller.
        token = dict(getattr(changed, "token", None) or {})
        if not token:
            raise
    except OAuth2Error as exc:
        if exc.error in ("invalid_client", "unauthorized_client"):
            raise GoogleUnavailable(
                f"Google refused this service's OAuth client ({exc.error}): check "
                "PILOTLIGHT_GOOGLE_CLIENT_ID and PILOTLIGHT_GOOGLE_CLIENT_SECRET"
            ) from None
        raise CodeRejected(
            f"Google refused the authorization code ({exc.error}: {exc.description or ''}); "
            "start again from /api/v1/google/connect"
        ) from None
    except requests.RequestException as exc:
        raise GoogleUnavailable(
            f"Google's token endpoint could not be reached: {type(exc).__name__}"
        ) from None
    return token


def _granted(token: dict[str, Any], asked: list[str]) -> frozenset[str]:
    scope = token.get("scope")
    if scope is None:  # RFC 6749: no scope in the answer means exactly the ones asked for
        return frozenset(asked)
    if isinstance(scope, str):
        return frozenset(scope.split())
    return frozenset(str(item) for item in scope)


def _service(api: str, version: str, endpoint: str, access_token: str,
             connection: httplib2.Http) -> Any:
    return build(
        api, version, http=AuthorizedHttp(Credentials(token=access_token), http=connection),
        static_discovery=True, cache_discovery=False,
        client_options={"api_endpoint": endpoint},
    )


def _gmail_address(settings: Settings, access_token: str) -> str | None:
    """The account's address from `users.getProfile`; None when it has no Gmail."""
    connection = httplib2.Http(timeout=HTTP_TIMEOUT_SECONDS)
    gmail = _service("gmail", "v1", google_endpoints(settings).gmail_api, access_token,
                     connection)
    profile = _asked_for_address("Gmail", gmail.users().getProfile(userId="me"), connection,
                                 absent=no_mailbox)
    return None if profile is None else str(profile["emailAddress"])


def _drive_address(settings: Settings, access_token: str) -> str | None:
    """The account's address from Drive's `about.get` (the authenticated user's
    `emailAddress`), for an account Gmail gives none for; None if Drive leaves it out.

    `fields` is required by about.get (a call without it is a 400)."""
    connection = httplib2.Http(timeout=HTTP_TIMEOUT_SECONDS)
    drive = _service("drive", "v3", google_endpoints(settings).drive_api, access_token,
                     connection)
    about = _asked_for_address("Drive", drive.about().get(fields="user(emailAddress)"),
                               connection)
    address = ((about or {}).get("user") or {}).get("emailAddress")
    return str(address) if address else None


def _asked_for_address(
    api: str, request: Any, connection: httplib2.Http,
    *, absent: Callable[[HttpError], bool] | None = None,
) -> dict[str, Any] | None:
    """The answer to `request` (on `connection`, closed after it); None for an error
    `absent` says means the API has nothing for this account. Any other failure is
    GoogleUnavailable, naming `api`."""
    try:
        answer: dict[str, Any] = request.execute(num_retries=2)
    except HttpError as exc:
        if absent is not None and absent(exc):
            return None
        raise GoogleUnavailable(
            f"{api} did not tell the account's address (HTTP {exc.status_code})"
        ) from None
    except (httplib2.HttpLib2Error, OSError) as exc:
        raise GoogleUnavailable(
            f"{api} could not be reached for the account's address: {type(exc).__name__}"
        ) from None
    finally:
        connection.close()
    return answer


async def complete_consent(
    settings: Settings, *, code: str, code_verifier: str, scopes: list[str], redirect: str
) -> Grant:
    """Exchange the code (with the PKCE verifier, and the redirect URI the consent was
    asked with) for tokens, and read the account's address: from Gmail's
    `users.getProfile` when gmail.readonly is granted (a Google account without Gmail has
    none to give: `mailbox=False`), else from Drive's `about.get` when drive.readonly is."""
    token = await asyncio.to_thread(
        _exchange, settings, code=code, code_verifier=code_verifier, scopes=scopes,
        redirect=redirect,
    )
    access_token = token.get("access_token")
    if not access_token:
        raise GoogleUnavailable("Google's token endpoint answered without an access token")
    granted = _granted(token, scopes)
    email = None
    mailbox = True
    if GMAIL_READONLY in granted:
        email = await asyncio.to_thread(_gmail_address, settings, str(access_token))
        mailbox = email is not None
    if email is None and DRIVE_READONLY in granted:
        # Without it a reconnection with another Google account would go unnoticed, and
        # what was seen in the old account's Drive would be taken for this one's.
        email = await asyncio.to_thread(_drive_address, settings, str(access_token))
    return Grant(
        access_token=str(access_token), refresh_token=token.get("refresh_token"),
        scopes=granted, email=email, mailbox=mailbox,
    )


async def revoke(settings: Settings, token: str) -> bool:
    """Revoke a grant at Google (best effort): True when Google confirmed it."""
    endpoints = google_endpoints(settings)
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as client:
            response = await client.post(endpoints.revoke_uri, data={"token": token})
    except httpx.HTTPError as exc:
        log.warning("revoking a Google grant failed: %s", type(exc).__name__)
        return False
    if response.status_code != 200:
        # 400 invalid_token: already revoked or expired; either way we forget it.
        log.warning("Google answered %d to a revocation", response.status_code)
        return False
    return True
