"""Settings: read from PILOTLIGHT_ variables, bounded, and all documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import annotated_types
import pytest
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from app.bootstrap import local_timezone
from app.core.config import Settings, local_contact
from app.core.validation import timezones

README = Path(__file__).resolve().parents[2] / "README.md"
COMPOSE = README.with_name("docker-compose.yml")


def test_every_setting_is_documented_in_the_readme_and_nothing_else() -> None:
    documented = set(re.findall(r"^\| `(PILOTLIGHT_[A-Z0-9_]+)` \|", README.read_text(), re.M))
    defined = {f"PILOTLIGHT_{name.upper()}" for name in Settings.model_fields}
    assert defined - documented == set(), "settings missing from the README's table"
    assert documented - defined == set(), "the README documents settings that do not exist"


# The README's configuration table: variable, default, meaning (which states the bounds).
ROWS = re.findall(r"^\| `PILOTLIGHT_([A-Z0-9_]+)` \| (.*?) \| (.*) \|$", README.read_text(), re.M)
# A bound as the README writes it: 60, 0.05, 10000000, 300 s, 366 days, 16 KiB.
UNITS = {"": 1, "s": 1, "days": 86400, "KiB": 1024, "MiB": 1024 * 1024}
BOUND = r"(\d+(?:\.\d+)?)(?: (s|days|KiB|MiB))?"


def bounds(field: FieldInfo) -> tuple[float | None, float | None]:
    low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    return low, high  # type: ignore[return-value]


@pytest.mark.parametrize(("name", "default", "meaning"), ROWS, ids=[row[0] for row in ROWS])
def test_the_readme_gives_each_setting_its_default_and_bounds(
    name: str, default: str, meaning: str
) -> None:
    field = Settings.model_fields[name.lower()]
    value = field.get_default(call_default_factory=True)
    if default == "(empty)":
        assert value in ("", None, [])
    elif default != "see meaning":
        written = default.strip("`")
        if isinstance(value, bool):
            assert written == str(value).lower()
        elif isinstance(value, int | float):
            assert float(written) == value
        else:
            assert written == str(value)
    low, high = bounds(field)
    if low is None and high is None:
        return
    # The first range the meaning gives, "1–200" or "60 s to 30 days", is the field's.
    stated = re.search(rf"{BOUND} ?(?:–| to ){BOUND}", meaning)
    assert stated, f"PILOTLIGHT_{name}: the README gives no bounds ({low} to {high})"
    a, a_unit, b, b_unit = stated.groups()
    assert (float(a) * UNITS[a_unit or ""], float(b) * UNITS[b_unit or ""]) == (low, high)


def test_every_setting_has_a_description() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOTLIGHT_WORKER_CONCURRENCY", "7")
    monkeypatch.setenv("PILOTLIGHT_DATABASE_URL", "postgres://u:p@127.0.0.1:5432/db")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.worker_concurrency == 7
    assert settings.effective_database_url == "postgresql+asyncpg://u:p@127.0.0.1:5432/db"
    assert not settings.is_sqlite


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`PILOTLIGHT_HOST=` (a blank line of a .env template) listened on every interface."""
    for name in ("HOST", "PORT", "LOG_LEVEL", "SCHEDULER_CLOCK_ORIGIN", "SAMPLE_ACCOUNT"):
        monkeypatch.setenv(f"PILOTLIGHT_{name}", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 8000, "INFO")
    assert settings.sample_account is True


def test_default_database_is_sqlite_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path}/pilotlight.db"
    assert settings.is_sqlite


@pytest.mark.parametrize(
    ("name", "value"),
    [("PILOTLIGHT_PORT", "0"), ("PILOTLIGHT_WORKER_CONCURRENCY", "0"),
     ("PILOTLIGHT_WORKER_LEASE_SECONDS", "0.5"), ("PILOTLIGHT_SCHEDULER_TICK_SECONDS", "abc")],
)
def test_out_of_bounds_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("given", "used"),
    [("postgres://u:p@127.0.0.1:5432/db", "postgresql+asyncpg://u:p@127.0.0.1:5432/db"),
     ("postgresql://u@127.0.0.1/db", "postgresql+asyncpg://u@127.0.0.1/db"),
     ("postgresql+asyncpg://u@127.0.0.1/db", "postgresql+asyncpg://u@127.0.0.1/db"),
     ("sqlite:////var/lib/p.db", "sqlite+aiosqlite:////var/lib/p.db"),
     ("sqlite+aiosqlite:///p.db", "sqlite+aiosqlite:///p.db")],
)
def test_supported_database_urls_use_the_async_drivers(given: str, used: str) -> None:
    assert Settings(_env_file=None, database_url=given).database_url == used  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("given", "reason"),
    [("mysql://u:hunter2@127.0.0.1/db", "unsupported database mysql://"),
     ("postgresql+psycopg://u:hunter2@127.0.0.1/db", "unsupported database postgresql+psycopg://"),
     ("not a url", "not a database URL"),
     ("u:hunter2@127.0.0.1/db", "not a database URL"),
     ("postgresql://u:hunter2@127.0.0.1:port/db", "not a valid postgresql:// URL")],
)
def test_other_database_urls_are_refused_saying_what_is_supported(given: str, reason: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, database_url=given)  # type: ignore[call-arg]
    message = str(refused.value)
    assert reason in message
    assert "sqlite:///PATH (aiosqlite) or postgresql://USER:PASSWORD@HOST:PORT/DATABASE" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("given", "reason"),
    [("postgresql://u:hun@ter2@127.0.0.1:5432/db", "an @ in the user name or password must "
      "be written %40"),
     ("sqlite:///:memory:", "an in-memory SQLite database is not supported"),
     ("sqlite://", "an in-memory SQLite database is not supported"),
     ("postgresql://u@127.0.0.1/db?connect_timeout=soon", "connect_timeout must be a number")],
)
def test_database_urls_that_could_only_fail_later_are_refused(given: str, reason: str) -> None:
    """An unescaped @ put the end of the password in the host (and in error messages); an
    in-memory database gave every connection its own, empty one."""
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, database_url=given)  # type: ignore[call-arg]
    assert reason in str(refused.value)
    assert "ter2" not in str(refused.value)


def test_an_escaped_at_and_libpq_parameters_are_taken() -> None:
    given = "postgresql://u:hun%40ter2@127.0.0.1/db?sslmode=require&connect_timeout=10"
    assert Settings(_env_file=None, database_url=given).database_url == (  # type: ignore[call-arg]
        "postgresql+asyncpg://u:hun%40ter2@127.0.0.1/db?sslmode=require&connect_timeout=10")


def test_the_log_level_is_a_standard_name_in_any_case() -> None:
    assert Settings(_env_file=None, log_level="debug").log_level == "DEBUG"  # type: ignore[call-arg]
    assert Settings(_env_file=None, log_level=" Warning ").log_level == "WARNING"  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="use DEBUG, INFO, WARNING, ERROR, CRITICAL"):
        Settings(_env_file=None, log_level="LOUD")  # type: ignore[call-arg]


def test_the_time_zone_is_an_iana_name_or_empty() -> None:
    assert Settings(_env_file=None, timezone="Europe/Berlin").timezone == "Europe/Berlin"  # type: ignore[call-arg]
    assert Settings(_env_file=None, timezone="").timezone == ""  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="did you mean Europe/Berlin"):
        Settings(_env_file=None, timezone="Europe/berlin")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown time zone: use an IANA name"):
        Settings(_env_file=None, timezone="Mars/X")  # type: ignore[call-arg]


def test_the_local_user_gets_the_configured_zone_and_never_another() -> None:
    assert local_timezone("Asia/Tokyo") == "Asia/Tokyo"
    assert local_timezone("") in timezones()  # the machine's, else UTC
    with pytest.raises(ValueError, match="unknown time zone"):
        local_timezone("Europe/berlin")


def test_a_misfire_grace_shorter_than_a_few_ticks_is_refused() -> None:
    """The next tick reaches a fire time up to a tick late: a shorter grace would skip
    fire times that were on time, with no run and no notice."""
    with pytest.raises(ValidationError, match="at least 3 times"):
        Settings(_env_file=None, scheduler_tick_seconds=60,  # type: ignore[call-arg]
                 scheduler_misfire_grace_seconds=30)
    settings = Settings(_env_file=None, scheduler_tick_seconds=60,  # type: ignore[call-arg]
                        scheduler_misfire_grace_seconds=180)
    assert settings.scheduler_misfire_grace_seconds == 180


def test_a_retention_shorter_than_a_month_is_refused_and_none_keeps_everything() -> None:
    """/usage looks back 90 days from the runs' own totals, which are kept; a question
    waits up to 30 days, and the steps of its run must outlast it."""
    with pytest.raises(ValidationError, match="0 .keep everything. or at least 31"):
        Settings(_env_file=None, retention_days=30)  # type: ignore[call-arg]
    for days in (0, 31, 365):
        assert Settings(_env_file=None, retention_days=days).retention_days == days  # type: ignore[call-arg]


def test_a_sample_data_folder_that_is_not_there_is_refused_at_start(tmp_path: Path) -> None:
    """Unchecked, `serve` started and every run of the sample account failed."""
    with pytest.raises(ValidationError, match="no such folder"):
        Settings(_env_file=None, sample_data_dir=tmp_path / "nowhere")  # type: ignore[call-arg]
    # A folder with neither part was read as an empty mailbox ("0 messages" in `check`).
    with pytest.raises(ValidationError, match="neither maildir/ nor docs/"):
        Settings(_env_file=None, sample_data_dir=tmp_path)  # type: ignore[call-arg]
    (tmp_path / "docs").mkdir()
    assert Settings(_env_file=None,  # type: ignore[call-arg]
                    sample_data_dir=tmp_path).sample_data_dir == tmp_path


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_a_number_that_is_not_finite_is_refused_as_such(value: str) -> None:
    """nan was refused as "Input should be less than or equal to 60"."""
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, scheduler_tick_seconds=value)  # type: ignore[call-arg]
    assert [e["msg"] for e in refused.value.errors()] == ["Input should be a finite number"]


@pytest.mark.parametrize(("given", "missing"), [
    ({"google_client_id": "client-1"}, "PILOTLIGHT_GOOGLE_CLIENT_SECRET"),
    ({"google_client_secret": "secret-1"}, "PILOTLIGHT_GOOGLE_CLIENT_ID"),
    ({"google_client_id": "client-1", "google_client_secret": "  "},
     "PILOTLIGHT_GOOGLE_CLIENT_SECRET"),
])
def test_half_a_google_client_is_refused_at_start(given: dict[str, str], missing: str) -> None:
    """An id without its secret left Google off, said only when a user tried to connect."""
    with pytest.raises(ValidationError, match=f"but {missing} is not: Google needs both"):
        Settings(_env_file=None, **given)  # type: ignore[arg-type]
    whole = Settings(_env_file=None, google_client_id="client-1",  # type: ignore[call-arg]
                     google_client_secret="secret-1")
    assert whole.google_client_id == "client-1"


@pytest.mark.parametrize(("public_url", "subject"), [
    pytest.param("https://pilot.example.com/", "https://pilot.example.com", id="https"),
    pytest.param("https://pilot.example.com:8443/", "https://pilot.example.com:8443",
                 id="https-port"),
    pytest.param("", "mailto:pilotlight@localhost", id="empty"),
    pytest.param("http://pilot.example.com", "mailto:pilotlight@localhost", id="plain-http"),
    pytest.param("https://localhost:8443", "mailto:pilotlight@localhost", id="https-localhost"),
    pytest.param("https://pilot.local", "mailto:pilotlight@localhost", id="https-dot-local"),
    pytest.param("https://10.0.0.5", "mailto:pilotlight@localhost", id="https-private-ip"),
])
def test_the_default_vapid_subject_is_the_public_https_url_when_there_is_one(
    public_url: str, subject: str
) -> None:
    """Apple's push service refuses a subject at localhost (403 BadJwtToken)."""
    assert Settings(public_url=public_url).effective_vapid_subject == subject
    given = Settings(public_url=public_url, vapid_subject="mailto:ops@example.com")
    assert given.effective_vapid_subject == "mailto:ops@example.com"


@pytest.mark.parametrize(("subject", "host"), [
    ("mailto:pilotlight@localhost", "localhost"),
    ("mailto:relay@herdr.local", "herdr.local"),
    ("mailto:security@gateway.invalid", "gateway.invalid"),
    ("https://localhost", "localhost"),
    ("https://[::1]:8443", "::1"),
    ("mailto:ops@example.com", None),
    ("https://pilot.example.com", None),
    ("https://myhost.tailscale.ts.net", None),
])
def test_a_vapid_subject_at_a_local_name_is_told_apart(subject: str, host: str | None) -> None:
    assert local_contact(subject) == host


def test_a_vapid_subject_is_a_mailto_or_https_uri_or_empty() -> None:
    assert Settings(vapid_subject="").vapid_subject == ""
    for bad in ("ops@example.com", "http://pilot.example.com", "mailto: ops@example.com"):
        with pytest.raises(ValidationError, match="vapid_subject"):
            Settings(vapid_subject=bad)


@pytest.mark.parametrize(
    ("given", "reason"),
    [("notaurl", "not an absolute http(s) URL"), ("ftp://pilot.example.com", "not an absolute"),
     ("http://", "not an absolute"), ("https://pilot.example.com/?x=1", "no query or fragment"),
     ("https://pilot.example.com/#top", "no query or fragment"),
     ("https://u:p@pilot.example.com", "no user name or password"),
     ("https://pilot.example.com:port", "not a URL"),
     # The dashboard's links are from the host's root: under /pilot they led out of it.
     ("https://example.com/pilot", "no path (/pilot): serve Pilotlight at the root")],
)
def test_a_public_url_links_can_be_made_from_is_required(given: str, reason: str) -> None:
    """Taken as it was, "notaurl" gave sign-in links "notaurl/login/link?token=…"."""
    with pytest.raises(ValidationError, match=re.escape(reason)):
        Settings(_env_file=None, public_url=given)  # type: ignore[call-arg]


@pytest.mark.parametrize("given", ["https://pilot.example.com", "http://127.0.0.1:8000/",
                                   " HTTPS://Pilot.Example.com "])
def test_public_urls_that_work_are_taken(given: str) -> None:
    assert Settings(_env_file=None, public_url=given).public_url == given.strip()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:8000"), ("0.0.0.0", "http://127.0.0.1:8000"),
     ("::", "http://[::1]:8000"), ("::1", "http://[::1]:8000"),
     ("192.0.2.1", "http://192.0.2.1:8000"), ("pilot.internal", "http://pilot.internal:8000")],
)
def test_without_a_public_url_links_lead_to_an_address_a_browser_opens(
    host: str, url: str
) -> None:
    """With PILOTLIGHT_HOST=0.0.0.0 (the image's, and the compose file sets no public URL)
    login links, OAuth redirects and `serve`'s dashboard line led to http://0.0.0.0:8000,
    which browsers refuse to open and Google to redirect to; with `::1`, to the
    malformed http://::1:8000."""
    settings = Settings(_env_file=None, host=host)  # type: ignore[call-arg]
    assert settings.effective_public_url == url


def test_a_gemini_key_of_spaces_is_no_key_and_spaces_around_one_are_not_part_of_it() -> None:
    """Only spaces made check ask Google about a key that is nothing."""
    assert Settings(_env_file=None, gemini_api_key="   ").gemini_api_key is None  # type: ignore[call-arg]
    given = Settings(_env_file=None, gemini_api_key=" AIza-key \n").gemini_api_key  # type: ignore[call-arg]
    assert given is not None
    assert given.get_secret_value() == "AIza-key"


def test_the_local_user_email_is_checked_at_start_naming_its_variable() -> None:
    with pytest.raises(ValidationError, match="not an email address"):
        Settings(_env_file=None, local_user_email="not an email")  # type: ignore[call-arg]
    assert Settings(_env_file=None, local_user_email=" me@localhost ").local_user_email == (  # type: ignore[call-arg]
        "me@localhost")


def test_the_compose_file_passes_on_the_settings_a_deployment_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A container gets only the variables the compose file lists: it listed neither the
    Google OAuth client nor the public URL, so set in .env they never reached the roles,
    nobody could connect Google, and every instruction was refused (NothingToRead)."""
    listed = dict(re.findall(r"^    (PILOTLIGHT_[A-Z0-9_]+): (.+)$", COMPOSE.read_text(), re.M))
    needed = {"PILOTLIGHT_PUBLIC_URL", "PILOTLIGHT_GOOGLE_CLIENT_ID",
              "PILOTLIGHT_GOOGLE_CLIENT_SECRET", "PILOTLIGHT_SMTP_HOST",
              "PILOTLIGHT_GEMINI_API_KEY", "PILOTLIGHT_SECRET_KEYS"}
    assert needed - set(listed) == set()
    for name, value in listed.items():  # left unset, one is empty: the default
        if value == f"${{{name}:-}}":
            monkeypatch.setenv(name, "")
    Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_compose_file_gives_a_stopping_worker_the_time_it_takes() -> None:
    """On SIGTERM a worker lets its runs finish for PILOTLIGHT_WORKER_SHUTDOWN_SECONDS, but
    Docker kills a container 10 s after SIGTERM unless told otherwise: the compose file's
    workers were SIGKILLed with their runs, which waited a lease (60 s) for the rescuer."""
    worker = COMPOSE.read_text().partition("\n  worker:\n")[2].partition("\n\n")[0]
    grace = re.search(r"^    stop_grace_period: (\d+)s$", worker, re.M)
    assert grace is not None, worker
    shutdown = Settings.model_fields["worker_shutdown_seconds"].default
    assert int(grace[1]) > shutdown


@pytest.mark.parametrize("given", ["bad host", "http://pilot.example.com", "host:8000", "-x",
                                   "a..b", "[::1]"])
def test_a_host_that_is_no_address_is_refused(given: str) -> None:
    """`login-link --host 'bad host'` printed links to http://bad host:8000."""
    with pytest.raises(ValidationError, match="not an IP address or a host name"):
        Settings(_env_file=None, host=given)  # type: ignore[call-arg]
    for good in ("127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "pilot.internal",
                 "pilot-1.example.com"):
        assert Settings(_env_file=None, host=f" {good} ").host == good  # type: ignore[call-arg]


@pytest.mark.parametrize(("given", "environ", "public_url", "trusted"), [
    # Reached directly: nobody's X-Forwarded-For is believed, a loopback client's neither.
    pytest.param("", {}, "", [], id="direct"),
    pytest.param("", {}, "http://127.0.0.1:8000", [], id="loopback-url"),
    pytest.param("", {}, "https://localhost:8443", [], id="localhost-url"),
    # Users reach it elsewhere: a proxy on this machine, as the README's deployment has it.
    pytest.param("", {}, "https://pilot.example.com", ["127.0.0.1", "::1"], id="proxied"),
    pytest.param("none", {}, "https://pilot.example.com", [], id="none"),
    pytest.param(" 10.0.0.0/8, 192.0.2.7 ", {}, "", ["10.0.0.0/8", "192.0.2.7"], id="given"),
    pytest.param("*", {}, "", ["*"], id="any"),
    # uvicorn's own variable, which the README named before, still counts when unset.
    pytest.param("", {"FORWARDED_ALLOW_IPS": "10.1.2.3"}, "", ["10.1.2.3"], id="uvicorn-env"),
    pytest.param("none", {"FORWARDED_ALLOW_IPS": "10.1.2.3"}, "", [], id="setting-first"),
])
def test_forwarded_headers_are_believed_only_from_the_proxies_there_are(
    given: str, environ: dict[str, str], public_url: str, trusted: list[str]
) -> None:
    """uvicorn believed X-Forwarded-For from 127.0.0.1 always: with no proxy in front, any
    process on the machine could name itself another client to the sign-in limit."""
    settings = Settings(_env_file=None, forwarded_allow_ips=given,  # type: ignore[call-arg]
                        public_url=public_url)
    assert settings.trusted_proxies(environ) == trusted


@pytest.mark.parametrize("given", ["127.0.0.1,proxy", "localhost", "10.0.0.0/33", "none,*"])
def test_a_proxy_address_that_is_not_one_is_refused(given: str) -> None:
    """uvicorn takes what it cannot read as a host name no client has: a typo trusted
    nobody, and nobody said so."""
    with pytest.raises(ValidationError, match="is not an IP address or network"):
        Settings(_env_file=None, forwarded_allow_ips=given)  # type: ignore[call-arg]
