"""Gmail send-to-self: the email channel's transport when the user's Google account
granted `gmail.send`.

The message is the one the SMTP path builds (same parts, same Message-ID), with From
and To set to the account's own address, sent by `users.messages.send` with
`{"raw": base64url}` through the shared Google client layer (thread pool, per-call
AuthorizedHttp, 100 quota units charged), once per attempt. A send is not repeated
blindly: an attempt after one whose answer was lost first looks for the message, by
its Message-ID, then by its X-Pilotlight-Notification header among what the account
sent itself since the notification was made, as Gmail may replace a client's
Message-ID on send. For the same reason a question's email has its Message-ID read
back after the send: a reply names the one Gmail kept.

What the client could not get through becomes an outbox result: 429 and 5xx are
retried later (Google's Retry-After honoured), a refused grant is
`GmailDisconnected` (the channel marks the account disconnected and falls back to
SMTP), Gmail's "Mail service not enabled" is `GmailNoMailbox` (the account has no Gmail
any more: the channel records it as mailbox-less and falls back to SMTP; retrying would
only meet it again), a 403 without permission is `GmailRefused` (falls back too, the
account stays connected), anything else fails the delivery.
"""

from __future__ import annotations

import base64
import copy
import re
from datetime import datetime
from email.message import Message
from email.utils import formataddr
from typing import Any

from app.accounts.models import Account
from app.core.config import Settings
from app.delivery.base import SENT, Deadline, Result, failed, retry
from app.delivery.render import NOTIFICATION_HEADER, parse_from
from app.google.accounts import features
from app.google.client import GoogleApiError, GoogleClient
from app.sources.base import AccountDisconnected, NoMailbox, SourceError

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# A retry looks for an earlier attempt's message among at most this many sent to self
# with its subject, then as many sent to self.
SENT_SCAN = 20
# Gmail's `after:` is judged by Gmail's clock, which may differ a little from ours.
SENT_SLACK_SECONDS = 300
_WORD = re.compile(r"\w+")


class GmailUnavailable(Exception):
    """Gmail cannot send for this account: the channel falls back to SMTP."""


class GmailDisconnected(GmailUnavailable):
    """The account's grant was refused (`invalid_grant`): the account is disconnected."""


class GmailNoMailbox(GmailUnavailable):
    """Gmail answered that the account's mail service is not enabled (`NoMailbox`): its
    Gmail was turned off. The account is recorded as mailbox-less."""


class GmailRefused(GmailUnavailable):
    """Google refused the send for lack of permission (the grant lacks gmail.send)."""


def can_send(account: Account) -> bool:
    """Connected, and granted gmail.send (the account's `gmail_send` feature)."""
    return account.kind == "google" and features(account)["gmail_send"]


def can_read(account: Account) -> bool:
    """Connected, and granted gmail.readonly: the user's replies can be read."""
    return account.kind == "google" and features(account)["gmail"]


def sender_account(accounts: list[Account]) -> Account | None:
    """The account digests are sent through: the oldest active one granted gmail.send."""
    return next((a for a in accounts if can_send(a)), None)


def reply_account(
    accounts: list[Account], *, sent_through: Account | None, to: str
) -> Account | None:
    """The account whose Gmail holds the user's reply: the one the email was sent through,
    else the one it was sent to, else any that can read Gmail; None when none can."""
    if sent_through is not None and can_read(sent_through):
        return sent_through
    readers = [a for a in accounts if can_read(a)]
    addressed = [a for a in readers if a.email.lower() == to.lower()]
    chosen = addressed or readers
    return chosen[0] if chosen else None


def as_sent_by(message: Message, account_email: str, from_setting: str) -> Message:
    """The same message (parts, Message-ID) from and to the account's own address, with
    the display name of the From setting."""
    if "\r" in account_email or "\n" in account_email:
        raise ValueError("a line break in an address header")
    mine = copy.deepcopy(message)
    del mine["From"]
    del mine["To"]
    mine["From"] = formataddr((parse_from(from_setting)[0], account_email), charset="utf-8")
    mine["To"] = account_email
    return mine


def _header(resource: dict[str, Any], name: str) -> str:
    """A header's value in a message resource read with `format=metadata` ("" if none)."""
    for header in (resource.get("payload") or {}).get("headers") or []:
        if str(header.get("name", "")).lower() == name.lower() and header.get("value"):
            return str(header["value"]).strip()
    return ""


def raw(message: Message) -> str:
    """The message as Gmail's `raw`: base64url of its RFC 5322 bytes (CRLF line ends)."""
    data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    return base64.urlsafe_b64encode(data).decode()


class GmailTransport:
    """Sends one account's email to itself through Gmail."""

    def __init__(self, account: Account, settings: Settings, deadline: Deadline) -> None:
        self.account_email = account.email
        self.from_setting = settings.smtp_from
        self.client = GoogleClient(account, settings)
        # The delivery's: every call (a search, the send, the historyId) gets what is left
        # of it, and none is sent after it, so that a send ends before its claim does.
        self.deadline = deadline.at
        # Without gmail.readonly an earlier attempt cannot be looked for.
        self.readable = can_read(account)
        # Gmail's id of the message once sent (or found sent by an earlier attempt).
        self.sent_id: str | None = None

    async def history_id(self) -> str | None:
        """The mailbox's current historyId (1 unit); None if Gmail cannot say now (asked
        once, within the delivery's time: the delivery's claim must not run out)."""
        try:
            profile = await self.client.call(
                "gmail", self.client.gmail().users().getProfile(userId="me"), once=True,
                deadline=self.deadline)
        except SourceError:
            return None
        return str(profile["historyId"])

    async def already_sent(self, message: Message, *, since: datetime) -> bool:
        """Whether this message is in the account's mailbox already (an earlier attempt
        whose answer was lost did send it). Raises SourceError if Gmail cannot say.

        Looked for by its Message-ID (one search, 5 units); then, as Gmail may have given
        it a Message-ID of its own, among what the account sent to itself after `since`
        (when the message was made) by its X-Pilotlight-Notification header, those with
        its subject first, then any: per search (5 units), one metadata read (5 units)
        for each of at most `SENT_SCAN` messages not read yet."""
        message_id = str(message["Message-ID"] or "").strip().strip("<>")
        if message_id and await self._first_sent(f"rfc822msgid:{message_id}"):
            return True
        ours = str(message[NOTIFICATION_HEADER] or "").strip()
        if not ours:
            return False
        after = int(since.timestamp()) - SENT_SLACK_SECONDS
        sent_since = f"in:sent to:{self.account_email} after:{after}"
        # Those with its subject first: the account may have sent itself more than a scan
        # reads since (other notifications), and Gmail's search has no custom headers.
        words = " ".join(_WORD.findall(str(message["Subject"] or "")))[:200]
        checked: set[str] = set()
        for query in ([f'{sent_since} subject:"{words}"'] if words else []) + [sent_since]:
            found = await self.client.call(
                "gmail", self.client.gmail().users().messages().list(
                    userId="me", q=query, maxResults=SENT_SCAN, includeSpamTrash=True),
                once=True, deadline=self.deadline)
            for candidate in found.get("messages") or []:
                if candidate["id"] in checked:
                    continue
                checked.add(candidate["id"])
                got = await self.client.call(
                    "gmail", self.client.gmail().users().messages().get(
                        userId="me", id=candidate["id"], format="metadata",
                        metadataHeaders=[NOTIFICATION_HEADER]),
                    once=True, deadline=self.deadline)
                if _header(got, NOTIFICATION_HEADER) == ours:
                    self.sent_id = candidate["id"]
                    return True
        return False

    async def _first_sent(self, query: str) -> bool:
        found = await self.client.call(
            "gmail", self.client.gmail().users().messages().list(
                userId="me", q=query, maxResults=1, includeSpamTrash=True),
            once=True, deadline=self.deadline)
        messages = found.get("messages") or []
        if messages:
            self.sent_id = messages[0].get("id")
        return bool(messages)

    async def kept_message_id(self) -> str | None:
        """The Message-ID Gmail keeps on the message sent (one metadata read, 5 units), the
        one a reply to it names: Gmail does not promise to keep the one the message was
        given. None when Gmail cannot be read or cannot say now."""
        if not (self.readable and self.sent_id):
            return None
        try:
            found = await self.client.call(
                "gmail", self.client.gmail().users().messages().get(
                    userId="me", id=self.sent_id, format="metadata",
                    metadataHeaders=["Message-ID"]),
                once=True, deadline=self.deadline)
        except SourceError:
            return None
        return _header(found, "Message-ID") or None

    async def send(
        self, message: Message, *, to: str, tried_since: datetime | None = None
    ) -> Result:
        """Send (`to` is ignored: the account's own address is both From and To).

        Sent once per call, never retried here: if the answer is lost (a timeout, a 5xx),
        Gmail may have taken the message, so the outbox tries again later, and an attempt
        after one that may have sent (`tried_since`: when the message was made) first
        looks for the message by its Message-ID, or by its notification header among what
        was sent since (when the grant can read Gmail). Raises `GmailUnavailable` when
        SMTP should be tried instead."""
        mine = as_sent_by(message, self.account_email, self.from_setting)
        request = self.client.gmail().users().messages().send(
            userId="me", body={"raw": raw(mine)})
        try:
            if tried_since is not None and self.readable and await self.already_sent(
                    mine, since=tried_since):
                return SENT
            sent = await self.client.call("gmail", request, once=True, deadline=self.deadline)
            self.sent_id = sent.get("id") if isinstance(sent, dict) else None
        except AccountDisconnected as exc:
            raise GmailDisconnected(str(exc)) from exc
        except NoMailbox as exc:
            raise GmailNoMailbox(str(exc)) from exc
        except GoogleApiError as exc:
            if exc.status in RETRY_STATUSES or exc.reason in ("rateLimitExceeded",
                                                              "userRateLimitExceeded"):
                return retry(f"Gmail answered {exc.status} to the send: {exc}",
                             retry_after=exc.retry_after)
            if exc.status in (401, 403):
                raise GmailRefused(f"Gmail refused to send ({exc.status}: {exc})") from exc
            return failed(f"Gmail refused the message ({exc.status}): {exc}")
        except SourceError as exc:
            return retry(f"could not reach Gmail: {exc}")
        return SENT
