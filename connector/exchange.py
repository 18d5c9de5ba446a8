"""One HTTP/1.1 request and its response as the ASGI app sees them: `receive`, `send`, and the
task that runs the app, with uvicorn's httptools protocol's rules and messages (#11)."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any, Final

from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

if TYPE_CHECKING:
    from connector.server import HttpProtocol

Message = dict[str, Any]
Header = tuple[bytes, bytes]
log: Final = logging.getLogger("uvicorn.error")  # where uvicorn reports the app's failures

# As uvicorn checks the app's headers (RFC 9110 token and field-value characters).
_BAD_NAME: Final = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]').search
_BAD_VALUE: Final = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]").search
# What a response header means for the framing: the line's kind in _render's answer.
PLAIN, LENGTH, CHUNKED, CLOSE = 0, 1, 2, 3
# (name, value) -> (the line as written, its kind, the Content-Length): every header is checked
# and rendered once, not on every response; bounded, as some values vary (lengths, ids).
_LINES: dict[Header, tuple[bytes, int, int]] = {}
_LINES_MAX: Final = 4096
# (status, keep-alive, HEAD, *headers) -> (head, chunked, Content-Length, keep-alive after):
# a response like an earlier one (most are) costs one lookup, not a pass over its headers.
# Emptied when the default headers change (each second) and when full.
_HEADS: dict[tuple[Any, ...], tuple[bytes, bool, int, bool]] = {}
_HEADS_MAX: Final = 1024
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_JOIN_BELOW: Final = 65536  # a smaller body is copied after the head: one write, one packet
_500: Final = {"type": "http.response.start", "status": 500, "headers": [
    (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"),
    (b"connection", b"close")]}


def render(name: bytes, value: bytes) -> tuple[bytes, int, int]:
    """_checked, remembered (forgetting all once full: what is in use comes back)."""
    line = _checked(name, value)
    if len(_LINES) >= _LINES_MAX:
        _LINES.clear()
    _LINES[name, value] = line
    return line


def _checked(name: bytes, value: bytes) -> tuple[bytes, int, int]:
    """A header line, refused as uvicorn refuses it, with what it says about the framing."""
    if _BAD_NAME(name):
        raise RuntimeError("Invalid HTTP header name.")
    if _BAD_VALUE(value):
        raise RuntimeError("Invalid HTTP header value.")
    name = name.lower()
    kind, length = PLAIN, 0
    if name == b"content-length":
        kind, length = LENGTH, int(value)
    elif name == b"transfer-encoding" and value.lower() == b"chunked":
        kind = CHUNKED
    elif name == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")]:
        kind = CLOSE
    return b"%b: %b\r\n" % (name, value), kind, length


class _Defaults:
    """server_state.default_headers (date, server; uvicorn replaces the list each second)
    rendered once per list; any that bear on the framing are left to each response."""

    given: object = None
    rendered = b""
    framing: list[Header] = []  # noqa: RUF012 - replaced, never mutated

    @classmethod
    def render(cls, headers: list[Header]) -> None:
        lines = [_checked(name, value) for name, value in headers]
        cls.rendered = b"".join(line for line, kind, _ in lines if kind == PLAIN)
        cls.framing = [h for h, (_, kind, _) in zip(headers, lines, strict=True) if kind]
        cls.given = headers
        _HEADS.clear()


def _render_head(status: int, keep_alive: bool, is_head: bool,
                 headers: Any) -> tuple[bytes, bool, int, bool]:
    """The status line and headers as uvicorn writes them, with what they say about the
    framing: (head, chunked, Content-Length, keep-alive after)."""
    head = [STATUS_LINE[status], _Defaults.rendered]
    if _Defaults.framing:
        headers = _Defaults.framing + list(headers)
    chunked: bool | None = None
    remaining = 0
    closing = False
    for name, value in headers:
        line, kind, length = _LINES.get((name, value)) or render(name, value)
        head.append(line)
        if kind:
            if kind == LENGTH:
                if chunked is None:
                    remaining = length
                    chunked = False
            elif kind == CHUNKED:
                remaining = 0
                chunked = True
            else:
                keep_alive = False
                closing = True
    if not keep_alive and not closing:
        head.append(b"connection: close\r\n")
    if chunked is None and not is_head and status != 204 and status != 304:
        chunked = True
        head.append(b"transfer-encoding: chunked\r\n")
    head.append(b"\r\n")
    return b"".join(head), bool(chunked), remaining, keep_alive


class Exchange:
    """One request's state from its headers to the end of its answer."""

    __slots__ = ("body", "chunked", "complete", "conn", "disconnected", "expect_100", "is_head",
                 "keep_alive", "more_body", "pending", "remaining", "scope", "started", "task",
                 "waiter")

    def __init__(self, conn: HttpProtocol, scope: Message, keep_alive: bool, expect_100: bool,
                 is_head: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.is_head = is_head
        # None once the last http.request went out: a later receive() waits for the end.
        self.body: bytes | bytearray | None = b""
        self.more_body = True
        self.started = self.complete = self.disconnected = False
        self.waiter: asyncio.Future[None] | None = None  # a receive() waiting for the body
        self.chunked: bool | None = None
        self.remaining = 0  # of the Content-Length
        self.pending: bytes | None = None  # status line and headers, held for the first body
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # as uvicorn: logged and answered, not raised
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.started:
                await self._send_500()
            else:
                self._abort()
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
                self._abort()
            elif not self.started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self._abort()
        finally:
            self.conn.tasks.discard(self.task)

    async def _send_500(self) -> None:
        await self.send(_500)
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    def _flush(self) -> None:
        """What uvicorn would have written by now, before a close or an error."""
        if self.pending is not None and not self.conn.transport.is_closing():
            self.conn.transport.write(self.pending)
        self.pending = None

    def _abort(self) -> None:
        self._flush()
        self.conn.transport.close()

    async def receive(self) -> Message:
        conn = self.conn
        if self.expect_100:
            self.expect_100 = False
            if not conn.transport.is_closing():
                conn.transport.write(_CONTINUE)
        while True:
            if self.disconnected or self.complete:
                return {"type": "http.disconnect"}
            body = self.body
            if body or (body is not None and not self.more_body):
                break
            if conn.read_paused:
                conn.resume_reading()
            self.waiter = conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        more = self.more_body
        self.body = b"" if more else None
        if conn.read_paused:  # paused for a backed-up body (or a pipelined request)
            conn.resume_reading()
        return {"type": "http.request", "body": body if type(body) is bytes else bytes(body),
                "more_body": more}

    async def send(self, message: Message) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        if not self.started:
            if message["type"] != "http.response.start":
                raise RuntimeError("Expected ASGI message 'http.response.start', but got "
                                   f"'{message['type']}'.")
            self.started = True
            self.expect_100 = False
            self._head(message)
        elif not self.complete:
            if message["type"] != "http.response.body":
                raise RuntimeError("Expected ASGI message 'http.response.body', but got "
                                   f"'{message['type']}'.")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self.is_head:
                self.remaining = 0
                data = b""
            elif self.chunked:
                data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
                if not more:
                    data += b"0\r\n\r\n"
            elif len(body) > self.remaining:
                self._flush()
                raise RuntimeError("Response content longer than Content-Length")
            else:
                self.remaining -= len(body)
                data = body
            pending = self.pending
            if pending is not None:
                self.pending = None
                if len(data) < _JOIN_BELOW:
                    conn.transport.write(pending + data)
                else:
                    conn.transport.writelines((pending, data))
            elif data:
                conn.transport.write(data)
            if not more:
                if self.remaining:
                    raise RuntimeError("Response content shorter than Content-Length")
                self.complete = True
                if self.waiter is not None:
                    self.wake()
                if not self.keep_alive:
                    conn.transport.close()
                conn.response_done()
        else:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after "
                               "response already completed.")

    def _head(self, message: Message) -> None:
        """The status line and headers, as uvicorn writes them, held until the first body
        (the ASGI spec lets a server hold them until then)."""
        status = message["status"]
        conn = self.conn
        if conn.access_log:
            scope: Any = self.scope
            conn.access_logger.info('%s - "%s %s HTTP/%s" %d', get_client_addr(scope),
                                    scope["method"], get_path_with_query_string(scope),
                                    scope["http_version"], status)
        if conn.server_state.default_headers is not _Defaults.given:
            _Defaults.render(conn.server_state.default_headers)
        key = (status, self.keep_alive, self.is_head, *message.get("headers", ()))
        try:
            known = _HEADS.get(key)
        except TypeError:  # a header as a list, not a tuple: rendered, not remembered
            known = None
            hashable = False
        else:
            hashable = True
        if known is None:
            known = _render_head(status, self.keep_alive, self.is_head, key[3:])
            if hashable:
                if len(_HEADS) >= _HEADS_MAX:
                    _HEADS.clear()
                _HEADS[key] = known
        self.pending, self.chunked, self.remaining, self.keep_alive = known
