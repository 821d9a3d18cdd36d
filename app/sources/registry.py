"""Which `Source` reads an account."""

from __future__ import annotations

from app.accounts.models import Account
from app.core.config import Settings
from app.sources.base import Source
from app.sources.sample import SampleSource


def source_for(account: Account, settings: Settings) -> Source | None:
    """The source for an active account, or None when it cannot be read now."""
    if account.status != "active":
        return None
    if account.kind == "sample":
        return SampleSource(settings.sample_data_dir)
    # Google accounts arrive with the Gmail and Drive connection.
    return None
