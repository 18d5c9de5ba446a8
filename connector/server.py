"""The HTTP/1.1 connection protocol uvicorn runs for `connector serve` (#11).

uvicorn still does everything around it (processes, signals, lifespan, graceful shutdown);
this replaces its httptools protocol with one that behaves the same towards clients and the
app but does less per request: no Event or many-attribute cycle object per request, one
keep-alive timer per connection re-armed lazily instead of one per request, one short call per
request header (the head limits checked per packet), the scope copied from a per-connection
one, the app's response heads remembered (connector/exchange.py), no str.format for the HTTP
version. Measured with `bench/servers.py --instructions`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from typing import Any, Final
from urllib.parse import unquote

import httptools
from uvicorn.config import Config
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from connector.exchange import Exchange

_TASK_NAME: Final = "connector.server request"
_WATCHED: Final = frozenset({b"expect", b"connection"})
# A request's target and header fields together, and how many fields: beyond these it is a
# 431 and the connection closes. llhttp sets no limit of its own (uvicorn's httptools
# protocol took a 2 MB header whole); nginx allows 4 x 8 KiB by default.
MAX_HEAD_BYTES: Final = 32 * 1024
MAX_HEAD_FIELDS: Final = 100


class _HeadTooLarge(Exception):
    """Raised from a parser callback; httptools hands it back wrapped in its own error."""


class HttpProtocol(asyncio.Protocol):
    """uvicorn's `http=` protocol class: constructed per connection as uvicorn constructs its
    own, registered in server_state.connections, shut down by Server through shutdown()."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.logger = logging.getLogger("uvicorn.error")
        self.access_logger = logging.getLogger("uvicorn.access")
        self.access_log = self.access_logger.hasHandlers()
        self.parser = httptools.HttpRequestParser(self)
        # As uvicorn: answer the first of pipelined requests even if the client closed after.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.root_path = config.root_path
        self.raw_root = config.root_path.encode("ascii")
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self.limit_concurrency = config.limit_concurrency
        self.keep_alive_for = config.timeout_keep_alive
        self.fresh_context = config.reset_contextvars
        self.direct_tasks = self.loop.get_task_factory() is None
        # Started straight from on_headers_complete: no concurrency limit to check, no fresh
        # context to make, the loop's own tasks.
        self.plain_start = (self.limit_concurrency is None and not self.fresh_context
                            and self.direct_tasks)
        self.app_state = app_state
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.scope: dict[str, Any] = {}  # what every request's scope starts from
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.unusual = False  # a Connection or Expect header: read when the head is complete
        self.measure = False  # whether a head in this packet may be over the limits
        self.head_too_large = False
        self.current: Exchange | None = None  # the request being read (the latest)
        self.running: Exchange | None = None  # the request being answered
        self.pipeline: deque[Exchange] = deque()
        self.upgrade: tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None = None
        self.read_paused = self.write_paused = False
        self.writable: asyncio.Future[None] | None = None
        self.idle = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.connections.add(self)  # type: ignore[arg-type]
        self.transport = transport
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        self.scheme = "https" if is_ssl(transport) else "http"
        # Each request's scope is a copy with its own values set: cheaper than building one.
        self.scope = {"type": "http", "asgi": self.asgi, "http_version": "1.1",
                      "server": self.server, "client": self.client, "scheme": self.scheme,
                      "method": "", "root_path": self.root_path, "path": "", "raw_path": b"",
                      "query_string": b"", "headers": [], "state": {}}
        self._trace("HTTP connection made")

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._trace("HTTP connection lost")
        for exchange in (self.running, self.current):
            if exchange is not None:
                if not exchange.complete:
                    exchange.disconnected = True
                exchange.wake()
        self.resume_writing()
        if exc is None:
            self.transport.close()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _trace(self, what: str) -> None:
        if self.logger.level <= TRACE_LOG_LEVEL:  # as uvicorn logs them, at its TRACE level
            prefix = "{}:{} - ".format(*self.client) if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%s%s", prefix, what)

    def eof_received(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.idle = False
        # A head within one packet no longer than the limit is within it: only a longer
        # packet, or a head begun in an earlier one, has its heads measured (_measure).
        self.measure = len(data) > MAX_HEAD_BYTES or self.url != b""
        try:
            self.parser.feed_data(data)
            if self.url:  # a head goes on in the next packet
                self._measure(self.url, self.headers)
        except httptools.HttpParserUpgrade:
            if self.upgrade is not None:
                self._hand_over()
            else:
                self._unsupported_upgrade()
        except httptools.HttpParserError:
            if self.head_too_large:
                self._send_error(431, "Request header fields too large.")
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self._send_error(400, msg)
        except _HeadTooLarge:
            self._send_error(431, "Request header fields too large.")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.writable is not None:
            if not self.writable.done():
                self.writable.set_result(None)
            self.writable = None

    async def drain(self) -> None:
        if self.writable is None:
            self.writable = self.loop.create_future()
        await asyncio.shield(self.writable)

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _WATCHED:
            self.unusual = True
        # llhttp keeps trailing whitespace, which RFC 9110 section 5.5 excludes from a value.
        self.headers.append((name, value.rstrip(b" \t")))

    def _measure(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """The head limits. Checked per packet, not per field (#11): when a head is complete,
        if it came in a packet longer than the limit or over several packets; at the end of a
        packet, if a head goes on in the next (so no head is held much past the limit). The
        sizes are the field's own as given (a value's trailing blanks are at most a few)."""
        if (len(headers) > MAX_HEAD_FIELDS
                or len(url) + sum(len(n) + len(v) for n, v in headers) > MAX_HEAD_BYTES):
            self.head_too_large = True
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers, url = self.headers, self.url
        self.headers, self.url = [], b""
        if self.measure or len(headers) > MAX_HEAD_FIELDS:
            self._measure(url, headers)
        method = parser.get_method()
        expect_100 = False
        if not self.unusual and parser.should_keep_alive():
            # Only HTTP/1.1 keeps alive without a Connection header (llhttp refuses other
            # 1.x versions), and get_http_version() costs a str.format per request.
            version, keep_alive = "1.1", True
        else:
            if parser.should_upgrade() and self._upgrade_to_ws(headers):
                self.upgrade = (method, url, headers)
                self.current = None
                return
            self.unusual = False
            version = parser.get_http_version()
            keep_alive = parser.should_keep_alive() and version != "1.0"
            expect_100 = any(name == b"expect" and value.lower() == b"100-continue"
                             for name, value in headers)
        if url[:1] == b"/" and url.find(b"#") < 0:  # (`in` raises and clears a TypeError)
            raw_path, _, query = url.partition(b"?")
        else:  # absolute-form, a fragment, `*`: as uvicorn reads them
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        if self.raw_root:
            path = self.root_path + path
            raw_path = self.raw_root + raw_path
        scope = self.scope.copy()
        if version != "1.1":
            scope["http_version"] = version
        scope["method"] = method.decode("ascii")
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        scope["headers"] = headers
        scope["state"] = self.app_state.copy()
        exchange = Exchange(self, scope, keep_alive, expect_100, method == b"HEAD")
        self.current = exchange
        if self.running is not None:  # pipelined: answered in order, once the one before is
            self.pause_reading()
            self.pipeline.append(exchange)
        elif self.plain_start:  # _start's common case, without its call
            self.running = exchange
            # (Without loop= and context=, as without them: fewer keywords, a cheaper call.)
            exchange.task = task = asyncio.Task(exchange.run(self.app), name=_TASK_NAME)
            self.tasks.add(task)
        else:
            self._start(exchange)

    def on_body(self, body: bytes) -> None:
        exchange = self.current
        if exchange is None or exchange.complete:
            return  # answered already (say 413 before reading): the rest is dropped
        held = exchange.body
        if not held:
            held = exchange.body = body
        else:
            if type(held) is bytes:
                held = exchange.body = bytearray(held)
            held += body
        if len(held) > HIGH_WATER_LIMIT:
            self.pause_reading()
        if exchange.waiter is not None:
            exchange.wake()

    def on_message_complete(self) -> None:
        exchange = self.current
        if exchange is None or exchange.complete:
            return
        exchange.more_body = False
        if exchange.waiter is not None:
            exchange.wake()

    # requests

    def _start(self, exchange: Exchange) -> None:
        self.running = exchange
        app = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        context = contextvars.Context() if self.fresh_context else None  # uvicorn's opt-in
        if self.direct_tasks:  # without the loop's wrapper or a name made per task
            task = asyncio.Task(exchange.run(app), loop=self.loop, name=_TASK_NAME,
                                context=context)
        else:
            task = self.loop.create_task(exchange.run(app), context=context)
        exchange.task = task
        self.tasks.add(task)  # Exchange.run takes it out as it ends

    def response_done(self) -> None:
        self.server_state.total_requests += 1
        self.running = None
        if self.transport.is_closing():
            return
        if self.read_paused:
            self.resume_reading()
        if self.pipeline:
            self._start(self.pipeline.popleft())
            return
        self.idle = True
        self.idle_since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_at(self.idle_since + self.keep_alive_for, self._idle)

    def _idle(self) -> None:
        """The connection's one keep-alive timer: closes it when no request came for
        timeout_keep_alive seconds after the last answer; otherwise waits again, or (a request
        is being read or answered) is armed again when that one is answered."""
        self.timer = None
        if not self.idle or self.transport.is_closing():
            return
        due = self.idle_since + self.keep_alive_for
        if self.loop.time() >= due:
            self.transport.close()
        else:
            self.timer = self.loop.call_at(due, self._idle)

    def shutdown(self) -> None:
        """Server's graceful shutdown: close now if idle, else after the answer."""
        exchange = self.current
        if exchange is None or exchange.complete:
            self.transport.close()
        else:
            exchange.keep_alive = False

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _send_error(self, status: int, msg: str) -> None:
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: text/plain; charset=utf-8\r\n",
                        b"content-length: " + str(len(msg)).encode("ascii") + b"\r\n",
                        b"connection: close\r\n", b"\r\n", msg.encode("ascii")])
        self.transport.write(b"".join(content))
        self.transport.close()

    # WebSocket upgrade: handed to uvicorn's ws protocol as its own protocol hands it over

    def _upgrade_to_ws(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.config.ws_protocol_class is None:
            return False
        connection: list[bytes] = []
        upgrade = None
        for name, value in headers:
            if name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
            if name == b"upgrade":
                upgrade = value.lower()
        return b"upgrade" in connection and upgrade == b"websocket"

    def _unsupported_upgrade(self) -> None:
        self.logger.warning("Unsupported upgrade request.")
        if self.config.ws_protocol_class is None:
            self.logger.warning("No supported WebSocket library detected. Please use \"pip "
                                "install 'uvicorn[standard]'\", or install 'websockets' or "
                                "'wsproto' manually.")

    def _hand_over(self) -> None:
        assert self.upgrade is not None and self.config.ws_protocol_class is not None
        method, url, headers = self.upgrade
        self._trace("Upgrading to WebSocket")
        self.connections.discard(self)
        output = [method, b" ", url, b" HTTP/1.1\r\n"]
        for name, value in headers:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        protocol = self.config.ws_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.app_state)
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(b"".join(output))
