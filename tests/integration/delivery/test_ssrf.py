"""The SSRF guard refuses internal addresses before any connection is opened.

Nothing here may connect anywhere but the local receiver: every refused URL is
checked to have opened no socket at all (the suite's guard fails the test on
any non-loopback connect, and a counting wrapper sees loopback ones).
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.channels.models import Webhook
from app.core.crypto import secret_box
from app.core.db import transaction
from app.core.runtime import Runtime
from app.delivery.sender import DeliverySender
from app.delivery.ssrf import (
    MAX_RESPONSE_BYTES,
    PinnedClient,
    PinnedTransport,
    UrlRefused,
    check_address,
    origin,
    parse_ipv4_loose,
    resolve_checked,
)
from tests import factories
from tests.integration.delivery.conftest import add_digest, delivery, with_settings
from tests.integration.delivery.receivers import WebhookReceiver, start_webhook_receiver

DIGEST = {"summary": "s", "sections": [], "model": "m", "covers": {"end": "2026-11-23T08:00:00Z"}}


def corpus(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        f"http://[::1]:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook",
        f"http://2130706433:{port}/hook",
        f"http://0177.0.0.1:{port}/hook",
        f"http://0x7f.0.0.1:{port}/hook",
        f"http://localhost:{port}/hook",
        "http://192.168.1.1/", "http://172.16.0.1/", "http://100.64.0.1/", "http://0.0.0.0/",
        "http://224.0.0.1/", "http://[fe80::1]/", "http://[fd00::1]/", "http://[fd00:ec2::254]/",
        "http://[::]/", "http://[2002:7f00:1::]/", "http://[64:ff9b::a00:1]/",
        "http://0x7f000001/", "http://127.1/", "http://0/", "https://127.0.0.1./x",
    ]


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every socket connect during the test (on top of the suite's non-loopback guard)."""
    seen: list[object] = []
    inner = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        seen.append(address)
        inner(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


@pytest.mark.parametrize("index", range(len(corpus(1))))
async def test_internal_addresses_are_refused_without_connecting(
    runtime: Runtime, receiver: WebhookReceiver, connects: list[object], index: int
) -> None:
    runtime = with_settings(runtime, webhook_allow_private=False)
    url = corpus(receiver.port)[index]
    user, _ = await factories.user_with_token(runtime)
    # Written directly: the API already refuses the literal ones (tested below).
    async with transaction(runtime.sessionmaker) as session:
        box = secret_box(runtime.settings)
        session.add(Webhook(user_id=user.id, url_encrypted=box.encrypt(url.encode()),
                            url_shown="http://hidden/", event_types={"types": ["digest.created"]},
                            secret_encrypted=box.encrypt(b"whsec_AAAA")))
    notification_id = await add_digest(runtime, user, channels=("webhook",), digest=DIGEST)
    connects.clear()

    await DeliverySender(runtime=runtime).run_once()
    refused = await delivery(runtime, notification_id, "webhook")
    assert refused.status == "failed"  # at once: a refusal is not retried
    assert refused.attempts == 1
    assert "refused to call" in (refused.last_error or "")
    assert receiver.received == []
    ports = [a[1] for a in connects if isinstance(a, tuple) and len(a) >= 2]
    assert receiver.port not in ports
    assert all(ipaddress.ip_address(str(a[0]).split("%")[0]).is_loopback
               for a in connects if isinstance(a, tuple)), connects


@pytest.mark.parametrize("index", range(len(corpus(1))))
async def test_the_transport_refuses_before_connecting(
    connects: list[object], index: int
) -> None:
    url = corpus(1)[index]
    async with httpx.AsyncClient(transport=PinnedTransport(allow_private=False)) as client:
        # httpx itself refuses some numeric forms (0177.0.0.1) before the transport sees them.
        with pytest.raises((UrlRefused, httpx.InvalidURL)):
            await client.post(url, content=b"{}")
    assert connects == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/",
                                 "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/",
                                 "http://metadata.google.internal/computeMetadata/v1/",
                                 "http://2852039166/", "http://[fd20:ce::254]/",
                                 "http://169.254.170.23/", "http://[fd00:ec2::23]/",
                                 "http://[::ffff:169.254.170.23]/", "http://169.254.1.1/",
                                 "http://[fe80::1]/", "http://[fe80::1%25eth0]/",
                                 "http://[fd00:ec2::254%25eth0]/",
                                 "http://[::ffff:0:a9fe:a9fe]/"])
async def test_cloud_metadata_is_refused_even_when_private_addresses_are_allowed(
    connects: list[object], url: str
) -> None:
    with pytest.raises(UrlRefused):
        await resolve_checked(httpx.URL(url), allow_private=True)
    assert connects == []


async def test_every_answer_of_the_resolver_must_pass(connects: list[object]) -> None:
    """A name that resolves to a public and a private address is refused (no connection)."""

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]

    with pytest.raises(UrlRefused, match="10.0.0.7"):
        await resolve_checked(httpx.URL("https://hooks.pilotlight.test/x"), allow_private=False,
                              resolve=resolve)
    assert connects == []


@pytest.mark.parametrize("answer", ["169.254.170.23", "fe80::1%eth0", "fd20:ce::254"])
async def test_a_name_resolving_to_link_local_or_metadata_is_refused_even_when_private_is_allowed(
    connects: list[object], answer: str
) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return [answer]

    with pytest.raises(UrlRefused):
        await resolve_checked(httpx.URL("https://hooks.pilotlight.test/x"), allow_private=True,
                              resolve=resolve)
    assert connects == []


async def test_the_api_refuses_literal_internal_urls(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.settings.webhook_allow_private = False
    _user, headers = await factories.user_with_token(runtime)
    for url in ["http://10.0.0.1/", "http://0177.0.0.1/", "http://[::ffff:127.0.0.1]/",
                "http://169.254.169.254/", "ftp://example.com/", "http://user:pw@example.com/",
                "http://metadata.google.internal/", "not a url"]:
        response = await client.post("/api/v1/webhooks", json={"url": url}, headers=headers)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"] == "WebhookUrlRefused", url
    for url, said in (("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
                      ("http://10.0.0.1/", "10.0.0.1 is a private address")):
        response = await client.post("/api/v1/webhooks", json={"url": url}, headers=headers)
        assert said in response.json()["detail"], response.text


async def test_the_api_refuses_urls_that_can_never_be_delivered(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _user, headers = await factories.user_with_token(runtime)
    for url, reason in [
        ("https://xn--.com/", "not a valid url"),
        ("https://example.com:99999/", "port 99999"), ("https://example.com:0/", "port 0"),
        ("https://%00/", "not a valid host name"), ("https://a..b/", "not a valid host name"),
        ("https://-a.com/", "not a valid host name"),
    ]:
        response = await client.post("/api/v1/webhooks", json={"url": url}, headers=headers)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"] == "WebhookUrlRefused", url
        assert reason in response.json()["detail"].lower(), (url, response.text)


@pytest.mark.parametrize(("host", "address"), [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"), ("127.1", "127.0.0.1"), ("10.1", "10.0.0.1"),
    ("192.168.0x1.1", "192.168.1.1"), ("017700000001", "127.0.0.1"), ("0", "0.0.0.0"),
    ("1.2.3.4", "1.2.3.4"),
])
def test_numeric_ipv4_forms_are_read_as_addresses(host: str, address: str) -> None:
    assert parse_ipv4_loose(host) == ipaddress.IPv4Address(address)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "08.0.0.1", "256.0.0.1", "0x",
                                  "1.2.3.256", "4294967296"])
def test_names_and_impossible_numbers_are_not_addresses(host: str) -> None:
    assert parse_ipv4_loose(host) is None


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
                                     "8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    check_address(ipaddress.ip_address(address), allow_private=False)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com"),
    ("https://user:pw@Example.com:8443/x?token=t#f", "https://example.com:8443"),
    ("http://[fd00::1]:80/push/abc", "http://[fd00::1]:80"),
    ("https://example.com:99999/x?token=t", "a URL that cannot be read"),
])
def test_origin_names_a_url_without_its_secrets(url: str, shown: str) -> None:
    assert origin(url) == shown


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name`, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize(("served", "ok"), [("receiver.pilotlight.test", True),
                                             ("someone-else.test", False)])
async def test_https_is_pinned_and_the_certificate_is_checked_against_the_name(
    tmp_path: Path, connects: list[object], served: str, ok: bool
) -> None:
    cert, key = _certificate(tmp_path, served)
    receiver, server = start_webhook_receiver()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    client_context = ssl.create_default_context(cafile=str(cert))
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    transport = PinnedTransport(allow_private=True, resolve=resolve, verify=client_context)
    url = f"https://receiver.pilotlight.test:{receiver.port}/hook"
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            if ok:
                response = await client.post(url, content=b"{}")
                assert response.status_code == 200
                [request] = receiver.received
                assert request.headers["host"] == f"receiver.pilotlight.test:{receiver.port}"
            else:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.post(url, content=b"{}")
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["receiver.pilotlight.test"]
    assert [a for a in connects if isinstance(a, tuple)] == [("127.0.0.1", receiver.port)]


async def test_a_kept_connection_serves_only_the_address_the_host_resolves_to_now(
    connects: list[object]
) -> None:
    """Connections are kept alive, but the host is resolved and checked on every request,
    and a connection is reused only while the host still resolves to its address."""
    receiver, server = start_webhook_receiver(keep_alive=True)
    answers = ["127.0.0.1"]
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return list(answers)

    transport = PinnedTransport(allow_private=True, resolve=resolve)
    url = f"http://receiver.pilotlight.test:{receiver.port}/hook"
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                assert (await client.post(url, content=b"{}")).status_code == 200
            assert asked == ["receiver.pilotlight.test"] * 3  # resolved every time
            assert [a for a in connects if isinstance(a, tuple)] == [
                ("127.0.0.1", receiver.port)]  # over one kept connection

            # The name now points elsewhere: a new connection to the new address, not the
            # kept one (nothing listens on 127.0.0.2, so it fails).
            answers[:] = ["127.0.0.2"]
            with pytest.raises(httpx.ConnectError):
                await client.post(url, content=b"{}")
            assert connects[-1] == ("127.0.0.2", receiver.port)

            # ... or inside: refused before any connection, kept ones notwithstanding.
            seen = len(connects)
            answers[:] = ["169.254.169.254"]
            with pytest.raises(UrlRefused):
                await client.post(url, content=b"{}")
            answers[:] = ["10.0.0.7"]
            with pytest.raises(UrlRefused):
                await client.post(url, content=b"{}", extensions={"allow_private": False})
            assert len(connects) == seen
            assert len(receiver.received) == 3
    finally:
        server.shutdown()
        server.server_close()


async def test_a_huge_answer_is_read_only_to_the_bound(connects: list[object]) -> None:
    """An endpoint (anyone may run one) answering with 50 MB is read to 64 KiB, and its
    connection dropped, not the whole answer held in memory."""
    sent: list[int] = []
    size = 50 * 1024 * 1024

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65536)
            self.request.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
            total = 0
            try:
                while total < size:
                    total += self.request.send(b"x" * 65536)
            except OSError:
                pass  # the client hung up
            finally:
                sent.append(total)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    client = PinnedClient()
    try:
        response = await client.post(f"http://127.0.0.1:{server.server_address[1]}/hook",
                                     content=b"{}", headers={}, allow_private=True, timeout=10)
        assert response.status_code == 200
        assert len(response.content) == MAX_RESPONSE_BYTES
    finally:
        await client.aclose()
        server.shutdown()
        server.server_close()
    assert sent
    assert sent[0] < size // 10
