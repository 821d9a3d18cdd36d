"""The email channel: the notification rendered, sent to the user's own address.

Sent through SMTP (`aiosmtplib`). `transport_for` is the seam for Gmail
send-to-self: once a user's Google account has `gmail.send`, it returns a
Gmail transport for that user, and SMTP stays the fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from app.core.config import Settings
from app.delivery.base import SENT, Job, Result, failed, retry
from app.delivery.render import build_message
from app.users.models import User

NOT_CONFIGURED = (
    "SMTP is not configured: set PILOTLIGHT_SMTP_HOST (and the other PILOTLIGHT_SMTP_ "
    "settings) to receive email"
)


class EmailTransport(Protocol):
    async def send(self, message: EmailMessage, *, to: str) -> Result: ...


class SmtpTransport:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage, *, to: str) -> Result:
        s = self.settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        try:
            async with asyncio.timeout(s.delivery_timeout_seconds):
                await aiosmtplib.send(
                    message, recipients=[to], hostname=s.smtp_host, port=s.smtp_port,
                    username=s.smtp_username or None,
                    password=password if s.smtp_username else None,
                    use_tls=s.smtp_tls == "tls", start_tls=s.smtp_tls == "starttls",
                    timeout=s.delivery_timeout_seconds,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            reason = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)
            if all(400 <= code < 500 for code in codes):
                return retry(f"the SMTP server deferred the recipient: {reason}")
            return failed(f"the SMTP server refused the recipient {to}: {reason}")
        except aiosmtplib.SMTPAuthenticationError as exc:
            return failed(f"the SMTP server refused the login: {exc.code} {exc.message}")
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                return retry(f"the SMTP server answered {exc.code} {exc.message}")
            return failed(f"the SMTP server refused the message: {exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return retry(f"SMTP to {s.smtp_host}:{s.smtp_port} failed: "
                         f"{type(exc).__name__}: {exc}")
        return SENT


def smtp_if_configured(settings: Settings) -> Callable[[User], EmailTransport | None]:
    transport = SmtpTransport(settings) if settings.smtp_host else None
    return lambda _user: transport


class EmailChannel:
    def __init__(
        self, settings: Settings,
        transport_for: Callable[[User], EmailTransport | None] | None = None,
    ) -> None:
        self.settings = settings
        self.transport_for = transport_for or smtp_if_configured(settings)

    async def send(self, job: Job) -> Result:
        transport = self.transport_for(job.user)
        if transport is None:
            return failed(NOT_CONFIGURED)
        message = build_message(
            job.notification, to=job.user.email, from_address=self.settings.smtp_from,
            idempotency_key=job.delivery.idempotency_key,
        )
        return await transport.send(message, to=job.user.email)

    async def aclose(self) -> None:
        return None
