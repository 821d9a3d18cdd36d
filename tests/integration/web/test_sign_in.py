"""Signing in to the dashboard: the local user on loopback, one-time links, the cookie."""

from __future__ import annotations

import logging
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from app.auth.models import SignInFailure, WebSession
from app.core.db import transaction, utcnow
from app.core.runtime import Runtime
from app.users import service as users
from tests import factories
from tests.integration.processes import command, pilotlight_env
from tests.integration.web.helpers import (
    BASE,
    browser,
    csrf_of,
    login_link,
    open_link,
    sign_in,
)


async def _local_user(runtime: Runtime) -> None:
    async with transaction(runtime.sessionmaker) as session:
        await users.create_user(session=session, email=runtime.settings.local_user_email)


async def test_embedded_mode_signs_the_local_user_in_on_loopback(runtime: Runtime) -> None:
    await _local_user(runtime)
    async with browser(runtime, embedded=True) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert "Instructions" in page.text
        cookie = page.headers["set-cookie"]
        assert "pilotlight_session=" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
        assert "Secure" not in cookie  # plain http on loopback
        # The same session afterwards: no second cookie.
        again = await client.get("/settings")
        assert again.status_code == 200
        assert "set-cookie" not in again.headers


async def test_no_automatic_sign_in_outside_the_embedded_loopback_case(runtime: Runtime) -> None:
    await _local_user(runtime)
    cases = [
        {"embedded": False},
        {"embedded": True, "client": ("192.0.2.10", 40000)},
        {"embedded": True, "base_url": "http://rebound.example:8000"},  # DNS rebinding
    ]
    for case in cases:
        async with browser(runtime, **case) as client:  # type: ignore[arg-type]
            page = await client.get("/runs")
            assert page.status_code == 303, case
            assert page.headers["location"] == "/login?next=/runs"
            assert "set-cookie" not in page.headers
    async with browser(runtime, embedded=True) as client:
        proxied = await client.get("/", headers={"X-Forwarded-For": "198.51.100.7"})
        assert proxied.status_code == 303
    runtime.settings.public_url = "https://pilot.example.com"
    async with browser(runtime, embedded=True) as client:
        assert (await client.get("/")).status_code == 303


async def test_a_login_link_asks_first_then_works_once(runtime: Runtime) -> None:
    user, _headers = await factories.user_with_token(runtime)
    url = await login_link(runtime, user)
    path = url.removeprefix(runtime.settings.effective_public_url)
    assert path.startswith("/login/link?token=")
    async with browser(runtime) as client:
        # Opening the link (a person, or a mail scanner) signs nobody in and uses nothing.
        for _ in range(2):
            asked = await client.get(path)
            assert asked.status_code == 200
            assert f"Sign in as {user.email}" in asked.text
            assert "set-cookie" not in asked.headers
            assert asked.headers["cache-control"] == "no-store"
        assert (await client.get("/")).status_code == 303
        first = await open_link(client, path)
        assert first.status_code == 303
        assert first.headers["location"] == "/"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
        assert (await client.get("/")).status_code == 200
    async with browser(runtime) as other:
        for second in (await other.get(path), await open_link(other, path)):
            assert second.status_code == 401
            assert "already used or expired" in second.text
            assert "set-cookie" not in second.headers
        assert (await other.get("/")).status_code == 303


async def test_a_login_link_pressed_from_another_site_signs_nobody_in(
    runtime: Runtime
) -> None:
    """Login CSRF: someone's own link, submitted by their page in another's browser."""
    someone, _headers = await factories.user_with_token(runtime, "mallory@example.com")
    victim, _headers = await factories.user_with_token(runtime, "ada@example.com")
    url = await login_link(runtime, someone)
    token = url.split("token=", 1)[1]
    async with browser(runtime) as client:
        await sign_in(runtime, client, victim)
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                        {"Origin": "https://evil.example"}):
            refused = await client.post("/login/link", data={"token": token}, headers=headers)
            assert refused.status_code == 403, headers
            assert "another site" in refused.text
            assert "set-cookie" not in refused.headers
        # Still the victim's own session; the link was not used up.
        assert "ada@example.com" in (await client.get("/settings")).text
        # Opening it asks first, and says whose session it would replace.
        asked = await client.get(url.removeprefix(runtime.settings.effective_public_url))
        assert "Sign in as mallory@example.com" in asked.text
        assert "signed in as ada@example.com" in asked.text
    async with browser(runtime) as own:
        # Its owner's browser, posting from the site's own page (or without a browser's
        # headers at all, as a script would), uses it.
        used = await own.post("/login/link", data={"token": token},
                              headers={"Origin": BASE})
        assert used.status_code == 303


@pytest.mark.parametrize("public_url",
                         ["https://Pilot.Example.com", "https://pilot.example.com:443/"])
async def test_a_login_link_posted_from_the_public_url_in_another_spelling_works(
    runtime: Runtime, public_url: str,
) -> None:
    """A browser without Sec-Fetch-Site sends its Origin in lower case, without the
    default port: PUBLIC_URL written with capitals or ":443" is the same site, and a
    look-alike host or another port is not. (The app sees the proxy's own address.)"""
    runtime.settings.public_url = public_url
    user, _headers = await factories.user_with_token(runtime)
    async with browser(runtime, base_url="http://127.0.0.1:8000") as client:
        for origin in ("https://pilot.example.com.evil.example", "https://pilot.example.com:8443",
                       "http://pilot.example.com"):
            token = (await login_link(runtime, user)).split("token=", 1)[1]
            refused = await client.post("/login/link", data={"token": token},
                                        headers={"Origin": origin})
            assert refused.status_code == 403, origin
        token = (await login_link(runtime, user)).split("token=", 1)[1]
        used = await client.post("/login/link", data={"token": token},
                                 headers={"Origin": "https://pilot.example.com"})
        assert used.status_code == 303, used.text


async def test_an_expired_or_unknown_login_link_signs_nobody_in(runtime: Runtime) -> None:
    user, _headers = await factories.user_with_token(runtime)
    expired = await login_link(runtime, user, ttl_seconds=-1)
    async with browser(runtime) as client:
        path = expired.removeprefix(runtime.settings.effective_public_url)
        assert (await client.get(path)).status_code == 401
        assert (await open_link(client, path)).status_code == 401
        assert (await client.get("/login/link?token=not-a-token")).status_code == 401
        refused = await client.post("/login/link", data={"token": "not-a-token"})
        assert (refused.status_code, refused.headers["location"]) == (303, "/login")
        said = await client.get("/login")
        assert said.status_code == 401
        assert "already used or expired" in said.text
        assert (await client.get("/")).status_code == 303


async def test_a_refused_login_link_leads_to_a_page_whose_reload_posts_nothing(
    runtime: Runtime,
) -> None:
    """The button of a used link answered its POST with the login page itself: a reload
    posted the link again (the browser asks to resend the form), each time one more failed
    sign-in against the limit. It leads to the login page, which says why once."""
    user, _headers = await factories.user_with_token(runtime)
    used = await login_link(runtime, user)
    token = used.split("token=", 1)[1]
    async with browser(runtime) as first:
        assert (await open_link(first, used)).status_code == 303
    async with browser(runtime) as client:
        refused = await client.post("/login/link", data={"token": token},
                                    headers={"Sec-Fetch-Site": "same-origin"})
        assert refused.status_code == 303
        assert refused.headers["location"] == "/login"
        assert "set-cookie" in refused.headers
        assert token not in refused.headers["set-cookie"]
        said = await client.get("/login")
        assert said.status_code == 401
        assert "already used or expired" in said.text
        for _ in range(2):  # the page reloaded, or opened again later: nothing to say
            again = await client.get("/login")
            assert again.status_code == 200
            assert "already used or expired" not in again.text
    async with transaction(runtime.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(SignInFailure)) == 1


@pytest.mark.parametrize(
    ("public_url", "name", "other_name"),
    [
        # Plain http (a laptop): the plain name, not Secure (some browsers drop that here).
        ("", "pilotlight_session", "__Host-pilotlight_session"),
        # https: a cookie only this host, over https, can set; a sibling subdomain can set
        # a plain `pilotlight_session` (cookie tossing), so that one is no session.
        ("https://pilot.example.com", "__Host-pilotlight_session", "pilotlight_session"),
        # A URL's scheme is case-insensitive: this is https too.
        ("HTTPS://pilot.example.com", "__Host-pilotlight_session", "pilotlight_session"),
    ],
)
async def test_the_session_cookie_is_host_only_and_secure_when_the_public_url_is_https(
    runtime: Runtime, public_url: str, name: str, other_name: str
) -> None:
    runtime.settings.public_url = public_url
    base_url = runtime.settings.effective_public_url
    secure = name.startswith("__Host-")
    user, _headers = await factories.user_with_token(runtime)
    instruction = await factories.instruction(runtime, user)
    url = await login_link(runtime, user)
    async with browser(runtime, base_url=base_url) as client:
        response = await open_link(client, url)
        assert response.status_code == 303
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith(f"{name}="), set_cookie
        for attribute in ("Path=/;", "HttpOnly", "SameSite=lax"):
            assert attribute in set_cookie, set_cookie
        assert ("; Secure" in set_cookie) is secure, set_cookie
        assert "Domain" not in set_cookie
        token = client.cookies[name]
        # Signed in, on the pages and the API (with the session's CSRF token to change things).
        csrf = await csrf_of(client)
        assert (await client.get("/api/v1/me")).json()["email"] == user.email
        pause = f"/api/v1/instructions/{instruction.id}/pause"
        assert (await client.post(pause)).status_code == 403
        assert (await client.post(pause, headers={"X-CSRF-Token": csrf})).status_code == 200

        # The same live session's token under the other name signs nobody in.
        async with browser(runtime, base_url=base_url) as planted:
            planted.cookies.set(other_name, token)
            assert (await planted.get("/")).status_code == 303
            assert (await planted.get("/api/v1/me")).status_code == 401

        # Signing out expires the cookie that was set (its name, path and Secure).
        out = await client.post("/logout", data={"csrf_token": csrf})
        assert out.status_code == 303
        expired = out.headers["set-cookie"]
        assert expired.startswith(f"{name}="), expired
        for attribute in ("Max-Age=0", "Path=/;"):
            assert attribute in expired, expired
        assert ("; Secure" in expired) is secure, expired
        assert name not in client.cookies
        assert (await client.get("/")).status_code == 303


async def test_the_login_page_links_only_to_paths_on_this_site(runtime: Runtime) -> None:
    """Browsers drop tabs and line breaks from URLs and read a backslash as a slash:
    "/<tab>/evil.example" would be "//evil.example", another site."""
    await _local_user(runtime)
    async with browser(runtime, embedded=True) as client:
        for unsafe in ("/\t/evil.example", "/\n/evil.example", "/\\evil.example",
                       "/a\\..\\\\evil.example", "//evil.example", "https://evil.example",
                       "/ /evil.example", "/\u2028/evil.example"):
            page = await client.get("/login", params={"next": unsafe})
            assert page.status_code == 200
            assert 'href="/"' in page.text, unsafe
            assert "evil.example" not in page.text, unsafe
        page = await client.get("/login", params={"next": "/runs?status=failed"})
        assert 'href="/runs?status=failed"' in page.text


async def test_signing_out_ends_the_session(runtime: Runtime) -> None:
    user, _headers = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        csrf = await sign_in(runtime, client, user)
        cookie = client.cookies.get("pilotlight_session")
        out = await client.post("/logout", data={"csrf_token": csrf})
        assert out.status_code == 303
        # The old cookie no longer works, even if the browser kept it.
        client.cookies.set("pilotlight_session", cookie or "")
        assert (await client.get("/")).status_code == 303


async def test_the_database_holds_no_sessions_csrf_token(runtime: Runtime) -> None:
    """A copy of the database (a backup) gives no CSRF token to forge the dashboard's
    forms with: nothing of a session's row is its token, and the token still works."""
    user, _headers = await factories.user_with_token(runtime)
    async with browser(runtime) as first, browser(runtime) as second:
        csrf = await sign_in(runtime, first, user)
        other = await sign_in(runtime, second, user)
        assert csrf != other  # each session its own
        async with runtime.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM web_sessions"))).mappings().all()
        assert len(rows) == 2
        stored = " ".join(str(value) for row in rows for value in row.values())
        for token in (csrf, other):
            assert token not in stored
        # The session's token, not the other's, and none of what its row holds.
        for forged in (other, *(str(value) for row in rows for value in row.values())):
            refused = await first.post("/feed/read", data={"csrf_token": forged})
            assert refused.status_code == 403, forged
        assert (await first.post("/feed/read", data={"csrf_token": csrf})).status_code == 303


async def test_logout_opened_as_a_page_asks_and_signs_out_only_with_its_button(
    runtime: Runtime,
) -> None:
    user, _headers = await factories.user_with_token(runtime, "ada@example.com")
    async with browser(runtime) as nobody:
        away = await nobody.get("/logout")
        assert (away.status_code, away.headers["location"]) == (303, "/login")
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        asked = await client.get("/logout")
        assert asked.status_code == 200
        assert "signed in as ada@example.com" in asked.text
        assert (await client.get("/settings")).status_code == 200  # a GET signed nobody out
        csrf = re.search(r'<main.*name="csrf_token" value="([^"]+)"', asked.text, re.S)
        assert csrf
        out = await client.post("/logout", data={"csrf_token": csrf[1]})
        assert out.status_code == 303
        assert (await client.get("/settings")).status_code == 303


async def test_pages_carry_a_strict_content_security_policy(runtime: Runtime) -> None:
    user, _headers = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        page = await client.get("/")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert await csrf_of(client)


async def test_the_login_link_command_prints_a_working_single_use_link(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    user, _headers = await factories.user_with_token(runtime, "ada@example.com")
    env = {**pilotlight_env(data_dir=tmp_path / "data", database_url=database_url),
           "PILOTLIGHT_PUBLIC_URL": "https://pilot.example.com"}
    printed = subprocess.run(command("login-link", "Ada@Example.com"), env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip()
    assert url.startswith("https://pilot.example.com/login/link?token=")
    assert "one use" in printed.stderr
    site = "https://pilot.example.com"
    async with browser(runtime, base_url=site) as client:
        assert (await open_link(client, url)).status_code == 303
        assert (await client.get("/")).status_code == 200
    async with browser(runtime, base_url=site) as again:
        assert (await open_link(again, url)).status_code == 401
    nobody = subprocess.run(command("login-link", "nobody@example.com"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 2
    assert "pilotlight user create" in nobody.stderr
    assert user.email == "ada@example.com"

    # Without a public URL the link leads where the api listens: `serve --port 8123`
    # took it from the option, and login-link had no way to (it led to port 8000).
    env.pop("PILOTLIGHT_PUBLIC_URL")
    local = subprocess.run(command("login-link", "ada@example.com", "--port", "8123"), env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert local.returncode == 0, local.stderr
    assert local.stdout.startswith("http://127.0.0.1:8123/login/link?token="), local.stdout


def _guess(n: int) -> str:
    return f"guess-{n:040d}"


async def _age_failures(runtime: Runtime, seconds: int) -> None:
    """Move every recorded failure `seconds` into the past (the window passes)."""
    async with transaction(runtime.sessionmaker) as session:
        for failure in (await session.execute(select(SignInFailure))).scalars():
            failure.created_at -= timedelta(seconds=seconds)


async def test_failed_sign_ins_from_one_address_are_limited_with_429_and_retry_after(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """20 wrong links (opened or posted) within 10 minutes, and that address is refused
    with 429, even with a right link (which stays unused), until the window passes; other
    addresses sign in as usual. The log names the address, never a token."""
    caplog.set_level(logging.WARNING, logger="app.auth.throttle")
    user, _headers = await factories.user_with_token(runtime)
    guesser = ("203.0.113.7", 40000)
    async with browser(runtime, client=guesser) as client:
        for n in range(20):
            if n % 2:  # the button leads to the login page, which says why
                posted = await client.post("/login/link", data={"token": _guess(n)},
                                           headers={"Sec-Fetch-Site": "same-origin"})
                assert (posted.status_code, posted.headers["location"]) == (303, "/login")
                wrong = await client.get("/login")
            else:
                wrong = await client.get("/login/link", params={"token": _guess(n)})
            assert wrong.status_code == 401, (n, wrong.text)

        posted = await client.post("/login/link", data={"token": _guess(99)},
                                   headers={"Sec-Fetch-Site": "same-origin"})
        assert (posted.status_code, posted.headers["location"]) == (303, "/login")
        refused = await client.get("/login")
        assert refused.status_code == 429
        assert 590 <= int(refused.headers["retry-after"]) <= 600
        assert "too many failed sign-ins from your address" in refused.text
        assert "try again in 10 minutes" in refused.text
        assert refused.headers["content-security-policy"]

        url = (await login_link(runtime, user)).removeprefix(runtime.settings.effective_public_url)
        assert (await client.get(url)).status_code == 429
        assert (await open_link(client, url)).status_code == 429

    # another address is not slowed down, and the link was not used up by the refusals
    async with browser(runtime, client=("203.0.113.8", 40000)) as other:
        assert (await open_link(other, url)).status_code == 303

    # once the failures are older than the window, the address may try again
    await _age_failures(runtime, 600)
    async with browser(runtime, client=guesser) as client:
        again = await open_link(client, await login_link(runtime, user))
        assert again.status_code == 303

    failures = [r.getMessage() for r in caplog.records if "failed sign-in" in r.getMessage()]
    assert len(failures) == 20
    assert all("203.0.113.7" in line for line in failures)
    logged = caplog.text
    assert "guess-" not in logged
    assert "token=" not in logged


async def test_failures_are_counted_across_api_processes_and_ipv6_by_its_64(
    runtime: Runtime,
) -> None:
    """The count lives in the database: failures sent to two app instances (two api
    processes behind a load balancer) add up. An IPv6 client counts as its /64."""
    limited = runtime.settings.model_copy(update={"web_sign_in_max_failures": 4})
    replicas = [Runtime(limited, runtime.engine, runtime.sessionmaker, runtime.wakeups)
                for _ in range(2)]
    statuses = []
    for n in range(5):
        client = (f"2001:db8:1:2::{n + 1:x}", 40000)
        async with browser(replicas[n % 2], client=client) as c:
            response = await c.get("/login/link", params={"token": _guess(n)})
            statuses.append(response.status_code)
    assert statuses == [401, 401, 401, 401, 429]
    async with browser(replicas[0], client=("2001:db8:1:3::1", 40000)) as c:
        assert (await c.get("/login/link", params={"token": _guess(9)})).status_code == 401


async def test_successful_sign_ins_are_not_limited(runtime: Runtime) -> None:
    user, _headers = await factories.user_with_token(runtime)
    limited = runtime.settings.model_copy(update={"web_sign_in_max_failures": 2})
    strict = Runtime(limited, runtime.engine, runtime.sessionmaker, runtime.wakeups)
    async with browser(strict) as client:
        for _ in range(5):
            signed_in = await open_link(client, await login_link(runtime, user))
            assert signed_in.status_code == 303
        async with transaction(runtime.sessionmaker) as session:
            assert await session.scalar(select(func.count()).select_from(SignInFailure)) == 0


async def _age_session(runtime: Runtime, user_id: object, **ago: timedelta) -> None:
    """Move the user's session in time: each column set that long before now."""
    now = utcnow()
    async with transaction(runtime.sessionmaker) as session:
        await session.execute(
            update(WebSession).where(WebSession.user_id == user_id)
            .values({name: now - delta for name, delta in ago.items()})
        )


async def _session_row(runtime: Runtime, user_id: object) -> WebSession:
    async with transaction(runtime.sessionmaker) as session:
        row = await session.scalar(select(WebSession).where(WebSession.user_id == user_id))
        assert row is not None
        return row


async def test_a_session_ends_at_its_max_age_however_often_it_is_used(runtime: Runtime) -> None:
    max_age = timedelta(seconds=runtime.settings.web_session_max_age_seconds)
    assert max_age == timedelta(days=30)
    user, _headers = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        # Used every day for almost 30 days: the next visit slides it on, only up to the
        # 30 days since it signed in, not another 14 days.
        await _age_session(runtime, user.id, created_at=max_age - timedelta(minutes=30),
                            last_seen_at=timedelta(minutes=10))
        assert (await client.get("/")).status_code == 200
        row = await _session_row(runtime, user.id)
        assert row.expires_at == row.created_at + max_age
        assert row.expires_at - utcnow() < timedelta(minutes=31)

        # Past the 30 days, its expiry 14 days ahead (slid on before the bound existed):
        # refused, and the browser signs in again.
        await _age_session(runtime, user.id, created_at=max_age + timedelta(minutes=1),
                            last_seen_at=timedelta(minutes=1),
                            expires_at=-timedelta(days=14))
        page = await client.get("/")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/"
        assert (await client.get("/api/v1/me")).status_code == 401
        await sign_in(runtime, client, user)
        assert (await client.get("/api/v1/me")).json()["email"] == user.email


async def test_the_max_age_bounds_sessions_that_slid_on_before_it(runtime: Runtime) -> None:
    """A session started before the bound existed, used every few days since, has an
    `expires_at` two weeks ahead: it ends all the same, and when the setting is lowered
    the sessions older than the new bound end too."""
    user, _headers = await factories.user_with_token(runtime)
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        await _age_session(runtime, user.id, created_at=timedelta(days=200),
                            last_seen_at=timedelta(days=2), expires_at=-timedelta(days=12))
        assert (await client.get("/api/v1/me")).status_code == 401
    async with browser(runtime) as client:
        await sign_in(runtime, client, user)
        await _age_session(runtime, user.id, created_at=timedelta(hours=2))
        assert (await client.get("/api/v1/me")).status_code == 200
        runtime.settings.web_session_max_age_seconds = 3600
        assert (await client.get("/api/v1/me")).status_code == 401
        assert (await client.get("/")).status_code == 303
