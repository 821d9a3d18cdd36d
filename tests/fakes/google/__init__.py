"""A strict fake of Google's OAuth server, Gmail v1 and Drive v3 over real HTTP on 127.0.0.1.

The real clients (google-api-python-client with its bundled discovery documents,
google-auth, google-auth-oauthlib) talk to it unchanged when every URL comes from
`google_endpoints(Settings(google_endpoint_root=fake.url))`. Routes, query parameters,
enums and `fields` are checked against the discovery documents the client ships, so a
call the API would refuse gets the API's 4xx, in Google's error shape.

    fake = FakeGoogle(seed=True)            # alice@example.com's mailbox and Drive
    fake.start(); fake.url; fake.stop()     # or `with FakeGoogle() as fake:`
    fake.reset(seed=True)                   # a fresh state on the same running server

OAuth (`oauth.py`): one client (CLIENT_ID, CLIENT_SECRET); `consent_email`,
`granted_scopes`, `consent_denied`, `redirect_uris` steer the consent redirect;
`issue_code`, `issue_refresh_token`, `revoke(email)`, `access_token_seconds`,
`expire_access_tokens()`; `sign_pubsub_token(audience)` and `pubsub_push(email, audience)`
(verifiable against `/oauth2/v1/certs`). A refresh token comes back for offline access on
the first consent only (or with prompt=consent), as Google does.

Data: `add_message` (`headers=` adds headers such as In-Reply-To), `modify_labels`,
`account(email).mailbox.replaces_message_ids` (sent mail gets Gmail's own Message-ID),
`delete_message`, `history_id`, `expire_history`, `watches`; `add_file`, `update_file`,
`delete_file`, `root_folder_id`, `add_shared_drive` (add files to it with its id as parent:
they carry a `driveId` and are seen only by calls that opt in with supportsAllDrives /
includeItemsFromAllDrives, as in Drive). Gmail part bodies and attachment data are unpadded
base64url, Docs exported as text/plain start with a BOM.

Faults and counters (`server.py`): `fail_next(path_contains, status, count, retry_after)`,
`latency_seconds`, `batch_concurrency_limit`, `requests` (FakeRequest per call, batch
parts with in_batch=True), `batch_sizes`, `quota_units(email)` (Gmail's documented
units), `reset_counters()`. Standalone: `python -m tests.fakes.google --port P --seed`,
controlled over `/_fake/...` (`control.py`).
"""

from .server import FakeGoogle, FakeRequest

__all__ = ["FakeGoogle", "FakeRequest"]
