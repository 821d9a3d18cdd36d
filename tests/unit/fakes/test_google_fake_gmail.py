"""The fake's Gmail v1 through google-api-python-client: messages, history, search, send."""

from __future__ import annotations

import base64
import email
import email.policy
import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from googleapiclient.errors import HttpError

from .conftest import ALICE


def _error(exc: HttpError) -> dict:
    return json.loads(exc.content)["error"]


def test_the_snippet_is_cut_from_the_html_hidden_text_and_all(fake, gmail):
    """Gmail's preview is the HTML's text read without its CSS: a hidden preheader comes
    first; the head and styles are no text."""
    message_id = fake.add_message(
        ALICE, sender="Shop <shop@example.com>", subject="Sale", text="Our sale starts.",
        html="<html><head><title>T</title><style>p{color:red}</style></head><body>"
             "<div style='display:none'>Hidden &amp; first</div><p>Our sale starts.</p>"
             "</body></html>",
    )
    got = gmail.users().messages().get(userId="me", id=message_id, format="metadata").execute()
    assert got["snippet"] == "Hidden &amp; first Our sale starts."


def _decode(data: str) -> bytes:
    """Gmail's unpadded base64url, decoded (the padding has to be put back)."""
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _ids(gmail, **kwargs) -> list[str]:
    return [m["id"] for m in gmail.users().messages().list(userId="me", **kwargs).execute()
            .get("messages", [])]


def test_profile_and_list_newest_first(fake, gmail):
    profile = gmail.users().getProfile(userId=ALICE).execute()
    assert profile["emailAddress"] == ALICE
    assert profile["historyId"] == str(fake.history_id(ALICE))
    listed = gmail.users().messages().list(userId="me").execute()
    box = fake.account(ALICE).mailbox
    dates = [box.messages[m["id"]].internal_date for m in listed["messages"]]
    assert dates == sorted(dates, reverse=True)
    assert all(m.keys() == {"id", "threadId"} for m in listed["messages"])
    # Spam stays out unless asked for.
    spam = [m.id for m in box.messages.values() if "SPAM" in m.label_ids]
    assert not set(spam) & {m["id"] for m in listed["messages"]}
    assert set(spam) <= set(_ids(gmail, includeSpamTrash=True))


def test_pages_follow_next_page_token(fake, gmail):
    seen: list[str] = []
    request = gmail.users().messages().list(userId="me", maxResults=3)
    while request is not None:
        page = request.execute()
        seen += [m["id"] for m in page["messages"]]
        request = gmail.users().messages().list_next(request, page)
    assert seen == _ids(gmail)


def test_message_formats(fake, gmail):
    message_id = fake.add_message(
        ALICE, sender="Billing <billing@example.com>", subject="Invoice 7",
        text="Plain body ünïcode", html="<p>HTML <b>body</b></p>",
        attachments=[("inv.pdf", "application/pdf", b"%PDF-1.4 fake bytes")],
    )
    full = gmail.users().messages().get(userId="me", id=message_id).execute()
    payload = full["payload"]
    assert payload["mimeType"] == "multipart/mixed"
    assert payload["partId"] == ""
    alternative, attachment = payload["parts"]
    assert alternative["mimeType"] == "multipart/alternative"
    plain, html = alternative["parts"]
    assert plain["partId"] == "0.0"
    assert _decode(plain["body"]["data"]).decode().strip() == \
        "Plain body ünïcode"
    assert "<b>body</b>" in _decode(html["body"]["data"]).decode()
    assert attachment["filename"] == "inv.pdf"
    assert "data" not in attachment["body"]
    assert attachment["body"]["size"] == len(b"%PDF-1.4 fake bytes")
    got = gmail.users().messages().attachments().get(
        userId="me", messageId=message_id, id=attachment["body"]["attachmentId"]).execute()
    assert _decode(got["data"]) == b"%PDF-1.4 fake bytes"
    assert not got["data"].endswith("=")  # Gmail leaves the padding off
    assert full["labelIds"] == ["INBOX", "UNREAD"]
    assert full["snippet"] == "HTML body"  # from the HTML part, as Gmail's preview
    assert {"Subject", "From", "To", "Date", "Message-ID"} <= \
        {h["name"] for h in payload["headers"]}

    metadata = gmail.users().messages().get(userId="me", id=message_id, format="metadata",
                                            metadataHeaders=["subject"]).execute()
    assert metadata["payload"]["headers"] == [{"name": "Subject", "value": "Invoice 7"}]
    assert "parts" not in metadata["payload"]
    minimal = gmail.users().messages().get(userId="me", id=message_id, format="minimal") \
        .execute()
    assert "payload" not in minimal
    assert minimal["threadId"] == message_id
    raw = gmail.users().messages().get(userId="me", id=message_id, format="raw").execute()
    parsed = email.message_from_bytes(base64.urlsafe_b64decode(raw["raw"]),
                                      policy=email.policy.default)
    assert parsed["Subject"] == "Invoice 7"

    with pytest.raises(HttpError) as caught:
        gmail.users().messages().get(userId="me", id="0123456789abcdef").execute()
    assert caught.value.status_code == 404


def test_threads(fake, gmail):
    first = fake.add_message(ALICE, subject="Trip", text="Shall we go?",
                             date=datetime.now(UTC) - timedelta(hours=2))
    fake.add_message(ALICE, subject="Re: Trip", text="Yes!", thread_id=first)
    thread = gmail.users().threads().get(userId="me", id=first, format="minimal").execute()
    assert [m["threadId"] for m in thread["messages"]] == [first, first]
    listed = gmail.users().threads().list(userId="me", q="trip").execute()
    assert [t["id"] for t in listed["threads"]] == [first]
    assert listed["threads"][0]["snippet"] == "Yes!"


def test_history_records_and_expiry(fake, gmail):
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    empty = gmail.users().history().list(userId="me", startHistoryId=start).execute()
    assert empty == {"historyId": start}

    added = fake.add_message(ALICE, subject="New", text="news")
    fake.modify_labels(ALICE, added, remove=["UNREAD"])
    history = gmail.users().history().list(userId="me", startHistoryId=start).execute()
    assert int(history["historyId"]) > int(start)
    records = history["history"]
    assert records[0]["messagesAdded"] == [
        {"message": {"id": added, "threadId": added, "labelIds": ["INBOX", "UNREAD"]}}
    ]
    assert records[0]["messages"] == [{"id": added, "threadId": added}]
    assert records[1]["labelsRemoved"][0]["labelIds"] == ["UNREAD"]
    only_added = gmail.users().history().list(
        userId="me", startHistoryId=start, historyTypes=["messageAdded"]).execute()
    assert len(only_added["history"]) == 1

    fake.expire_history(ALICE)
    with pytest.raises(HttpError) as caught:
        gmail.users().history().list(userId="me", startHistoryId=start).execute()
    assert caught.value.status_code == 404
    assert _error(caught.value)["status"] == "NOT_FOUND"
    # After a full resync the new historyId works again.
    fresh = gmail.users().getProfile(userId="me").execute()["historyId"]
    assert gmail.users().history().list(userId="me", startHistoryId=fresh).execute() == \
        {"historyId": fresh}


def test_history_without_start_id_is_a_strict_400(fake, gmail):
    with pytest.raises(HttpError) as caught:
        gmail.users().history().list(userId="me").execute()
    assert caught.value.status_code == 400
    error = _error(caught.value)
    assert error["errors"][0]["reason"] == "invalidArgument"
    assert "startHistoryId" in error["message"]


def test_history_pages(fake, gmail):
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    added = [fake.add_message(ALICE, subject=f"n{i}", text="x") for i in range(5)]
    seen: list[str] = []
    token = None
    while True:
        page = gmail.users().history().list(userId="me", startHistoryId=start, maxResults=2,
                                            pageToken=token).execute()
        seen += [r["messagesAdded"][0]["message"]["id"] for r in page.get("history", [])]
        token = page.get("nextPageToken")
        if token is None:
            break
    assert seen == added


def test_unknown_parameters_and_bad_values_are_400(fake, gmail, creds, auth_request, http):
    creds.refresh(auth_request)
    bearer = {"Authorization": f"Bearer {creds.token}"}
    base = f"{fake.url}/gmail/v1/users/me/messages"
    unknown = http.get(base, params={"colour": "blue"}, headers=bearer)
    assert unknown.status_code == 400
    assert unknown.json()["error"]["status"] == "INVALID_ARGUMENT"
    listed = http.get(base, headers=bearer).json()["messages"][0]["id"]
    bad_format = http.get(f"{base}/{listed}", params={"format": "everything"}, headers=bearer)
    assert bad_format.status_code == 400
    bad_number = http.get(base, params={"maxResults": "many"}, headers=bearer)
    assert bad_number.status_code == 400
    other_user = http.get(f"{fake.url}/gmail/v1/users/bob@example.com/profile", headers=bearer)
    assert other_user.status_code == 403
    bad_label = http.get(base, params={"labelIds": "Label_404"}, headers=bearer)
    assert bad_label.status_code == 400
    bad_fields = http.get(base, params={"fields": "messages(id),bogus"}, headers=bearer)
    assert bad_fields.status_code == 400
    good_fields = http.get(base, params={"fields": "messages/id"}, headers=bearer)
    assert good_fields.json()["messages"][0].keys() == {"id"}


@pytest.mark.parametrize(("query", "subjects"), [
    ("from:billing@example.com has:attachment",
     {"Your invoice INV-1042", "Your invoice INV-1043"}),
    ("from:billing@example.com -has:attachment", {"Payment received"}),
    ("subject:invoice newer_than:1d", {"Your invoice INV-1043"}),
    ('"launch plan"', {"Plan for the launch"}),
    ("lunch OR photos", {"Lunch on Thursday?", "Photos from Saturday"}),
    ("is:unread label:promotions", {"This week in gardening"}),
    ("in:sent", {"Re: Plan for the launch"}),
    ("to:bob@example.com", {"Re: Plan for the launch"}),
    ("subject:(payment received) is:read", {"Payment received"}),
    ("filename:pdf", {"Your invoice INV-1042", "Your invoice INV-1043"}),
    ("category:promotions larger:100", {"This week in gardening"}),
    ("prize", set()),
    ("prize in:anywhere", {"You won!!!"}),
    ("slugs", {"This week in gardening"}),
    ("frobnicate:yes", set()),
])
def test_search_operators(fake, gmail, query, subjects):
    box = fake.account(ALICE).mailbox
    found = {box.messages[i].header("Subject") for i in _ids(gmail, q=query)}
    assert found == subjects


def test_search_by_date(fake, gmail):
    old = fake.add_message(ALICE, subject="Old one", text="dusty",
                           date=datetime(2020, 5, 1, tzinfo=UTC))
    assert _ids(gmail, q="dusty before:2021/01/01") == [old]
    assert _ids(gmail, q="dusty after:2021/01/01") == []
    assert _ids(gmail, q="dusty older_than:1y") == [old]


def test_send_needs_the_send_scope_and_is_charged(fake, gmail):
    reply = EmailMessage()
    reply["To"] = "bob@example.com, alice@example.com"
    reply["Subject"] = "Digest"
    reply.set_content("Here is your digest.")
    raw = base64.urlsafe_b64encode(reply.as_bytes()).decode()
    fake.reset_counters()
    sent = gmail.users().messages().send(userId="me", body={"raw": raw}).execute()
    assert set(sent["labelIds"]) == {"SENT", "INBOX"}
    assert fake.quota_units(ALICE) == 100
    stored = gmail.users().messages().get(userId="me", id=sent["id"], format="metadata",
                                          metadataHeaders=["From"]).execute()
    assert stored["payload"]["headers"] == [{"name": "From", "value": ALICE}]
    with pytest.raises(HttpError) as caught:
        gmail.users().messages().send(userId="me", body={}).execute()
    assert caught.value.status_code == 400


def test_send_as_an_upload(fake, gmail, creds, http):
    # googleapiclient sends media uploads to https://<api_endpoint host>/upload/... (it keeps
    # the discovery document's scheme), so against the plain-http fake only the JSON
    # {"raw": ...} form works through the client; the upload path is checked raw here.
    message = EmailMessage()
    message["To"] = "dave@example.com"
    message["Subject"] = "Uploaded"
    message.set_content("sent through /upload")
    gmail.users().getProfile(userId="me").execute()
    upload = f"{fake.url}/upload/gmail/v1/users/me/messages/send"
    headers = {"Authorization": f"Bearer {creds.token}", "Content-Type": "message/rfc822"}
    sent = http.post(upload, params={"uploadType": "media"}, content=message.as_bytes(),
                     headers=headers).json()
    assert sent["labelIds"] == ["SENT"]
    assert _ids(gmail, q="in:sent subject:uploaded") == [sent["id"]]
    wrong = http.post(upload, params={"uploadType": "media"}, content=b"x",
                      headers=headers | {"Content-Type": "text/plain"})
    assert wrong.status_code == 400


def test_watch_and_stop(fake, gmail):
    with pytest.raises(HttpError) as caught:
        gmail.users().watch(userId="me", body={"topicName": "pilotlight"}).execute()
    assert caught.value.status_code == 400
    fake.reset_counters()
    answer = gmail.users().watch(
        userId="me", body={"topicName": "projects/demo/topics/gmail", "labelIds": ["INBOX"]}
    ).execute()
    assert answer["historyId"] == str(fake.history_id(ALICE))
    expiration = int(answer["expiration"])
    assert expiration > datetime.now(UTC).timestamp() * 1000
    assert fake.watches(ALICE)[0]["topic"] == "projects/demo/topics/gmail"
    assert gmail.users().stop(userId="me").execute() == ""
    assert fake.watches(ALICE) == []
    assert fake.quota_units(ALICE) == 150  # watch 100, stop 50


def test_an_account_without_gmail_answers_mail_service_not_enabled(fake, gmail, drive):
    """Gmail's answer for a Google account that has no Gmail, gmail.readonly granted or
    not, as callers quote it (levz0r/gmail-tester#57, FlowCrypt/flowcrypt-browser#435,
    WPManageNinja/fluent-smtp#152); its Drive is served as before."""
    fake.disable_gmail(ALICE)
    for request in (gmail.users().getProfile(userId="me"),
                    gmail.users().messages().list(userId="me"),
                    gmail.users().history().list(userId="me", startHistoryId="1")):
        with pytest.raises(HttpError) as caught:
            request.execute()
        error = _error(caught.value)
        assert (error["code"], error["status"], error["message"]) == \
            (400, "FAILED_PRECONDITION", "Mail service not enabled")
        assert error["errors"][0]["reason"] == "failedPrecondition"
    assert drive.files().list().execute()["files"]


@pytest.mark.parametrize(("message_id", "status"), [
    ("abc123", 404), ("1", 404), ("18c9a1b2c3d4e5f6", 404),
    ("ffffffffffffffff", 400), ("18c9a1b2c3d4e5f6aa", 400), ("nosuchmessageid", 400),
    ("0x1f", 400),
])
def test_an_id_that_is_no_gmail_id_is_400_else_404(fake, gmail, message_id, status):
    """As measured against Gmail (brekkylab/backlot#39): an id that parses as a hex number
    below 2**63 and names nothing is 404; any other is 400 "Invalid id value"."""
    for request in (gmail.users().messages().get(userId="me", id=message_id),
                    gmail.users().threads().get(userId="me", id=message_id)):
        with pytest.raises(HttpError) as caught:
            request.execute()
        assert caught.value.status_code == status
        if status == 400:
            assert _error(caught.value)["message"] == "Invalid id value"


def test_gmail_turned_on_again_serves_the_mailbox_it_had(fake, gmail):
    total = gmail.users().getProfile(userId="me").execute()["messagesTotal"]
    fake.disable_gmail(ALICE)
    with pytest.raises(HttpError):
        gmail.users().getProfile(userId="me").execute()
    fake.enable_gmail(ALICE)
    assert gmail.users().getProfile(userId="me").execute()["messagesTotal"] == total


def test_a_passing_precondition_failure_has_the_reason_of_a_mailbox_gone(fake, gmail):
    """Gmail's passing "Precondition check failed." (googleapis/google-api-php-client#2558):
    the same code, reason and status as "Mail service not enabled", another message."""
    fake.fail_next("/profile", precondition=True)
    with pytest.raises(HttpError) as caught:
        gmail.users().getProfile(userId="me").execute()
    error = _error(caught.value)
    assert (error["code"], error["status"], error["message"]) == \
        (400, "FAILED_PRECONDITION", "Precondition check failed.")
    assert error["errors"][0]["reason"] == "failedPrecondition"
    assert gmail.users().getProfile(userId="me").execute()["emailAddress"] == ALICE
