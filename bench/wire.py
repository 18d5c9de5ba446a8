"""Minimal HTTP/1.1 for the harness: a keep-alive client (load generator, vendor callbacks) and
a server for synchronous handlers (the fakes).

On two shared cores every microsecond the harness spends is taken from the server it
measures: an asyncio.Protocol with httptools' C parser costs a fraction of a general-purpose
client or server per request (`python bench/wire.py URL` compares the client with aiohttp).
The client sends one request per connection at a time, reusing connections most-recent-first.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import httptools

Answer = tuple[int, bytes]
IDLE_REUSE = 2.0  # seconds: older idle connections are dropped, never raced against the
# server's keep-alive timeout (uvicorn closes after 5 s)
Handler = Callable[[bytes, bytes, dict[bytes, bytes], bytes], tuple[int, bytes]]
_REASONS = {200: b"OK", 201: b"Created", 204: b"No Content", 400: b"Bad Request",
            401: b"Unauthorized", 404: b"Not Found"}


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.body: list[bytes] = []
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))
            self.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.body = []
        if not self.parser.should_keep_alive():
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Client:
    """Keep-alive connections to one host:port; as many as requests in flight at once."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        block = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {parts.netloc}\r\n{block}".encode("latin-1")
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self.connections = 0  # opened so far: many more than requests in flight means no reuse

    def encode(self, method: str, target: str, body: bytes,
               extra: dict[str, str] | None = None) -> bytes:
        """One request's bytes: the client's headers, then `extra`."""
        more = "".join(f"{k}: {v}\r\n" for k, v in extra.items()).encode() if extra else b""
        return b"%s %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s" % (
            method.encode(), target.encode("latin-1"), self._head, more, len(body), body)

    async def request(self, raw: bytes) -> Answer:
        """Send one encoded request; (status, body). Raises ConnectionError or TimeoutError."""
        loop = asyncio.get_running_loop()
        connection = None
        now = loop.time()
        while self._idle:
            candidate = self._idle.pop()
            if not candidate.closed and now - candidate.idle_since < IDLE_REUSE:
                connection = candidate
                break
            candidate.close()
            self._all.discard(candidate)
        if connection is None:
            _, connection = await loop.create_connection(_Connection, self.host, self.port)
            self._all.add(connection)
            self.connections += 1
        waiter: asyncio.Future[Answer] = loop.create_future()
        connection.waiter = waiter
        assert connection.transport is not None
        connection.transport.write(raw)
        expire = loop.call_later(self.timeout, _expire, waiter)
        try:
            answer = await waiter
        except BaseException:
            connection.close()
            self._all.discard(connection)
            raise
        finally:
            expire.cancel()
        if connection.closed:
            self._all.discard(connection)
        else:
            connection.idle_since = loop.time()
            self._idle.append(connection)
        return answer

    def close(self) -> None:
        for connection in self._all:
            connection.close()
        self._all.clear()
        self._idle.clear()


class _ServerConnection(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        # Handlers are synchronous, so answers leave in request order even when pipelined.
        status, payload = self.handler(self.parser.get_method(), self.url, self.headers,
                                       b"".join(self.body))
        self.url, self.headers, self.body = b"", {}, []
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s"
                             % (status, _REASONS.get(status, b"-"), len(payload), payload))
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(handler: Handler, sock: socket.socket) -> None:
    """Serve on an already listening socket until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _ServerConnection(handler), sock=sock)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with server:
        await stopping.wait()


def _expire(waiter: asyncio.Future[Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no answer in time"))


async def _compare(url: str, n: int = 5000, conc: int = 32) -> None:
    """CPU per request of this client and of aiohttp against `url` (a quick self-check)."""
    import aiohttp

    body = b"x" * 400
    client = Client(url, {"Content-Type": "application/octet-stream"})
    raw = client.encode("POST", urlsplit(url).path or "/", body)

    async def ours() -> None:
        await client.request(raw)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as session:
        async def theirs() -> None:
            async with session.post(url, data=body) as reply:
                await reply.read()

        for name, call in (("wire", ours), ("aiohttp", theirs), ("wire", ours)):
            left = n

            async def worker(call: object = call) -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await call()  # type: ignore[operator]

            cpu0 = time.process_time()
            await asyncio.gather(*(worker() for _ in range(conc)))
            print(f"{name:8} {(time.process_time() - cpu0) / n * 1e6:6.1f} µs CPU per request")
    client.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(_compare(sys.argv[1]))
