"""The one owner of outbound HTTP: a small typed request and answer at the seam between the
sans-I/O vendor adapters and the sender, pyreqwest underneath (both by measurement, issue #11).

Transport errors are classified here, once: a request that never left (refused connection,
DNS, connect timeout) is safe to retry; one that may have reached the vendor (read timeout,
reset after sending) is ambiguous and goes to the configured policy.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import httpx
import msgspec
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import BuilderError, PyreqwestError

from connector.errors import (
    AmbiguousOutcome,
    ConnectorError,
    VendorRejected,
    VendorTimeout,
    VendorUnavailable,
)

FORM: Final = "application/x-www-form-urlencoded"
JSON: Final = "application/json"
_json = msgspec.json.Encoder()


@functools.lru_cache(maxsize=1024)
def cached_url(text: str) -> httpx.URL:
    return httpx.URL(text)  # parsed once per endpoint: httpx's parser costs ~50 µs a URL


class Request(msgspec.Struct, frozen=True):
    """An outbound request as an adapter builds it: what HttpClient.send puts on the wire.

    Not httpx.Request: building one normalises every header and wraps the body in a stream,
    ~50 Python calls a message that the transport (pyreqwest) does not need.
    """

    method: str
    url: str
    headers: dict[str, str]  # lower-case names
    content: bytes = b""

    def __repr__(self) -> str:
        return f"<Request({self.method!r}, {self.url!r})>"  # headers carry credentials

    def __rich_repr__(self) -> list[tuple[str, Any]]:  # rich shows every field otherwise
        return [("method", self.method), ("url", self.url)]


class Response(msgspec.Struct, frozen=True):
    """A vendor's (or a report receiver's) whole answer, as the adapters' parse_* read it."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive lookups (pyreqwest's HeaderMap)
    content: bytes = b""
    request: Request | None = None  # what was sent, for parsers that compare against it

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"

    def __rich_repr__(self) -> list[tuple[str, Any]]:  # not its request's headers
        return [("status_code", self.status_code)]


# Bytes urlencode leaves as they are (urllib.parse's _ALWAYS_SAFE); every other byte becomes
# %XX, and a space "+", as quote_plus does.
_FORM_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_FORM_TABLE: Final = [chr(byte) if byte in _FORM_SAFE else "+" if byte == 0x20 else f"%{byte:02X}"
                      for byte in range(256)]


def _form_quote(text: str) -> str:
    # Each UTF-8 byte as one latin-1 character, then one C-level pass over a 256-entry table:
    # quote_plus makes a Python call per byte it escapes (~200 calls a Twilio send).
    return text.encode().decode("latin-1").translate(_FORM_TABLE)


def form_encode(fields: Mapping[str, str] | Sequence[tuple[str, str]]) -> bytes:
    """`urlencode(fields).encode()` byte for byte (tests/test_http.py proves it), cheaper."""
    pairs = fields.items() if isinstance(fields, Mapping) else fields
    return "&".join([_form_quote(name) + "=" + _form_quote(value)
                     for name, value in pairs]).encode()


def request(method: str, url: str, headers: Mapping[str, str], *,
            form: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
            json: object = None, json_bytes: bytes | None = None,
            params: Mapping[str, str] | None = None) -> Request:
    """A Request with its body encoded (urlencoded form, or compact UTF-8 JSON), its header
    names lower-cased, and `params` appended to the URL's query string."""
    fields = {name.lower(): value for name, value in headers.items()}
    body = b""
    if form is not None:
        body = form_encode(form)
        fields["content-type"] = FORM
    elif json is not None or json_bytes is not None:
        body = _json.encode(json) if json_bytes is None else json_bytes
        fields["content-type"] = JSON
    if body or method in ("POST", "PUT", "PATCH"):
        fields["content-length"] = str(len(body))
    if params:
        url += ("&" if "?" in url else "?") + form_encode(params).decode()
    return Request(method, url, fields, body)


class _Target(NamedTuple):
    """What the client needs of a URL, worked out once per URL text."""

    text: str  # as httpx serialises it: the form the guard's check parsed
    host: str
    port: int
    userinfo: bool
    is_address: bool  # an IP literal: nothing to pin


@functools.lru_cache(maxsize=1024)
def _target(text: str) -> _Target:
    url = cached_url(text)
    port = url.port or (443 if url.scheme == "https" else 80)
    return _Target(str(url), url.host, port, bool(url.userinfo), _is_address(url.host))


# The checked addresses of a host (netcheck.AddressGuard.addresses); raises a ConnectorError
# when the host may not be called or cannot be resolved now.
Pin = Callable[[str], Awaitable[tuple[str, ...]]]
_CLIENTS_KEPT: Final = 256  # pinned clients (one per host and port); the oldest goes first
_CONNECT_TIMEOUT: Final = datetime.timedelta(seconds=5)


class HttpClient:
    """Sends Requests over pyreqwest (Rust's reqwest and hyper), started in the lifespan.

    Chosen by bench/transport.py: a quarter of aiohttp's client CPU per request at 64 in
    flight. With `pin`, every connection goes only to the addresses the address guard checked
    for that host (no second look-up a rebinding DNS could answer differently): each host
    gets a client whose resolver is those addresses, rebuilt when the checked set changes.
    """

    def __init__(self, *, limit: int = 256, pin: Pin | None = None) -> None:
        self._limit = limit
        self._pin = pin
        self._default: Client | None = None
        self._pinned: dict[tuple[str, int], tuple[tuple[str, ...], Client]] = {}

    def _build(self, host: str = "", port: int = 0, addresses: tuple[str, ...] = ()) -> Client:
        builder = (ClientBuilder().max_connections(self._limit).follow_redirects(False)
                   .connect_timeout(_CONNECT_TIMEOUT).user_agent("channel-api-connector"))
        for address in addresses[:1]:  # reqwest keeps one static address per name
            builder = builder.resolve(host, address, port)
        return builder.build()

    async def start(self) -> None:
        if self._default is None:
            self._default = self._build()

    async def close(self) -> None:
        clients = [self._default, *(client for _, client in self._pinned.values())]
        self._default = None
        self._pinned.clear()
        for client in clients:
            if client is not None:
                await client.close()

    async def _client(self, target: _Target, what: str) -> Client:
        if self._default is None:
            await self.start()
        assert self._default is not None
        host = target.host
        if self._pin is None or not host:
            return self._default
        try:
            addresses = await self._pin(host)
        except ConnectorError as exc:  # refused or not resolvable now: nothing was sent
            raise VendorUnavailable(f"{what}: cannot connect ({exc.message})") from None
        if target.is_address:
            return self._default  # no name to resolve: the checked address is the URL's
        port = target.port
        kept = self._pinned.get((host, port))
        if kept is not None and kept[0] == addresses:
            return kept[1]
        if len(self._pinned) >= _CLIENTS_KEPT:
            self._pinned.pop(next(iter(self._pinned)))
        client = self._build(host, port, addresses)
        self._pinned[(host, port)] = (addresses, client)
        return client

    async def send(self, request: Request, timeout: float,  # noqa: ASYNC109
                   *, what: str) -> Response:
        """Send and read the whole answer, raising a VendorError for transport failures."""
        try:
            target = _target(request.url)
        except (httpx.InvalidURL, ValueError):
            raise VendorRejected(f"{what}: the URL is not valid; it cannot be requested",
                                 code="invalid_url") from None
        if target.userinfo:
            # Credentials ride in headers, never in a URL (where logs and proxies keep them).
            raise VendorRejected(f"{what}: the URL carries credentials; it cannot be requested",
                                 code="invalid_url")
        client = await self._client(target, what)
        try:
            built = (client.request(request.method, target.text).headers(request.headers)
                     .body_bytes(request.content)
                     .timeout(datetime.timedelta(seconds=timeout)).build())
            answer = await built.send()
            body = await answer.bytes()
        except (BuilderError, ValueError) as exc:
            # A request that cannot be built (e.g. a malformed URL or header): nothing left,
            # and trying again cannot help.
            raise VendorRejected(f"{what}: the request cannot be made ({type(exc).__name__})",
                                 code="invalid_url") from None
        except PyreqwestError as exc:
            if not _never_sent(exc):  # a time-out or a lost connection: it may have arrived
                raise AmbiguousOutcome(f"{what}: no answer ({_last_cause(exc)})") from None
            if isinstance(exc, TimeoutError):
                raise VendorTimeout(f"{what}: connect timed out") from None
            raise VendorUnavailable(f"{what}: cannot connect ({_last_cause(exc)})") from None
        return Response(answer.status, answer.headers, bytes(body), request)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _causes(exc: PyreqwestError) -> list[str]:
    details = getattr(exc, "details", None)
    causes = details.get("causes") if isinstance(details, dict) else None
    return [str(c.get("message", "")) for c in causes or () if isinstance(c, dict)]


def _never_sent(exc: PyreqwestError) -> bool:
    """True only when hyper says the connection could not be made: the request never left.

    pyreqwest's exception classes do not tell this apart (a reset after the request was
    written and a time-out while waiting for the answer both arrive as connect errors), but
    the cause chain carries hyper's own error kind. Anything else counts as maybe sent, the
    safe side for exactly once; tests/test_http.py holds both cases.
    """
    return "client error (Connect)" in _causes(exc)


def _last_cause(exc: PyreqwestError) -> str:
    causes = _causes(exc)
    return causes[-1] if causes else type(exc).__name__
