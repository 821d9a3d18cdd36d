"""How a webhook's failed request is put in words (the feed and the log show it)."""

from __future__ import annotations

import httpx

from app.delivery.webhooks import _why


def test_a_timeout_says_so_where_httpx_says_nothing() -> None:
    """A receiver slower than the timeout was "POST http://… failed: ReadTimeout: "."""
    assert _why(httpx.ReadTimeout("")) == "no answer in time (ReadTimeout)"
    assert _why(httpx.ConnectTimeout("timed out")) == "no answer in time (ConnectTimeout)"


def test_other_errors_keep_their_own_words_and_none_are_left_dangling() -> None:
    assert _why(httpx.ConnectError("All connection attempts failed")) == (
        "ConnectError: All connection attempts failed")
    assert _why(httpx.RemoteProtocolError("  ")) == "RemoteProtocolError"
