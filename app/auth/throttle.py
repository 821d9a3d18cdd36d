"""A limit on failed sign-ins per client address, kept in the database so that every api
process counts the same failures.

Each failed sign-in (a login link that is unknown, used or expired; a Google sign-in
callback refused for its state, code, `id_token` or address) is a row with the client's
address and the database's time. When an address has `PILOTLIGHT_WEB_SIGN_IN_MAX_FAILURES`
failures within the last `PILOTLIGHT_WEB_SIGN_IN_FAILURE_WINDOW_SECONDS`, its sign-ins are
refused with 429 and `Retry-After` (until its oldest failure in the window leaves it),
without looking at the token: a right token guessed meanwhile would not help. Successful
sign-ins add nothing and are not otherwise slowed. A refused attempt adds no row, so an
address holds at most that many rows; the sign-in purge deletes them a day later.

The address is the one the HTTP server reports: uvicorn takes it from `X-Forwarded-For`
only when the connection comes from a proxy of `Settings.trusted_proxies`
(PILOTLIGHT_FORWARDED_ALLOW_IPS; by default 127.0.0.1 and ::1 when PUBLIC_URL is set and
not loopback, else nobody), so behind a proxy on another address set that, or every
visitor shares the proxy's count. An IPv6 address counts as its /64, which one client
usually holds whole.
Two failures at the same instant may both pass the count: the limit can be passed by the
number of requests in flight at once, which is no help to a guesser.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from datetime import timedelta

from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import SignInFailure
from app.core.config import Settings
from app.core.db import db_now
from app.core.errors import DomainError

log = logging.getLogger(__name__)


class TooManySignInFailures(DomainError):
    """Too many failed sign-ins from this address lately."""

    status_code = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def client_key(request: Request) -> str:
    """Whose failures these are: the client's address, an IPv6 one as its /64."""
    host = request.client.host if request.client is not None else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (host or "unknown")[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


async def check(session: AsyncSession, settings: Settings, client: str) -> None:
    """Raise TooManySignInFailures when `client` may not try to sign in now."""
    window = settings.web_sign_in_failure_window_seconds
    now = await db_now(session)
    count, oldest = (await session.execute(
        select(func.count(), func.min(SignInFailure.created_at))
        .where(SignInFailure.client == client,
               SignInFailure.created_at > now - timedelta(seconds=window))
    )).one()
    if count < settings.web_sign_in_max_failures:
        return
    retry_after = max(1, math.ceil((oldest + timedelta(seconds=window) - now).total_seconds()))
    minutes = math.ceil(retry_after / 60)
    log.warning("sign-in refused for %s: %d failures in the last %d s", client, count, window)
    raise TooManySignInFailures(
        f"too many failed sign-ins from your address ({count} in the last {window // 60} "
        f"minutes): try again in {minutes} minute{'s' if minutes != 1 else ''}",
        retry_after=retry_after,
    )


async def failed(session: AsyncSession, client: str, *, method: str, reason: str) -> None:
    """Record a failed sign-in in the caller's transaction (and log the address and why,
    never the token)."""
    session.add(SignInFailure(client=client, method=method, created_at=await db_now(session)))
    await session.flush()
    log.warning("failed sign-in (%s) from %s: %s", method, client, reason)
