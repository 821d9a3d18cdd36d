"""The registry reads a Google account within the scopes it granted."""

from __future__ import annotations

from app.core.config import Settings
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY, GMAIL_SEND
from app.google.source import GoogleSource
from app.sources.registry import source_for
from tests.fakes.google import FakeGoogle
from tests.integration.google.conftest import google_account


def test_google_accounts_get_a_google_source_within_their_scopes(
    fake: FakeGoogle, google_settings: Settings
) -> None:
    both = source_for(google_account(fake, google_settings), google_settings)
    assert isinstance(both, GoogleSource)
    assert (both.reads_mail, both.reads_files) == (True, True)

    files_only = source_for(
        google_account(fake, google_settings, scopes=(DRIVE_READONLY,)), google_settings
    )
    assert isinstance(files_only, GoogleSource)
    assert (files_only.reads_mail, files_only.reads_files) == (False, True)

    mail_only = source_for(
        google_account(fake, google_settings, scopes=(GMAIL_READONLY,)), google_settings
    )
    assert isinstance(mail_only, GoogleSource)
    assert (mail_only.reads_mail, mail_only.reads_files) == (True, False)


def test_nothing_to_read_is_no_source(fake: FakeGoogle, google_settings: Settings) -> None:
    send_only = google_account(fake, google_settings, scopes=(GMAIL_SEND,))
    assert source_for(send_only, google_settings) is None

    disconnected = google_account(fake, google_settings)
    disconnected.status = "disconnected"
    assert source_for(disconnected, google_settings) is None

    no_grant = google_account(fake, google_settings)
    no_grant.refresh_token_encrypted = None
    assert source_for(no_grant, google_settings) is None

    unconfigured = google_settings.model_copy(update={"google_client_id": ""})
    assert source_for(google_account(fake, google_settings), unconfigured) is None
