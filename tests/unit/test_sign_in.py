"""What a request is signed in with is kept for the event stream, never shown."""

from __future__ import annotations

from app.users.deps import SignIn
from app.users.models import User


def test_the_credential_is_not_in_the_repr() -> None:
    user = User(email="me@example.com", name="Me", timezone="UTC")
    for token, cookie in (("plt_secret-token", None), (None, "secret-cookie")):
        shown = repr(SignIn(user=user, token=token, cookie=cookie, expires_at=None))
        assert "secret" not in shown
        assert "SignIn(" in shown
