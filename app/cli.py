"""The `pilotlight` command: run the service or one of its roles, and manage it."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.core import heap
from app.core.config import (
    Settings,
    get_settings,
    local_contact,
    setting_errors,
    unknown_variables,
    with_options,
)
from app.core.db import DatabaseUnreachable, ensure_reachable, transaction
from app.core.errors import DomainError
from app.core.loops import LoopService
from app.core.migrate import SchemaFromNewerCode, pending, upgrade
from app.core.runtime import Runtime

if TYPE_CHECKING:
    from app.agent.llm import LLM

T = TypeVar("T")

cli = typer.Typer(
    help="Pilotlight: standing instructions over your mail and documents, run by an agent.",
    no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
)
user_cli = typer.Typer(help="Manage users.", no_args_is_help=True)
token_cli = typer.Typer(help="Manage personal access tokens.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
keys_cli = typer.Typer(help="Manage the keys that encrypt secrets at rest.", no_args_is_help=True)
cli.add_typer(token_cli, name="token")
cli.add_typer(keys_cli, name="keys")

log = logging.getLogger("pilotlight")


class AccessLogWithoutQuery(logging.Filter):
    """uvicorn's access log, with each request's path but never its query string.

    Queries carry secrets: the login link's token, the OAuth callbacks' state and code.
    uvicorn logs `(client_addr, method, full_path, http_version, status_code)` as args
    to its access log, and `(client_addr, full_path[, status])` to its error log for a
    WebSocket handshake (the app has no WebSocket routes: each is refused, and logged).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple):
            return True
        if record.name == "uvicorn.access" and len(args) == 5 and isinstance(args[2], str):
            # uvicorn quotes the path, so its first "?" starts the query.
            record.args = (args[0], args[1], args[2].partition("?")[0], *args[3:])
        elif (str(record.msg).startswith('%s - "WebSocket %s"') and len(args) >= 2
              and isinstance(args[1], str)):
            record.args = (args[0], args[1].partition("?")[0], *args[2:])
        return True


class QuietProbes(logging.Filter):
    """uvicorn's access log without the health checks and Prometheus scrapes that succeed:
    a load balancer's and a scraper's, every few seconds, filled an idle api's log. One
    that fails (a 503 from /readyz with the database down) is logged."""

    PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
            return True
        path, status = str(args[2]).partition("?")[0], args[4]
        return not (path in self.PATHS and isinstance(status, int) and status < 400)


class OutboundRequestOrigin(logging.Filter):
    """httpx's (and httpx2's) "HTTP Request: POST <url> …" line, with the URL cut to its
    origin.

    Webhook and push endpoints are capability URLs (a Slack hook's path, `?token=`, a push
    service's subscription path): the service names them only by origin
    (`app/delivery/ssrf.py`), and so does this line. httpx passes
    `(method, url, http_version, status_code, reason_phrase)` as its args.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2 and str(record.msg).startswith(
                "HTTP Request:"):
            from app.delivery.ssrf import origin

            record.args = (args[0], origin(str(args[1])), *args[2:])
        return True


def _not_alembic_chatter(record: logging.LogRecord) -> bool:
    """Alembic says which dialect it uses on every command that looks at the schema:
    noise, where its "Running upgrade …" lines are not."""
    return not str(record.msg).startswith(("Context impl ", "Will assume "))


# Client libraries that log a line per HTTP request at INFO ("HTTP Request: POST ..."):
# httpx (webhooks, web push) and its fork httpx2, under the Gemini SDK (every model turn
# and retry). Noise in the service's log at INFO, shown at DEBUG.
REQUEST_LOGGERS = ("httpx", "httpx2")


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    for name in REQUEST_LOGGERS:
        # Their warnings still show; at a level above WARNING, only what it shows.
        logging.getLogger(name).setLevel(
            logging.NOTSET if level <= logging.DEBUG else max(level, logging.WARNING))
    alembic = logging.getLogger("alembic.runtime.migration")
    if _not_alembic_chatter not in alembic.filters and settings.log_level != "DEBUG":
        alembic.addFilter(_not_alembic_chatter)
    for name in REQUEST_LOGGERS:
        outbound = logging.getLogger(name)
        if not any(isinstance(f, OutboundRequestOrigin) for f in outbound.filters):
            outbound.addFilter(OutboundRequestOrigin())
    # aiosqlite logs every statement it runs at DEBUG with the values it was given: push
    # endpoints (capability URLs), mail text a run stored, what any request wrote.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    # On the logger, where it outlives uvicorn's own logging setup (dictConfig keeps filters).
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, AccessLogWithoutQuery) for f in logger.filters):
            logger.addFilter(AccessLogWithoutQuery())
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QuietProbes) for f in access.filters):
        access.addFilter(QuietProbes())


def _settings(given: dict[str, Any], *, checking: bool) -> Settings:
    """The settings, or one line per bad one and exit: 2 (bad input), or 1 for `check`,
    which reports it among its other findings."""
    try:
        return with_options(get_settings(), given)
    except UnicodeDecodeError:
        text = ".env is not UTF-8 text (PowerShell's `echo > .env` writes UTF-16): save it as UTF-8"
        typer.echo(f"{'settings':<9} FAIL  {text}" if checking else f"error: {text}",
                   err=not checking)
        raise typer.Exit(1 if checking else 2) from None
    except (ValidationError, SettingsError) as exc:
        options = {name: "--" + name.replace("_", "-") for name in given}
        for text in setting_errors(exc, options):
            if checking:
                typer.echo(f"{'settings':<9} FAIL  {text}")
            else:
                typer.echo(f"error: {text}", err=True)
        raise typer.Exit(1 if checking else 2) from None


# Connections a role keeps from its pool while it runs on PostgreSQL (HeldConnection): the
# worker's claims (1) and outcome writes (2) and its delivery sender's claims (2); the
# scheduler's tick (1). Everything else the role does shares what is left of the pool.
# tests/integration/test_pool_ping.py counts them in the loops each role builds.
WORKER_KEEPS = 5
SCHEDULER_KEEPS = 1


def _require_pool(settings: Settings, *, keeps: int, role: str) -> None:
    """A pool the role's kept connections would use up: its other work waited 30 s for a
    connection and failed, over and over (runs too, counted as failed attempts)."""
    need = keeps + 1
    if keeps and not settings.is_sqlite and settings.database_pool_size < need:
        typer.echo(
            f"error: PILOTLIGHT_DATABASE_POOL_SIZE is {settings.database_pool_size}, and "
            f"`{role}` on PostgreSQL keeps {keeps} connection{'s' if keeps > 1 else ''} of "
            f"its pool while it runs and needs more for the rest: set it to {need} or more",
            err=True)
        raise typer.Exit(2)


def _run(
    factory: Callable[[Runtime], Awaitable[T]], *, checking: bool = False, keeps: int = 0,
    role: str = "", **overrides: Any
) -> T:
    """Run an async command with a runtime built from the settings (with the command's
    options that were given, e.g. --port, which links and OAuth redirects then use
    too), closing it after. `keeps`: connections the `role` keeps from its pool."""
    given = {name: value for name, value in overrides.items() if value is not None}
    settings = _settings(given, checking=checking)
    _require_pool(settings, keeps=keeps, role=role)
    _setup_logging(settings)
    for ignored in unknown_variables(os.environ):
        if checking:
            typer.echo(f"{'settings':<9} WARN  {ignored}")
        else:
            log.warning("%s", ignored)

    async def main() -> T:
        try:
            runtime = Runtime.build(settings)
        except OSError as exc:  # the SQLite database's folder cannot be made
            raise DatabaseUnreachable(settings.effective_database_url, exc) from exc
        try:
            if not checking:  # check reports it among its findings
                await ensure_reachable(runtime.engine)
            return await factory(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    except DatabaseUnreachable as exc:
        if checking:
            typer.echo(f"{'database':<9} FAIL  {exc}")
        else:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


async def _require_schema(runtime: Runtime) -> None:
    reason = await pending(runtime.engine)
    if reason is not None:
        # Named: run from another folder, a SQLite path is not the one meant.
        url = runtime.engine.url.render_as_string(hide_password=True)
        typer.echo(f"error: {reason} ({url}); run `pilotlight migrate` first", err=True)
        raise typer.Exit(2)


def _unpriced(settings: Settings, llm: LLM) -> str | None:
    """Why the costs of a Gemini model the price table does not list are wrong, if so."""
    from app.agent.offline import OfflineModel
    from app.agent.pricing import price_for

    if isinstance(llm, OfflineModel) or price_for(llm.name, settings.gemini_prices):
        return None
    return (f"PILOTLIGHT_GEMINI_MODEL {llm.name} has no price in PILOTLIGHT_GEMINI_PRICES: "
            "its turns are counted at $0 in usage and the daily cost cap does not stop "
            "them; add its price to PILOTLIGHT_GEMINI_PRICES")


async def _model_or_exit(settings: Settings) -> LLM:
    """The configured model, checked once: a rejected key stops the process at start."""
    from app.agent.factory import build_llm, probe
    from app.agent.llm import KeyRejected, LLMError

    llm = build_llm(settings)
    unpriced = _unpriced(settings, llm)
    if unpriced:
        log.warning("%s", unpriced)
    try:
        await probe(llm)
    except KeyRejected as exc:
        typer.echo(f"error: {exc}; fix PILOTLIGHT_GEMINI_API_KEY (see `pilotlight check`)",
                   err=True)
        raise typer.Exit(2) from exc
    except LLMError as exc:
        log.warning("the model did not answer a test request (%s); runs will retry", exc)
    return llm


def _loops(
    runtime: Runtime, *, scheduler: bool, worker: bool, llm: LLM | None = None
) -> list[LoopService]:
    from app.auth.housekeeping import ExpiredSignInPurger
    from app.delivery.sender import DeliverySender
    from app.google.renewal import PushRenewer, gmail_watch
    from app.google.watch import WatchPoller
    from app.questions.reply_poller import ReplyPoller
    from app.runs.execute import RunExecutor
    from app.runs.retention import RetentionPurger
    from app.runs.scheduler import SchedulerTick
    from app.runs.worker import Worker

    settings = runtime.settings
    loops: list[LoopService] = []
    if scheduler:
        loops.append(
            SchedulerTick(
                sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups, settings=settings
            )
        )
        loops.append(
            WatchPoller(
                sessionmaker=runtime.sessionmaker, wakeups=runtime.wakeups, settings=settings
            )
        )
        if settings.google_pubsub_topic:
            loops.append(
                PushRenewer(
                    sessionmaker=runtime.sessionmaker, settings=settings, register=gmail_watch
                )
            )
        # Gmail is polled by the scheduler role (one replica is enough): see reply_poller.
        loops.append(ReplyPoller(runtime=runtime))
        loops.append(ExpiredSignInPurger(sessionmaker=runtime.sessionmaker))
        if settings.retention_days:
            loops.append(
                RetentionPurger(sessionmaker=runtime.sessionmaker, days=settings.retention_days)
            )
    if worker:
        executor = RunExecutor(
            sessionmaker=runtime.sessionmaker, settings=settings, llm=llm or runtime.model()
        )
        loops.append(Worker(runtime=runtime, executor=executor))
        loops.append(DeliverySender(runtime=runtime))
    return loops


def _listening_socket(host: str, port: int) -> socket.socket:
    """The api's socket, bound before anything else is done (as uvicorn would bind it: IPv6
    for an address with a colon), so that an address in use or not this machine's stops
    the command at once, in one line, not after `serve` migrated and started its loops."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            why = f"{host} is not an address of this machine ({why})"
        raise DomainError(f"cannot listen on {host}:{port} (PILOTLIGHT_HOST and "
                          f"PILOTLIGHT_PORT, or --host and --port): {why}") from None
    sock.set_inheritable(True)
    return sock


async def _serve_http(
    runtime: Runtime, loops: Sequence[LoopService], sock: socket.socket, *,
    embedded: bool = False,
) -> None:
    from app.events.server import server
    from app.main import create_app

    app = create_app(runtime, loops=loops, embedded=embedded)
    heap.settle()
    settings = runtime.settings
    # uvicorn says where it listens only when it binds the socket itself.
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("listening on http://%s:%d", host, settings.port)
    # Ends the open event streams when it stops, or it would wait for them forever.
    await server(app, host=settings.host, port=settings.port,
                 log_level=settings.log_level.lower(),
                 forwarded_allow_ips=settings.trusted_proxies(os.environ)).serve(sockets=[sock])


async def _run_loops(runtime: Runtime, loops: Sequence[LoopService]) -> None:
    settings = runtime.settings
    if settings.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.metrics_port, addr=settings.host)
        except OSError as exc:  # in use, or an address this machine does not have
            raise DomainError(
                f"PILOTLIGHT_METRICS_PORT: cannot listen on {settings.host}:"
                f"{settings.metrics_port} ({exc.strerror or exc}): another process has it? "
                "Give each process on this machine a port of its own") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    heap.settle()
    await asyncio.gather(*(service.run(stop) for service in loops))


def _exit_if_stopped_while_starting() -> None:
    """Until the loops take over SIGTERM, it means: nothing is held yet, just exit."""

    def _exit(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)


HostOpt = Annotated[str | None, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int | None, typer.Option(help="Port to listen on.")]


@cli.command()
def serve(host: HostOpt = None, port: PortOpt = None) -> None:
    """Run everything in one process: api, scheduler and worker (migrates the database)."""

    async def main(runtime: Runtime) -> None:
        from app.bootstrap import ensure_local_user

        settings = runtime.settings
        sock = _listening_socket(settings.host, settings.port)
        await upgrade(runtime.engine, runtime.settings)
        boot = await ensure_local_user(runtime)
        if boot.created:
            log.info(
                "first start: created the local user %s with the sample mailbox and a "
                "'Morning digest' instruction whose first run is queued now",
                boot.user.email,
            )
        log.info(
            "get an API token with: %s token create   (API: %s/openapi.json)",
            _self_command(), settings.effective_public_url,
        )
        runtime.use_model(await _model_or_exit(settings))  # one client: api and worker
        loops = _loops(runtime, scheduler=True, worker=True)
        log.info("dashboard: %s/", settings.effective_public_url)
        await _serve_http(runtime, loops, sock, embedded=True)

    _run(main, keeps=WORKER_KEEPS + SCHEDULER_KEEPS, role="serve", host=host, port=port)


@cli.command()
def api(host: HostOpt = None, port: PortOpt = None) -> None:
    """Run the api role only (scaled deployments)."""

    async def main(runtime: Runtime) -> None:
        sock = _listening_socket(runtime.settings.host, runtime.settings.port)
        await _require_schema(runtime)
        await _serve_http(runtime, [], sock)

    _run(main, host=host, port=port)


@cli.command()
def scheduler() -> None:
    """Run the scheduler role only: queue runs for due instructions."""
    _exit_if_stopped_while_starting()

    async def main(runtime: Runtime) -> None:
        await _require_schema(runtime)
        await _run_loops(runtime, _loops(runtime, scheduler=True, worker=False))

    _run(main, keeps=SCHEDULER_KEEPS, role="scheduler")


@cli.command()
def worker() -> None:
    """Run the worker role only: execute queued runs."""
    _exit_if_stopped_while_starting()

    async def main(runtime: Runtime) -> None:
        await _require_schema(runtime)
        runtime.use_model(await _model_or_exit(runtime.settings))
        await _run_loops(runtime, _loops(runtime, scheduler=False, worker=True))

    _run(main, keeps=WORKER_KEEPS, role="worker")


@cli.command()
def check() -> None:
    """Check the settings, the database, the model (and its API key), the keys PostgreSQL
    needs and the sources; exit 1 on a problem."""

    async def main(runtime: Runtime) -> bool:
        from sqlalchemy import func, select

        from app.accounts.models import Account
        from app.agent.factory import build_llm, probe
        from app.agent.llm import LLMError
        from app.sources.base import SourceError
        from app.sources.sample import SampleSource

        settings, ok = runtime.settings, True

        def line(name: str, good: bool, text: str) -> None:
            nonlocal ok
            ok = ok and good
            typer.echo(f"{name:<9} {'ok ' if good else 'FAIL'}  {text}")

        url = runtime.engine.url.render_as_string(hide_password=True)
        try:
            await ensure_reachable(runtime.engine)
            reason = await pending(runtime.engine)
            line("database", reason is None, f"{url}: " + (reason or "schema up to date"))
        except DatabaseUnreachable as exc:
            line("database", False, str(exc))
            reason = "unreachable"
        except SchemaFromNewerCode as exc:
            line("database", False, f"{url}: {exc.detail}")
            reason = "newer"
        llm = build_llm(settings)
        where = f" at {settings.gemini_base_url}" if settings.gemini_base_url else ""
        try:
            await probe(llm)
            detail = "offline model (no PILOTLIGHT_GEMINI_API_KEY)" if llm.name == (
                "pilotlight-offline") else f"{llm.name}{where}: the API key works"
            line("model", True, detail)
        except LLMError as exc:
            line("model", False, f"{llm.name}{where}: {exc}")
        unpriced = _unpriced(settings, llm)
        if unpriced:
            typer.echo(f"{'model':<9} WARN  {unpriced}")  # runs work; their cost does not
        if reason is None:
            async with runtime.sessionmaker() as session:
                rows = (await session.execute(
                    select(Account.kind, Account.status, func.count())
                    .group_by(Account.kind, Account.status)
                )).all()
            accounts = ", ".join(f"{n} {kind} ({status})" for kind, status, n in rows)
            line("accounts", True, accounts or "none yet (`serve` adds the sample on first start)")
        _check_keys(settings, line)
        if reason is None:
            await _check_a_stored_secret(runtime, line)
        refused = _vapid_subject_warning(settings)
        if refused:
            typer.echo(f"{'push':<9} WARN  {refused}")  # a warning: push works elsewhere
        try:
            delta = await SampleSource(settings.sample_data_dir).delta(None, limit=1000)
            line("sample", True, f"{len(delta.messages)} messages, {len(delta.files)} documents "
                 f"in {settings.sample_data_dir or 'the bundled sample'}")
        except SourceError as exc:
            line("sample", False, str(exc))
        return ok

    if not _run(main, checking=True):
        raise typer.Exit(1)


def _check_keys(settings: Settings, line: Callable[[str, bool, str], None]) -> None:
    """The keys that PostgreSQL needs set (SQLite makes its own on first use, not here)."""
    from app.core import crypto, vapid

    path = settings.data_dir / crypto.KEY_FILE
    if settings.secret_keys or (settings.is_sqlite and path.exists()):
        count = len(settings.secret_keys)
        where = (f"PILOTLIGHT_SECRET_KEYS: {count} key{'s' if count > 1 else ''}"
                 if count else str(path))
        try:
            crypto.secret_box(settings)  # reads the file: an empty or broken one is refused
        except crypto.SecretKeyError as exc:
            line("secrets", False, f"{where}: {exc.detail}")
        else:
            line("secrets", True, where)
    elif settings.is_sqlite:
        line("secrets", True, f"{path} (made on first use)")
    else:
        line("secrets", False, "PILOTLIGHT_SECRET_KEYS is not set, and with PostgreSQL none is "
             "generated: adding a webhook or connecting Google answers 503 until it is")
    configured = settings.vapid_private_key and settings.vapid_private_key.get_secret_value()
    key_file = settings.data_dir / vapid.KEY_FILE
    if configured or (settings.is_sqlite and key_file.exists()):
        try:
            vapid.vapid_key(settings)
            line("push", True, "PILOTLIGHT_VAPID_PRIVATE_KEY" if configured else str(key_file))
        except vapid.VapidKeyError as exc:
            line("push", False, exc.detail)
    elif settings.is_sqlite:
        line("push", True, f"{key_file} (made on first use)")
    else:
        line("push", False, "PILOTLIGHT_VAPID_PRIVATE_KEY is not set, and with PostgreSQL none "
             "is generated: web push answers 503 until it is (other channels work)")


async def _check_a_stored_secret(
    runtime: Runtime, line: Callable[[str, bool, str], None]
) -> None:
    """Whether the keys read what is stored: a key replaced, or left out of the list
    after a rotation, reads nothing (a connected Google account, a webhook's secret)."""
    from sqlalchemy import select

    from app.accounts.models import Account
    from app.channels.models import Webhook
    from app.core import crypto

    async with runtime.sessionmaker() as session:
        stored = (await session.execute(
            select(Account.refresh_token_encrypted)
            .where(Account.refresh_token_encrypted.is_not(None)).limit(1)
        )).scalar_one_or_none() or (await session.execute(
            select(Webhook.secret_encrypted).limit(1)
        )).scalar_one_or_none()
    if stored is None:
        return
    try:
        crypto.secret_box(runtime.settings).decrypt(stored)
    except crypto.SecretKeyError as exc:
        line("secrets", False, exc.detail)
    else:
        line("secrets", True, "the keys read the secrets stored")


def _vapid_subject_warning(settings: Settings) -> str | None:
    """Why Apple's push service will refuse the VAPID subject, if it will."""
    subject = settings.effective_vapid_subject
    host = local_contact(subject)
    if host is None:
        return None
    source = ("PILOTLIGHT_VAPID_SUBJECT" if settings.vapid_subject
              else "the default VAPID subject (PILOTLIGHT_PUBLIC_URL is not a public https URL)")
    return (f"{source} is {subject}: Apple's push service (Safari, iOS) refuses a subject at "
            f"{host} with 403 BadJwtToken, so push to Apple devices fails; set "
            "PILOTLIGHT_VAPID_SUBJECT to a mailto: address at a real domain or an https: URL, "
            "or PILOTLIGHT_PUBLIC_URL to this service's public https address")


@cli.command()
def migrate() -> None:
    """Create or upgrade the database schema (safe to run from several processes)."""

    async def main(runtime: Runtime) -> None:
        await upgrade(runtime.engine, runtime.settings)
        typer.echo("database is at the newest schema", err=True)

    _run(main)


@user_cli.command("create")
def user_create(
    email: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "UTC",
    sample: Annotated[bool, typer.Option(
        "--sample", help="Give the user the bundled sample mailbox to read (a demo, or a "
        "deployment without Google).")] = False,
) -> None:
    """Create a user."""

    async def main(runtime: Runtime) -> None:
        from app.bootstrap import sample_account
        from app.users import service

        await _require_schema(runtime)
        async with transaction(runtime.sessionmaker) as session:
            user = await service.create_user(
                session=session, email=email, name=name, timezone=timezone
            )
            if sample:
                session.add(sample_account(user.id))
        typer.echo(f"created user {user.email} ({user.id})"
                   + (" with the sample mailbox" if sample else ""))

    _run(main)


@user_cli.command("email")
def user_email(
    email: Annotated[str, typer.Argument(help="The user's address now.")],
    new_email: Annotated[str, typer.Argument(help="The address to give it.")],
) -> None:
    """Change a user's email address (e.g. the local user's, before changing
    PILOTLIGHT_LOCAL_USER_EMAIL to it); its instructions, tokens and accounts stay."""

    async def main(runtime: Runtime) -> None:
        from app.users import service

        await _require_schema(runtime)
        async with transaction(runtime.sessionmaker) as session:
            user = await service.get_by_email(session=session, email=email)
            if user is None:
                typer.echo(f"error: no user {email} (`pilotlight user list` lists them)",
                           err=True)
                raise typer.Exit(2)
            await service.change_email(session=session, user=user, email=new_email)
        typer.echo(f"user {email.strip().lower()} is now {user.email}")
        if runtime.settings.local_user_email.lower() == email.strip().lower():
            typer.echo(f"it was the local user: set PILOTLIGHT_LOCAL_USER_EMAIL={user.email} "
                       "before the next start, or `serve` makes a new local user", err=True)

    _run(main)


@user_cli.command("list")
def user_list() -> None:
    """List the users: email, time zone, daily cost cap, when created, name."""

    async def main(runtime: Runtime) -> list[str]:
        from sqlalchemy import select

        from app.users.models import User

        await _require_schema(runtime)
        async with transaction(runtime.sessionmaker) as session:
            users = (await session.execute(select(User).order_by(User.email))).scalars().all()
        return [
            f"{u.email}\t{u.timezone}\t{u.daily_cost_cap_usd:g} USD/day\t"
            f"{u.created_at:%Y-%m-%d}\t{u.name}".rstrip() for u in users
        ]

    lines = _run(main)
    if not lines:
        typer.echo("no users yet: `pilotlight serve` creates the local user, "
                   "`pilotlight user create EMAIL` any other", err=True)
    for line in lines:
        typer.echo(line)


@token_cli.command("create")
def token_create(
    email: Annotated[
        str | None, typer.Argument(help="The user; the local user if omitted.")
    ] = None,
    name: Annotated[str, typer.Option(help="A label to recognise the token by.")] = "cli",
) -> None:
    """Create a personal access token and print it (shown only this once)."""

    async def main(runtime: Runtime) -> str:
        from app.users import service

        await _require_schema(runtime)
        target = email or runtime.settings.local_user_email
        async with transaction(runtime.sessionmaker) as session:
            user = await service.get_by_email(session=session, email=target)
            if user is None:
                hint = (
                    "start `pilotlight serve` once to create the local user"
                    if email is None and runtime.settings.is_sqlite
                    else "create it with `pilotlight user create EMAIL`, then run "
                    "`pilotlight token create EMAIL`" if email is None
                    else "create it with `pilotlight user create EMAIL`"
                )
                typer.echo(f"error: no user {target}: {hint}", err=True)
                raise typer.Exit(2)
            _token, plaintext = await service.create_token(session=session, user=user, name=name)
        typer.echo(f"token for {user.email} (shown once, keep it safe):", err=True)
        return plaintext

    # Only the token on stdout, so `TOKEN=$(pilotlight token create)` works.
    typer.echo(_run(main))


@keys_cli.command("rotate")
def keys_rotate(
    batch_size: Annotated[
        int, typer.Option(min=1, max=10000, help="Rows re-encrypted per transaction.")
    ] = 500,
) -> None:
    """Re-encrypt every stored secret with the newest key (the first of
    PILOTLIGHT_SECRET_KEYS); afterwards the older keys can be removed."""

    async def main(runtime: Runtime) -> None:
        from app.core.rotation import ColumnCount, rotate_all
        from app.models import Base

        await _require_schema(runtime)
        if not runtime.settings.secret_keys and runtime.settings.is_sqlite:
            # (With PostgreSQL, no key at all: the rotation stops saying so.)
            typer.echo("PILOTLIGHT_SECRET_KEYS is not set: secrets are sealed with "
                       "DATA_DIR/secret.key. To rotate, put a new key first in "
                       "PILOTLIGHT_SECRET_KEYS and that one after it; now every secret is "
                       "only checked", err=True)

        def report(count: ColumnCount) -> None:
            typer.echo(count.line())

        counts = await rotate_all(
            runtime.sessionmaker, runtime.settings, Base.metadata, batch_size=batch_size,
            report=report,
        )
        rotated = sum(count.rotated for count in counts)
        if len(runtime.settings.secret_keys) > 1:
            typer.echo(f"done: {rotated} secrets re-encrypted with the newest key; the older "
                       "keys can now be removed from PILOTLIGHT_SECRET_KEYS", err=True)
        else:  # one key: nothing older to move from, or to remove
            typer.echo("done: every secret is sealed with the key in use, which reads them "
                       "all", err=True)

    _run(main)


@cli.command("login-link")
def login_link(
    email: Annotated[str, typer.Argument(help="The user to sign in.")],
    host: Annotated[str | None, typer.Option(
        help="The address `serve`/`api` listens on, when given there as --host.")] = None,
    port: Annotated[int | None, typer.Option(
        help="The port `serve`/`api` listens on, when given there as --port.")] = None,
) -> None:
    """Print a one-time dashboard sign-in link for a user (single use, expires soon).
    The link leads to PILOTLIGHT_PUBLIC_URL, else to the address the api listens on."""

    async def main(runtime: Runtime) -> str:
        from app.auth import service as auth
        from app.users import service

        await _require_schema(runtime)
        settings = runtime.settings
        async with transaction(runtime.sessionmaker) as session:
            user = await service.get_by_email(session=session, email=email)
            if user is None:
                typer.echo(
                    f"error: no user {email}: create it with `pilotlight user create EMAIL`",
                    err=True,
                )
                raise typer.Exit(2)
            _link, url = await auth.create_login_link(
                session=session, user=user, ttl_seconds=settings.web_login_link_ttl_seconds,
                public_url=settings.effective_public_url,
            )
        minutes = settings.web_login_link_ttl_seconds // 60
        typer.echo(f"sign-in link for {user.email} (one use, valid {minutes} min):", err=True)
        return url

    # Only the link on stdout, for scripts.
    typer.echo(_run(main, host=host, port=port))


def _self_command() -> str:
    return sys.argv[0] if sys.argv and sys.argv[0].endswith("pilotlight") else "pilotlight"


def main() -> None:
    cli()
