"""An account's OAuth grant: the refresh token encrypted at rest, and the credentials
the Google clients use.

`Account.refresh_token_encrypted` holds the refresh token sealed by the secret box
(MultiFernet, `PILOTLIGHT_SECRET_KEYS`); `Account.scopes["granted"]` lists the scopes
Google granted, and `Account.scopes["mailbox"]` is false when Gmail said the Google
account has no Gmail (its Gmail scopes then serve nothing). Nothing here logs a token.
"""

from __future__ import annotations

from google.oauth2.credentials import Credentials

from app.accounts.models import Account
from app.core.config import Settings
from app.core.crypto import secret_box
from app.google.endpoints import google_endpoints
from app.google.scopes import GMAIL_READONLY, GMAIL_SEND
from app.sources.base import AccountDisconnected


def granted_scopes(account: Account) -> set[str]:
    """The scopes the account's grant holds."""
    return set((account.scopes or {}).get("granted", []))


def usable_scopes(account: Account) -> set[str]:
    """The granted scopes the account can serve: without Gmail's when Gmail said the
    Google account has no mailbox (`Account.scopes["mailbox"]` false)."""
    scopes = granted_scopes(account)
    if (account.scopes or {}).get("mailbox") is False:
        scopes -= {GMAIL_READONLY, GMAIL_SEND}
    return scopes


def seal_refresh_token(settings: Settings, refresh_token: str) -> bytes:
    """The refresh token encrypted with the newest key, for `Account.refresh_token_encrypted`."""
    return secret_box(settings).encrypt(refresh_token.encode())


def credentials_for(account: Account, settings: Settings) -> Credentials:
    """Credentials that refresh their access token from the stored grant.

    Raises `AccountDisconnected` when there is no grant, and `SecretKeyError` (fail
    closed) when no configured key can read it.
    """
    if account.kind != "google" or account.refresh_token_encrypted is None:
        raise AccountDisconnected(f"account {account.id} has no Google grant")
    refresh_token = secret_box(settings).decrypt(account.refresh_token_encrypted).decode()
    secret = settings.google_client_secret
    return Credentials(
        token=None,
        refresh_token=refresh_token,
        token_uri=google_endpoints(settings).token_uri,
        client_id=settings.google_client_id,
        client_secret=secret.get_secret_value() if secret else None,
        scopes=sorted(granted_scopes(account)),
    )
