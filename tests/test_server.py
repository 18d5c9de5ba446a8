"""connector/server.py's HTTP/1.1 protocol, driven through a real uvicorn.Server on 127.0.0.1
with raw sockets: what uvicorn's own httptools protocol guarantees clients and the app. Every
test runs against both, so the suite also shows the two behave alike."""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from connector.server import MAX_HEAD_BYTES, MAX_HEAD_FIELDS, HttpProtocol
from tests.raw_http import Client

Message = dict[str, Any]


class App:
    """Routes by path: /echo answers the body it read (HEAD: a body that must not be sent),
    /gate waits for the test before it reads, /fail raises, /stream answers in two parts
    without a length, /parts in three with one, /listen reports what receive() gave until the
    last body or the end. `reading` is set once an app calls receive()."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.reading = threading.Event()
        self.heard: queue.Queue[list[Message]] = queue.Queue()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.scopes.append(scope)
        path = scope["path"]
        self.events.append(f"start {path}")
        if path == "/listen":
            heard = [await receive()]
            while heard[-1].get("more_body"):
                heard.append(await receive())
            self.heard.put(heard)
            return
        if path == "/gate":
            self.entered.set()
            await asyncio.to_thread(self.gate.wait, 10)
        if path == "/fail":
            raise RuntimeError("the app failed")
        body = b""
        more = True
        while more:
            self.reading.set()
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "HEAD":
            body = b"not sent"
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"one,", "more_body": True})
            await send({"type": "http.response.body", "body": b"two"})
        elif path == "/parts":
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-length", b"%d" % (len(body) + 8))]})
            await send({"type": "http.response.body", "body": b"one,", "more_body": True})
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b",two"})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
        self.events.append(f"end {path}")


class Served:
    """A uvicorn.Server with HttpProtocol in a thread, on an ephemeral port."""

    def __init__(self, app: App, protocol: type[asyncio.Protocol]) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, http=protocol,
                                lifespan="off", ws="none", log_config=None, access_log=False,
                                timeout_keep_alive=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def connect(self) -> Client:
        return Client(self.port)

    def stop(self) -> None:
        self.app.gate.set()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(params=[HttpProtocol, HttpToolsProtocol], ids=["connector", "uvicorn"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    serving = Served(App(), request.param)
    try:
        yield serving
    finally:
        serving.stop()


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    return (b"POST %b HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n%b\r\n%b"
            % (path.encode(), len(body), b"".join(h + b"\r\n" for h in extra), body))


def test_keep_alive_serves_requests_one_after_another_on_one_connection(
        served: Served) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}") as client:
        answers = [client.post("/echo", content=f"n{n}".encode()) for n in range(3)]
    assert [a.content for a in answers] == [b"n0", b"n1", b"n2"]
    assert len({scope["client"] for scope in served.app.scopes}) == 1
    assert all(a.headers["date"] and a.headers["server"] == "uvicorn" for a in answers)


def test_the_scope_holds_what_starlette_and_the_connector_read(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"POST /echo/a%20b?x=1&y=%20 HTTP/1.1\r\nHost: t\r\n"
                     b"X-Mixed-Case: v  \r\ncontent-length: 0\r\n\r\n")
        assert sock.answer()[0] == b"HTTP/1.1 200 OK"
    scope = served.app.scopes[0]
    assert {k: scope[k] for k in ("type", "http_version", "method", "path", "raw_path",
                                  "query_string", "root_path", "scheme")} == {
        "type": "http", "http_version": "1.1", "method": "POST", "path": "/echo/a b",
        "raw_path": b"/echo/a%20b", "query_string": b"x=1&y=%20", "root_path": "",
        "scheme": "http"}
    assert scope["asgi"]["version"] == "3.0"
    assert (b"x-mixed-case", b"v") in scope["headers"]  # lower-cased, trailing space gone
    assert scope["server"] == ("127.0.0.1", served.port)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["state"] == {}


def test_pipelined_requests_are_answered_in_order_one_at_a_time(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post("/gate", b"first") + post("/echo", b"second")
                     + post("/echo", b"third"))
        assert served.app.entered.wait(10)
        served.app.gate.set()
        bodies = [sock.answer()[2] for _ in range(3)]
    assert bodies == [b"first", b"second", b"third"]
    assert served.app.events == ["start /gate", "end /gate", "start /echo", "end /echo",
                                 "start /echo", "end /echo"]


def test_a_chunked_request_body_reaches_the_app_whole(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n")
        sock.sendall(b"6\r\n world\r\n0\r\n\r\n")
        assert sock.answer()[2] == b"hello world"


def test_a_body_arriving_after_the_app_began_reading_reaches_it_whole(
        served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 11\r\n\r\nhel")
        assert served.app.reading.wait(10)
        sock.sendall(b"lo ")
        sock.sendall(b"world")
        assert sock.answer()[2] == b"hello world"


def test_an_answer_in_several_parts_with_a_length_is_sent_whole(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post("/parts", b"mid") + post("/parts", b""))
        status, headers, body = sock.answer()
        assert (status, headers[b"content-length"], body) == (b"HTTP/1.1 200 OK", b"11",
                                                              b"one,mid,two")
        assert b"transfer-encoding" not in headers
        assert sock.answer()[2] == b"one,,two"  # the same head again (remembered), then its body


def test_expect_100_continue_is_answered_when_the_app_reads(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\n"
                     b"content-length: 4\r\n\r\n")
        assert sock.answer(head=True) == (b"HTTP/1.1 100 Continue", {}, b"")
        sock.sendall(b"body")
        assert sock.answer()[2] == b"body"


def test_connection_close_is_honoured_and_announced(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post("/echo", b"x", b"connection: close"))
        _, headers, body = sock.answer()
        assert (headers[b"connection"], body) == (b"close", b"x")
        assert sock.closed()


@pytest.mark.parametrize("extra", [b"", b"connection: keep-alive\r\n"],
                         ids=["plain", "keep-alive-asked"])
def test_http_1_0_is_answered_then_closed(served: Served, extra: bytes) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /echo HTTP/1.0\r\n%b\r\n" % extra)
        _, headers, _ = sock.answer()
        assert headers[b"connection"] == b"close"
        assert sock.closed()
    assert served.app.scopes[0]["http_version"] == "1.0"


def test_a_malformed_request_is_a_400_and_closes(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, body = sock.answer()
        assert (status, body) == (b"HTTP/1.1 400 Bad Request",
                                  b"Invalid HTTP request received.")
        assert headers[b"connection"] == b"close"
        assert sock.closed()
    assert served.app.scopes == []


def test_head_gets_the_headers_and_no_body(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"HEAD /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        status, headers, _ = sock.answer(head=True)
        assert (status, headers[b"content-length"]) == (b"HTTP/1.1 200 OK", b"8")
        sock.sendall(post("/echo", b"next"))  # no stray body bytes before this answer
        assert sock.answer()[::2] == (b"HTTP/1.1 200 OK", b"next")


def test_an_answer_without_a_length_is_chunked(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post("/stream", b""))
        _, headers, body = sock.answer()
        assert (headers[b"transfer-encoding"], body) == (b"chunked", b"one,two")
        sock.sendall(post("/echo", b"after"))
        assert sock.answer()[::2] == (b"HTTP/1.1 200 OK", b"after")


def test_an_app_exception_is_a_500_and_logged(served: Served,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "uvicorn.error"), served.connect() as sock:
        sock.sendall(post("/fail", b""))
        status, _, body = sock.answer()
        assert (status, body) == (b"HTTP/1.1 500 Internal Server Error",
                                  b"Internal Server Error")
        assert sock.closed()
    assert "Exception in ASGI application" in caplog.text


def test_a_client_gone_mid_body_gives_the_app_http_disconnect(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"POST /listen HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n"
                     b"only ten..")
    heard = served.app.heard.get(timeout=10)
    assert heard[0] == {"type": "http.request", "body": b"only ten..", "more_body": True}
    assert heard[-1] == {"type": "http.disconnect"}


def test_a_large_body_pauses_reading_until_the_app_reads(served: Served) -> None:
    body = b"x" * (1 << 20)
    with served.connect() as sock:
        sender = threading.Thread(target=sock.sendall, args=(post("/gate", body),))
        sender.start()
        assert served.app.entered.wait(10)
        deadline = time.monotonic() + 10
        protocol: Any = next(iter(served.server.server_state.connections))
        while not getattr(protocol, "flow", protocol).read_paused:  # uvicorn's: in .flow
            assert time.monotonic() < deadline, "reading never paused"
            time.sleep(0.01)
        served.app.gate.set()
        sender.join(10)
        assert sock.answer()[2] == body


def test_graceful_shutdown_waits_for_the_request_in_flight(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post("/gate", b"late"))
        assert served.app.entered.wait(10)
        served.server.should_exit = True
        deadline = time.monotonic() + 10
        while _accepts(served.port):  # shutdown has begun once the listener is closed
            assert time.monotonic() < deadline, "the server did not start shutting down"
            time.sleep(0.01)
        assert served.thread.is_alive()
        served.app.gate.set()
        _, headers, body = sock.answer()
        assert (body, headers[b"connection"]) == (b"late", b"close")
        assert sock.closed()
    served.thread.join(10)
    assert not served.thread.is_alive()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post("/echo", b"once"))
        assert sock.answer()[2] == b"once"
        assert sock.closed()  # timeout_keep_alive=1; the socket's own timeout is 10 s


@pytest.fixture
def connector_served() -> Iterator[Served]:
    serving = Served(App(), HttpProtocol)
    try:
        yield serving
    finally:
        serving.stop()


@pytest.mark.parametrize("head", [
    pytest.param([b"x-big: " + b"a" * (MAX_HEAD_BYTES + 1)], id="one-big-field"),
    pytest.param([b"x-%d: v" % n for n in range(MAX_HEAD_FIELDS + 1)], id="too-many-fields"),
    pytest.param([b"x-part-%d: " % n + b"b" * 4000 for n in range(9)], id="fields-adding-up"),
])
def test_a_head_beyond_the_limits_is_a_431_and_closes(connector_served: Served,
                                                      head: list[bytes]) -> None:
    # uvicorn's httptools protocol sets no limit (it took a 2 MB header): the connector's only.
    with connector_served.connect() as sock:
        sock.sendall(post("/echo", b"hi", *head))
        status, headers, body = sock.answer()
        assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
        assert body == b"Request header fields too large."
        assert headers[b"connection"] == b"close"
        assert sock.closed()
    assert connector_served.app.scopes == []


def test_a_head_within_the_limits_is_served_and_the_count_starts_again(
        connector_served: Served) -> None:
    near = [b"x-%d: " % n + b"c" * 3000 for n in range(9)]  # ~27 KiB, under the limit
    with connector_served.connect() as sock:
        for n in range(3):  # on one connection: each request's head is counted afresh
            sock.sendall(post("/echo", b"n%d" % n, *near))
            status, _, body = sock.answer()
            assert (status, body) == (b"HTTP/1.1 200 OK", b"n%d" % n)
        long_url = b"/echo?" + b"q" * (MAX_HEAD_BYTES + 1)
        sock.sendall(b"GET %b HTTP/1.1\r\nhost: t\r\n\r\n" % long_url)
        status, _, _ = sock.answer()
        assert status == b"HTTP/1.1 431 Request Header Fields Too Large"


def test_a_head_past_the_limit_over_several_packets_is_a_431(connector_served: Served) -> None:
    # Each write is under the limit: the head's size is only known over several packets.
    part = b"x-part: " + b"d" * 8000 + b"\r\n"
    with connector_served.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\n")
        try:
            for _ in range(5):
                sock.sendall(part)
            sock.sendall(b"content-length: 0\r\n\r\n")
        except OSError:  # closed already after the packet that passed the limit
            pass
        status, _, body = sock.answer()
        assert (status, body) == (b"HTTP/1.1 431 Request Header Fields Too Large",
                                  b"Request header fields too large.")
        assert sock.closed()
    assert connector_served.app.scopes == []


def test_a_head_over_several_packets_within_the_limits_is_served(
        connector_served: Served) -> None:
    with connector_served.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\n")
        sock.sendall(b"x-part: " + b"e" * 8000 + b"\r\n")
        sock.sendall(b"content-length: 2\r\n\r\nok")
        assert sock.answer()[::2] == (b"HTTP/1.1 200 OK", b"ok")
