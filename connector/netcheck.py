"""Which outbound URLs the connector may call: host allow-lists and private-address refusal."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from connector.errors import BadRequest

_DNS_TTL: Final = 60.0
_DNS_CACHE_SIZE: Final = 4096


class UrlRefused(BadRequest):
    code = "url_refused"


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


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class AddressGuard:
    """Resolves hosts (cached) and refuses private, loopback and link-local targets."""

    def __init__(self, *, allow_private: bool, allow_http: bool) -> None:
        self.allow_private = allow_private
        self.allow_http = allow_http
        self._cache: dict[str, tuple[float, bool]] = {}

    async def check(self, url: str, what: str, hosts: Iterable[str] | None) -> str:
        """Return the URL's host when calling it is allowed, else raise UrlRefused.

        `hosts` is the allow-list to apply (None: any host).
        """
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise UrlRefused(f"{what} is not a valid URL") from None
        if parts.scheme not in ("https", "http") or not host:
            raise UrlRefused(f"{what} must be an absolute https URL")
        if parts.scheme == "http" and not self.allow_http:
            raise UrlRefused(f"{what} must use https")
        if hosts is not None and not host_allowed(host, hosts):
            raise UrlRefused(f"{what} host {host} is not on the allow-list")
        if not self.allow_private and not await self._public(host):
            raise UrlRefused(f"{what} host {host} resolves to a private or loopback address")
        return host

    async def _public(self, host: str) -> bool:
        now = time.monotonic()
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            public = _is_public(host)
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, None, type=socket.SOCK_STREAM)
            except OSError:
                return False  # does not resolve: nothing public to call
            public = bool(infos) and all(_is_public(str(info[4][0])) for info in infos)
        if len(self._cache) >= _DNS_CACHE_SIZE:
            self._cache.clear()
        self._cache[host] = (now + _DNS_TTL, public)
        return public
