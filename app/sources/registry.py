"""Which `Source` reads an account."""

from __future__ import annotations

from pathlib import Path

from app.accounts.models import Account
from app.core.config import Settings
from app.google.credentials import granted_scopes
from app.google.scopes import READ_SCOPES
from app.google.source import GoogleSource
from app.sources.base import Source
from app.sources.sample import SAMPLE_DATA_DIR, SampleSource

# One SampleSource per folder for the process: it only reads, and its cache of parsed
# messages (checked against each file's size and mtime) then serves every run.
_samples: dict[Path, SampleSource] = {}


def _sample(root: Path | None) -> SampleSource:
    key = Path(root) if root is not None else SAMPLE_DATA_DIR
    source = _samples.get(key)
    if source is None:
        source = _samples[key] = SampleSource(key)
    return source


def source_for(account: Account, settings: Settings) -> Source | None:
    """The source for an active account, or None when it cannot be read now.

    A Google account is read within the scopes it granted (no `gmail.readonly`: no
    mail; no `drive.readonly`: no files); with neither, or without a stored grant or a
    configured OAuth client, there is nothing to read.
    """
    if account.status != "active":
        return None
    if account.kind == "sample":
        return _sample(settings.sample_data_dir)
    if account.kind == "google":
        if (
            account.refresh_token_encrypted is None
            or not settings.google_client_id
            or not granted_scopes(account) & set(READ_SCOPES)
        ):
            return None
        return GoogleSource(account, settings)
    return None
