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


def test_an_offline_digest_is_named_once_in_both_parts() -> None:
    from app.agent.offline import OFFLINE_MODEL_NAME, OFFLINE_NOTE
    from app.delivery.render import digest_html

    offline = {"summary": "Two mails.", "sections": [], "action_items": [],
               "notes": [OFFLINE_NOTE], "model": OFFLINE_MODEL_NAME,
               "covers": {"end": "2026-11-24T07:00:00Z"}}
    for part in (digest_text("Digest", offline), digest_html("Digest", offline)):
        assert part.count("Written by") == 1, part
        assert "offline model: extractive, no LLM." in part
        assert "Covers everything up to" in part
    gemini = {**offline, "notes": [], "model": "gemini-3.5-flash"}
    assert "Written by gemini-3.5-flash. Covers everything up to" in digest_text("D", gemini)
