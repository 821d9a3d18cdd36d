"""Signing in to the dashboard: the local user on loopback, one-time links, the cookie."""

from __future__ import annotations

import subprocess
from pathlib import Path

from app.core.db import transaction
from app.core.runtime import Runtime
from app.users import service as users
from tests import factories
from tests.integration.processes import command, pilotlight_env
from tests.integration.web.helpers import browser, csrf_of, login_link, sign_in


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


async def test_a_login_link_works_once(runtime: Runtime) -> None:
    user, _headers = await factories.user_with_token(runtime)
    url = await login_link(runtime, user)
    path = url.removeprefix(runtime.settings.effective_public_url)
    assert path.startswith("/login/link?token=")
    async with browser(runtime) as client:
        first = await client.get(path)
        assert first.status_code == 303
        assert first.headers["location"] == "/"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
        assert (await client.get("/")).status_code == 200
    async with browser(runtime) as other:
        second = await other.get(path)
        assert second.status_code == 401
        assert "already used or expired" in second.text
        assert "set-cookie" not in second.headers
        assert (await other.get("/")).status_code == 303


async def test_an_expired_or_unknown_login_link_signs_nobody_in(runtime: Runtime) -> None:
    user, _headers = await factories.user_with_token(runtime)
    expired = await login_link(runtime, user, ttl_seconds=-1)
    async with browser(runtime) as client:
        response = await client.get(expired.removeprefix(runtime.settings.effective_public_url))
        assert response.status_code == 401
        assert (await client.get("/login/link?token=not-a-token")).status_code == 401
        assert (await client.get("/")).status_code == 303


async def test_the_cookie_is_secure_when_the_public_url_is_https(runtime: Runtime) -> None:
    runtime.settings.public_url = "https://pilot.example.com"
    user, _headers = await factories.user_with_token(runtime)
    url = await login_link(runtime, user)
    assert url.startswith("https://pilot.example.com/login/link?token=")
    async with browser(runtime, base_url="https://pilot.example.com") as client:
        response = await client.get(url)
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]


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
        assert (await client.get(url)).status_code == 303
        assert (await client.get("/")).status_code == 200
    async with browser(runtime, base_url=site) as again:
        assert (await again.get(url)).status_code == 401
    nobody = subprocess.run(command("login-link", "nobody@example.com"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 2
    assert "pilotlight user create" in nobody.stderr
    assert user.email == "ada@example.com"
