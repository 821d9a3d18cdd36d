"""All settings, read from the environment with the `PILOTLIGHT_` prefix.

Grouped by role. Every field has a description and bounds; the README's
configuration table is checked against this class by a test.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.agent.pricing import ModelPrice
from app.core.validation import timezones

# Push services take any mailto: or https: subject, but Apple's (Safari, iOS) answers 403
# BadJwtToken to one at a name nobody can reach: localhost, .local, .invalid
# (web-push-libs/web-push#947 and #787, pywebpush#175).
FALLBACK_VAPID_SUBJECT = "mailto:pilotlight@localhost"
_LOCAL_SUFFIXES = (".localhost", ".local", ".invalid", ".internal", ".home.arpa")
# A DNS name: labels of letters, digits and inner hyphens, dot-separated.
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def local_contact(subject: str) -> str | None:
    """The host of a VAPID subject that names no reachable place (Apple refuses it), or
    None when it names a public one."""
    if subject.startswith("mailto:"):
        host = subject.removeprefix("mailto:").partition("?")[0].rpartition("@")[2]
    else:
        try:
            host = urlsplit(subject).hostname or ""
        except ValueError:
            return subject
    host = host.strip().rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        local = "." not in host or host.endswith(_LOCAL_SUFFIXES)
    else:
        local = not address.is_global
    return (host or "(no host)") if local else None


DEFAULT_GEMINI_MODEL = "gemini-3.5-flash"
# Output tokens (thoughts included) one model turn may produce: room for a long digest and
# for thinking at level high, a quarter of what the Gemini 3 models allow (65,536).
DEFAULT_GEMINI_MAX_OUTPUT_TOKENS = 16384
# USD per million tokens, Google's list prices for prompts up to 200k tokens.
DEFAULT_GEMINI_PRICES = {
    "gemini-3.5-flash": ModelPrice(input=1.50, output=9.00, cached=0.15),
    "gemini-3.1-flash-lite": ModelPrice(input=0.25, output=1.50, cached=0.025),
    "gemini-3.1-pro": ModelPrice(input=2.00, output=12.00, cached=0.20),
}

ENV_PREFIX = "PILOTLIGHT_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The schemes a database URL may have, and the SQLAlchemy dialect+driver each means: the
# service is async and only these drivers are installed and tested.
DATABASE_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
SUPPORTED_DATABASES = (
    "sqlite:///PATH (aiosqlite) or postgresql://USER:PASSWORD@HOST:PORT/DATABASE (asyncpg; "
    "postgres:// and postgresql+asyncpg:// too)"
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True,
        hide_input_in_errors=True,  # a malformed key or password is not echoed into logs
        # An empty variable (`PILOTLIGHT_HOST=` in a .env template) means the default, not
        # "": an empty host listened on every interface.
        env_ignore_empty=True,
        # `nan` and `inf` are floats to Python: refused as such, not by a range they are
        # not outside of ("should be less than or equal to 60" for nan).
        allow_inf_nan=False,
    )

    # --- general -----------------------------------------------------------
    data_dir: Path = Field(
        Path("data"), description="Folder for the embedded SQLite database and local state."
    )
    database_url: str = Field(
        "",
        description=(
            "SQLAlchemy URL of the database: sqlite:///PATH (aiosqlite) or "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (asyncpg; postgres:// too). Empty "
            "means SQLite in the data folder."
        ),
    )
    database_pool_size: int = Field(
        10, ge=1, le=200, description="Database connections each process keeps (PostgreSQL)."
    )
    local_user_email: str = Field(
        "me@localhost", description="The user `serve` creates on first start (embedded mode)."
    )
    timezone: str = Field(
        "",
        description="Time zone of the local user and the example instruction, an IANA name "
        "(Europe/Berlin); empty means the machine's (else UTC).",
    )
    log_level: str = Field(
        "INFO", description="Python logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL "
        "(any case)."
    )

    # --- api ---------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the api role listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port the api role listens on.")
    api_page_size_max: int = Field(
        200, ge=10, le=1000, description="Largest page a list endpoint returns."
    )
    public_url: str = Field(
        "", max_length=2000,
        description="The address users reach the service at (e.g. https://pilot.example.com), "
        "for sign-in links, the OAuth redirects, reconnect links and the push contact; https "
        "makes the cookies __Host- and Secure. Empty means http://HOST:PORT.",
    )
    forwarded_allow_ips: str = Field(
        "", max_length=2000,
        description="The addresses (or networks) of proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto the api believes, comma-separated; `*` for any, `none` for none. "
        "Empty: 127.0.0.1 and ::1 (a proxy on this machine) when PUBLIC_URL is set and not "
        "loopback, else none (the service is reached directly: any local process could "
        "name itself another client); uvicorn's FORWARDED_ALLOW_IPS is read when set.",
    )
    api_max_body_bytes: int = Field(
        1_048_576, ge=16_384, le=100 * 1_048_576,
        description="Largest request body the api role reads; a larger one is refused with "
        "413 before it is read.",
    )
    api_docs: bool = Field(
        False,
        description="Serve the interactive API docs at /docs (Swagger UI) and /redoc (ReDoc). "
        "They load their scripts and styles from cdn.jsdelivr.net (and ReDoc its fonts from "
        "Google Fonts) on the dashboard's origin, so they are off by default; "
        "/openapi.json is always served.",
    )

    # --- dashboard ---------------------------------------------------------
    web_session_ttl_seconds: int = Field(
        14 * 86400, ge=300, le=366 * 86400,
        description="How long a dashboard sign-in lasts without a visit; each visit extends it.",
    )
    web_session_max_age_seconds: int = Field(
        30 * 86400, ge=3600, le=366 * 86400,
        description="How long a dashboard sign-in lasts at most, from the moment it signed "
        "in, however often it is used; then the browser signs in again. It bounds the "
        "sessions started before it was set or lowered too.",
    )
    web_login_link_ttl_seconds: int = Field(
        900, ge=60, le=7 * 86400,
        description="How long a one-time link from `pilotlight login-link EMAIL` can be used.",
    )
    web_sign_in_max_failures: int = Field(
        20, ge=1, le=10_000,
        description="Failed sign-ins (wrong login links, refused Google sign-ins) one client "
        "address may make within the window; then its sign-ins are refused with 429.",
    )
    web_sign_in_failure_window_seconds: int = Field(
        600, ge=10, le=86_400,
        description="The window of PILOTLIGHT_WEB_SIGN_IN_MAX_FAILURES, in seconds.",
    )
    web_local_sign_in: bool = Field(
        True,
        description="In embedded mode (`serve`), sign the local user in automatically on "
        "requests from loopback, as long as PUBLIC_URL is empty or loopback too and no proxy "
        "header is present; otherwise a login link (or Google sign-in) is needed.",
    )

    # --- scheduler ---------------------------------------------------------
    scheduler_tick_seconds: float = Field(
        1.0, ge=0.05, le=60, description="How often the scheduler looks for due instructions."
    )
    scheduler_batch_size: int = Field(
        500, ge=1, le=10000, description="Due instructions claimed per tick transaction."
    )

    scheduler_misfire_grace_seconds: float = Field(
        43200, ge=1, le=31 * 86400,
        description="After downtime, a missed fire time this recent still gets one catch-up "
        "run; older ones are skipped (the next run then covers the gap).",
    )
    retention_days: int = Field(
        365, ge=0, le=3650,
        description="How long what the runs read is kept: the scheduler role deletes the "
        "steps of runs finished this many days ago (tool calls with mail and document "
        "excerpts, the model's turns) and their digests, and the notifications as old "
        "(with their deliveries); 0 keeps everything, else at least 31.",
    )
    scheduler_clock_speedup: float = Field(
        1.0, ge=1, le=100000,
        description="Testing only: the scheduler's clock runs this many times faster than the "
        "database's from PILOTLIGHT_SCHEDULER_CLOCK_ORIGIN.",
    )
    scheduler_clock_origin: datetime | None = Field(
        None, description="Testing only: the moment the sped-up clock starts from."
    )

    # --- worker ------------------------------------------------------------
    worker_concurrency: int = Field(
        20, ge=1, le=5000,
        description="Runs one worker process works on at once (finished runs waiting for "
        "their batched outcome write are not counted).",
    )
    worker_poll_seconds: float = Field(
        1.0, ge=0.05, le=60, description="How often an idle worker looks for queued runs."
    )
    worker_lease_seconds: float = Field(
        60, ge=1, le=3600, description="How long a claimed run is held without a renewal."
    )
    worker_max_attempts: int = Field(
        3, ge=1, le=20, description="Attempts of one run before it fails."
    )
    worker_retry_base_seconds: float = Field(
        5, ge=0.1, le=3600, description="First retry delay; doubles with each attempt."
    )
    worker_shutdown_seconds: float = Field(
        30, ge=0, le=3600,
        description="On SIGTERM, how long running runs may take to finish before they are "
        "given back to the queue.",
    )
    worker_failures_before_error: int = Field(
        3, ge=1, le=100,
        description="Failed runs in a row after which an instruction stops (status error).",
    )

    metrics_port: int = Field(
        0, ge=0, le=65535,
        description="Port on which the scheduler and worker roles serve /metrics (0: off). "
        "The api serves /metrics on its own port.",
    )
    test_fault: str = Field(
        "",
        pattern=r"^$|^(kill|stop):(claimed|model_answered|digest_written|notification_written|"
        r"outcome_committed|delivery_sent)$",
        description="Testing only: the worker SIGKILLs or SIGSTOPs itself at this point of a "
        "run, e.g. kill:model_answered, or of a delivery (delivery_sent: sent, not yet marked).",
    )

    # --- agent -------------------------------------------------------------
    gemini_api_key: SecretStr | None = Field(
        None,
        description="Gemini API key. When set, runs use Gemini through the Interactions API; "
        "when empty, the built-in offline model.",
    )
    gemini_model: str = Field(
        DEFAULT_GEMINI_MODEL, min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9.\-]*$",
        description="The Gemini model runs use.",
    )
    gemini_base_url: str = Field(
        "", max_length=500, pattern=r"^$|^https?://",
        description="Another host for the Gemini API (a proxy, or a fake in tests); empty means "
        "Google's.",
    )
    gemini_max_retries: int = Field(
        4, ge=0, le=10,
        description="Retries of one model turn on 429, 500, 502, 503, 504 and timeouts, with "
        "exponential backoff that honours Retry-After.",
    )
    gemini_timeout_seconds: float = Field(
        120, ge=1, le=600, description="How long one Gemini request may take before it is retried."
    )
    gemini_max_output_tokens: int = Field(
        DEFAULT_GEMINI_MAX_OUTPUT_TOKENS, ge=1024, le=65536,
        description="The most output tokens, thoughts included, one model turn may produce "
        "(sent as generation_config.max_output_tokens): an answer cut off there is not used.",
    )
    gemini_prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: {k: v.model_copy() for k, v in DEFAULT_GEMINI_PRICES.items()},
        description="Price table, JSON: model name to USD per million tokens, "
        '{"input": …, "output": …, "cached": …}. Thought tokens are billed as output; cached '
        "input at `cached` (as input when absent). A model named here also prices its "
        "versioned names (longest prefix); a model not in the table costs 0. Defaults: paid-tier "
        "list prices for prompts up to 200k tokens as of mid 2026; check them against "
        "https://ai.google.dev/gemini-api/docs/pricing.",
    )
    agent_max_turns: int = Field(
        8, ge=2, le=50, description="Model turns per run before it must answer."
    )
    agent_max_input_tokens: int = Field(
        500_000, ge=1000, le=10_000_000,
        description="Input tokens one run may spend in all (chained turns bill the whole "
        "conversation so far); past it the run finishes with what it has.",
    )
    agent_default_max_tool_calls: int = Field(
        10, ge=0, le=100, description="Default action budget of a new instruction."
    )
    agent_question_ttl_seconds: int = Field(
        86400, ge=60, le=30 * 86400,
        description="How long a question the agent asks waits for an answer; then its run "
        "resumes without one.",
    )
    agent_context_limit: int = Field(
        100, ge=1, le=1000,
        description="New messages (and new files) per account shown in the prompt; the rest "
        "come in the next run.",
    )

    # --- delivery ----------------------------------------------------------
    delivery_poll_seconds: float = Field(
        1.0, ge=0.05, le=60, description="How often the delivery sender looks for due deliveries."
    )
    delivery_batch_size: int = Field(
        50, ge=1, le=1000, description="Deliveries claimed per transaction."
    )
    delivery_concurrency: int = Field(
        10, ge=1, le=200, description="Deliveries one sender sends at once."
    )
    delivery_claim_seconds: float = Field(
        60, ge=2, le=3600,
        description="How long a claimed delivery is held by one sender; if it dies, another "
        "sends it again after this, with the same idempotency key. Longer than the timeout.",
    )
    delivery_timeout_seconds: float = Field(
        15, ge=1, le=300,
        description="How long one send may take in all (a webhook or push request with its "
        "DNS lookup and the whole answer; an email's Gmail and SMTP calls together); one cut "
        "off is retried later.",
    )
    delivery_max_attempts: int = Field(
        8, ge=1, le=50, description="Attempts of one delivery before it fails."
    )
    delivery_retry_base_seconds: float = Field(
        30, ge=0.1, le=3600,
        description="First retry delay (with jitter); doubles with each attempt. A longer "
        "Retry-After is honoured.",
    )
    delivery_retry_max_seconds: float = Field(
        3600, ge=1, le=86400, description="Longest wait before a retry, Retry-After included."
    )
    smtp_host: str = Field(
        "", max_length=255,
        description="SMTP server for email deliveries; empty means email is not configured "
        "and email deliveries fail at once, saying so.",
    )
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP server port.")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "starttls",
        description="SMTP encryption: none, starttls (upgrade a plain connection) or tls "
        "(implicit TLS, usually port 465).",
    )
    smtp_username: str = Field(
        "", max_length=320, description="SMTP login; empty means no authentication."
    )
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_from: str = Field(
        "Pilotlight <pilotlight@localhost>", min_length=3, max_length=320,
        description="From address of emails; its domain also names the Message-IDs.",
    )
    email_reply_poll_seconds: float = Field(
        30.0, ge=1, le=3600,
        description="How often the scheduler reads Gmail history for replies to question "
        "emails (only for accounts with an open question sent by email).",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Let webhooks reach private, loopback and unique-local addresses (a "
        "receiver on this machine or network). Link-local addresses (169.254.0.0/16, "
        "fe80::/10) and cloud metadata addresses stay refused.",
    )
    vapid_private_key: SecretStr | None = Field(
        None, description="Web push VAPID private key (P-256): PEM, or the raw 32 bytes in "
        "base64url. Empty with SQLite: generated once into DATA_DIR/vapid.pem. With PostgreSQL "
        "none is generated: without it web push answers 503 (`check` reports it).",
    )
    vapid_public_key: str = Field(
        "", max_length=200, description="The VAPID public key (base64url, uncompressed point); "
        "empty means derived from the private key. Must match it when set.",
    )
    vapid_subject: str = Field(
        "", max_length=320, pattern=r"^((mailto:|https://)\S+)?$",
        description="VAPID `sub` claim: a mailto: or https: contact for push services. Empty "
        "means the public URL's origin when it is https and not a local name, else "
        f"{FALLBACK_VAPID_SUBJECT}, which Apple's push service refuses (`check` warns).",
    )
    push_ttl_seconds: int = Field(
        86400, ge=0, le=2419200,
        description="How long a push service keeps a notification for an offline browser.",
    )
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, max_length=20,
        description="Fernet keys that encrypt secrets at rest (Google refresh tokens, webhook "
        "secrets), newest first, comma-separated or a JSON list; older keys still decrypt and "
        "`pilotlight keys rotate` re-encrypts everything with the first. Empty with SQLite: a key "
        "is generated once into DATA_DIR/secret.key. With PostgreSQL none is generated: without "
        "it what stores a secret answers 503 (`check` reports it).",
    )

    # --- sources -----------------------------------------------------------
    google_client_id: str = Field(
        "", max_length=500,
        description="OAuth client id of a Google Cloud web application; empty turns the Google "
        "connection off.",
    )
    google_client_secret: SecretStr | None = Field(
        None, description="OAuth client secret of that web application."
    )
    google_endpoint_root: str = Field(
        "", max_length=2000,
        description="Serve every Google URL (OAuth, Gmail, Drive, batch, certificates) under "
        "this root instead of Google's hosts: for the fake in tests/fakes/google.py. Empty "
        "means Google's own hosts.",
    )
    google_oauth_state_ttl_seconds: int = Field(
        600, ge=60, le=3600,
        description="How long a started Google connection or Google sign-in waits for its "
        "callback; an older state is refused and the user starts again.",
    )
    google_api_threads: int = Field(
        8, ge=1, le=64,
        description="Threads that send Gmail and Drive calls in each process (httplib2 blocks; "
        "each call has its own connection).",
    )
    google_http_timeout_seconds: float = Field(
        30.0, ge=1, le=300, description="Socket timeout of one Gmail or Drive HTTP request."
    )
    google_retry_attempts: int = Field(
        4, ge=0, le=10,
        description="Retries of a Google call answered 429, 5xx or a rate-limit 403, or lost "
        "in transport, with jittered exponential backoff.",
    )
    google_retry_max_seconds: float = Field(
        30.0, ge=0, le=600,
        description="Longest single wait before a retry; a Retry-After above it is not "
        "waited for (the call fails and the next run tries again).",
    )
    google_resync_messages: int = Field(
        200, ge=10, le=5000,
        description="When Gmail no longer knows a stored historyId, at most this many recent "
        "messages are listed to find what is new (a bounded full resync).",
    )
    google_watch_poll_seconds: float = Field(
        60, ge=0.05, le=3600,
        description="How often the scheduler asks Gmail's history (one history.list, 2 quota "
        "units) and Drive's change list of each account with an active watch instruction.",
    )
    google_watch_resync_limit: int = Field(
        100, ge=1, le=500,
        description="After an expired Gmail historyId, messages per watch query looked at "
        "again (only those newer than the watch's last poll fire).",
    )
    google_watch_settle_seconds: float = Field(
        300, ge=0, le=86400,
        description="A Drive folder watch fires for a new version of a file once its "
        "modifiedTime is this old (a doc being written autosaves at every poll: one run when "
        "it rests, not one per save). 0 fires at once.",
    )
    google_pubsub_topic: str = Field(
        "", max_length=300, pattern=r"^$|^projects/[^/]+/topics/[^/]+$",
        description="Cloud Pub/Sub topic for Gmail push (projects/P/topics/T): accounts with "
        "a mail watch are registered with users.watch and renewed daily. Empty turns push off; "
        "polling works either way.",
    )
    google_pubsub_audience: str = Field(
        "", max_length=2000,
        description="The audience of the push subscription's signed token (the subscription's "
        "audience setting, by default the push URL). Empty refuses every push.",
    )
    google_pubsub_service_account: str = Field(
        "", max_length=320,
        description="When set, a push token must also be signed for this service account "
        "email (the push subscription's identity).",
    )
    google_watch_renew_seconds: float = Field(
        86400, ge=1, le=7 * 86400,
        description="How often Gmail push registrations (users.watch, valid 7 days) are renewed.",
    )
    sample_data_dir: Path | None = Field(
        None, description="Maildir and documents for the sample source; empty means the bundled."
    )
    sample_account: bool = Field(
        True, description="Give the local user the bundled sample mailbox on first start."
    )
    example_instruction: bool = Field(
        True,
        description="Create the example 'Morning digest' instruction on first start and queue "
        "its first run.",
    )

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        # The messages never repeat the URL: it may hold a password.
        if not value:
            return value
        scheme, sep, rest = value.strip().partition("://")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
            raise ValueError(f"not a database URL: use {SUPPORTED_DATABASES}")
        driver = DATABASE_SCHEMES.get(scheme.lower())
        if driver is None:
            raise ValueError(f"unsupported database {scheme}://: use {SUPPORTED_DATABASES}")
        url = f"{driver}://{rest}"
        if driver.startswith("postgresql") and rest.partition("/")[0].count("@") > 1:
            # Read as it is, what follows the first @ would be taken for the host (and
            # shown in errors, with the rest of the password).
            raise ValueError("an @ in the user name or password must be written %40")
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # e.g. a port that is not a number
            raise ValueError(f"not a valid {scheme}:// URL: use {SUPPORTED_DATABASES}") from None
        if driver.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
            raise ValueError("an in-memory SQLite database is not supported (every connection "
                             "would have one of its own): give a file, sqlite:///PATH")
        if driver.startswith("postgresql"):
            try:
                float(parsed.query.get("connect_timeout", 0))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError("connect_timeout must be a number of seconds") from None
        return url

    @field_validator("gemini_api_key")
    @classmethod
    def _a_key_or_none(cls, value: SecretStr | None) -> SecretStr | None:
        """Spaces around a pasted key are not part of it; only spaces mean no key (not a
        key that Google is asked about)."""
        if value is None:
            return None
        key = value.get_secret_value().strip()
        return SecretStr(key) if key else None

    @field_validator("sample_data_dir")
    @classmethod
    def _a_folder(cls, value: Path | None) -> Path | None:
        # Unchecked, every run of the sample account failed with it, and `serve` started.
        if value is None:
            return value
        if not value.is_dir():
            raise ValueError("no such folder (it should hold maildir/ and docs/)")
        if not any((value / part).is_dir() for part in ("maildir", "docs")):
            # Read as an empty mailbox: `check` said "0 messages", every run had nothing new.
            raise ValueError("it holds neither maildir/ nor docs/ (mail in maildir/cur and "
                             "maildir/new, documents in docs/)")
        return value

    @field_validator("local_user_email")
    @classmethod
    def _an_email(cls, value: str) -> str:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", value.strip()):
            raise ValueError("not an email address (name@domain)")
        return value.strip()

    @field_validator("host")
    @classmethod
    def _an_address(cls, value: str) -> str:
        """An IP address or a host name: it is listened on, and links are made of it
        ("bad host" gave sign-in links to http://bad host:8000)."""
        value = value.strip()
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOST_NAME.fullmatch(value):
                raise ValueError("not an IP address or a host name: use one such as "
                                 "127.0.0.1, 0.0.0.0, :: or pilot.internal (an IPv6 "
                                 "address without brackets)") from None
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        """Addresses or networks, `*` or `none`: uvicorn takes an entry it cannot read as
        a literal host name that no client ever has, so a typo would trust nobody."""
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        if entries in (["*"], ["none"]):
            return entries[0]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network: use addresses "
                                 "such as 127.0.0.1,::1 or 10.0.0.0/8, `*` for any proxy, or "
                                 "`none`") from None
        return ",".join(entries)

    @field_validator("public_url")
    @classmethod
    def _an_origin(cls, value: str) -> str:
        """Links are this URL and a path: it must be an absolute http(s) URL, with nothing
        after its host ("notaurl/login/link", "https://host/?x=1/login/link", and
        "https://host/pilot", whose dashboard pages would link to the host's root)."""
        value = value.strip()
        if not value:
            return value
        problem = "use an absolute http or https URL such as https://pilot.example.com"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            raise ValueError(f"not a URL: {problem}") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an absolute http(s) URL: {problem}")
        if parts.query or parts.fragment or "?" in value or "#" in value:
            raise ValueError(f"no query or fragment: {problem}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"no user name or password: {problem}")
        if parts.path.strip("/"):
            # The dashboard links from its host's root ("/runs", "/sw.js" and its scope,
            # cookies on Path=/): under a path its pages would lead out of it.
            raise ValueError(f"no path ({parts.path}): serve Pilotlight at the root of a "
                             f"host of its own, {problem}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        name = value.strip()
        if name and name not in timezones():
            same = [zone for zone in timezones() if zone.lower() == name.lower()]
            hint = f"; did you mean {same[0]}?" if same else ""
            raise ValueError(
                "unknown time zone: use an IANA name such as Europe/Berlin or UTC (exact "
                f"case), or leave it empty for the machine's{hint}"
            )
        return name

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        # The names both logging and uvicorn (which takes them in lower case) know.
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"not a log level: use {', '.join(LOG_LEVELS)} (any case)")
        return level

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:  # its message has no part of the keys
                    raise ValueError(
                        f"starts with [ but is not a JSON list ({exc.msg}, at character "
                        f'{exc.pos + 1}): write ["KEY1", "KEY2"], or KEY1,KEY2'
                    ) from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("secret_keys")
    @classmethod
    def _fernet_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for n, key in enumerate(value, 1):
            try:
                raw = base64.urlsafe_b64decode(key.get_secret_value().encode())
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"key {n} is not a Fernet key (32 url-safe base64 bytes)")
        return value

    @field_validator("smtp_from")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in parseaddr(value)[1]:
            raise ValueError("not an email address (name@domain or Name <name@domain>)")
        return value

    @model_validator(mode="after")
    def _grace_outlasts_ticks(self) -> Settings:
        # A fire time is first seen by the tick after it, up to a tick (and that tick's
        # own work) late: a grace shorter than that would skip fire times that were on time.
        if self.scheduler_misfire_grace_seconds < 3 * self.scheduler_tick_seconds:
            raise ValueError(
                "PILOTLIGHT_SCHEDULER_MISFIRE_GRACE_SECONDS must be at least 3 times "
                "PILOTLIGHT_SCHEDULER_TICK_SECONDS, or fire times the next tick reaches a "
                "little late would be skipped as missed"
            )
        return self

    @model_validator(mode="after")
    def _retention_outlasts_usage(self) -> Settings:
        # /usage looks back 90 days at most and reads the runs' own totals, which are kept;
        # a question waits up to 30 days, and its run's steps are not deleted before.
        if 0 < self.retention_days < 31:
            raise ValueError(
                "PILOTLIGHT_RETENTION_DAYS must be 0 (keep everything) or at least 31"
            )
        return self

    @model_validator(mode="after")
    def _google_client_whole(self) -> Settings:
        # One without the other turned Google off with no word until a user tried it.
        secret = self.google_client_secret is not None and bool(
            self.google_client_secret.get_secret_value().strip())
        if bool(self.google_client_id.strip()) != secret:
            given, missing = (("PILOTLIGHT_GOOGLE_CLIENT_ID", "PILOTLIGHT_GOOGLE_CLIENT_SECRET")
                              if secret is False else
                              ("PILOTLIGHT_GOOGLE_CLIENT_SECRET", "PILOTLIGHT_GOOGLE_CLIENT_ID"))
            raise ValueError(
                f"{given} is set but {missing} is not: Google needs both (the OAuth client "
                "of a Google Cloud web application), or neither to leave it off")
        return self

    @model_validator(mode="after")
    def _claim_outlasts_send(self) -> Settings:
        if self.delivery_claim_seconds <= self.delivery_timeout_seconds:
            raise ValueError(
                "PILOTLIGHT_DELIVERY_CLAIM_SECONDS must be longer than "
                "PILOTLIGHT_DELIVERY_TIMEOUT_SECONDS, or a slow send could be claimed and sent "
                "again meanwhile"
            )
        return self

    @property
    def effective_public_url(self) -> str:
        """Where users reach the service, without a trailing slash: PUBLIC_URL, else the
        address the api listens on. Listening on every interface (0.0.0.0, as the image
        does, or ::) it is reached on this machine at loopback: browsers refuse to open
        0.0.0.0 and Google to redirect to it. An IPv6 address goes in brackets."""
        if self.public_url:
            return self.public_url.rstrip("/")
        try:
            address = ipaddress.ip_address(self.host)  # `_an_address`: never in brackets
        except ValueError:
            return f"http://{self.host}:{self.port}"
        if address.is_unspecified:
            address = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
        return f"http://{address if address.version == 4 else f'[{address}]'}:{self.port}"

    def trusted_proxies(self, environ: Mapping[str, str]) -> list[str]:
        """Whose X-Forwarded-For uvicorn believes (the client address the sign-in failure
        limit counts and the logs name): FORWARDED_ALLOW_IPS, else uvicorn's own variable
        of that name (which the README named before), else a proxy on this machine when
        users reach the service at an address that is not this machine's loopback, and
        else nobody: a service reached directly takes no client's word for its address."""
        value = self.forwarded_allow_ips or environ.get("FORWARDED_ALLOW_IPS", "").strip()
        if value == "none":
            return []
        if value:
            return [entry.strip() for entry in value.split(",")]
        host = urlsplit(self.public_url).hostname if self.public_url else None
        if host is None or host == "localhost":
            return []
        try:
            if ipaddress.ip_address(host).is_loopback:
                return []
        except ValueError:
            pass  # a host name
        return ["127.0.0.1", "::1"]

    @property
    def public_url_is_https(self) -> bool:
        """Users reach the service over https: its cookies are then `__Host-` and Secure.
        A URL's scheme is case-insensitive, so `HTTPS://…` is https too."""
        return self.effective_public_url[:8].lower() == "https://"

    def cookie(self, name: str, path: str) -> tuple[str, str, bool]:
        """A cookie's name, path and Secure flag for this public URL. On https it is
        `__Host-{name}` at `/`, Secure and without Domain: only this host, over https,
        can set it, so a sibling subdomain cannot plant or overwrite it (cookie tossing).
        Over plain http it is `name` at `path`, not Secure (some browsers drop Secure
        cookies there). Only the name chosen is read."""
        if self.public_url_is_https:
            return f"__Host-{name}", "/", True
        return name, path, False

    @property
    def effective_vapid_subject(self) -> str:
        """The VAPID `sub` claim: the setting, else the public URL when it can be one."""
        if self.vapid_subject:
            return self.vapid_subject
        parts = urlsplit(self.effective_public_url)
        if parts.scheme == "https" and local_contact(f"https://{parts.netloc}") is None:
            return f"https://{parts.netloc.rpartition('@')[2]}"
        return FALLBACK_VAPID_SUBJECT

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'pilotlight.db').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()


def with_options(settings: Settings, options: Mapping[str, Any]) -> Settings:
    """The settings with a command's options put in, validated like the environment
    (model_copy would take them unchecked: `--port 99999` failed only at bind)."""
    if not options:
        return settings
    return Settings.model_validate({**settings.model_dump(), **options})


def unknown_variables(
    environ: Mapping[str, str], env_file: Path | None = Path(".env")
) -> list[str]:
    """One line for each PILOTLIGHT_ variable (in `environ` or the .env file) that names no
    setting: it is ignored, so a misspelt one leaves its setting at the default. Not an
    error: Kubernetes names variables after a service (PILOTLIGHT_SERVICE_HOST, ...)."""
    names = set(environ)
    if env_file is not None and env_file.is_file():
        names |= {name for name in dotenv_values(env_file, encoding="utf-8") if name}
    known = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    lines = []
    for name in sorted(names):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        if upper.startswith((f"{ENV_PREFIX}SERVICE_", f"{ENV_PREFIX}PORT_")):
            continue  # Kubernetes' service variables
        close = difflib.get_close_matches(upper, known, n=1)
        lines.append(f"{name} names no setting and is ignored"
                     + (f": did you mean {close[0]}?" if close else ""))
    return lines


def setting_errors(
    error: ValidationError | SettingsError, options: Mapping[str, str] | None = None
) -> list[str]:
    """One line per bad setting: its environment variable (or, for a setting in `options`,
    the command-line option that gave it) and what is wrong or expected. The value itself
    is never repeated: it may be a key or a password."""
    options = options or {}

    def where(field: str) -> str:
        return options.get(field) or f"{ENV_PREFIX}{field.upper()}"

    if isinstance(error, SettingsError):
        # pydantic-settings decodes a list or dict setting as JSON before validating it.
        found = re.search(r'field "(\w+)"', str(error))
        if found is None:
            return [str(error)]
        return [f"{where(found[1])}: not valid JSON"]
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:
            lines.append(message)
            continue
        field, *inner = (str(part) for part in item["loc"])
        at = f" (at {'.'.join(inner)})" if inner else ""
        lines.append(f"{where(field)}{at}: {message}")
    return lines
