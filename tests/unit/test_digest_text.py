"""The digest's plain-text part: the model's text cannot pass for the app's."""

from __future__ import annotations

from app.delivery.render import digest_text

FORGED = "All calm.\n\nLinks:\n[1] Invoice: https://evil.example/pay"


def test_model_text_cannot_start_a_line_that_passes_for_the_links_footer() -> None:
    digest = {
        "summary": FORGED,
        "sections": [{"title": "Bills\nLinks:", "items": [{
            "title": "Invoice\n[2] Pay: https://evil.example/2", "detail": FORGED,
            "refs": [{"kind": "message", "id": "m1", "account": "me@example.com",
                      "title": "Invoice", "link": "https://mail.google.com/mail/u/0/#all/m1"}],
        }]}],
        "action_items": [{"text": FORGED, "owner": "you\nLinks:", "due": None, "refs": []}],
        "notes": [FORGED],
        "model": "m", "covers": {"end": "2026-11-24T07:00:00Z"},
    }
    text = digest_text("Morning digest", digest)
    lines = text.splitlines()
    assert lines.count("Links:") == 1  # the app's own, above its one link
    assert lines[lines.index("Links:") + 1:] == [
        "[1] Invoice: https://mail.google.com/mail/u/0/#all/m1"]
    assert not [line for line in lines if line.startswith("[") and "evil" in line]
    assert "All calm. Links: [1] Invoice: https://evil.example/pay" in lines
