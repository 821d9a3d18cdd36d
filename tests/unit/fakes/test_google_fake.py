"""The fake Google server, driven by the real clients: OAuth, Gmail, batch, faults, quota."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from google.auth.exceptions import RefreshError
from google.oauth2 import id_token
from google_auth_oauthlib.flow import Flow
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from app.google.endpoints import GoogleEndpoints
from app.google.metrics import GMAIL_UNITS
from app.google.scopes import DRIVE_READONLY, GMAIL_READONLY
from tests.fakes.google import FakeGoogle
from tests.fakes.google.gmail import UNITS

from .conftest import ALICE, credentials

REDIRECT = "http://127.0.0.1:8765/oauth/google/callback"


def _error(exc: HttpError) -> dict:
    return json.loads(exc.content)["error"]


def _flow(endpoints: GoogleEndpoints, scopes: list[str]) -> Flow:
    config = {"web": {
        "client_id": FakeGoogle.CLIENT_ID, "client_secret": FakeGoogle.CLIENT_SECRET,
        "auth_uri": endpoints.auth_uri, "token_uri": endpoints.token_uri,
        "redirect_uris": [REDIRECT],
    }}
    return Flow.from_client_config(config, scopes=scopes, redirect_uri=REDIRECT)


# --- OAuth ------------------------------------------------------------------------------------


def test_consent_redirect_and_code_exchange_with_pkce(fake, endpoints, service, monkeypatch, http):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake speaks plain http
    fake.consent_email = "carol@example.com"
    flow = _flow(endpoints, [GMAIL_READONLY, DRIVE_READONLY])
    url, state = flow.authorization_url(access_type="offline", include_granted_scopes="true",
                                        prompt="consent")
    consent = http.get(url, follow_redirects=False)
    assert consent.status_code == 302
    location = consent.headers["location"]
    assert location.startswith(REDIRECT)
    answer = parse_qs(urlsplit(location).query)
    assert answer["state"] == [state]
    assert set(answer["scope"][0].split()) == {GMAIL_READONLY, DRIVE_READONLY}

    flow.fetch_token(code=answer["code"][0])
    flow.oauth2session.close()
    granted = flow.credentials
    assert granted.refresh_token
    assert granted.token
    gmail = service("gmail", granted)
    assert gmail.users().getProfile(userId="me").execute()["emailAddress"] == "carol@example.com"

    # The code is single-use.
    again = http.post(endpoints.token_uri, data={
        "grant_type": "authorization_code", "code": answer["code"][0],
        "redirect_uri": REDIRECT, "client_id": FakeGoogle.CLIENT_ID,
        "client_secret": FakeGoogle.CLIENT_SECRET, "code_verifier": flow.code_verifier,
    })
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_code_exchange_checks_the_verifier_the_client_and_the_redirect(fake, endpoints, http):
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(
        __import__("hashlib").sha256(verifier.encode()).digest()
    ).decode().rstrip("=")

    def exchange(**override):
        code = fake.issue_code(ALICE, [GMAIL_READONLY], REDIRECT, code_challenge=challenge)
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "client_id": FakeGoogle.CLIENT_ID, "client_secret": FakeGoogle.CLIENT_SECRET,
                "code_verifier": verifier} | override
        return http.post(endpoints.token_uri, data={k: v for k, v in data.items() if v})

    assert exchange().status_code == 200
    missing = exchange(code_verifier=None)
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_grant")
    wrong = exchange(code_verifier="w" * 64)
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    secret = exchange(client_secret="nope")
    assert (secret.status_code, secret.json()["error"]) == (401, "invalid_client")
    redirect = exchange(redirect_uri="http://127.0.0.1:9/elsewhere")
    assert (redirect.status_code, redirect.json()["error"]) == (400, "redirect_uri_mismatch")


def test_consent_refuses_an_unknown_client_or_redirect(fake, endpoints, http):
    base = {"client_id": FakeGoogle.CLIENT_ID, "redirect_uri": REDIRECT,
            "response_type": "code", "scope": GMAIL_READONLY, "state": "s"}
    assert http.get(endpoints.auth_uri, params=base).status_code == 302
    assert http.get(endpoints.auth_uri, params=base | {"client_id": "x"}).status_code == 401
    other = base | {"redirect_uri": "https://evil.example/cb"}
    assert http.get(endpoints.auth_uri, params=other).status_code == 400
    assert http.get(endpoints.auth_uri, params=base | {"scope": "bogus"}).status_code == 400


def test_refresh_token_only_on_first_offline_consent(fake, endpoints, http):
    def consent_and_exchange(**extra):
        query = {"client_id": FakeGoogle.CLIENT_ID, "redirect_uri": REDIRECT,
                 "response_type": "code", "scope": GMAIL_READONLY, "access_type": "offline"}
        location = http.get(endpoints.auth_uri, params=query | extra).headers["location"]
        code = parse_qs(urlsplit(location).query)["code"][0]
        return http.post(endpoints.token_uri, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": FakeGoogle.CLIENT_ID, "client_secret": FakeGoogle.CLIENT_SECRET,
        }).json()

    first = consent_and_exchange()
    assert first["refresh_token"]
    assert "refresh_token" not in consent_and_exchange()  # Google: only the first time
    assert consent_and_exchange(prompt="consent")["refresh_token"] == first["refresh_token"]
    fake.revoke(ALICE)
    assert consent_and_exchange()["refresh_token"] != first["refresh_token"]


def test_token_endpoint_faults_use_the_oauth_shape(fake, endpoints, http):
    fake.fail_next(path_contains="/token", status=503, retry_after=3)
    answer = http.post(endpoints.token_uri, data={"grant_type": "refresh_token"})
    assert answer.status_code == 503
    assert answer.json()["error"] == "internal_failure"
    assert answer.headers["retry-after"] == "3"


def test_granted_scopes_can_be_fewer_than_asked(fake, endpoints, http):
    fake.granted_scopes = {GMAIL_READONLY}
    query = {"client_id": FakeGoogle.CLIENT_ID, "redirect_uri": REDIRECT,
             "response_type": "code", "scope": f"{GMAIL_READONLY} {DRIVE_READONLY}"}
    location = http.get(endpoints.auth_uri, params=query).headers["location"]
    assert parse_qs(urlsplit(location).query)["scope"] == [GMAIL_READONLY]


def test_refresh_then_invalid_grant_after_revoke(fake, endpoints, creds, gmail):
    assert gmail.users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    assert creds.token
    assert creds.token.startswith("ya29.")
    fake.revoke(ALICE)
    fake.expire_access_tokens()
    with pytest.raises(RefreshError) as caught:
        gmail.users().getProfile(userId="me").execute()
    assert "invalid_grant" in str(caught.value)


def test_expired_access_token_is_401_and_google_auth_refreshes_once(
    fake, creds, service, auth_request, http):
    creds.refresh(auth_request)
    profile = f"{fake.url}/gmail/v1/users/me/profile"
    bearer = {"Authorization": f"Bearer {creds.token}"}
    assert http.get(profile, headers=bearer).json()["emailAddress"] == ALICE
    fake.expire_access_tokens()
    expired = http.get(profile, headers=bearer)
    assert expired.status_code == 401
    assert expired.json()["error"]["status"] == "UNAUTHENTICATED"
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]

    # google-auth's transport answers a 401 with one refresh and one retry.
    refreshing = service("gmail", creds)
    fake.reset_counters()
    assert refreshing.users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    assert [(r.path, r.status) for r in fake.requests] == [
        ("/gmail/v1/users/me/profile", 401), ("/token", 200), ("/gmail/v1/users/me/profile", 200)
    ]


def test_revoke_endpoint_and_missing_token(fake, endpoints, creds, auth_request, http):
    creds.refresh(auth_request)
    assert http.post(endpoints.revoke_uri, params={"token": creds.token}).status_code == 200
    again = http.post(endpoints.revoke_uri, params={"token": creds.token})
    assert (again.status_code, again.json()["error"]) == (400, "invalid_token")
    with pytest.raises(RefreshError, match="invalid_grant"):
        creds.refresh(auth_request)
    no_token = http.get(f"{fake.url}/gmail/v1/users/me/profile")
    assert no_token.status_code == 401
    assert no_token.json()["error"]["errors"][0]["reason"] == "required"


def test_scopes_are_enforced(fake, endpoints, service):
    gmail = service("gmail", credentials(fake, endpoints, scopes=[DRIVE_READONLY]))
    with pytest.raises(HttpError) as caught:
        gmail.users().messages().list(userId="me").execute()
    assert caught.value.status_code == 403
    assert _error(caught.value)["errors"][0]["reason"] == "insufficientPermissions"


def test_pubsub_token_verifies_against_the_certs(fake, endpoints, auth_request):
    token = fake.sign_pubsub_token("https://pilotlight.example/api/v1/google/pubsub")
    claims = id_token.verify_token(token, auth_request,
                                   audience="https://pilotlight.example/api/v1/google/pubsub",
                                   certs_url=endpoints.certs)
    assert claims["email"] == "pubsub@fake.iam.gserviceaccount.com"
    assert claims["email_verified"] is True
    with pytest.raises(ValueError, match="audience"):
        id_token.verify_token(token, auth_request, audience="https://other.example",
                              certs_url=endpoints.certs)
    forged = token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)
    with pytest.raises(ValueError, match="signature"):
        id_token.verify_token(forged, auth_request, audience=None, certs_url=endpoints.certs)


# --- faults and counters ---------------------------------------------------------------------


def test_429_with_retry_after_then_success(fake, gmail):
    fake.fail_next(path_contains="/messages", status=429, count=1, retry_after=2)
    with pytest.raises(HttpError) as caught:
        gmail.users().messages().list(userId="me").execute()
    assert caught.value.status_code == 429
    assert caught.value.resp["retry-after"] == "2"
    error = _error(caught.value)
    assert (error["status"], error["errors"][0]["reason"]) == (
        "RESOURCE_EXHAUSTED", "rateLimitExceeded")
    assert gmail.users().messages().list(userId="me").execute()["messages"]


@pytest.mark.parametrize(("status", "name"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
def test_server_errors_on_demand(fake, gmail, status, name):
    fake.fail_next(path_contains="/profile", status=status, count=2)
    for _ in range(2):
        with pytest.raises(HttpError) as caught:
            gmail.users().getProfile(userId="me").execute()
        assert (caught.value.status_code, _error(caught.value)["status"]) == (status, name)
    gmail.users().getProfile(userId="me").execute()


def test_the_apps_quota_table_is_the_fakes(fake, gmail):
    """Pilotlight's quota metric charges each method what the fake does (Gmail's table:
    users.watch 100, users.stop 50)."""
    assert {method: UNITS[method] for method in GMAIL_UNITS} == GMAIL_UNITS
    fake.reset_counters()
    gmail.users().stop(userId="me").execute()
    assert fake.quota_units(ALICE) == 50


def test_quota_units_as_google_charges_them(fake, gmail):
    fake.reset_counters()
    listed = gmail.users().messages().list(userId="me", maxResults=3).execute()
    gmail.users().messages().get(userId="me", id=listed["messages"][0]["id"]).execute()
    gmail.users().getProfile(userId="me").execute()
    gmail.users().history().list(userId="me", startHistoryId=str(fake.history_id(ALICE))) \
        .execute()
    gmail.users().threads().list(userId="me").execute()
    assert fake.quota_units(ALICE) == 5 + 5 + 1 + 2 + 10
    assert [r.units for r in fake.requests if r.path != "/token"] == [5, 5, 1, 2, 10]


def test_batch_parts_are_counted_and_charged(fake, gmail, endpoints):
    ids = [m["id"] for m in gmail.users().messages().list(userId="me").execute()["messages"]]
    fake.reset_counters()
    results: dict[str, dict] = {}

    def collect(request_id, response, exception):
        assert exception is None
        results[response["id"]] = response

    batch = BatchHttpRequest(callback=collect, batch_uri=endpoints.gmail_batch)
    for message_id in ids:
        batch.add(gmail.users().messages().get(
            userId="me", id=message_id, format="metadata", metadataHeaders=["From", "Subject"]))
    batch.execute()
    assert set(results) == set(ids)
    for message in results.values():
        names = {h["name"] for h in message["payload"]["headers"]}
        assert names <= {"From", "Subject"}
        assert "Subject" in names
    assert fake.batch_sizes == [len(ids)]
    parts = [r for r in fake.requests if r.in_batch]
    assert len(parts) == len(ids)
    assert all(r.units == 5 for r in parts)
    assert fake.quota_units(ALICE) == 5 * len(ids)


def test_batch_part_failures_come_back_per_part(fake, gmail, endpoints):
    ids = [m["id"] for m in gmail.users().messages().list(userId="me").execute()["messages"]]
    fake.fail_next(path_contains=f"/messages/{ids[1]}", status=429, retry_after=1)
    outcomes: dict[str, object] = {}
    batch = BatchHttpRequest(callback=lambda rid, resp, exc: outcomes.update({rid: exc or resp}),
                             batch_uri=endpoints.gmail_batch)
    for message_id in ids[:3]:
        batch.add(gmail.users().messages().get(userId="me", id=message_id, format="minimal"),
                  request_id=message_id)
    batch.execute()
    assert isinstance(outcomes[ids[1]], HttpError)
    assert outcomes[ids[1]].status_code == 429
    assert outcomes[ids[0]]["id"] == ids[0]
    assert outcomes[ids[2]]["id"] == ids[2]


def test_batches_past_the_concurrency_limit_are_throttled(fake, gmail, endpoints):
    ids = [m["id"] for m in gmail.users().messages().list(userId="me").execute()["messages"]]
    fake.batch_concurrency_limit = 5
    statuses: list[int] = []
    batch = BatchHttpRequest(
        callback=lambda rid, resp, exc: statuses.append(exc.status_code if exc else 200),
        batch_uri=endpoints.gmail_batch,
    )
    for message_id in ids[:8]:
        batch.add(gmail.users().messages().get(userId="me", id=message_id, format="minimal"))
    batch.execute()
    assert statuses == [200] * 5 + [429] * 3
    assert fake.quota_units(ALICE) == 5 + 5 * 5  # the list, then the five served parts


def test_batch_of_more_than_100_is_refused(fake, gmail, endpoints):
    # A first call refreshes the token: BatchHttpRequest refreshes on a fresh httplib2.Http
    # it never closes (a ResourceWarning under pytest), so don't let a batch go first.
    gmail.users().getProfile(userId="me").execute()
    batch = BatchHttpRequest(batch_uri=endpoints.gmail_batch)
    for number in range(101):
        batch.add(gmail.users().getProfile(userId="me"), request_id=str(number))
    with pytest.raises(HttpError) as caught:
        batch.execute()
    assert caught.value.status_code == 400


def test_latency_is_added(fake, creds, auth_request, http):
    creds.refresh(auth_request)
    fake.latency_seconds = 1.0
    with pytest.raises(httpx.ReadTimeout):
        http.get(f"{fake.url}/gmail/v1/users/me/profile", timeout=0.2,
                 headers={"Authorization": f"Bearer {creds.token}"})
    fake.latency_seconds = 0.0
    assert http.get(f"{fake.url}/gmail/v1/users/me/profile",
                    headers={"Authorization": f"Bearer {creds.token}"}).status_code == 200


def test_pubsub_push_carries_the_history_id(fake, auth_request, endpoints):
    audience = "https://pilotlight.example/api/v1/google/pubsub"
    headers, body = fake.pubsub_push(ALICE, audience)
    token = headers["Authorization"].removeprefix("Bearer ")
    assert id_token.verify_token(token, auth_request, audience=audience,
                                 certs_url=endpoints.certs)["email_verified"] is True
    data = json.loads(base64.b64decode(body["message"]["data"]))
    assert data == {"emailAddress": ALICE, "historyId": fake.history_id(ALICE)}


def test_consent_cancelled_redirects_with_access_denied(fake, endpoints, http):
    fake.consent_denied = True
    query = {"client_id": FakeGoogle.CLIENT_ID, "redirect_uri": REDIRECT,
             "response_type": "code", "scope": GMAIL_READONLY, "state": "s1"}
    answer = parse_qs(urlsplit(http.get(endpoints.auth_uri, params=query)
                               .headers["location"]).query)
    assert answer["error"] == ["access_denied"]
    assert answer["state"] == ["s1"]
    assert "code" not in answer
