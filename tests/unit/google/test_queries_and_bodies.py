"""Pure parts of the Google source: Drive queries from the user's words, Gmail bodies."""

from __future__ import annotations

import base64

from app.google.drive import drive_query
from app.google.gmail_format import arrived, body_text, html_to_text


def test_words_become_a_safe_drive_query() -> None:
    assert drive_query("budget") == (
        "(name contains 'budget' or fullText contains 'budget') and trashed = false"
    )
    assert drive_query("Bob's \\ plan") == (
        "(name contains 'Bob\\'s' or fullText contains 'Bob\\'s') and "
        "(name contains '\\\\' or fullText contains '\\\\') and "
        "(name contains 'plan' or fullText contains 'plan') and trashed = false"
    )
    assert drive_query('"launch plan" q3') == (
        "(name contains 'launch plan' or fullText contains 'launch plan') and "
        "(name contains 'q3' or fullText contains 'q3') and trashed = false"
    )
    # An attempt to break out of the quotes stays inside them.
    assert drive_query("x' or name contains '") .startswith(
        "(name contains 'x\\'' or fullText contains 'x\\'')"
    )


def test_drive_syntax_is_kept() -> None:
    assert drive_query("name contains 'plan'") == "(name contains 'plan') and trashed = false"
    assert drive_query("'folder1' in parents") == "('folder1' in parents) and trashed = false"
    assert drive_query("modifiedTime > '2026-01-01T00:00:00'").startswith("(modifiedTime >")
    assert drive_query("the name of the plan").startswith("(name contains 'the' or")


def test_html_to_text_keeps_links_drops_scripts() -> None:
    text = html_to_text(
        '<style>x{}</style><script>bad()</script><p>See <a href="https://a.example/x">the doc'
        '</a> or <a href="mailto:bob@example.com">bob@example.com</a> &amp; '
        '<a href="https://b.example/">https://b.example/</a></p>'
    )
    assert text == "See the doc (https://a.example/x) or bob@example.com & https://b.example/"


def _data(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("latin-1")).decode().rstrip("=")


def test_body_prefers_plain_text_and_decodes_the_charset() -> None:
    payload = {
        "mimeType": "multipart/alternative",
        "parts": [
            {"mimeType": "text/plain", "filename": "",
             "headers": [{"name": "Content-Type", "value": "text/plain; charset=ISO-8859-1"}],
             "body": {"data": _data("Grüße")}},
            {"mimeType": "text/html", "filename": "", "body": {"data": _data("<p>other</p>")}},
        ],
    }
    assert body_text(payload) == "Grüße"


def test_what_arrived() -> None:
    assert arrived({"labelIds": ["INBOX", "UNREAD"]})
    assert arrived({"labelIds": ["CATEGORY_UPDATES"]})  # archived by a filter
    assert arrived({"labelIds": ["SENT", "INBOX"]})  # sent to oneself
    assert not arrived({"labelIds": ["SENT"]})
    assert not arrived({"labelIds": ["DRAFT"]})
    assert not arrived({"labelIds": ["SPAM", "INBOX"]})
