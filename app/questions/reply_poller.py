"""The reply poller: reads Gmail for replies to question emails and answers with them.

It runs in the scheduler role: the scheduler is the process that already polls Gmail
(watch triggers) and one replica is enough, so each mailbox is read once per interval
rather than once per worker replica. More pollers are safe: a reply is claimed in the
transaction that answers with it (`EmailReply`, unique per Gmail message).

Per iteration, only the Google accounts with an open question whose email was sent
(and recorded, `QuestionEmail`) are read, each from the lowest historyId recorded for
those emails:

- `history.list(labelId=SENT, historyTypes=messageAdded)`: the user's reply is a mail
  they sent, in the thread of the one they received (with Gmail send-to-self and with
  SMTP alike). Nothing new costs that one call (2 units).
- Each new message's `In-Reply-To` / `References` / labels (`messages.get`,
  `format=metadata`, batched); a message replying to one of our Message-IDs (its
  In-Reply-To, else the last of its References: `replies.answered_ids`), sent by the
  user (label SENT; mail from anyone else is never an answer), is read in full and its
  text above the quote answers that email's question. A message that names ours only
  further up its References answers it only if it replies to the user's own earlier
  reply to it (the thread's headers, `threads.get` `format=metadata`, 10 units, read
  only for such a message: `replies.own_reply_answers`); else it replies to someone else
  in the conversation.
- The cursor then moves to the last history record read; a message whose headers
  Gmail could not give (a failed part of the batch) keeps it where it was. An expired
  historyId (404), or an email recorded without one (Gmail could not give it after the
  send), has the user's sent mail since the email searched once (`in:sent after:`, at
  most 500 messages), then follows the history from the id read before that search.

An account whose Gmail answers "Mail service not enabled" (`NoMailbox`: Gmail was turned
off for it) is recorded as mailbox-less once (`mark_no_mailbox`, which tells the user),
and no pass reads it again: replies cannot reach a Gmail that is off, and its questions
are still answered in the app, by push or through the API.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from email.utils import getaddresses
from typing import Any

from prometheus_client import Counter
from sqlalchemy import select

from app.accounts.models import Account
from app.core.db import transaction
from app.core.loops import LoopService
from app.core.runtime import Runtime
from app.delivery.render import parse_from
from app.google import gmail_format
from app.google.accounts import features, mark_disconnected, mark_no_mailbox
from app.google.client import GoogleApiError, GoogleClient
from app.google.gmail import GmailReader
from app.notifications.models import Delivery
from app.questions import replies
from app.questions.models import Question, QuestionEmail
from app.sources.base import AccountDisconnected, NoMailbox, SourceError

log = logging.getLogger(__name__)

HISTORY_PAGE = 500
HISTORY_PAGES_MAX = 20
ACCOUNTS_PER_PASS = 200
# Accounts read at once (as the watch poller).
CONCURRENCY = 8
# An email recorded without a historyId: at most this many of the user's sent messages
# since it are searched for a reply, from a minute before it (clocks differ).
CATCH_UP_LIMIT = 500
_SEARCH_MARGIN_SECONDS = 60
REPLY_HEADERS = ["In-Reply-To", "References", "Message-ID"]

REPLIES = Counter(
    "pilotlight_email_replies",
    "Replies to question emails this process handled, by outcome (answered, ignored, "
    "duplicate: another poller had it)",
    ["outcome"],
)


class ReplyPoller(LoopService):
    name = "email-replies"

    def __init__(self, *, runtime: Runtime) -> None:
        super().__init__(interval=runtime.settings.email_reply_poll_seconds)
        self.runtime = runtime
        self.settings = runtime.settings
        # The last account read: the next pass goes on after it, so that with more than
        # ACCOUNTS_PER_PASS accounts waiting every one is read in turn.
        self._after: uuid.UUID | None = None

    async def run_once(self) -> int:
        """Read each waiting account's new mail, a few at once; returns how many questions
        were answered."""
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(account: Account) -> int:
            async with limit:
                try:
                    return await self.poll(account)
                except AccountDisconnected as exc:
                    log.warning("account %s: %s", account.id, exc)
                    async with transaction(self.runtime.sessionmaker) as session:
                        await mark_disconnected(session, account=account, reason=str(exc),
                                                settings=self.settings)
                except NoMailbox as exc:
                    log.warning("account %s: %s; its replies are no longer read",
                                account.id, exc)
                    async with transaction(self.runtime.sessionmaker) as session:
                        await mark_no_mailbox(session, account=account, settings=self.settings)
                except SourceError as exc:
                    log.warning("reading replies in account %s failed: %s; next pass tries "
                                "again", account.id, exc)
                return 0

        return sum(await asyncio.gather(*(one(a) for a in await self._accounts())))

    async def _accounts(self) -> list[Account]:
        """At most ACCOUNTS_PER_PASS accounts with an open question emailed, in id order
        from where the last pass stopped, round again."""
        async with transaction(self.runtime.sessionmaker) as session:
            waiting = (
                select(QuestionEmail.account_id)
                .join(Question, Question.id == QuestionEmail.question_id)
                .join(Delivery, Delivery.id == QuestionEmail.delivery_id)
                .where(Question.status == "open", Delivery.status == "sent")
            )
            accounts = (
                select(Account)
                .where(Account.id.in_(waiting), Account.status == "active")
                .order_by(Account.id).limit(ACCOUNTS_PER_PASS)
            )
            after = self._after
            found = list((await session.execute(
                accounts if after is None else accounts.where(Account.id > after)
            )).scalars())
            if after is not None and len(found) < ACCOUNTS_PER_PASS:
                found += [a for a in (await session.execute(
                    accounts.where(Account.id <= after).limit(ACCOUNTS_PER_PASS - len(found))
                )).scalars()]
        self._after = found[-1].id if found else None
        # Not one whose Gmail is off (recorded as mailbox-less): it holds no replies.
        return [account for account in found if features(account)["gmail"]]

    async def _open_emails(self, account_id: uuid.UUID) -> list[QuestionEmail]:
        async with transaction(self.runtime.sessionmaker) as session:
            rows = await session.execute(
                select(QuestionEmail)
                .join(Question, Question.id == QuestionEmail.question_id)
                .where(QuestionEmail.account_id == account_id, Question.status == "open")
            )
            return list(rows.scalars())

    async def poll(self, account: Account) -> int:
        client = GoogleClient(account, self.settings)
        emails = await self._open_emails(account.id)
        unread = [e for e in emails if not _has_history(e)]
        caught_up = await self._catch_up(client, account, unread) if unread else 0
        known = [int(e.history_id) for e in emails if e.history_id and _has_history(e)]
        if not known:
            return caught_up
        try:
            resume, added = await self._history(client, str(min(known)))
        except GoogleApiError as exc:
            if exc.status != 404:
                raise
            log.warning("account %s: Gmail no longer has history from %s; searching the mail "
                        "sent since the questions' emails", account.id, min(known))
            expired = [e for e in emails if _has_history(e)]
            return caught_up + await self._catch_up(client, account, expired, restart=True)
        answered = await self._answer_from(client, account, added) if added else 0
        await self._advance(account.id, resume)
        return caught_up + answered

    async def _catch_up(
        self, client: GoogleClient, account: Account, unread: list[QuestionEmail], *,
        restart: bool = False,
    ) -> int:
        """Emails the history cannot serve: their send could not read the mailbox's
        historyId, or (`restart`) Gmail no longer has the history from theirs. The user's
        mail sent since the first of them is searched for replies, then they follow the
        history from the id read before the search."""
        now = await self._profile_history_id(client)
        since = int(min(e.created_at for e in unread).timestamp()) - _SEARCH_MARGIN_SECONDS
        ids = await GmailReader(client, resync_limit=0).list_ids(
            query=f"in:sent after:{since}", limit=CATCH_UP_LIMIT)
        answered = await self._answer_from(client, account, ids) if ids else 0
        async with transaction(self.runtime.sessionmaker) as session:
            rows = await session.execute(
                select(QuestionEmail).where(QuestionEmail.id.in_([e.id for e in unread])))
            for email in rows.scalars():
                if restart or not _has_history(email):
                    email.history_id = now
        return answered

    async def _profile_history_id(self, client: GoogleClient) -> str:
        profile = await client.call("gmail", client.gmail().users().getProfile(userId="me"))
        return str(profile["historyId"])

    async def _history(self, client: GoogleClient, start: str) -> tuple[str, list[str]]:
        """(where to read from next, ids of sent messages added since `start`, oldest first)."""
        added: list[str] = []
        resume, token = start, None
        for _ in range(HISTORY_PAGES_MAX):
            kwargs: dict[str, Any] = {
                "userId": "me", "startHistoryId": start, "historyTypes": ["messageAdded"],
                "labelId": "SENT", "maxResults": HISTORY_PAGE,
            }
            if token:
                kwargs["pageToken"] = token
            page = await client.call("gmail", client.gmail().users().history().list(**kwargs))
            for record in page.get("history") or []:
                for entry in record.get("messagesAdded") or []:
                    message_id = (entry.get("message") or {}).get("id")
                    if message_id:
                        added.append(str(message_id))
                if record.get("id"):
                    resume = str(record["id"])
            token = page.get("nextPageToken")
            if not token:
                resume = str(page.get("historyId") or resume)
                break
        return resume, list(dict.fromkeys(added))

    async def _answer_from(self, client: GoogleClient, account: Account, added: list[str]) -> int:
        async with transaction(self.runtime.sessionmaker) as session:
            done = await replies.handled(session=session, account_id=account.id,
                                         gmail_ids=added)
        todo = [m for m in added if m not in done]
        users = client.gmail().users()
        found = await client.batch("gmail", [
            (m, users.messages().get(userId="me", id=m, format="metadata",
                                     metadataHeaders=REPLY_HEADERS))
            for m in todo
        ])
        candidates: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {}
        for gmail_id in todo:
            resource = found.get(gmail_id)
            if isinstance(resource, GoogleApiError) and resource.status not in (400, 404):
                # Not read (quota, a server error): the cursor must not move past it.
                raise resource
            if not isinstance(resource, dict) or "SENT" not in (resource.get("labelIds") or []):
                continue  # gone since, or not the user's own mail
            headers = gmail_format.message_headers(resource)
            in_reply_to, references = headers.get("in-reply-to", ""), headers.get("references", "")
            named = replies.answered_ids(in_reply_to, references)
            if named:
                candidates[gmail_id] = (
                    resource, named, replies.conversation_ids(in_reply_to, references))
        if not candidates:
            return 0
        async with transaction(self.runtime.sessionmaker) as session:
            ours = await replies.emails_named(
                session=session, account_id=account.id,
                message_ids=[i for _r, _n, ids in candidates.values() for i in ids])
            texts = await replies.question_texts(
                session=session, question_ids={e.question_id for e in ours.values()})
        answered = 0
        for gmail_id, (resource, named, conversation) in candidates.items():
            email = next((ours[i] for i in named if i in ours), None)
            if email is None and any(i in ours for i in conversation):
                # It descends from our email but replies to another message of the
                # conversation: an answer only if that is the user's own earlier reply.
                through = await self._through_own_reply(client, resource, named, set(ours))
                email = ours[through] if through else None
            if email is None:
                continue  # a reply to some other mail, or to someone else
            try:
                full = await client.call("gmail", users.messages().get(
                    userId="me", id=gmail_id, format="full"))
            except GoogleApiError as exc:
                if exc.status not in (400, 404):
                    raise
                continue  # deleted since it was listed
            body = gmail_format.body_text(full.get("payload") or {}, without_quotes=True)
            subject = gmail_format.message_headers(full).get("subject", "")
            async with transaction(self.runtime.sessionmaker) as session:
                outcome = await replies.answer_by_reply(
                    session=session, email=email, gmail_message_id=gmail_id,
                    text=replies.reply_text(body, original=texts.get(email.question_id, "")),
                    forward=replies.is_forward(subject, body),
                    wakeups=self.runtime.wakeups)
            REPLIES.labels(outcome).inc()
            answered += outcome == "answered"
        return answered

    async def _through_own_reply(
        self, client: GoogleClient, resource: dict[str, Any], parents: list[str],
        ours: set[str],
    ) -> str | None:
        """The question email a message answers through the user's own earlier reply in
        its thread (`replies.own_reply_answers`), read from the thread's headers."""
        thread_id = resource.get("threadId")
        if not thread_id:
            return None
        try:
            thread = await client.call("gmail", client.gmail().users().threads().get(
                userId="me", id=thread_id, format="metadata",
                metadataHeaders=[*REPLY_HEADERS, "Subject", "From", "To", "Cc"]))
        except GoogleApiError as exc:
            if exc.status not in (400, 404):
                raise
            return None  # the thread is gone since
        messages = [(m, gmail_format.message_headers(m)) for m in thread.get("messages") or []]
        # Who an answer goes to: the From of our question emails (PILOTLIGHT_SMTP_FROM), or
        # the user (Gmail's send-to-self). A message of the user's to anyone else (a
        # forward to a colleague under a subject of the user's own, a note to them) is no
        # step towards an answer.
        ours_and_own = {
            address.lower() for message, headers in messages
            if "SENT" in (message.get("labelIds") or [])
            for _name, address in getaddresses([headers.get("from", "")]) if address
        } | {parse_from(self.runtime.settings.smtp_from)[1].lower()}
        known: dict[str, tuple[bool, str, str, str]] = {}
        for message, headers in messages:
            to = {address.lower() for _name, address in getaddresses(
                [headers.get("to", ""), headers.get("cc", "")]) if address}
            for message_id in replies.answered_ids(headers.get("message-id", ""), ""):
                known.setdefault(message_id, (
                    "SENT" in (message.get("labelIds") or []) and to <= ours_and_own,
                    headers.get("subject", ""),
                    headers.get("in-reply-to", ""), headers.get("references", "")))
        return replies.own_reply_answers(parents, known, ours)

    async def _advance(self, account_id: uuid.UUID, history_id: str) -> None:
        """Move the open emails' cursor forward to `history_id` (never back)."""
        async with transaction(self.runtime.sessionmaker) as session:
            rows = await session.execute(
                select(QuestionEmail)
                .join(Question, Question.id == QuestionEmail.question_id)
                .where(QuestionEmail.account_id == account_id, Question.status == "open")
            )
            for email in rows.scalars():
                current = email.history_id
                if not (current and current.isdigit()) or int(current) < int(history_id):
                    email.history_id = history_id


def _has_history(email: QuestionEmail) -> bool:
    """Whether the email has a historyId to read the history from."""
    return bool(email.history_id and email.history_id.isdigit())
