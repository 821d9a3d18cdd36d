"""The digest by email, through a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any

import pytest

from app.core.db import transaction
from app.core.runtime import Runtime
from app.delivery.render import message_id
from app.delivery.sender import DeliverySender
from app.notifications.service import notify
from tests import factories
from tests.integration.delivery.conftest import (
    add_digest,
    delivery,
    notifications,
    send_until_settled,
    with_settings,
)
from tests.integration.delivery.receivers import MailHandler

SCRIPT = "<script>alert('pwned')</script>"
DIGEST: dict[str, Any] = {
    "summary": f"Two things need you today. {SCRIPT}",
    "sections": [
        {
            "title": "Needs your attention <b>now</b>",
            "items": [
                {
                    "title": "Budget review moved to Friday",
                    "detail": 'Mara asks for numbers by Thursday. <img src="https://evil.test/x.png">',
                    "refs": [
                        {"kind": "message", "id": "m1", "account": "me@example.com",
                         "title": "Budget review", "link": "https://mail.google.com/mail/u/0/#all/m1"},
                        {"kind": "message", "id": "m2", "account": "me@example.com",
                         "title": "Evil <a href=\"https://evil.test\">link</a>",
                         "link": "javascript:alert(1)"},
                    ],
                },
            ],
        },
        {
            "title": "Documents",
            "items": [
                {"title": "Launch plan", "detail": "Updated timeline.",
                 "refs": [{"kind": "file", "id": "f1", "account": "me@example.com",
                           "title": "Launch plan", "link": "https://docs.google.com/document/d/f1"},
                          {"kind": "file", "id": "f2", "account": "me@example.com",
                           "title": "Notes without a link", "link": None}]},
            ],
        },
    ],
    "action_items": [{"text": "Send the budget numbers", "owner": "you", "due": "Thursday",
                      "refs": []}],
    "notes": ["Made by the offline model."],
    "model": "pilotlight-offline",
    "covers": {"start": "2026-11-22T07:00:00Z", "end": "2026-11-23T07:00:00Z"},
}
LINKS = {"https://mail.google.com/mail/u/0/#all/m1", "https://docs.google.com/document/d/f1"}


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.styled = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "a":
            self.hrefs.append(values.get("href") or "")
        if values.get("style"):
            self.styled += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parts(message: EmailMessage) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    return plain.get_content(), html.get_content()


@pytest.fixture
def mail_runtime(runtime: Runtime, smtp: tuple[MailHandler, int]) -> Runtime:
    _handler, port = smtp
    return with_settings(runtime, smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none",
                         smtp_from="Pilotlight <digests@pilotlight.example>")


async def test_the_digest_arrives_as_html_and_text_with_model_text_escaped(
    mail_runtime: Runtime, smtp: tuple[MailHandler, int]
) -> None:
    handler, _port = smtp
    user, _ = await factories.user_with_token(mail_runtime, "ada@example.com")
    notification_id = await add_digest(mail_runtime, user, channels=("email",), digest=DIGEST)

    rows = await send_until_settled(DeliverySender(runtime=mail_runtime), mail_runtime,
                                    notification_id)
    email = next(d for d in rows if d.channel == "email")
    assert (email.status, email.attempts, email.last_error) == ("sent", 1, None)
    assert email.sent_at is not None

    [mail] = handler.messages
    assert mail.recipients == ["ada@example.com"]
    message = mail.message
    assert message["To"] == "ada@example.com"
    assert message["From"] == "Pilotlight <digests@pilotlight.example>"
    assert message["Subject"] == "Morning digest"
    assert message["Message-ID"].strip() == message_id(email.idempotency_key,
                                               "digests@pilotlight.example")
    assert message["Message-ID"].endswith("@pilotlight.example>")
    assert message["Auto-Submitted"] == "auto-generated"

    text, html = _parts(message)
    parsed = _Html()
    parsed.feed(html)
    # Links only from the refs' http(s) links; the javascript: one is plain text.
    assert set(parsed.hrefs) == LINKS
    assert "javascript:" not in html
    # Model text is text: no element of the model's survives, and it reads as written.
    assert "script" not in parsed.tags
    assert "img" not in parsed.tags
    assert "b" not in parsed.tags
    assert "&lt;script&gt;" in html
    shown = "".join(parsed.text)
    assert SCRIPT in shown
    assert 'Evil <a href="https://evil.test">link</a>' in shown
    assert "evil.test" not in parsed.hrefs
    # CSS is inlined: no style sheet left, style attributes instead, nothing remote.
    assert "style" not in parsed.tags
    assert "link" not in parsed.tags
    assert parsed.styled > 5
    assert "Send the budget numbers (owner: you, due: Thursday)" in shown
    assert "Notes without a link" in shown

    assert SCRIPT in text  # plain text shows it as written
    assert "Budget review moved to Friday" in text
    # What it covers, in the user's time zone (Europe/Berlin), in both parts.
    covers = "Covers Sun 22 Nov 2026 08:00 to Mon 23 Nov 2026 08:00 (Europe/Berlin time)."
    assert covers in text
    assert covers in shown
    for link in LINKS:
        assert link in text
    assert "javascript:" not in text


async def test_a_questions_email_shows_its_choices_escaped_and_how_to_answer(
    mail_runtime: Runtime, smtp: tuple[MailHandler, int]
) -> None:
    """Sent by SMTP with no Gmail to read a reply from: the email asked for a reply that
    nobody would ever read. It links the question in the dashboard instead."""
    handler, _port = smtp
    user, _ = await factories.user_with_token(mail_runtime, "ada@example.com")
    evil = f'Gemini {SCRIPT} <a href="https://evil.test">here</a>'
    question_id = uuid.uuid4()
    link = f"{mail_runtime.settings.effective_public_url}/questions/{question_id}"
    async with transaction(mail_runtime.sessionmaker) as session:
        # What app/runs/endings.py writes when the agent asks with choices.
        notification_id = await notify(
            session=session, user_id=user.id, key=f"test:{uuid.uuid4()}", kind="question",
            title="Launch digest: a question for you", body="Which project should I follow?",
            channels=["email"],
            data={"question_id": str(question_id), "choices": ["Apollo", evil]},
        )
    assert notification_id is not None
    await send_until_settled(DeliverySender(runtime=mail_runtime), mail_runtime,
                             notification_id)

    [mail] = handler.messages
    text, html = _parts(mail.message)
    text = text.replace("\r\n", "\n")
    assert "Which project should I follow?" in text
    assert "* Apollo\n" in text
    assert f"* {evil}\n" in text  # plain text shows it as written
    assert f"\nAnswer here: {link}\n" in text
    assert "Reply" not in text
    parsed = _Html()
    parsed.feed(html)
    assert parsed.tags.count("li") == 2
    assert "script" not in parsed.tags
    assert parsed.hrefs == [link]  # ours only: none from what the model wrote
    shown = "".join(parsed.text)
    assert "Apollo" in shown
    assert evil in shown
    assert f"Answer here: {link}" in shown
    assert "Reply" not in shown


async def test_an_email_without_choices_offers_none(
    mail_runtime: Runtime, smtp: tuple[MailHandler, int]
) -> None:
    handler, _port = smtp
    user, _ = await factories.user_with_token(mail_runtime, "ada@example.com")
    async with transaction(mail_runtime.sessionmaker) as session:
        notification_id = await notify(
            session=session, user_id=user.id, key=f"test:{uuid.uuid4()}", kind="alert",
            title="Invoice from ACME", body="It is due Friday.", channels=["email"],
            data={"choices": ["not a question's"]},
        )
    assert notification_id is not None
    await send_until_settled(DeliverySender(runtime=mail_runtime), mail_runtime,
                             notification_id)
    [mail] = handler.messages
    text, html = _parts(mail.message)
    assert text.replace("\r\n", "\n") == "Invoice from ACME\n\nIt is due Friday.\n"
    assert "Choices" not in html


async def test_a_deferred_email_is_retried_with_the_same_message_id(
    mail_runtime: Runtime, smtp: tuple[MailHandler, int]
) -> None:
    handler, _port = smtp
    handler.replies = ["451 4.3.0 Try again later"]
    user, _ = await factories.user_with_token(mail_runtime)
    notification_id = await add_digest(mail_runtime, user, channels=("email",), digest=DIGEST)
    sender = DeliverySender(runtime=mail_runtime)

    await sender.run_once()
    first = await delivery(mail_runtime, notification_id, "email")
    assert (first.status, first.attempts) == ("pending", 1)
    assert "451" in (first.last_error or "")

    rows = await send_until_settled(sender, mail_runtime, notification_id)
    email = next(d for d in rows if d.channel == "email")
    assert (email.status, email.attempts, email.last_error) == ("sent", 2, None)
    assert len(handler.messages) == 2
    ids = {mail.message["Message-ID"].strip() for mail in handler.messages}
    assert ids == {message_id(email.idempotency_key, mail_runtime.settings.smtp_from)}


async def test_emails_share_a_kept_smtp_connection_until_the_server_says_421(
    mail_runtime: Runtime, smtp: tuple[MailHandler, int]
) -> None:
    handler, _port = smtp
    runtime = with_settings(mail_runtime, delivery_concurrency=1)
    user, _ = await factories.user_with_token(runtime)
    sender = DeliverySender(runtime=runtime)
    try:
        for _ in range(3):
            await add_digest(runtime, user, channels=("email",), digest=DIGEST)
        assert await sender.run_once() == 3
        assert len(handler.messages) == 3
        assert len({mail.peer for mail in handler.messages}) == 1  # one connection, kept

        # 421: the server is closing the connection; the message is retried on a new one.
        handler.replies = ["421 4.3.2 Shutting down"]
        later = await add_digest(runtime, user, channels=("email",), digest=DIGEST)
        rows = await send_until_settled(sender, runtime, later)
        assert [(d.status, d.attempts) for d in rows if d.channel == "email"] == [("sent", 2)]
        assert len(handler.messages) == 5
        assert handler.messages[3].peer == handler.messages[0].peer
        assert handler.messages[4].peer != handler.messages[3].peer
        ids = {m.message["Message-ID"] for m in handler.messages[3:]}
        assert len(ids) == 1  # the same message both times
    finally:
        await sender.on_stop()


async def test_a_refused_email_fails_at_once_and_the_user_is_told(
    mail_runtime: Runtime, smtp: tuple[MailHandler, int]
) -> None:
    handler, _port = smtp
    handler.replies = ["554 5.7.1 Message rejected"]
    user, _ = await factories.user_with_token(mail_runtime)
    notification_id = await add_digest(mail_runtime, user, channels=("email",), digest=DIGEST)

    await DeliverySender(runtime=mail_runtime).run_once()
    email = await delivery(mail_runtime, notification_id, "email")
    assert (email.status, email.attempts) == ("failed", 1)
    assert "554" in (email.last_error or "")
    told = [n for n in await notifications(mail_runtime, user) if n.kind == "error"]
    assert [n.key for n in told] == [f"delivery:{email.id}:failed"]
    assert "554" in told[0].body


async def test_without_smtp_email_fails_at_once_saying_so(runtime: Runtime) -> None:
    assert runtime.settings.smtp_host == ""
    user, _ = await factories.user_with_token(runtime)
    notification_id = await add_digest(runtime, user, channels=("email",), digest=DIGEST)
    sender = DeliverySender(runtime=runtime)

    assert await sender.run_once() == 1
    email = await delivery(runtime, notification_id, "email")
    assert (email.status, email.attempts) == ("failed", 1)
    assert "SMTP is not configured" in (email.last_error or "")
    assert await sender.run_once() == 0  # nothing left to retry

    told = [n for n in await notifications(runtime, user) if n.kind == "error"]
    assert len(told) == 1
    assert told[0].key == f"delivery:{email.id}:failed"
    assert "SMTP is not configured" in told[0].body
    assert told[0].data["delivery_id"] == str(email.id)
    # The message about a failed delivery is in the feed only: it is never sent anywhere.
    assert [d.channel for d in await _deliveries_of(runtime, told[0].id)] == ["in_app"]


async def _deliveries_of(runtime: Runtime, notification_id: Any) -> list[Any]:
    from tests.integration.delivery.conftest import deliveries

    return await deliveries(runtime, notification_id)
