"""Expired, revoked and used sign-in rows, and failed sign-ins, are deleted a day later;
live ones stay."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.auth import housekeeping
from app.auth.housekeeping import ExpiredSignInPurger
from app.auth.models import LoginLink, SignInFailure, WebSession
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.google.models import OAuthState
from tests import factories


async def test_rows_that_stopped_working_over_a_day_ago_are_deleted(
    runtime: Runtime, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    user, _ = await factories.user_with_token(runtime)
    now = utcnow()
    long_ago, lately = now - timedelta(days=2), now - timedelta(hours=1)
    later = now + timedelta(days=7)
    sessions = {
        "expired long ago": dict(expires_at=long_ago),
        "revoked long ago": dict(expires_at=later, revoked_at=long_ago),
        "expired lately": dict(expires_at=lately),
        "live": dict(expires_at=later),
    }
    links = {
        "expired long ago": dict(expires_at=long_ago),
        "used long ago": dict(expires_at=later, used_at=long_ago),
        "used lately": dict(expires_at=later, used_at=lately),
        "live": dict(expires_at=later),
    }
    states = {
        "expired long ago": dict(expires_at=long_ago),
        "used long ago": dict(expires_at=later, used_at=long_ago),
        "live": dict(expires_at=later),
    }
    async with transaction(runtime.sessionmaker) as session:
        for name, values in sessions.items():
            session.add(WebSession(user_id=user.id, token_hash=f"s {name}", method="link",
                                   **values))
        for name, values in links.items():
            session.add(LoginLink(user_id=user.id, token_hash=f"l {name}", **values))
        for name, values in states.items():
            session.add(OAuthState(user_id=user.id, state_hash=f"o {name}",
                                   code_verifier_encrypted=b"x", redirect_uri="http://127.0.0.1/cb",
                                   **values))
    failures = {"failed long ago": long_ago, "failed lately": lately}
    async with transaction(runtime.sessionmaker) as session:
        for name, at in failures.items():
            session.add(SignInFailure(client=name, method="link", created_at=at))
    monkeypatch.setattr(housekeeping, "BATCH", 1)  # several batches per table
    purger = ExpiredSignInPurger(sessionmaker=runtime.sessionmaker)

    assert await purger.run_once() == 7
    assert await purger.run_once() == 0
    async with transaction(runtime.sessionmaker) as session:
        left = {
            WebSession: set((await session.scalars(select(WebSession.token_hash))).all()),
            LoginLink: set((await session.scalars(select(LoginLink.token_hash))).all()),
            OAuthState: set((await session.scalars(select(OAuthState.state_hash))).all()),
            SignInFailure: set((await session.scalars(select(SignInFailure.client))).all()),
        }
    assert left == {
        WebSession: {"s expired lately", "s live"},
        LoginLink: {"l used lately", "l live"},
        OAuthState: {"o live"},
        SignInFailure: {"failed lately"},
    }
