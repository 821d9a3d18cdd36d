"""Gmail v1: profile, messages, attachments, send, threads, history, labels, watch and stop."""

from __future__ import annotations

import email.policy
import re
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from typing import Any

from .calls import Call
from .errors import ApiError, Reply, invalid_argument, not_found
from .mail import StoredMessage, addresses, b64url, b64url_decode, message_date, resource
from .query import SYSTEM_LABELS, gmail_query
from .store import Mailbox, Watch

# Quota units per method, as Google documents them.
UNITS = {
    "gmail.users.getProfile": 1,
    "gmail.users.watch": 100,
    "gmail.users.stop": 50,
    "gmail.users.history.list": 2,
    "gmail.users.labels.list": 1,
    "gmail.users.labels.get": 1,
    "gmail.users.messages.list": 5,
    "gmail.users.messages.get": 5,
    "gmail.users.messages.modify": 5,
    "gmail.users.messages.send": 100,
    "gmail.users.messages.attachments.get": 5,
    "gmail.users.threads.list": 10,
    "gmail.users.threads.get": 10,
}
METADATA_SCOPE = "https://www.googleapis.com/auth/gmail.metadata"
_HEX_ID = re.compile(r"[0-9a-fA-F]{1,16}")
WATCH_DAYS = 7


def _page(items: list[Any], call: Call, default: int, maximum: int) -> tuple[list[Any], str | None]:
    size = min(int(call.query.get("maxResults", default)) or default, maximum)
    token = call.query.get("pageToken")
    start = 0
    if token:
        if not token.isdigit():
            raise invalid_argument("Invalid pageToken", "pageToken")
        start = int(token)
    chunk = items[start:start + size]
    more = start + size < len(items)
    return chunk, f"{start + size:020d}" if more else None


def check_id(value: str) -> str:
    """Gmail's message and thread ids are hex numbers (16 digits, below 2**63): one that
    does not parse as such is a 400 "Invalid id value", one that does but names nothing a
    404 (measured against Gmail in brekkylab/backlot#39; "Invalid id value" also in
    LeoIannacone/goopg#34)."""
    if not _HEX_ID.fullmatch(value) or int(value, 16) >= 2**63:
        raise invalid_argument("Invalid id value")
    return value


def _message(mailbox: Mailbox, message_id: str) -> StoredMessage:
    message = mailbox.messages.get(check_id(message_id))
    if message is None:
        raise not_found()
    return message


def _visible(call: Call, *, labels_param: str = "labelIds") -> list[StoredMessage]:
    mailbox = call.account.mailbox
    if call.query.get("q") and not call.token.scopes & (call.method.scopes - {METADATA_SCOPE}):
        raise ApiError(403, "forbidden", "Metadata scope does not support 'q' parameter")
    query = gmail_query(call.query.get("q", ""), call.now, mailbox.labels)
    include_spam_trash = call.query.get("includeSpamTrash", False) or query.anywhere
    wanted = _labels(mailbox, call.query.get(labels_param, []))
    found = [
        m for m in mailbox.messages.values()
        if (include_spam_trash or not {"SPAM", "TRASH"} & set(m.label_ids))
        and all(label in m.label_ids for label in wanted)
        and query.test(m)
    ]
    found.sort(key=lambda m: (m.internal_date, m.id), reverse=True)
    return found


def _labels(mailbox: Mailbox, label_ids: list[str]) -> list[str]:
    for label_id in label_ids:
        if not mailbox.known_label(label_id):
            raise invalid_argument(f"Invalid label: {label_id}")
    return list(label_ids)


def get_profile(call: Call) -> Reply:
    mailbox = call.account.mailbox
    return call.respond({
        "emailAddress": call.account.email,
        "messagesTotal": len(mailbox.messages),
        "threadsTotal": len({m.thread_id for m in mailbox.messages.values()}),
        "historyId": str(mailbox.history_id),
    })


def list_messages(call: Call) -> Reply:
    found = _visible(call)
    page, token = _page(found, call, 100, 500)
    answer: dict[str, Any] = {}
    if page:
        answer["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
    if token:
        answer["nextPageToken"] = token
    answer["resultSizeEstimate"] = len(found)
    return call.respond(answer)


def _format(call: Call) -> str:
    fmt = call.query.get("format", "full")
    if fmt in ("full", "raw") and METADATA_SCOPE in call.token.scopes and not (
        call.token.scopes & (call.method.scopes - {METADATA_SCOPE})
    ):
        raise ApiError(403, "forbidden", f"Metadata scope doesn't allow format {fmt.upper()}")
    return str(fmt)


def get_message(call: Call) -> Reply:
    message = _message(call.account.mailbox, call.path["id"])
    return call.respond(resource(message, _format(call), call.query.get("metadataHeaders")))


def get_attachment(call: Call) -> Reply:
    message = _message(call.account.mailbox, call.path["messageId"])
    for attachment in message.attachments.values():
        if attachment.attachment_id == call.path["id"]:
            return call.respond({
                "attachmentId": attachment.attachment_id,
                "size": len(attachment.data),
                "data": b64url(attachment.data),
            })
    raise invalid_argument("Invalid attachment token")


def modify_message(call: Call) -> Reply:
    body = call.json_body()
    mailbox = call.account.mailbox
    _message(mailbox, call.path["id"])
    message = mailbox.relabel(call.path["id"], _labels(mailbox, body.get("addLabelIds") or []),
                              _labels(mailbox, body.get("removeLabelIds") or []))
    return call.respond(resource(message, "minimal"))


def send_message(call: Call) -> Reply:
    if call.method.upload:
        raw = _uploaded_message(call)
        thread_id = None
    else:
        body = call.json_body()
        if not body.get("raw"):
            raise invalid_argument(
                "'raw' RFC822 payload message string or uploading message via /upload/* URL "
                "required"
            )
        try:
            raw = b64url_decode(str(body["raw"]))
        except ValueError:
            raise invalid_argument("Invalid value for ByteString") from None
        thread_id = body.get("threadId")
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    recipients = [a for h in ("To", "Cc", "Bcc") for a in addresses(str(parsed.get(h, "") or ""))]
    if not recipients:
        raise invalid_argument("Recipient address required")
    sender = call.account.email
    if parsed.get("From") is None:
        parsed["From"] = sender
    if parsed.get("Date") is None:
        parsed["Date"] = format_datetime(call.now)
    mailbox = call.account.mailbox
    if parsed.get("Message-ID") is None or mailbox.replaces_message_ids:
        del parsed["Message-ID"]
        parsed["Message-ID"] = make_msgid(domain="mail.gmail.com")
    del parsed["Bcc"]
    raw = parsed.as_bytes(policy=email.policy.SMTP)
    if thread_id is not None and not any(m.thread_id == thread_id
                                         for m in mailbox.messages.values()):
        raise not_found()
    labels = ["SENT"] + (["INBOX"] if sender in [r.lower() for r in recipients] else [])
    when = message_date(raw) or call.now
    message = mailbox.add(sender=sender, to=[], subject="", text="", html=None, attachments=[],
                          labels=labels, thread_id=thread_id, date=when, raw=raw)
    for address in recipients:
        other = call.accounts.get(address.lower())
        if other is not None and other is not call.account:
            other.mailbox.add(sender=sender, to=[], subject="", text="", html=None,
                              attachments=[], labels=["INBOX", "UNREAD"], thread_id=None,
                              date=when, raw=raw)
    return call.respond({"id": message.id, "threadId": message.thread_id,
                         "labelIds": list(message.label_ids)})


def _uploaded_message(call: Call) -> bytes:
    upload_type = call.query.get("uploadType")
    content_type = call.headers.get("content-type", "")
    if upload_type == "media":
        if not content_type.startswith("message/rfc822"):
            raise ApiError(400, "badContent", f"Media type '{content_type}' is not supported. "
                           "Valid media types: [message/*]")
        return call.body
    if upload_type == "multipart":
        envelope = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + call.body
        parsed = BytesParser(policy=email.policy.default).parsebytes(envelope)
        parts = list(parsed.iter_parts()) if parsed.is_multipart() else []
        if len(parts) != 2:
            raise invalid_argument("Multipart upload needs metadata and a message part.")
        data = parts[1].get_payload(decode=True)
        return data if isinstance(data, bytes) else str(parts[1].get_payload()).encode()
    raise invalid_argument(f"Invalid upload type: {upload_type}", "uploadType")


def list_threads(call: Call) -> Reply:
    latest: dict[str, StoredMessage] = {}
    for message in _visible(call):
        latest.setdefault(message.thread_id, message)  # newest first, so the first wins
    threads = list(latest.values())
    page, token = _page(threads, call, 100, 500)
    mailbox = call.account.mailbox
    answer: dict[str, Any] = {}
    if page:
        answer["threads"] = [
            {"id": m.thread_id, "snippet": m.snippet(),
             "historyId": str(max(x.history_id for x in mailbox.messages.values()
                                  if x.thread_id == m.thread_id))}
            for m in page
        ]
    if token:
        answer["nextPageToken"] = token
    answer["resultSizeEstimate"] = len(threads)
    return call.respond(answer)


def get_thread(call: Call) -> Reply:
    mailbox = call.account.mailbox
    check_id(call.path["id"])
    messages = sorted((m for m in mailbox.messages.values() if m.thread_id == call.path["id"]),
                      key=lambda m: (m.internal_date, m.id))
    if not messages:
        raise not_found()
    fmt = _format(call)
    headers = call.query.get("metadataHeaders")
    return call.respond({
        "id": call.path["id"],
        "historyId": str(max(m.history_id for m in messages)),
        "messages": [resource(m, fmt, headers) for m in messages],
    })


def list_history(call: Call) -> Reply:
    mailbox = call.account.mailbox
    start_text = call.query.get("startHistoryId")
    if not start_text or not str(start_text).isdigit():
        raise invalid_argument("Missing/invalid parameter: startHistoryId")
    start = int(start_text)
    if start < mailbox.history_floor:
        raise not_found()
    types = set(call.query.get("historyTypes") or
                ("messageAdded", "messageDeleted", "labelAdded", "labelRemoved"))
    label = call.query.get("labelId")
    records = [
        r for r in mailbox.history
        if r.id > start and r.kind in types
        and (label is None or label in r.label_ids or label in r.changed)
    ]
    page, token = _page(records, call, 100, 500)
    answer: dict[str, Any] = {}
    if page:
        answer["history"] = [_history(r) for r in page]
    if token:
        answer["nextPageToken"] = token
    answer["historyId"] = str(mailbox.history_id)
    return call.respond(answer)


def _history(record: Any) -> dict[str, Any]:
    ref = {"id": record.message_id, "threadId": record.thread_id}
    message = {**ref, "labelIds": list(record.label_ids)}
    entry: dict[str, Any] = {"id": str(record.id), "messages": [ref]}
    if record.kind == "messageAdded":
        entry["messagesAdded"] = [{"message": message}]
    elif record.kind == "messageDeleted":
        entry["messagesDeleted"] = [{"message": message}]
    elif record.kind == "labelAdded":
        entry["labelsAdded"] = [{"message": message, "labelIds": list(record.changed)}]
    else:
        entry["labelsRemoved"] = [{"message": message, "labelIds": list(record.changed)}]
    return entry


def list_labels(call: Call) -> Reply:
    mailbox = call.account.mailbox
    labels = [{"id": x, "name": x, "type": "system"} for x in SYSTEM_LABELS]
    labels += [{"id": i, "name": n, "type": "user"} for n, i in mailbox.labels.items()]
    return call.respond({"labels": labels})


def watch(call: Call) -> Reply:
    body = call.json_body()
    topic = str(body.get("topicName") or "")
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "topics" or not all(parts):
        raise invalid_argument(
            "Invalid topicName does not match projects/SOME-ANDROID-PROJECT/topics/*"
        )
    behaviour = str(body.get("labelFilterBehavior") or body.get("labelFilterAction")
                    or "include")
    if behaviour not in ("include", "exclude"):
        raise invalid_argument(f"Invalid value at 'labelFilterBehavior', \"{behaviour}\"")
    mailbox = call.account.mailbox
    expiration = int(time.time() * 1000) + WATCH_DAYS * 86_400_000
    mailbox.watch = Watch(topic, list(body.get("labelIds") or []), behaviour, expiration,
                          mailbox.history_id)
    return call.respond({"historyId": str(mailbox.history_id), "expiration": str(expiration)})


def stop(call: Call) -> Reply:
    call.account.mailbox.watch = None
    return Reply.empty(204)


HANDLERS: dict[str, Callable[[Call], Reply]] = {
    "gmail.users.getProfile": get_profile,
    "gmail.users.messages.list": list_messages,
    "gmail.users.messages.get": get_message,
    "gmail.users.messages.attachments.get": get_attachment,
    "gmail.users.messages.modify": modify_message,
    "gmail.users.messages.send": send_message,
    "gmail.users.threads.list": list_threads,
    "gmail.users.threads.get": get_thread,
    "gmail.users.history.list": list_history,
    "gmail.users.labels.list": list_labels,
    "gmail.users.watch": watch,
    "gmail.users.stop": stop,
}


def check_user(call: Call) -> None:
    """`userId` is `me` or the caller's own address; anyone else is a delegation error."""
    user = call.path.get("userId", "me")
    if user != "me" and user.lower() != call.account.email.lower():
        raise ApiError(403, "forbidden", f"Delegation denied for {call.account.email}")

