"""The email channel: the notification rendered, sent to the user's own address.

Through Gmail send-to-self (`app/delivery/gmail.py`) when the user's Google account is
active and granted `gmail.send`, else through SMTP (`aiosmtplib`). A grant Google
refuses marks the account disconnected, and Gmail's "Mail service not enabled" records
it as mailbox-less (which tells the user once); either way that delivery goes through
SMTP if it is configured, else fails saying why, and later ones do not try that Gmail.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import Protocol

import aiosmtplib
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Account
from app.core.config import Settings
from app.core.db import transaction
from app.delivery import gmail
from app.delivery.base import SENT, Deadline, Job, Result, failed, retry
from app.delivery.render import build_message, parse_from
from app.google.accounts import mark_disconnected, mark_no_mailbox
from app.questions import replies
from app.users.models import User

log = logging.getLogger(__name__)

NOT_CONFIGURED = (
    "SMTP is not configured: set PILOTLIGHT_SMTP_HOST (and the other PILOTLIGHT_SMTP_ "
    "settings) to receive email"
)


class EmailTransport(Protocol):
    async def send(self, message: Message, *, to: str, deadline: Deadline) -> Result: ...


# A kept connection idle longer than this is checked (NOOP) before it is used again, and
# one idle longer than SMTP_IDLE_CLOSE_SECONDS is closed (servers drop idle clients after
# a few minutes, RFC 5321 4.5.3.2.7). Servers also limit messages per connection.
SMTP_IDLE_CHECK_SECONDS = 1.0
SMTP_IDLE_CLOSE_SECONDS = 30.0
SMTP_MESSAGES_PER_CONNECTION = 100


@dataclass
class _Kept:
    smtp: aiosmtplib.SMTP
    idle_since: float
    sent: int


class SmtpTransport:
    """Sends through the configured SMTP server, keeping connections open between messages
    (at most `delivery_concurrency` idle ones), so a message costs one MAIL/RCPT/DATA
    exchange rather than a new connection, TLS handshake, EHLO and login."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._idle: list[_Kept] = []
        self._quitting: set[asyncio.Task[None]] = set()

    async def send(self, message: Message, *, to: str, deadline: Deadline) -> Result:
        s = self.settings
        kept: _Kept | None = None
        try:
            async with asyncio.timeout(deadline.remaining()):
                kept = await self._connection()
                # The envelope sender is the From address (what aiosmtplib would parse out).
                await kept.smtp.send_message(message, sender=parse_from(s.smtp_from)[1] or None,
                                             recipients=[to])
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            reason = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)
            if all(400 <= code < 500 for code in codes):
                return self._retry(kept, f"the SMTP server deferred the recipient: {reason}")
            return self._failed(kept, f"the SMTP server refused the recipient {to}: {reason}")
        except aiosmtplib.SMTPAuthenticationError as exc:
            return self._failed(None, f"the SMTP server refused the login: {exc.code} "
                                f"{exc.message}", discard=kept)
        except aiosmtplib.SMTPResponseException as exc:
            # The envelope was reset (RSET) by aiosmtplib; the connection may go on, unless the
            # server is closing it (421).
            discard = kept if exc.code == 421 else None
            if 400 <= exc.code < 500:
                return self._retry(kept, f"the SMTP server answered {exc.code} {exc.message}",
                                   discard=discard)
            return self._failed(kept, f"the SMTP server refused the message: {exc.code} "
                                f"{exc.message}", discard=discard)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return self._retry(None, f"SMTP to {s.smtp_host}:{s.smtp_port} failed: "
                               f"{type(exc).__name__}: {exc}", discard=kept)
        except BaseException:
            self._close(kept)  # cancelled mid-conversation: the connection's state is unknown
            raise
        self._keep(kept)
        return SENT

    def _retry(self, kept: _Kept | None, reason: str, *, discard: _Kept | None = None) -> Result:
        self._close(discard)
        self._keep(kept if discard is None else None)
        return retry(reason)

    def _failed(self, kept: _Kept | None, reason: str, *, discard: _Kept | None = None) -> Result:
        self._close(discard)
        self._keep(kept if discard is None else None)
        return failed(reason)

    async def _connection(self) -> _Kept:
        """An idle kept connection that still answers, or a new one (connected, logged in)."""
        now = time.monotonic()
        while self._idle:
            kept = self._idle.pop()
            if not kept.smtp.is_connected or now - kept.idle_since > SMTP_IDLE_CLOSE_SECONDS:
                self._close(kept)
                continue
            if now - kept.idle_since > SMTP_IDLE_CHECK_SECONDS:
                try:
                    await kept.smtp.noop()
                except (aiosmtplib.SMTPException, OSError):
                    self._close(kept)
                    continue
            return kept
        s = self.settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username or None,
            password=password if s.smtp_username else None, use_tls=s.smtp_tls == "tls",
            start_tls=s.smtp_tls == "starttls", timeout=s.delivery_timeout_seconds,
        )
        kept = _Kept(smtp, now, 0)
        try:
            await smtp.connect()
        except BaseException:
            self._close(kept)
            raise
        return kept

    def _keep(self, kept: _Kept | None) -> None:
        if kept is None:
            return
        kept.sent += 1
        if kept.sent >= SMTP_MESSAGES_PER_CONNECTION or not kept.smtp.is_connected or \
                len(self._idle) >= self.settings.delivery_concurrency:
            self._close(kept, polite=True)
            return
        kept.idle_since = time.monotonic()
        self._idle.append(kept)

    def _close(self, kept: _Kept | None, *, polite: bool = False) -> None:
        if kept is None:
            return
        if polite and kept.smtp.is_connected:
            task = asyncio.get_running_loop().create_task(self._quit(kept.smtp))
            self._quitting.add(task)
            task.add_done_callback(self._quitting.discard)
            return
        kept.smtp.close()

    @staticmethod
    async def _quit(smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(kept.smtp) for kept in idle if kept.smtp.is_connected),
                             *self._quitting, return_exceptions=True)
        for kept in idle:
            kept.smtp.close()


class SmtpIfConfigured:
    """The SMTP transport for every user, or none when SMTP is not configured."""

    def __init__(self, settings: Settings) -> None:
        self.transport = SmtpTransport(settings) if settings.smtp_host else None

    def __call__(self, _user: User) -> EmailTransport | None:
        return self.transport

    async def aclose(self) -> None:
        if self.transport is not None:
            await self.transport.aclose()


class EmailChannel:
    """Email through Gmail send-to-self when the user's Google account allows it, else SMTP.

    With a sessionmaker, the channel looks up the user's Google accounts, marks one
    disconnected when Google refuses its grant, and records a question's email for the
    reply poller (`app/questions/replies.py`); without one (the benchmark) it only
    sends through SMTP.
    """

    def __init__(
        self, settings: Settings,
        transport_for: Callable[[User], EmailTransport | None] | None = None,
        *, sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.settings = settings
        self._smtp: SmtpIfConfigured | None = None
        if transport_for is None:
            self._smtp = transport_for = SmtpIfConfigured(settings)
        self.transport_for: Callable[[User], EmailTransport | None] = transport_for
        self.sessionmaker = sessionmaker

    async def send(self, job: Job, *, deadline: Deadline) -> Result:
        """Every call made here (the database, Gmail, SMTP) shares `deadline`: each gets
        what the ones before it left."""
        data = job.notification.data if isinstance(job.notification.data, dict) else {}
        question_id = data.get("question_id")

        def build(accounts: list[Account]) -> Message:
            return build_message(
                job.notification, to=job.user.email, from_address=self.settings.smtp_from,
                idempotency_key=job.delivery.idempotency_key, timezone=job.user.timezone,
                # A reply is read only from a Gmail the service can read (`_watch_replies`).
                replies_read=self.sessionmaker is not None and any(
                    gmail.can_read(a) for a in accounts),
                answer_at=f"{self.settings.effective_public_url}/questions/{question_id}"
                if isinstance(question_id, str) else None,
            )

        accounts = await self._google_accounts(job)
        message = build(accounts)
        through = gmail.sender_account(accounts)
        not_through_gmail = ""
        if through is not None:
            sending = gmail.GmailTransport(through, self.settings, deadline)
            try:
                result = await sending.send(
                    message, to=through.email,
                    tried_since=job.notification.created_at if job.delivery.attempt > 1
                    else None)
            except gmail.GmailUnavailable as exc:
                not_through_gmail = f"Gmail could not send it ({exc})"
                log.warning("delivery %s: %s; trying SMTP", job.delivery.id, not_through_gmail)
                if isinstance(exc, gmail.GmailDisconnected | gmail.GmailNoMailbox):
                    if isinstance(exc, gmail.GmailDisconnected):
                        await self._disconnect(through, str(exc))
                    else:
                        await self._no_mailbox(through)
                    accounts = [a for a in accounts if a.id != through.id]
                    message = build(accounts)  # its replies may no longer be read
            else:
                if result.status == "sent":
                    # After the send: the history from here on holds the reply, not the
                    # question's email itself (in SENT, where the poller looks). It is
                    # sent: a failure here must not send it again.
                    try:
                        await self._watch_replies(job, message, accounts, through, deadline,
                                                  sending)
                    except Exception:
                        log.exception("delivery %s: sent, but replies to it will not be "
                                      "read", job.delivery.id)
                return result
        transport = self.transport_for(job.user)
        if transport is None:
            return failed(f"{not_through_gmail}, and {NOT_CONFIGURED}" if not_through_gmail
                          else NOT_CONFIGURED)
        # Before the send: the mail reaches the user's Gmail after it.
        await self._watch_replies(job, message, accounts, None, deadline)
        return await transport.send(message, to=job.user.email, deadline=deadline)

    async def _google_accounts(self, job: Job) -> list[Account]:
        if self.sessionmaker is None:
            return []
        async with transaction(self.sessionmaker) as session:
            rows = await session.execute(
                select(Account)
                .where(Account.user_id == job.user.id, Account.kind == "google",
                       Account.status == "active")
                .order_by(Account.created_at, Account.id)
            )
            return list(rows.scalars())

    async def _watch_replies(
        self, job: Job, message: Message, accounts: list[Account],
        through: Account | None, deadline: Deadline,
        sent: gmail.GmailTransport | None = None,
    ) -> None:
        """A question's email: remember its Message-ID, the account whose Gmail will hold
        the reply, and that Gmail's historyId now (the reply comes after it). Sent through
        Gmail (`sent`), the Message-ID is the one Gmail kept on the message, which the
        user's reply names, should it not be the one the message was given."""
        data = job.notification.data if isinstance(job.notification.data, dict) else {}
        question_id = data.get("question_id")
        if self.sessionmaker is None or not isinstance(question_id, str):
            return
        reader = gmail.reply_account(
            accounts, sent_through=through, to=through.email if through else job.user.email)
        if reader is None:
            return  # no Gmail to read the reply from: answer in the app, by push, or the API
        message_id = str(message["Message-ID"])
        if sent is not None:
            message_id = await sent.kept_message_id() or message_id
        history_id = await gmail.GmailTransport(reader, self.settings, deadline).history_id()
        async with transaction(self.sessionmaker) as session:
            await replies.watch(
                session=session, user_id=job.user.id, question_id=uuid.UUID(question_id),
                delivery_id=job.delivery.id, account_id=reader.id,
                message_id=message_id, history_id=history_id,
            )

    async def _disconnect(self, account: Account, reason: str) -> None:
        if self.sessionmaker is None:
            return
        async with transaction(self.sessionmaker) as session:
            await mark_disconnected(session, account=account, reason=reason,
                                    settings=self.settings)

    async def _no_mailbox(self, account: Account) -> None:
        if self.sessionmaker is None:
            return
        async with transaction(self.sessionmaker) as session:
            await mark_no_mailbox(session, account=account, settings=self.settings)

    async def aclose(self) -> None:
        if self._smtp is not None:
            await self._smtp.aclose()
