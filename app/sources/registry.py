"""Which `Source` reads an account."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from app.accounts.models import Account
from app.core.config import Settings
from app.google.credentials import usable_scopes
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY, READ_SCOPES
from app.google.source import GoogleSource
from app.sources.base import Source
from app.sources.sample import SampleSource

# One SampleSource per folder for the process (None: the bundled one): it only reads,
# and its cache of parsed messages (checked against each file's size and mtime) then
# serves every run.
_samples: dict[Path | None, SampleSource] = {}


def readable(account: Account) -> bool:
    """Whether a run could read the account: active, and the bundled sample, or a Google
    account with a stored grant for Gmail or Drive."""
    if account.status != "active":
        return False
    if account.kind == "sample":
        return True
    return (
        account.kind == "google" and account.refresh_token_encrypted is not None
        and bool(usable_scopes(account) & set(READ_SCOPES))
    )


# The grant that reads each kind of source an instruction names.
_KIND_SCOPES = {"gmail": GMAIL_READONLY, "drive": DRIVE_READONLY}


def reads_any(account: Account, kinds: Iterable[str]) -> bool:
    """Whether a run could read one of `kinds` ("gmail", "drive") in the account: the
    sample holds both; a Google account those it granted and still serves (a Google
    account without Gmail reads its Drive only)."""
    if not readable(account):
        return False
    if account.kind == "sample":
        return True
    usable = usable_scopes(account)
    return any(_KIND_SCOPES.get(kind) in usable for kind in kinds)


def source_for(account: Account, settings: Settings) -> Source | None:
    """The source for an active account, or None when it cannot be read now.

    A Google account is read within the scopes it granted (no `gmail.readonly`: no
    mail; no `drive.readonly`: no files); with neither, or without a stored grant or a
    configured OAuth client, there is nothing to read.
    """
    if not readable(account):
        return None
    if account.kind == "sample":
        root = settings.sample_data_dir
        if root not in _samples:
            _samples[root] = SampleSource(root)
        return _samples[root]
    if not settings.google_client_id:
        return None
    return GoogleSource(account, settings)
