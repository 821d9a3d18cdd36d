"""FakeGoogle: the fake's Python handle, its HTTP app and the request pipeline."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes._server import ThreadedServer

from . import batch, drive, gmail
from .calls import Call
from .control import control
from .discovery import check_query, route
from .docs_html import Paragraph, plain_text
from .errors import (
    ApiError,
    Reply,
    injected,
    insufficient_scopes,
    mail_service_not_enabled,
    precondition_check_failed,
    unauthenticated,
)
from .oauth import OAuthServer, sign_jwt
from .store import Account, Ids

HANDLERS = {**gmail.HANDLERS, **drive.HANDLERS}
BATCH_PATHS = {"/batch/gmail/v1": "gmail", "/batch/drive/v3": "drive"}


@dataclass
class FakeRequest:
    """One call the fake answered (a batch's parts are logged one by one, in_batch=True)."""

    method: str
    path: str
    email: str | None
    units: int
    status: int
    in_batch: bool
    method_id: str | None = None  # e.g. "gmail.users.messages.get"
    query: dict[str, Any] = field(default_factory=dict)
    parts: int = 0  # for a batch request: how many calls it carried


@dataclass
class Fault:
    path_contains: str
    status: int
    count: int
    retry_after: float | None
    # Gmail's passing 400 failedPrecondition "Precondition check failed." (see
    # `errors.precondition_check_failed`) rather than the status's usual error.
    precondition: bool = False


class FakeGoogle(ThreadedServer):
    """A strict fake of Google's OAuth server, Gmail v1 and Drive v3 on 127.0.0.1."""

    CLIENT_ID = "fake-client-id.apps.googleusercontent.com"
    CLIENT_SECRET = "fake-client-secret"

    name = "fake-google"

    def __init__(self, seed: bool = False) -> None:
        self._lock = threading.RLock()
        self._reset_state()
        super().__init__()
        self.app = Starlette(routes=[
            Route("/{path:path}", self._http,
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ])
        if seed:
            self.seed()

    def _reset_state(self) -> None:
        self.ids = Ids(0)
        self.accounts: dict[str, Account] = {}
        self.oauth = OAuthServer(self.CLIENT_ID, self.CLIENT_SECRET, self.ids)
        self.latency_seconds = 0.0
        # Gmail throttles big batches ("Too many concurrent requests for user"); with a
        # number here, the parts of one batch past it answer 429 (None: no throttling).
        self.batch_concurrency_limit: int | None = None
        self._faults: list[Fault] = []
        self._requests: list[FakeRequest] = []
        self._pushes = 0

    def reset(self, seed: bool = False) -> None:
        """Forget everything (accounts, grants, tokens, faults, counters), as a new fake
        would; the server keeps running on the same port."""
        with self._lock:
            self._reset_state()
            if seed:
                self.seed()

    def seed(self) -> None:
        """alice@example.com's seeded mailbox and Drive (tests/fakes/google/seed.py)."""
        from .seed import seed_alice

        with self._lock:
            seed_alice(self)

    # --- the Python handle: OAuth -------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, Any]:
        """The app settings that point Pilotlight at this fake (its endpoints, its OAuth
        client), for `Settings.model_copy(update=...)`."""
        return {
            "google_endpoint_root": self.url,
            "google_client_id": self.CLIENT_ID,
            "google_client_secret": SecretStr(self.CLIENT_SECRET),
        }

    @property
    def consent_email(self) -> str:
        return self.oauth.consent_email

    @consent_email.setter
    def consent_email(self, value: str) -> None:
        self.oauth.consent_email = value

    @property
    def granted_scopes(self) -> set[str] | None:
        return self.oauth.granted_scopes

    @granted_scopes.setter
    def granted_scopes(self, value: set[str] | None) -> None:
        self.oauth.granted_scopes = value

    @property
    def redirect_uris(self) -> set[str] | None:
        """The registered redirect URIs; None (the default) accepts any http loopback URI."""
        return self.oauth.redirect_uris

    @redirect_uris.setter
    def redirect_uris(self, value: set[str] | None) -> None:
        self.oauth.redirect_uris = value

    @property
    def consent_denied(self) -> bool:
        """True: the user clicks Cancel; consent redirects with error=access_denied."""
        return self.oauth.consent_denied

    @consent_denied.setter
    def consent_denied(self, value: bool) -> None:
        self.oauth.consent_denied = value

    @property
    def access_token_seconds(self) -> int:
        return self.oauth.access_token_seconds

    @access_token_seconds.setter
    def access_token_seconds(self, value: int) -> None:
        self.oauth.access_token_seconds = value

    def issue_code(self, email: str, scopes: list[str] | set[str], redirect_uri: str,
                   code_challenge: str | None = None) -> str:
        with self._lock:
            return self.oauth.issue_code(email, scopes, redirect_uri, challenge=code_challenge)

    def issue_refresh_token(self, email: str, scopes: list[str] | set[str]) -> str:
        with self._lock:
            return self.oauth.issue_refresh_token(email, scopes)

    def revoke(self, email: str) -> None:
        with self._lock:
            self.oauth.revoke(email)

    def expire_access_tokens(self) -> None:
        with self._lock:
            self.oauth.expire_access_tokens()

    def sign_pubsub_token(
        self, audience: str, email: str = "pubsub@fake.iam.gserviceaccount.com"
    ) -> str:
        """A Pub/Sub push token (RS256, verifiable against `/oauth2/v1/certs`)."""
        now = int(time.time())
        return sign_jwt({
            "iss": "https://accounts.google.com", "aud": audience, "azp": "1000000000000000000000",
            "sub": "1000000000000000000000", "email": email, "email_verified": True,
            "iat": now, "exp": now + 3600,
        })

    def pubsub_push(
        self, email: str, audience: str,
        subscription: str = "projects/demo/subscriptions/gmail-push",
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """The headers and JSON body of the push Pub/Sub would POST for `email`'s watch now:
        {"message": {"data": base64({"emailAddress", "historyId"}), ...}, "subscription"}."""
        with self._lock:
            history_id = self.account(email).mailbox.history_id
            self._pushes += 1
            number = self._pushes
        data = json.dumps({"emailAddress": email, "historyId": history_id}).encode()
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "message": {
                "data": base64.b64encode(data).decode(), "messageId": str(number),
                "message_id": str(number), "publishTime": now, "publish_time": now,
            },
            "subscription": subscription,
        }
        headers = {"Authorization": f"Bearer {self.sign_pubsub_token(audience)}",
                   "Content-Type": "application/json"}
        return headers, body

    # --- the Python handle: data --------------------------------------------------------

    def account(self, email: str) -> Account:
        key = email.lower()
        with self._lock:
            if key not in self.accounts:
                self.accounts[key] = Account(key, self.ids)
            return self.accounts[key]

    def add_message(
        self, email: str, *, sender: str = "Bob <bob@example.com>", to: list[str] | None = None,
        subject: str = "", text: str = "", html: str | None = None,
        attachments: list[tuple[str, str, bytes]] | None = None,
        labels: tuple[str, ...] | list[str] = ("INBOX", "UNREAD"),
        thread_id: str | None = None, date: datetime | None = None, cc: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        with self._lock:
            message = self.account(email).mailbox.add(
                sender=sender, to=to or [email], subject=subject, text=text, html=html,
                attachments=list(attachments or []), labels=labels, thread_id=thread_id,
                date=date, cc=cc, headers=headers,
            )
            return message.id

    def modify_labels(self, email: str, message_id: str, add: list[str] | None = None,
                      remove: list[str] | None = None) -> None:
        with self._lock:
            self.account(email).mailbox.relabel(message_id, add or [], remove or [])

    def delete_message(self, email: str, message_id: str) -> None:
        with self._lock:
            self.account(email).mailbox.delete(message_id)

    def disable_gmail(self, email: str) -> None:
        """`email` is a Google account without Gmail (also one whose administrator turns
        Gmail off after it was connected): every Gmail call answers 400 failedPrecondition
        "Mail service not enabled"; Drive and OAuth work as before."""
        with self._lock:
            self.account(email).gmail_enabled = False

    def enable_gmail(self, email: str) -> None:
        """Gmail is on again for `email` (its administrator turned it back on), with the
        mailbox it had."""
        with self._lock:
            self.account(email).gmail_enabled = True

    def history_id(self, email: str) -> int:
        with self._lock:
            return self.account(email).mailbox.history_id

    def expire_history(self, email: str) -> None:
        with self._lock:
            self.account(email).mailbox.expire_history()

    def watches(self, email: str) -> list[dict[str, Any]]:
        with self._lock:
            watch = self.account(email).mailbox.watch
            now_ms = int(time.time() * 1000)
            if watch is None or watch.expiration_ms <= now_ms:
                return []
            return [{"topic": watch.topic, "expiration": watch.expiration_ms,
                     "label_ids": list(watch.label_ids), "history_id": watch.history_id}]

    def add_file(
        self, email: str, *, name: str, mime_type: str = "application/vnd.google-apps.document",
        content: str | bytes = b"", parents: tuple[str, ...] | list[str] = ("root",),
        modified_by: str | None = None, modified: datetime | None = None,
        created: datetime | None = None, description: str = "",
        paragraphs: list[Paragraph] | None = None,
    ) -> str:
        """A file in `email`'s Drive. A Doc may be given as `paragraphs` of formatted runs
        (`docs_html`) instead of `content`: its text/plain export is their text, its
        text/html export shows their formatting as Docs does."""
        if paragraphs is not None:
            content = plain_text(paragraphs)
        data = content.encode() if isinstance(content, str) else content
        with self._lock:
            file = self.account(email).drive.add(
                name=name, mime_type=mime_type, content=data, parents=list(parents),
                modified_by=modified_by or email, modified=modified, created=created,
                description=description, paragraphs=paragraphs,
            )
            return file.id

    def update_file(
        self, email: str, file_id: str, *, content: str | bytes | None = None,
        name: str | None = None, trashed: bool | None = None, modified_by: str | None = None,
        parents: list[str] | None = None,
    ) -> None:
        data = content.encode() if isinstance(content, str) else content
        with self._lock:
            self.account(email).drive.update(file_id, content=data, name=name, trashed=trashed,
                                             modified_by=modified_by, parents=parents)

    def star_file(self, email: str, file_id: str, starred: bool = True) -> None:
        """Star a file: a change in the change list, its modifiedTime unchanged."""
        with self._lock:
            self.account(email).drive.star(file_id, starred)

    def share_file(self, email: str, file_id: str, owner: str) -> None:
        """The file becomes `owner`'s, shared with `email` now (sharedWithMeTime)."""
        with self._lock:
            self.account(email).drive.share(file_id, owner)

    def restrict_download(self, email: str, file_id: str, owner: str) -> None:
        """The file is `owner`'s, shared with `email` as a viewer who may not download,
        print or copy it (copyRequiresWriterPermission): files.export and alt=media
        refuse."""
        with self._lock:
            file = self.account(email).drive.files[file_id]
            file.owner, file.copy_requires_writer_permission = owner, True

    def flag_abuse(self, email: str, file_id: str) -> None:
        """Google flags the file as malware or spam: alt=media refuses it unless the owner
        says acknowledgeAbuse=true."""
        with self._lock:
            self.account(email).drive.files[file_id].abusive = True

    def exceed_download_quota(self, email: str, file_id: str, exceeded: bool = True) -> None:
        """The file's download quota is used up (or, with False, available again)."""
        with self._lock:
            self.account(email).drive.files[file_id].download_quota_exceeded = exceeded

    def delete_file(self, email: str, file_id: str) -> None:
        with self._lock:
            self.account(email).drive.delete(file_id)

    def add_shared_drive(self, email: str, name: str) -> str:
        """A shared drive `email` is a member of; its id is the parent of its top files."""
        with self._lock:
            return self.account(email).drive.add_shared_drive(name)

    def root_folder_id(self, email: str) -> str:
        return self.account(email).drive.root_id

    # --- the Python handle: faults and counters -----------------------------------------

    def fail_next(self, path_contains: str = "", status: int = 429, count: int = 1,
                  retry_after: float | None = None, *, precondition: bool = False) -> None:
        """The next `count` calls whose path holds `path_contains` fail with `status`;
        `precondition`: with Gmail's passing 400 "Precondition check failed."."""
        with self._lock:
            self._faults.append(Fault(path_contains, 400 if precondition else status, count,
                                      retry_after, precondition))

    @property
    def requests(self) -> list[FakeRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def batch_sizes(self) -> list[int]:
        """The number of calls in each batch request, in order."""
        return [r.parts for r in self.requests if r.path in BATCH_PATHS]

    def quota_units(self, email: str) -> int:
        return sum(r.units for r in self.requests if r.email == email.lower())

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()

    # --- HTTP -----------------------------------------------------------------------------

    async def _http(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = parse_qsl(request.url.query, keep_blank_values=True)
        if path.startswith("/_fake/"):
            status, payload = control(self, request.method, path[len("/_fake/"):], query, body)
            reply = Reply.json(payload, status)
        else:
            with self._lock:
                reply = self._serve(request.method, path, request.url.query, headers, body)
            if self.latency_seconds > 0:
                await asyncio.sleep(self.latency_seconds)
        return Response(reply.body, reply.status, headers=reply.headers,
                        media_type=reply.content_type or None)

    def _serve(self, method: str, path: str, query_string: str, headers: dict[str, str],
               body: bytes) -> Reply:
        query = parse_qsl(query_string, keep_blank_values=True)
        oauth = {"/o/oauth2/auth", "/o/oauth2/v2/auth", "/token", "/revoke", "/oauth2/v1/certs",
                 "/o/oauth2/token", "/o/oauth2/revoke"}
        if path in oauth:
            fault = self._fault(path)
            if fault is not None:
                reply = _oauth_fault(fault)
            elif path in ("/o/oauth2/auth", "/o/oauth2/v2/auth") and method == "GET":
                reply = self.oauth.consent(query)
            elif path in ("/token", "/o/oauth2/token") and method == "POST":
                reply = self.oauth.token(body, headers.get("authorization"))
            elif path in ("/revoke", "/o/oauth2/revoke") and method in ("POST", "GET"):
                reply = self.oauth.revoke_http(query, body)
            elif path == "/oauth2/v1/certs" and method == "GET":
                reply = self.oauth.certs()
            else:
                reply = ApiError(405, "methodNotAllowed", "Method not allowed.").reply()
            self._requests.append(FakeRequest(method, path, None, 0, reply.status, False))
            return reply
        if path in BATCH_PATHS and method == "POST":
            return self._batch(path, query_string, headers, body)
        return self._api(method, path, query_string, headers, body, in_batch=False)

    def _fault(self, path: str) -> ApiError | None:
        for fault in self._faults:
            if fault.path_contains in path and fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                if fault.precondition:
                    return precondition_check_failed()
                return injected(fault.status, fault.retry_after)
        return None

    def _batch(self, path: str, query_string: str, headers: dict[str, str],
               body: bytes) -> Reply:
        entry = FakeRequest("POST", path, None, 0, 0, False)
        self._requests.append(entry)
        fault = self._fault(path)
        try:
            if fault is not None:
                raise fault
            inner = batch.parse(headers.get("content-type", ""), body)
        except ApiError as error:
            entry.status = error.code
            return error.reply()
        entry.parts = len(inner)
        outer = {k: v for k, v in headers.items() if not k.startswith("content-")}
        answers = []
        limit = self.batch_concurrency_limit
        for number, request in enumerate(inner):
            merged = outer | request.headers
            if limit is not None and number >= limit:
                reply = ApiError(429, "rateLimitExceeded",
                                 "Too many concurrent requests for user.",
                                 domain="usageLimits").reply()
                self._requests.append(FakeRequest(request.method, request.path, None, 0, 429,
                                                  True))
            elif not request.path.startswith(f"/{BATCH_PATHS[path]}/"):
                reply = ApiError(404, "notFound", "Batch calls must address the batch's API.") \
                    .reply()
            else:
                reply = self._api(request.method, request.path, request.query, merged,
                                  request.body, in_batch=True)
            answers.append((request, reply))
        emails = {r.email for r in self._requests[-len(inner):] if r.email}
        entry.email = emails.pop() if len(emails) == 1 else None
        entry.status = 200
        return batch.render(answers)

    def _api(self, method: str, path: str, query_string: str, headers: dict[str, str],
             body: bytes, *, in_batch: bool) -> Reply:
        entry = FakeRequest(method, path, None, 0, 0, in_batch)
        self._requests.append(entry)
        try:
            reply = self._call(entry, method, path, query_string, headers, body)
        except ApiError as error:
            reply = error.reply()
        entry.status = reply.status
        return reply

    def _call(self, entry: FakeRequest, method: str, path: str, query_string: str,
              headers: dict[str, str], body: bytes) -> Reply:
        matched = route(method, path)
        if matched is None:
            raise ApiError(404, "notFound", f"The requested URL {path} was not found.")
        api_method, path_params = matched
        entry.method_id = api_method.id
        fault = self._fault(path)
        if fault is not None:
            raise fault
        query = parse_qsl(query_string, keep_blank_values=True)
        auth = headers.get("authorization", "")
        token_text = auth[7:].strip() if auth.lower().startswith("bearer ") else \
            dict(query).get("access_token", "")
        if not token_text:
            raise unauthenticated(missing=True)
        token = self.oauth.access(token_text)
        if token is None:
            raise unauthenticated(missing=False)
        entry.email = token.grant.email
        if not token.scopes & api_method.scopes:
            raise insufficient_scopes()
        typed = check_query(api_method, query)
        entry.query = typed
        handler = HANDLERS.get(api_method.id)
        if handler is None:
            raise ApiError(501, "notImplemented", f"The fake does not serve {api_method.id}.")
        call = Call(api_method, path_params, typed, body, headers, self.account(token.grant.email),
                    token, self.ids, datetime.now(UTC), self.accounts)
        if api_method.api == "gmail":
            gmail.check_user(call)
            if not call.account.gmail_enabled:
                raise mail_service_not_enabled()
        entry.units = gmail.UNITS.get(api_method.id, 0)
        return handler(call)


def _oauth_fault(fault: ApiError) -> Reply:
    """A `fail_next` fault on an OAuth endpoint, in the OAuth error shape."""
    error = {400: "invalid_grant", 401: "invalid_client", 429: "rate_limit_exceeded"}.get(
        fault.code, "internal_failure" if fault.code >= 500 else "invalid_request"
    )
    return Reply.json({"error": error, "error_description": fault.message}, fault.code,
                      fault.headers)
