"""The draft a run falls back to when the model ran out of turns."""

from __future__ import annotations

from datetime import UTC, datetime

from app.agent.resume import fallback_draft
from app.sources.base import Delta, MailCard


def _card(mail_id: str, snippet: str) -> MailCard:
    return MailCard(id=mail_id, thread_id=mail_id, sender="Bob <bob@example.com>",
                    subject=f"Mail {mail_id}", date=datetime(2026, 5, 1, tzinfo=UTC),
                    snippet=snippet)


def test_a_mail_without_a_snippet_is_listed_by_its_sender_alone() -> None:
    """A Gmail card from metadata has no snippet (Gmail's may hold hidden text): its item
    says who it is from, without a dangling colon."""
    draft = fallback_draft({"google": Delta(messages=[_card("m1", ""), _card("m2", "Hi.")])})
    [section] = draft.sections
    assert [i.detail for i in section.items] == [
        "From Bob <bob@example.com>", "From Bob <bob@example.com>: Hi.",
    ]
