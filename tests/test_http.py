"""Transport failures are classified once: never sent (retry) versus maybe sent (ambiguous)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.pretty import pretty_repr

from connector import http
from connector.errors import AmbiguousOutcome, VendorRejected, VendorUnavailable
from connector.http import HttpClient
from tests.tcp import Handler, TcpServer


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    await http.start()
    yield http
    await http.close()


async def serve(handler: Handler) -> tuple[TcpServer, str]:
    server = await TcpServer(handler).start()
    return server, f"http://127.0.0.1:{server.port}/x"


def request(url: str) -> http.Request:
    return http.Request("POST", url, {"a": "b"}, b"To=%2B447911123456")


async def test_refused_connection_was_never_sent(client: HttpClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(VendorUnavailable) as caught:
        await client.send(request(f"http://127.0.0.1:{port}/x"), 2.0, what="vendor")
    assert caught.value.retryable


async def test_silence_after_sending_is_ambiguous(client: HttpClient) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        await reader.read()  # say nothing until the client gives up and hangs up
        writer.close()
        await writer.wait_closed()

    server, url = await serve(silent)
    async with server:
        with pytest.raises(AmbiguousOutcome):
            await client.send(request(url), 0.3, what="vendor")


async def test_reset_after_sending_is_ambiguous(client: HttpClient) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.transport.abort()
        await asyncio.sleep(0)

    server, url = await serve(hang_up)
    async with server:
        with pytest.raises(AmbiguousOutcome):
            await client.send(request(url), 2.0, what="vendor")


async def test_answer_arrives_whole_with_case_insensitive_headers(client: HttpClient) -> None:
    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                     b"Retry-After: 3\r\nContent-Length: 11\r\n\r\n{\"sid\":\"S\"}")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server, url = await serve(ok)
    async with server:
        answer = await client.send(request(url), 2.0, what="vendor")
    assert answer.status_code == 201
    assert json.loads(answer.content) == {"sid": "S"}
    assert answer.headers["retry-after"] == answer.headers["Retry-After"] == "3"
    assert answer.request is not None and answer.request.url == url


async def test_a_url_the_transport_refuses_is_a_permanent_error_and_nothing_is_sent(
        client: HttpClient) -> None:
    accepted: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server, url = await serve(count)
    port = url.split(":")[2].split("/")[0]
    async with server:  # credentials in the URL beside an Authorization header: ValueError
        with pytest.raises(VendorRejected) as caught:
            await client.send(http.request("POST", f"http://u:p@127.0.0.1:{port}/x",
                                           {"Authorization": "jwt"}, json_bytes=b"[]"), 2.0,
                              what="report")
    assert (caught.value.code, caught.value.retryable) == ("invalid_url", False)
    assert accepted == []


async def test_a_url_that_does_not_parse_is_a_permanent_error(client: HttpClient) -> None:
    with pytest.raises(VendorRejected) as caught:
        await client.send(http.request("POST", "http://[::1/x", {}, json_bytes=b"[]"), 2.0,
                          what="report")
    assert (caught.value.code, caught.value.retryable) == ("invalid_url", False)


# -- building requests ------------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8"))  # any character UTF-8 can carry


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_TEXT, _TEXT)))
def test_form_encoding_is_urlencodes_bytes(fields: list[tuple[str, str]]) -> None:
    assert http.form_encode(fields) == urlencode(fields).encode()
    assert http.form_encode(dict(fields)) == urlencode(dict(fields)).encode()


def test_form_encoding_covers_every_byte_as_urlencode_does() -> None:
    every = "".join(map(chr, range(256))) + " \u00e9\u20ac\U0001f600+&=%"
    assert http.form_encode({every: every}) == urlencode({every: every}).encode()


def test_form_encoding_refuses_what_utf8_cannot_carry_as_urlencode_does() -> None:
    with pytest.raises(UnicodeEncodeError):
        urlencode({"Body": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        http.form_encode({"Body": "\ud800"})


def test_a_built_request_has_lower_case_names_its_body_and_its_length() -> None:
    built = http.request("POST", "https://api.example/m", {"Authorization": "Basic x"},
                         form={"To": "+1 2"})
    assert built.headers == {"authorization": "Basic x", "content-type": http.FORM,
                             "content-length": "9"}
    assert built.content == b"To=%2B1+2"
    answer = http.Response(200, {}, b"", built)
    for shown in (repr(built), pretty_repr(built), repr(answer), pretty_repr(answer)):
        assert "Basic x" not in shown  # headers carry credentials: never shown


@pytest.mark.parametrize(("url", "built"), [
    ("https://api.example/b", "https://api.example/b?ref=a+b%2Fc&n=1"),
    ("https://api.example/b?x=1", "https://api.example/b?x=1&ref=a+b%2Fc&n=1"),
])
def test_params_join_the_query_string(url: str, built: str) -> None:
    request = http.request("GET", url, {}, params={"ref": "a b/c", "n": "1"})
    assert (request.url, request.content, request.headers) == (built, b"", {})
