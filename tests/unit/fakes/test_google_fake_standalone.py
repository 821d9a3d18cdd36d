"""`python -m tests.fakes.google --port 0 --seed` on its own, driven over `/_fake/`."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from app.core.config import Settings
from app.google.endpoints import google_endpoints
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY
from tests.fakes.google import FakeGoogle

ROOT = Path(__file__).resolve().parents[3]
ALICE = "alice@example.com"


@pytest.mark.slow
def test_standalone_server_with_a_control_api():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.google", "--port", "0", "--seed"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    gmail = None
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        endpoints = google_endpoints(Settings(google_endpoint_root=url, _env_file=None))
        with httpx.Client(base_url=url) as control:
            refresh = control.post("/_fake/refresh_token", json={
                "email": ALICE, "scopes": [GMAIL_READONLY, DRIVE_READONLY]}).json()
            creds = Credentials(
                token=None, refresh_token=refresh["refresh_token"],
                token_uri=endpoints.token_uri, client_id=FakeGoogle.CLIENT_ID,
                client_secret=FakeGoogle.CLIENT_SECRET,
            )
            gmail = build("gmail", "v1", credentials=creds, static_discovery=True,
                          client_options={"api_endpoint": endpoints.gmail_api})
            seeded = gmail.users().messages().list(userId="me").execute()["messages"]
            assert len(seeded) == 9  # ten seeded messages, one of them spam
            start = gmail.users().getProfile(userId="me").execute()["historyId"]

            added = control.post("/_fake/messages", json={
                "email": ALICE, "sender": "billing@example.com", "subject": "Invoice 9",
                "text": "attached", "attachments": [{
                    "filename": "i.pdf", "mime_type": "application/pdf",
                    "data": base64.b64encode(b"%PDF-1.4").decode()}],
            }).json()
            history = gmail.users().history().list(userId="me", startHistoryId=start).execute()
            assert history["history"][0]["messagesAdded"][0]["message"]["id"] == added["id"]
            assert history["historyId"] == added["historyId"]
            found = gmail.users().messages().list(
                userId="me", q="from:billing@example.com has:attachment newer_than:1d"
            ).execute()["messages"]
            assert added["id"] in [m["id"] for m in found]

            control.post("/_fake/fail_next", json={"path_contains": "/history", "status": 503,
                                                   "count": 1, "retry_after": 1})
            with pytest.raises(HttpError) as caught:
                gmail.users().history().list(userId="me", startHistoryId=start).execute()
            assert caught.value.status_code == 503
            assert caught.value.resp["retry-after"] == "1"

            control.post("/_fake/expire_history", json={"email": ALICE})
            with pytest.raises(HttpError) as caught:
                gmail.users().history().list(userId="me", startHistoryId=start).execute()
            assert caught.value.status_code == 404

            stats = control.get("/_fake/stats").json()
            assert stats["quota_units"][ALICE] == 5 + 1 + 2 + 5 + 2
            assert [r["status"] for r in stats["requests"]][-2:] == [503, 404]

            control.post("/_fake/revoke", json={"email": ALICE})
            control.post("/_fake/expire_access_tokens")
            with pytest.raises(RefreshError, match="invalid_grant"):
                gmail.users().getProfile(userId="me").execute()
            assert control.post("/_fake/nonsense").status_code == 400
    finally:
        if gmail is not None:
            gmail.close()
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
