"""Which outbound URLs the connector may call, and the checked addresses it may connect to."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final
from urllib.parse import urlsplit

import httpx

from connector.errors import BadRequest, ConnectorError
from connector.http import cached_url

_DNS_TTL: Final = 60.0
# Parsers disagree on these (urlsplit drops tabs, httpx refuses them, browsers read \ as /).
_UNSAFE: Final = re.compile(r"[\x00-\x20\x7f\\]")
_DNS_CACHE_SIZE: Final = 4096
_URL_CACHE_SIZE: Final = 4096  # URLs whose form passed; then it starts over
# IPv6 forms that carry an IPv4 address a gateway will reach: judged by that address.
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: site-local only

# host -> its addresses; raises OSError (socket.gaierror) when it cannot resolve
Resolve = Callable[[str], Awaitable[Sequence[str]]]


class UrlRefused(BadRequest):
    code = "url_refused"


class DnsUnavailable(ConnectorError):
    """The host could not be resolved now: nothing is known to be wrong with it, retry."""

    status = 503
    code = "dns_unavailable"
    retryable = True


async def system_resolve(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """`example.com` matches itself; `*.example.com` matches its subdomains."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and (ip in _NAT64 or int(ip) >> 32 == 0):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # NAT64, ::a.b.c.d
        if embedded is not None:
            return embedded.is_global and not embedded.is_multicast
    return ip.is_global and not ip.is_multicast


class AddressGuard:
    """Refuses URLs the connector must not call, and remembers the checked addresses of each
    host for a short while: connections go to those (see http.HttpClient's `pin`), never to whatever
    a second look-up might answer."""

    def __init__(self, *, allow_private: bool, allow_http: bool,
                 resolve: Resolve = system_resolve, ttl: float = _DNS_TTL) -> None:
        self.allow_private = allow_private
        self.allow_http = allow_http
        self._resolve = resolve
        self._ttl = ttl
        # host -> (expiry, its addresses, all public)
        self._cache: dict[str, tuple[float, tuple[str, ...], bool]] = {}
        # (URL, allow-list) -> its host: the URL's form passed (a pure function of these two
        # and allow_http). Every send checks its callback URL and often its base URL, nearly
        # always ones seen before (#11: some 30 Python calls a send).
        self._formed: dict[tuple[str, tuple[str, ...] | None], str] = {}

    async def check(self, url: str, what: str, hosts: Iterable[str] | None) -> str:
        """Return the URL's host when calling it is allowed, else raise UrlRefused
        (DnsUnavailable, retryable, when the host cannot be resolved right now).

        `hosts` is the allow-list to apply (None: any host).
        """
        key = (url, hosts) if hosts is None or isinstance(hosts, tuple) else None
        host = self._formed.get(key) if key is not None else None
        if host is None:
            host = self._check_form(url, what, hosts)
            if key is not None:
                if len(self._formed) >= _URL_CACHE_SIZE:
                    self._formed.clear()
                self._formed[key] = host
        if not self.allow_private:
            try:
                await self.addresses(host)
            except UrlRefused:
                raise UrlRefused(f"{what} host {host} resolves to a private or loopback "
                                 "address") from None
            except DnsUnavailable:
                raise DnsUnavailable(f"{what} host {host} cannot be resolved right now; "
                                     "retry later") from None
        return host

    def _check_form(self, url: str, what: str, hosts: Iterable[str] | None) -> str:
        """The URL's host when its form may be called (scheme, no credentials, allow-list)."""
        if _UNSAFE.search(url):
            raise UrlRefused(f"{what} must not contain spaces, control characters or '\\'")
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018  (raises on a bad port)
            cached_url(url)  # what the outbound request is built from must parse too
        except (ValueError, httpx.InvalidURL):
            raise UrlRefused(f"{what} is not a valid URL") from None
        if parts.scheme not in ("https", "http") or not host:
            raise UrlRefused(f"{what} must be an absolute https URL")
        if "@" in parts.netloc:
            raise UrlRefused(f"{what} must not carry credentials (user:password@)")
        if parts.scheme == "http" and not self.allow_http:
            raise UrlRefused(f"{what} must use https")
        if hosts is not None and not host_allowed(host, hosts):
            raise UrlRefused(f"{what} host {host} is not on the allow-list")
        return host

    async def addresses(self, host: str) -> tuple[str, ...]:
        """The host's addresses, all checked public unless private networks are allowed."""
        now = time.monotonic()
        cached = self._cache.get(host)
        if cached is None or cached[0] <= now:
            try:
                found: tuple[str, ...] = (str(ipaddress.ip_address(host)),)
            except ValueError:
                try:
                    found = tuple(await self._resolve(host))
                except OSError:
                    found = ()
            if not found:
                # Not cached: a resolver failure says nothing lasting about the host.
                raise DnsUnavailable(f"{host} cannot be resolved")
            if len(self._cache) >= _DNS_CACHE_SIZE:
                self._cache.clear()
            cached = self._cache[host] = (now + self._ttl, found, all(map(is_public, found)))
        if not (cached[2] or self.allow_private):
            raise UrlRefused(f"{host} resolves to a private or loopback address")
        return cached[1]
