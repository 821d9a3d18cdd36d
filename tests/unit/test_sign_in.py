"""What a request is signed in with is kept for the event stream, never shown; the cookies
that carry a sign-in, by the public URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.auth import service as auth
from app.core.config import Settings
from app.google import router as google_router
from app.google import sign_in
from app.users.deps import SignIn
from app.users.models import User


def test_the_credential_is_not_in_the_repr() -> None:
    user = User(email="me@example.com", name="Me", timezone="UTC")
    for token, cookie in (("plt_secret-token", None), (None, "secret-cookie")):
        shown = repr(SignIn(user=user, token=token, cookie=cookie, expires_at=None))
        assert "secret" not in shown
        assert "SignIn(" in shown


@pytest.mark.parametrize("public_url", ["https://pilot.example.com",
                                        "HTTPS://pilot.example.com",
                                        "Https://pilot.example.com/"])
def test_every_cookie_is_host_only_and_secure_on_an_https_public_url(
    tmp_path: Path, public_url: str
) -> None:
    """A URL's scheme is case-insensitive (RFC 3986): the session cookie and both Google
    state cookies are `__Host-` and Secure however the operator wrote https."""
    settings = Settings(data_dir=tmp_path, database_url="", public_url=public_url)
    assert auth.session_cookie(settings) == ("__Host-pilotlight_session", True)
    assert sign_in.state_cookie(settings) == ("__Host-pilotlight_google_login", "/", True)
    assert google_router.state_cookie(settings) == ("__Host-pilotlight_google_state", "/",
                                                    True)


@pytest.mark.parametrize("public_url", ["", "http://pilot.example.com",
                                        "HTTP://pilot.example.com"])
def test_every_cookie_is_plain_on_an_http_public_url(tmp_path: Path, public_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url="", public_url=public_url)
    assert auth.session_cookie(settings) == ("pilotlight_session", False)
    assert sign_in.state_cookie(settings) == ("pilotlight_google_login",
                                              "/login/google/callback", False)
    assert google_router.state_cookie(settings) == ("pilotlight_google_state",
                                                    "/oauth/google/callback", False)
