"""Calls to Gmail and Drive: google-api-python-client in a bounded thread pool.

- Services are built once per process from the bundled discovery documents
  (`static_discovery=True`) with `api_endpoint` from `app/google/endpoints.py`, so the
  same code talks to Google or to the fake.
- httplib2 is not thread-safe: every call attempt gets its own
  `AuthorizedHttp(credentials, http=httplib2.Http(timeout=...))`, used only by the pool
  thread that runs it. The pool is bounded (`google_api_threads`).
- A call may have a deadline (the outbox's sends): it is not started after it, and its
  sockets are shut down when it passes or the await is cancelled, so the thread stops
  too (`_StoppableHttp`).
- Credentials are cached per account per process, so an access token is reused
  across calls until it expires; a refresh happens under a per-account lock.
- Faults: a 401 refreshes the access token and sends the call once more
  (`AuthorizedHttp`, at most one refresh per call); 429, 5xx, Gmail's 403 rate-limit
  reasons and transport errors are retried with full-jitter exponential backoff,
  honouring Retry-After, at most `google_retry_attempts` times and never waiting
  longer than `google_retry_max_seconds` at once (a longer Retry-After is not waited
  for: the call fails and the next run or poll tries again). A refresh answered
  `invalid_grant` raises `AccountDisconnected`, and Gmail's "Mail service not enabled"
  (`no_mailbox`) raises `NoMailbox`, for a call or any part of a batch.
- Batches (`BatchHttpRequest(batch_uri=...)`, at most 50 calls each, sent one after the
  other: Gmail rate-limits concurrent batches) retry only their failed parts.
- Every call sent is charged to the account in the metrics (Gmail's unit costs).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Literal

import google_auth_httplib2
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest

from app.accounts.models import Account
from app.core.config import Settings
from app.google import metrics
from app.google.credentials import credentials_for
from app.google.endpoints import GoogleEndpoints, google_endpoints
from app.sources.base import AccountDisconnected, NoMailbox, SourceError

log = logging.getLogger(__name__)

Api = Literal["gmail", "drive"]
BATCH_LIMIT = 50
"""Calls per batch request: Google allows 100, and advises at most 50 for Gmail."""
BACKOFF_BASE_SECONDS = 0.5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
# A call with a deadline is not started with less time than this left.
MIN_CALL_SECONDS = 0.05
MAIL_SERVICE_NOT_ENABLED = "mail service not enabled"


class GoogleApiError(SourceError):
    """Google answered a call with an error (after any retries)."""

    def __init__(
        self, message: str, *, status: int, reason: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        # Google's Retry-After (seconds), for callers with a queue of their own (the outbox).
        self.retry_after = retry_after


# --------------------------------------------------------------------------- process state

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_services: dict[tuple[Api, str], Any] = {}
_credentials: dict[tuple[str, str], _CachedCredentials] = {}


@dataclass
class _CachedCredentials:
    credentials: Credentials
    lock: threading.Lock


def _thread_pool(size: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="google-api")
        return _pool


def service(api: Api, endpoints: GoogleEndpoints) -> Any:
    """The discovery-built service for `api` at its endpoint (built once per process).

    Its requests are only built here; they are sent with an http object of their own.
    """
    endpoint = endpoints.gmail_api if api == "gmail" else endpoints.drive_api
    key = (api, endpoint)
    with _lock:
        built = _services.get(key)
        if built is None:
            built = build(
                api, "v1" if api == "gmail" else "v3",
                http=httplib2.Http(),  # never used to send: each call brings its own
                static_discovery=True, cache_discovery=False,
                client_options={"api_endpoint": endpoint},
            )
            _services[key] = built
        return built


def cached_credentials(account: Account, settings: Settings) -> _CachedCredentials:
    """The account's credentials, shared by every call in this process.

    Keyed by the sealed grant too, so a reconnected account starts afresh.
    """
    sealed = account.refresh_token_encrypted or b""
    key = (str(account.id), hashlib.sha256(sealed).hexdigest())
    with _lock:
        hit = _credentials.get(key)
    if hit is not None:
        return hit
    fresh = _CachedCredentials(credentials_for(account, settings), threading.Lock())
    with _lock:
        stale = [k for k in _credentials if k[0] == key[0] and k != key]
        for k in stale:
            del _credentials[k]
        return _credentials.setdefault(key, fresh)


def forget_credentials(account_id: str) -> None:
    with _lock:
        for key in [k for k in _credentials if k[0] == account_id]:
            del _credentials[key]


# --------------------------------------------------------------------------- errors


def _is_invalid_grant(exc: RefreshError) -> bool:
    data = exc.args[1] if len(exc.args) > 1 else None
    return isinstance(data, dict) and data.get("error") == "invalid_grant"


def _reasons(exc: HttpError) -> list[str]:
    details = exc.error_details
    if isinstance(details, list):
        return [str(d.get("reason", "")) for d in details if isinstance(d, dict)]
    return []


def no_mailbox(exc: HttpError) -> bool:
    """Gmail's 400 failedPrecondition "Mail service not enabled": the Google account has no
    Gmail (made with another address, or a Workspace user whose Gmail is off), though the
    grant holds gmail.readonly (quoted in levz0r/gmail-tester#57,
    FlowCrypt/flowcrypt-browser#435 and #4838, WPManageNinja/fluent-smtp#152).

    The reason alone does not say so: Gmail also answers a passing 400 failedPrecondition
    "Precondition check failed." that the same call gets past a moment later
    (googleapis/google-api-php-client#2558, googleapis/google-api-go-client#645,
    googleapis/google-api-python-client#2723). Taking that for a lost mailbox would turn
    the user's Gmail off until they reconnect, so the message, the one thing that tells
    the two apart, is read too."""
    if exc.resp is None or exc.resp.status != 400 or not isinstance(exc.error_details, list):
        return False
    return any(
        isinstance(d, dict) and d.get("reason") == "failedPrecondition"
        and str(d.get("message", "")).strip().rstrip(".").lower() == MAIL_SERVICE_NOT_ENABLED
        for d in exc.error_details
    )


def _retry_after(exc: HttpError) -> float | None:
    value = exc.resp.get("retry-after") if exc.resp is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: Google sends seconds; fall back to our backoff


def _retryable(exc: HttpError) -> bool:
    status = exc.resp.status
    return status in RETRY_STATUSES or (
        status == 403 and bool(RATE_LIMIT_REASONS & set(_reasons(exc)))
    )


def _api_error(exc: HttpError) -> GoogleApiError:
    reasons = _reasons(exc)
    return GoogleApiError(
        f"Google answered {exc.resp.status}: {exc.reason or 'no reason given'}",
        status=int(exc.resp.status), reason=reasons[0] if reasons else "",
        retry_after=_retry_after(exc),
    )


class _Retry(Exception):
    """An attempt failed in a way worth another try."""

    def __init__(self, reason: str, retry_after: float | None, final: SourceError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.final = final


# --------------------------------------------------------------------------- stopping a call


class _StoppableHttp(httplib2.Http):
    """An httplib2.Http whose sockets the event loop can shut down while a pool thread uses
    it.

    Cancelling the await of work in a thread does not stop the thread: a call cut off by
    its deadline (or cancelled) would go on in the pool, and could still send, say, a Gmail
    send after the delivery was counted failed and retried. `stop()` shuts every socket
    the call has opened, so the thread's next read or write fails at once, and a
    connection opened after it is closed before anything is sent on it. What the server
    got before `stop()` it may still act on; the outbox looks for a sent message by its
    Message-ID before it sends again."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._guard = threading.Lock()
        self._stopped = False
        self._sockets: list[socket.socket] = []

    def stop(self) -> None:
        with self._guard:
            self._stopped = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _conn_request(self, conn: Any, *args: Any) -> Any:
        # Every connect of this connection, httplib2's own reconnects included.
        if not getattr(conn, "_pilotlight_guarded", False):
            conn.connect = functools.partial(self._connect, conn, conn.connect)
            conn._pilotlight_guarded = True
        return super()._conn_request(conn, *args)

    def _connect(self, conn: Any, connect: Callable[[], None]) -> None:
        if self._stopped:
            raise TimeoutError("the call was stopped (its deadline passed)")
        connect()
        with self._guard:
            if not self._stopped:
                self._sockets.append(conn.sock)
                return
        conn.close()
        raise TimeoutError("the call was stopped (its deadline passed)")


# --------------------------------------------------------------------------- the client


class GoogleClient:
    """One account's calls to Gmail and Drive."""

    def __init__(self, account: Account, settings: Settings) -> None:
        self.account_id = str(account.id)
        self.settings = settings
        self.endpoints = google_endpoints(settings)
        self._creds = cached_credentials(account, settings)
        self._pool = _thread_pool(settings.google_api_threads)
        # Gmail answered "Mail service not enabled" (`NoMailbox`) to a call of this client.
        self.mailbox_gone = False

    def gmail(self) -> Any:
        return service("gmail", self.endpoints)

    def drive(self) -> Any:
        return service("drive", self.endpoints)

    # ------------------------------------------------------------------ one call

    async def call(
        self, api: Api, request: HttpRequest, *, once: bool = False,
        deadline: float | None = None,
    ) -> Any:
        """Send one built request, with the retries above; returns the parsed body.

        `once`: no retry at all, for a request that must not be repeated blindly (a send:
        Gmail may have taken the message when the answer was lost); the caller decides.
        `deadline` (`time.monotonic()`): the call, its retries and its thread's work are
        over by then; it raises SourceError when it could not finish in time."""
        return await self._with_retries(
            api, functools.partial(self._send, api, request, deadline), retries=not once,
            deadline=deadline,
        )

    def _authorized_http(self, http: httplib2.Http) -> google_auth_httplib2.AuthorizedHttp:
        self._refresh_if_needed(http)
        return google_auth_httplib2.AuthorizedHttp(
            self._creds.credentials, http=http, max_refresh_attempts=1
        )

    def _new_http(self, deadline: float | None = None) -> _StoppableHttp:
        limit = self.settings.google_http_timeout_seconds
        if deadline is not None:
            limit = min(limit, max(deadline - time.monotonic(), MIN_CALL_SECONDS))
        return _StoppableHttp(timeout=limit)

    def _refresh_if_needed(self, http: httplib2.Http) -> None:
        """One refresh per account at a time: the token is then shared by every call."""
        creds = self._creds.credentials
        if creds.valid:
            return
        with self._creds.lock:
            if not creds.valid:
                creds.refresh(google_auth_httplib2.Request(http))

    def _send(
        self, api: Api, request: HttpRequest, deadline: float | None, http: httplib2.Http
    ) -> Any:
        """In a pool thread: one attempt. Raises `_Retry` for what is worth retrying."""
        if deadline is not None and deadline - time.monotonic() < MIN_CALL_SECONDS:
            # Queued in the pool, or a token refresh, until too late: not sent at all.
            raise SourceError("no time was left for the call")
        metrics.charge(self.account_id, api, request.methodId)
        try:
            try:
                result = request.execute(http=self._authorized_http(http))
            finally:
                http.close()
        except HttpError as exc:
            metrics.REQUESTS.labels(api, str(exc.resp.status)).inc()
            if api == "gmail" and no_mailbox(exc):
                raise self.mailbox_gone_error() from exc
            if _retryable(exc):
                raise _Retry(str(exc.resp.status), _retry_after(exc), _api_error(exc)) from exc
            raise _api_error(exc) from exc
        except (httplib2.HttpLib2Error, OSError, HTTPException,
                TransportError) as exc:
            metrics.REQUESTS.labels(api, "transport").inc()
            raise _Retry(
                "transport", None, SourceError(f"could not reach Google: {exc}")
            ) from exc
        metrics.REQUESTS.labels(api, "ok").inc()
        return result

    def mailbox_gone_error(self) -> NoMailbox:
        """Record that Gmail answered "Mail service not enabled", and the error that says so
        (raised by the call that met it, and by every mail read after it)."""
        self.mailbox_gone = True
        return NoMailbox(
            "Gmail answered that this Google account's mail service is not enabled (Mail "
            "service not enabled): Gmail was turned off for it", account_id=self.account_id,
        )

    async def _with_retries(
        self, api: Api, attempt: Callable[[httplib2.Http], Any], *, retries: bool = True,
        deadline: float | None = None,
    ) -> Any:
        tries = 0
        while True:
            try:
                return await self._in_thread(attempt, self._new_http(deadline), deadline)
            except RefreshError as exc:
                if _is_invalid_grant(exc):
                    forget_credentials(self.account_id)
                    raise AccountDisconnected(
                        "Google refused the account's grant (invalid_grant): it was revoked "
                        "or has expired; reconnect the account"
                    ) from exc
                failure = SourceError(f"could not refresh the Google access token: {exc}")
                if not getattr(exc, "retryable", False):  # a 5xx or 429 of the token endpoint
                    raise failure from exc
                retry = _Retry("token", None, failure)
            except _Retry as exc:
                retry = exc
            delay = self._delay(tries, retry.retry_after) if retries else None
            if delay is not None and deadline is not None and \
                    time.monotonic() + delay + MIN_CALL_SECONDS > deadline:
                delay = None
            if delay is None:
                raise retry.final from retry
            tries += 1
            metrics.RETRIES.labels(api, retry.reason).inc()
            log.info(
                "Google %s call failed (%s); retry %d in %.2fs", api, retry.reason, tries, delay
            )
            await asyncio.sleep(delay)

    async def _in_thread(
        self, attempt: Callable[[httplib2.Http], Any], http: _StoppableHttp,
        deadline: float | None,
    ) -> Any:
        """`attempt(http)` in the pool; its sockets are shut down when the deadline passes or
        the await is cancelled (which alone would leave the thread running)."""
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._pool, attempt, http)  # cancelled if not started
        timer = None
        if deadline is not None:
            timer = loop.call_later(max(deadline - time.monotonic(), 0.0), http.stop)
        try:
            return await work
        except asyncio.CancelledError:
            http.stop()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _delay(self, tries: int, retry_after: float | None) -> float | None:
        """How long to wait before try `tries + 1`; None when it is not worth it."""
        if tries >= self.settings.google_retry_attempts:
            return None
        cap = self.settings.google_retry_max_seconds
        if retry_after is not None:
            if retry_after > cap:
                return None
            return retry_after + random.uniform(0, BACKOFF_BASE_SECONDS)
        return random.uniform(0, min(cap, BACKOFF_BASE_SECONDS * 2 ** (tries + 1)))

    # ------------------------------------------------------------------ batches

    async def batch(
        self, api: Api, requests: Sequence[tuple[str, HttpRequest]]
    ) -> dict[str, Any | GoogleApiError]:
        """Send `(key, request)` pairs in batches of at most 50; returns each key's body,
        or the `GoogleApiError` its part ended with (a 404 for a message deleted since)."""
        results: dict[str, Any | GoogleApiError] = {}
        for start in range(0, len(requests), BATCH_LIMIT):
            chunk = list(requests[start : start + BATCH_LIMIT])
            results.update(await self._batch_chunk(api, chunk))
        return results

    async def _batch_chunk(
        self, api: Api, chunk: list[tuple[str, HttpRequest]]
    ) -> dict[str, Any | GoogleApiError]:
        done: dict[str, Any | GoogleApiError] = {}
        pending = chunk
        tries = 0
        while pending:
            failed: list[tuple[str, HttpRequest]] = []
            retry_after: float | None = None
            outcome: dict[str, tuple[Any, HttpError | None]] = await self._with_retries(
                api, functools.partial(self._send_batch, api, pending)
            )
            by_key = dict(pending)
            for key, (body, error) in outcome.items():
                if error is not None and api == "gmail" and no_mailbox(error):
                    raise self.mailbox_gone_error() from error  # every part would answer the same
                if error is None:
                    done[key] = body
                elif _retryable(error):
                    failed.append((key, by_key[key]))
                    after = _retry_after(error)
                    if after is not None:
                        retry_after = max(retry_after or 0.0, after)
                    done[key] = _api_error(error)  # kept unless a retry succeeds
                else:
                    done[key] = _api_error(error)
            if not failed:
                break
            delay = self._delay(tries, retry_after)
            if delay is None:
                break
            tries += 1
            metrics.RETRIES.labels(api, "batch-part").inc(len(failed))
            await asyncio.sleep(delay)
            pending = failed
        return done

    def _send_batch(
        self, api: Api, chunk: list[tuple[str, HttpRequest]], http: httplib2.Http
    ) -> dict[str, tuple[Any, HttpError | None]]:
        """In a pool thread: one batch request; each part's body or error."""
        uri = self.endpoints.gmail_batch if api == "gmail" else self.endpoints.drive_batch
        outcome: dict[str, tuple[Any, HttpError | None]] = {}

        def collect(request_id: str, response: Any, exception: HttpError | None) -> None:
            outcome[request_id] = (response, exception)

        batch = BatchHttpRequest(callback=collect, batch_uri=uri)
        for n, (_key, request) in enumerate(chunk):
            batch.add(request, request_id=str(n))
            metrics.charge(self.account_id, api, request.methodId)
        try:
            try:
                batch.execute(http=self._authorized_http(http))
            finally:
                http.close()
        except HttpError as exc:
            metrics.REQUESTS.labels(api, str(exc.resp.status)).inc(len(chunk))
            if api == "gmail" and no_mailbox(exc):
                raise self.mailbox_gone_error() from exc
            if _retryable(exc):
                raise _Retry(str(exc.resp.status), _retry_after(exc), _api_error(exc)) from exc
            raise _api_error(exc) from exc
        except BatchError as exc:
            metrics.REQUESTS.labels(api, "bad-batch").inc(len(chunk))
            raise SourceError(f"Google answered a batch request wrongly: {exc}") from exc
        except (httplib2.HttpLib2Error, OSError, TransportError) as exc:
            metrics.REQUESTS.labels(api, "transport").inc(len(chunk))
            raise _Retry(
                "transport", None, SourceError(f"could not reach Google: {exc}")
            ) from exc
        results: dict[str, tuple[Any, HttpError | None]] = {}
        for n, (key, _request) in enumerate(chunk):
            body, error = outcome.get(str(n), (None, None))
            metrics.REQUESTS.labels(api, "ok" if error is None else str(error.resp.status)).inc()
            results[key] = (body, error)
        return results
