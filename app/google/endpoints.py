"""Every Google URL the service talks to, in one place.

With `PILOTLIGHT_GOOGLE_ENDPOINT_ROOT` set (tests, demos against
`tests/fakes/google.py`) every URL is under that root, with the same paths as
Google's own hosts, so the real clients run unchanged against the fake.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.config import Settings


@dataclass(frozen=True)
class GoogleEndpoints:
    auth_uri: str
    token_uri: str
    revoke_uri: str
    # `client_options={"api_endpoint": ...}` for googleapiclient.discovery.build:
    gmail_api: str
    drive_api: str
    # googleapiclient's new_batch_http_request() ignores api_endpoint (it joins the
    # discovery document's rootUrl), so batches are built with these URIs.
    gmail_batch: str
    drive_batch: str
    # Google's signing certificates, for the Pub/Sub push token.
    certs: str

    @property
    def is_google(self) -> bool:
        return self.token_uri.startswith("https://oauth2.googleapis.com/")


GOOGLE = GoogleEndpoints(
    auth_uri="https://accounts.google.com/o/oauth2/auth",
    token_uri="https://oauth2.googleapis.com/token",
    revoke_uri="https://oauth2.googleapis.com/revoke",
    gmail_api="https://gmail.googleapis.com/",
    drive_api="https://www.googleapis.com/drive/v3/",
    gmail_batch="https://gmail.googleapis.com/batch/gmail/v1",
    drive_batch="https://www.googleapis.com/batch/drive/v3",
    certs="https://www.googleapis.com/oauth2/v1/certs",
)


def google_endpoints(settings: Settings) -> GoogleEndpoints:
    """Google's hosts, or the same paths under `google_endpoint_root`."""
    root = settings.google_endpoint_root.rstrip("/")
    if not root:
        return GOOGLE
    return GoogleEndpoints(
        auth_uri=f"{root}/o/oauth2/auth",
        token_uri=f"{root}/token",
        revoke_uri=f"{root}/revoke",
        gmail_api=f"{root}/",
        drive_api=f"{root}/drive/v3/",
        gmail_batch=f"{root}/batch/gmail/v1",
        drive_batch=f"{root}/batch/drive/v3",
        certs=f"{root}/oauth2/v1/certs",
    )
