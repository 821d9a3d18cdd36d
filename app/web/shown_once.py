"""A secret the settings page shows once (a new API token, a webhook's signing secret),
carried from the form's POST to the page it redirects to.

POST/redirect/GET: a reload of the page that shows it posts nothing again, so it creates
no second token or webhook and does not replace the secret just copied. The secret rides
in a cookie sealed by the secret box (`app.core.crypto`, the keys of
`PILOTLIGHT_SECRET_KEYS`): nothing of it is stored on the server, and the cookie holds it
encrypted. The cookie is HttpOnly, SameSite=Strict, on /settings (`__Host-` at / on
https, as `Settings.cookie` names it), lives `SHOWN_ONCE_SECONDS`, and is bound to the
browser session that made it. The settings page opens it once and deletes it in the same
answer, sent `no-store`: a reload shows the secret no more. A cookie that does not open
(forged, or sealed with a key no longer configured), has expired or is another session's
shows nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from app.core.config import Settings
from app.core.crypto import SecretKeyError, secret_box
from app.web.deps import Viewer
from app.web.render import redirect

COOKIE = "pilotlight_shown_once"
PATH = "/settings"
# Long enough for the redirect to be followed, short enough that a cookie left behind
# (the page never loaded) soon holds nothing.
SHOWN_ONCE_SECONDS = 120

Kind = Literal["token", "webhook"]
KINDS: tuple[Kind, ...] = ("token", "webhook")


@dataclass(frozen=True)
class ShownOnce:
    """The secret of the token or webhook `id`, to show once."""

    kind: Kind
    id: uuid.UUID
    secret: str = field(repr=False)  # out of logs and tracebacks


def cookie(settings: Settings) -> tuple[str, str, bool]:
    """The cookie's name, path and Secure flag for this public URL."""
    return settings.cookie(COOKIE, PATH)


def require_keys(settings: Settings) -> None:
    """Raise SecretKeyError when no key can seal the cookie: check before creating a
    secret that could then not be shown."""
    secret_box(settings)


def redirect_showing(
    request: Request, viewer: Viewer, url: str, shown: ShownOnce, settings: Settings
) -> RedirectResponse:
    """303 to `url` (the settings page), with `shown` sealed in the cookie."""
    sealed = secret_box(settings).encrypt(json.dumps({
        "kind": shown.kind, "id": str(shown.id), "secret": shown.secret,
        "session": str(viewer.web_session.id), "exp": time.time() + SHOWN_ONCE_SECONDS,
    }).encode()).decode()
    response = redirect(request, url, viewer)
    name, path, secure = cookie(settings)
    response.set_cookie(name, sealed, max_age=SHOWN_ONCE_SECONDS, path=path, httponly=True,
                        samesite="strict", secure=secure)
    response.headers["Cache-Control"] = "no-store"
    return response


def take(request: Request, viewer: Viewer, settings: Settings) -> tuple[bool, ShownOnce | None]:
    """Whether the request holds the cookie (the answer must then delete it), and what it
    shows: None when it does not open, has expired, is another session's or is not ours."""
    value = request.cookies.get(cookie(settings)[0])
    if value is None:
        return False, None
    try:
        data: Any = json.loads(secret_box(settings).decrypt(value.encode()))
        kind, secret = data["kind"], data["secret"]
        shown = ShownOnce(kind=kind, id=uuid.UUID(data["id"]), secret=secret)
        fresh = float(data["exp"]) > time.time()
        ours = data["session"] == str(viewer.web_session.id)
    except (SecretKeyError, ValueError, TypeError, KeyError, AttributeError):
        return True, None
    if not (fresh and ours and kind in KINDS and isinstance(secret, str)):
        return True, None
    return True, shown


def forget(response: Response, settings: Settings) -> None:
    """Delete the cookie: what it held is shown once."""
    name, path, secure = cookie(settings)
    response.delete_cookie(name, path=path, secure=secure, httponly=True, samesite="strict")
