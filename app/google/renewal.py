"""Gmail push registrations (`users.watch`), renewed daily while push is configured, and
stopped (`users.stop`) once an account has no mail watch left.

Gmail stops pushing after 7 days unless `users.watch` is called again. Each account
that has a mail watch and has been polled once is registered with the configured
Pub/Sub topic, and again once its registration is `google_watch_renew_seconds` old.
A renewal that fails tells the user once (until one succeeds again) and changes
nothing else: the watch poller goes on polling at its interval, push or not.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Account
from app.core.config import Settings
from app.core.db import db_now, transaction
from app.core.loops import LoopService
from app.google import watch_service
from app.google.watch_models import WatchCursor
from app.google.watch_service import GMAIL
from app.notifications import service as notifications
from app.sources.base import AccountDisconnected, NoMailbox, SourceError

log = logging.getLogger(__name__)

# The loop looks for due renewals at least this often (renewals themselves are daily).
_MAX_LOOP_SECONDS = 300.0


class PushRegistration(BaseModel):
    """What `users.watch` answers."""

    history_id: str
    expiration: datetime


# Registers an account's mailbox with a topic; raises SourceError (AccountDisconnected).
Register = Callable[[Account, Settings, str], Awaitable[PushRegistration]]
# Ends an account's registration (`users.stop`); raises as Register does.
Unregister = Callable[[Account, Settings], Awaitable[None]]


@dataclass
class RenewalReport:
    renewed: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    alerted: list[uuid.UUID] = field(default_factory=list)
    stopped: list[uuid.UUID] = field(default_factory=list)


class PushRenewer(LoopService):
    name = "google-push-renewal"

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        register: Register,
        unregister: Unregister | None = None,
    ) -> None:
        super().__init__(interval=min(settings.google_watch_renew_seconds, _MAX_LOOP_SECONDS))
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.register = register
        self.unregister = unregister or gmail_stop
        self.every = timedelta(seconds=settings.google_watch_renew_seconds)

    async def run_once(self) -> RenewalReport:
        """Register every due account with the topic, and stop the registration of every
        account that no longer has a mail watch; off when no topic is configured."""
        report = RenewalReport()
        topic = self.settings.google_pubsub_topic
        if not topic:
            return report
        async with transaction(self.sessionmaker) as session:
            now = await db_now(session)
            watched = await watch_service.watched_accounts(
                session=session, now=now, due_only=False
            )
            mail = {w.account.id: w.account for w in watched
                    if any(watcher.spec.get(GMAIL) for watcher in w.watchers)}
            due = await self._due(session, topic, now, mail)
            unwatched = await self._unwatched(session, mail)
        for account in due:
            await self._renew(account, topic, report)
        for account in unwatched:
            await self._stop(account, report)
        return report

    @staticmethod
    async def _unwatched(
        session: AsyncSession, mail: dict[uuid.UUID, Account]
    ) -> list[Account]:
        """Accounts registered for push whose mail watches are all gone (deleted, paused,
        or the account disconnected): Gmail would go on pushing for up to 7 days."""
        return list((
            await session.execute(
                select(Account).join(WatchCursor, WatchCursor.account_id == Account.id)
                .where(WatchCursor.push_topic.is_not(None),
                       Account.id.not_in(list(mail)) if mail else true())
                .order_by(Account.id)
            )
        ).scalars().all())

    async def _stop(self, account: Account, report: RenewalReport) -> None:
        if account.status == "active" and account.refresh_token_encrypted is not None:
            try:
                await self.unregister(account, self.settings)
            except AccountDisconnected as exc:
                # No grant to stop it with: the registration lapses within 7 days.
                log.info("Gmail push stop for account %s: disconnected: %s", account.id, exc)
            except NoMailbox as exc:
                # No mailbox, nothing pushed: there is nothing to stop (every try would
                # meet the same answer, and the registration would be kept for ever).
                log.info("Gmail push stop for account %s: no Gmail: %s", account.id, exc)
            except SourceError as exc:
                log.warning("Gmail push stop for account %s failed (retried): %s",
                            account.id, exc)
                return
        async with transaction(self.sessionmaker) as session:
            now = await db_now(session)
            await session.execute(
                update(WatchCursor).where(WatchCursor.account_id == account.id)
                .values(push_topic=None, push_expires_at=None, push_renewed_at=None,
                        push_failing_since=None, push_error=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        report.stopped.append(account.id)

    async def _due(
        self, session: AsyncSession, topic: str, now: datetime, mail: dict[uuid.UUID, Account]
    ) -> list[Account]:
        if not mail:
            return []
        # Only accounts polled once: the poller made their cursor row.
        ids = (
            await session.execute(
                select(WatchCursor.account_id).where(
                    WatchCursor.account_id.in_(list(mail)),
                    or_(
                        WatchCursor.push_renewed_at.is_(None),
                        WatchCursor.push_renewed_at <= now - self.every,
                        WatchCursor.push_topic.is_distinct_from(topic),
                        WatchCursor.push_failing_since.is_not(None),
                    ),
                ).order_by(WatchCursor.account_id)
            )
        ).scalars().all()
        return [mail[account_id] for account_id in ids]

    async def _renew(self, account: Account, topic: str, report: RenewalReport) -> None:
        try:
            registration = await self.register(account, self.settings, topic)
        except (AccountDisconnected, NoMailbox) as exc:
            # The watch poller records the account (disconnected, or without Gmail) and
            # tells the user when it meets the same.
            report.failed.append(account.id)
            log.warning("Gmail push renewal for account %s: %s", account.id, exc)
            return
        except SourceError as exc:
            report.failed.append(account.id)
            log.warning("Gmail push renewal for account %s failed: %s", account.id, exc)
            if await self._failed(account, str(exc)):
                report.alerted.append(account.id)
            return
        async with transaction(self.sessionmaker) as session:
            now = await db_now(session)
            await session.execute(
                update(WatchCursor).where(WatchCursor.account_id == account.id)
                .values(push_topic=topic, push_expires_at=registration.expiration,
                        push_renewed_at=now, push_failing_since=None, push_error=None,
                        updated_at=now)
                .execution_options(synchronize_session=False)
            )
        report.renewed.append(account.id)

    async def _failed(self, account: Account, error: str) -> bool:
        """Record the failure; tell the user if this is the first since the last success."""
        async with transaction(self.sessionmaker) as session:
            now = await db_now(session)
            cursor = (
                await session.execute(
                    select(WatchCursor).where(WatchCursor.account_id == account.id)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if cursor is None:
                return False
            cursor.push_error = error[:2000]
            cursor.updated_at = now
            if cursor.push_failing_since is not None:
                return False
            cursor.push_failing_since = now
            # Keyed by when the failing began: one alert per spell of failures, even if
            # two schedulers fail at once.
            key = f"google-push:{account.id}:{int(now.timestamp())}"
            sent = await notifications.notify(
                session=session, user_id=account.user_id, key=key, kind="alert",
                title="Gmail push could not be renewed",
                body=(
                    f"Gmail push notifications for {account.email} could not be renewed "
                    f"({error[:300]}). Watch instructions still run: new mail is found by "
                    "polling, only a little later. Pilotlight retries the renewal."
                ),
                channels=[], data={"account_id": str(account.id)},
            )
            await session.flush()
            return sent is not None


async def gmail_stop(account: Account, settings: Settings) -> None:
    """`users.stop`: Gmail stops pushing for the account's mailbox."""
    from app.google.client import GoogleClient

    client = GoogleClient(account, settings)
    await client.call("gmail", client.gmail().users().stop(userId="me"))


async def gmail_watch(account: Account, settings: Settings, topic: str) -> PushRegistration:
    """`users.watch` on the account's inbox through the Google client (its retries, its quota
    accounting); raises SourceError, or AccountDisconnected for a revoked grant."""
    from app.google.client import GoogleClient

    client = GoogleClient(account, settings)
    request = client.gmail().users().watch(
        userId="me", body={"topicName": topic, "labelIds": ["INBOX"],
                           "labelFilterBehavior": "include"},
    )
    answer = await client.call("gmail", request)
    try:
        expiration = datetime.fromtimestamp(int(answer["expiration"]) / 1000, UTC)
        return PushRegistration(history_id=str(answer["historyId"]), expiration=expiration)
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"users.watch answered without historyId and expiration: {exc}") from exc
