"""`connector serve`'s own HTTP/1.1 protocol (connector/server.py) in front of the real app:
the app's refusals reach the client, and the connection outlives them."""

from __future__ import annotations

import pytest

from connector.server import MAX_HEAD_FIELDS
from tests.e2e.conftest import Connector
from tests.openapi_check import assert_conforms
from tests.raw_http import Client

pytestmark = pytest.mark.e2e


def test_a_body_over_the_limit_is_refused_by_the_app_and_the_connection_kept(
        connector: Connector) -> None:
    """The app's 413 goes out before the body has all arrived; the rest of the body is read
    and dropped, and the same connection then serves the next request."""
    body = b"{" + b" " * 200_000 + b"}"
    with Client(connector.port) as sock:
        sock.sendall(b"POST /sms/send HTTP/1.1\r\nhost: c\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%b" % (len(body), body))
        status, _, refused = sock.answer()
        assert status == b"HTTP/1.1 413 Request Entity Too Large"
        assert b"payload_too_large" in refused
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: c\r\n\r\n")
        assert sock.answer()[::2] == (b"HTTP/1.1 200 OK", b'{"status":"ok"}')


def test_requests_on_one_connection_are_all_answered(connector: Connector) -> None:
    with Client(connector.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: c\r\n\r\n" * 3)  # pipelined
        for _ in range(3):
            status, headers, body = sock.answer()
            assert (status, body) == (b"HTTP/1.1 200 OK", b'{"status":"ok"}')
            assert headers[b"date"].endswith(b" GMT")


@pytest.mark.parametrize("path", ["/sms/send", "/callbacks/twilio/status", "/healthz"])
def test_a_head_over_the_limit_is_the_documented_431_on_any_route(
        connector: Connector, path: str) -> None:
    method = "GET" if path == "/healthz" else "POST"
    fields = b"".join(b"x-%d: v\r\n" % n for n in range(MAX_HEAD_FIELDS + 1))
    with Client(connector.port) as sock:
        sock.sendall(b"%b %b HTTP/1.1\r\nhost: c\r\n%bcontent-length: 0\r\n\r\n"
                     % (method.encode(), path.encode(), fields))
        status, headers, body = sock.answer()
        assert sock.closed()
    code = int(status.split()[1])
    assert code == 431
    assert_conforms(method, connector.url + path, {}, b"", code,
                    {k.decode(): v.decode() for k, v in headers.items()}, body)
