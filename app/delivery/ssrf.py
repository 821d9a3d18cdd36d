"""Webhook URLs must not reach inside: the SSRF guard and an httpx transport that pins.

Every address a host resolves to is checked, and the request then connects to
that checked address (the URL's host goes in the Host header and TLS SNI), so
a second DNS answer cannot switch it to an internal one (DNS rebinding).
Numeric IPv4 forms (2130706433, 0177.0.0.1, 0x7f.0.0.1) and IPv4 inside
IPv6 (::ffff:127.0.0.1, 6to4, Teredo, NAT64) are read as the addresses they
are. Refusals happen before any connection is opened.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Refused even when private addresses are allowed, like every link-local address:
# instance credentials live there.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS Pod Identity
        "169.254.169.253",  # AWS DNS
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity over IPv6
        "fd00:ec2::253",  # AWS DNS over IPv6
        "fd20:ce::254",  # GCP over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public address)
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.I)
# A DNS label as found in host names (letters, digits, hyphens not at either end), and the
# underscore that some real names carry.
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$", re.I)


class UrlRefused(Exception):
    """This URL may not be called; the message says why."""


class ResolveFailed(OSError):
    """The host did not resolve (maybe for now): worth a retry, unlike a refusal."""


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Read IPv4 in every form inet_aton accepts (decimal, octal, hex, 1 to 4 parts)."""
    if not _NUMERIC_HOST.match(host):
        return None
    parts = host.rstrip(".").split(".")
    try:
        numbers = [
            int(p, 16) if p.lower().startswith("0x") else int(p, 8) if len(p) > 1 and
            p.startswith("0") else int(p)
            for p in parts
        ]
    except ValueError:
        return None  # "0x" alone, or 08 (not octal): not an address, and not a name either
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host names literally, or None for a name to resolve."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return parse_ipv4_loose(bare)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if (any(ip in net for net in NAT64) or (int(ip) >> 32 == 0 and int(ip) > 1)
            or int(ip) >> 32 == 0xFFFF0000):
        # NAT64, IPv4-compatible, and IPv4-translated (::ffff:0:a.b.c.d, SIIT)
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _why_internal(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv6Address) and (ip.is_site_local or ip in _UNIQUE_LOCAL):
        return "unique-local"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "private"
    return None


def check_address(ip: IPAddress, *, allow_private: bool) -> None:
    """Raise UrlRefused unless `ip` may be called."""
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        # Without its zone (fd00:ec2::254%eth0 is fd00:ec2::254), and what it embeds.
        candidates = [ipaddress.IPv6Address(ip.packed), *_embedded_ipv4(ip)]
    for address in candidates:
        if address in METADATA_ADDRESSES:
            raise UrlRefused(f"{ip} is a cloud metadata address")
        shown = ip if address == ip else f"{ip} ({address})"
        if address.is_link_local:
            raise UrlRefused(
                f"{shown} is a link-local address, where cloud metadata services live "
                "(refused even with PILOTLIGHT_WEBHOOK_ALLOW_PRIVATE)"
            )
        why = _why_internal(address)
        if why is not None and not allow_private:
            raise UrlRefused(
                f"{shown} is {'an' if why[0] in 'aeiou' else 'a'} {why} address "
                "(set PILOTLIGHT_WEBHOOK_ALLOW_PRIVATE to allow)"
            )


def check_url(url: str, *, allow_private: bool) -> httpx.URL:
    """What can be checked without DNS: scheme, host, credentials, a literal address."""
    try:
        parsed = httpx.URL(url)
        shown_host = parsed.host  # decodes IDNA, which may fail (xn--.com)
    except (httpx.InvalidURL, TypeError, UnicodeError) as exc:
        # httpx refuses some numeric hosts (0177.0.0.1); say what they really are.
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            host = ""
        ip = literal_address(host)
        if ip is not None:
            check_address(ip, allow_private=allow_private)
        raise UrlRefused(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise UrlRefused("only http:// and https:// URLs are allowed")
    if not shown_host:
        raise UrlRefused("the URL has no host")
    if parsed.userinfo:
        raise UrlRefused("credentials in the URL are not allowed (they would be stored as is)")
    if parsed.fragment:
        raise UrlRefused("a fragment (#...) is not sent to the server; remove it")
    if parsed.port is not None and not 0 < parsed.port <= 65535:
        raise UrlRefused(f"port {parsed.port} does not exist (ports go from 1 to 65535)")
    host = shown_host.rstrip(".").lower()
    if host in METADATA_NAMES or host.endswith(".internal"):
        raise UrlRefused(f"{host} is an internal cloud name")
    ip = literal_address(host)
    if ip is not None:
        check_address(ip, allow_private=allow_private)
    elif not _is_host_name(parsed.raw_host.decode("ascii", "replace").rstrip(".")):
        raise UrlRefused(f"{shown_host!r} is not a valid host name")
    return parsed


def _is_host_name(name: str) -> bool:
    """`name` (in its ASCII form: IDNA, percent escapes) can be a host's name in DNS."""
    return len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL, to name it in errors and logs.

    Webhook and push URLs carry secrets in their path and query (Slack's
    /services/T/B/XXXX, ?token=, push endpoints are capability URLs), so those never
    leave the database.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "a URL that cannot be read"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def masked(url: str) -> str:
    """`scheme://host[:port]/…`: how a webhook URL is shown once it is stored.

    Its origin (`origin`), and of its path and query only whether it has any: an
    incoming webhook's secret can be anywhere in them (Slack's /services/T/B/SECRET,
    Discord's /api/webhooks/ID/SECRET, Zapier's /hooks/catch/ACCOUNT/SECRET/, ?token=),
    so no part of them is shown, not even the first or last few characters.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return origin(url)
    return origin(url) + ("/\u2026" if parts.path.strip("/") or parts.query else "/")


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def resolve_checked(
    url: httpx.URL, *, allow_private: bool, resolve: Resolver = system_resolve
) -> IPAddress:
    """The one address to connect to; every address the host resolves to must pass."""
    check_url(str(url), allow_private=allow_private)
    host = url.host.rstrip(".")
    literal = literal_address(host)
    if literal is not None:
        return literal
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        answers = await resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise ResolveFailed(f"cannot resolve {host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for answer in answers:
        ip = ipaddress.ip_address(answer.split("%")[0])
        check_address(ip, allow_private=allow_private)
        addresses.append(ip)
    if not addresses:
        raise ResolveFailed(f"{host} has no address")
    return addresses[0]


# Per pinned host: httpx's defaults.
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5)


@dataclass
class _Pool:
    transport: httpx.AsyncHTTPTransport
    busy: int = 0
    used: float = 0.0


class PinnedTransport(httpx.AsyncBaseTransport):
    """Check every request's host, then connect to the checked address, not the name.

    The host is resolved and checked on every request, and the request goes to the
    address just checked. Connections are kept alive in a pool per (scheme, host, checked
    address, port): a connection is reused only for the host whose name it was opened
    (and its certificate verified) for, and only while that host still resolves to that
    address. One TLS context serves every pool; building one loads the CA store, which
    costs tens of milliseconds of CPU.
    """

    def __init__(
        self, *, allow_private: bool, resolve: Resolver = system_resolve,
        verify: ssl.SSLContext | bool = True, max_pools: int = 64,
        limits: httpx.Limits = POOL_LIMITS,
    ) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else \
            httpx.create_ssl_context(verify=verify)
        self._limits = limits
        self._max_pools = max_pools
        # Least recently used first.
        self._pools: OrderedDict[tuple[str, str, str, int], _Pool] = OrderedDict()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        original = request.url
        allow_private = bool(request.extensions.get("allow_private", self.allow_private))
        ip = await resolve_checked(original, allow_private=allow_private, resolve=self.resolve)
        # The Host header was set from the original URL when the request was built.
        request.url = original.copy_with(host=str(ip))
        if original.scheme == "https":
            # TLS names (and the certificate is checked against) the host, not the address.
            request.extensions = {**request.extensions, "sni_hostname": original.host}
        port = original.port or (443 if original.scheme == "https" else 80)
        pool = await self._pool((original.scheme, original.host, str(ip), port))
        pool.busy += 1
        try:
            response = await pool.transport.handle_async_request(request)
        except BaseException:
            pool.busy -= 1
            pool.used = time.monotonic()
            raise
        return httpx.Response(
            status_code=response.status_code, headers=response.headers,
            stream=_Released(response.stream, pool),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    async def _pool(self, key: tuple[str, str, str, int]) -> _Pool:
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        # Close pools that sat idle past their connections' keep-alive, and the least
        # recently used idle ones when there are too many (hosts that moved address).
        now = time.monotonic()
        idle_for = self._limits.keepalive_expiry or 0.0
        for old_key, old in list(self._pools.items()):
            if old.busy:
                continue
            if now - old.used > idle_for or len(self._pools) >= self._max_pools:
                del self._pools[old_key]
                await old.transport.aclose()
        pool = _Pool(httpx.AsyncHTTPTransport(verify=self._ssl, retries=0, limits=self._limits,
                                              ), used=now)
        self._pools[key] = pool
        return pool

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.transport.aclose()


# What is read of a response body at most: the outbox needs the status and a line of the
# reason, and an endpoint (anyone's) must not make the process hold a body of any size.
MAX_RESPONSE_BYTES = 65_536


class _Released(httpx.AsyncByteStream):
    """A response body, read to `MAX_RESPONSE_BYTES` at most, that tells its pool when it is
    closed (so the pool is not idle before)."""

    def __init__(self, stream: httpx.AsyncByteStream, pool: _Pool) -> None:
        self._stream = stream
        self._pool: _Pool | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        room = MAX_RESPONSE_BYTES
        async for chunk in self._stream:
            if len(chunk) >= room:
                # The rest is never read: the connection is closed, not kept.
                if room:
                    yield chunk[:room]
                return
            room -= len(chunk)
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._pool is not None:
                self._pool.busy -= 1
                self._pool.used = time.monotonic()
                self._pool = None


class PinnedClient:
    """The HTTP client of a channel: made on first use, kept (with its pools) until closed.

    Redirects are not followed; every request is checked and pinned by PinnedTransport.
    """

    def __init__(self, *, resolve: Resolver = system_resolve) -> None:
        self.resolve = resolve
        self._client: httpx.AsyncClient | None = None

    async def post(
        self, url: str, *, content: bytes, headers: dict[str, str], allow_private: bool,
        timeout: float,
    ) -> httpx.Response:
        if self._client is None:
            transport = PinnedTransport(allow_private=False, resolve=self.resolve)
            self._client = httpx.AsyncClient(transport=transport, follow_redirects=False,
                                             trust_env=False)
        return await self._client.post(url, content=content, headers=headers, timeout=timeout,
                                       extensions={"allow_private": allow_private})

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
