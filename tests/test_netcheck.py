"""Outbound URL checks: allow-lists and private-address refusal."""

from __future__ import annotations

import asyncio
import socket

import pytest

from connector.errors import VendorUnavailable
from connector.http import HttpClient, Request
from connector.netcheck import (
    AddressGuard,
    DnsUnavailable,
    UrlRefused,
    host_allowed,
    is_public,
)
from tests.tcp import TcpServer


@pytest.mark.parametrize(("host", "patterns", "allowed"), [
    pytest.param("hooks.example.com", ["hooks.example.com"], True, id="exact"),
    pytest.param("a.example.com", ["*.example.com"], True, id="wildcard"),
    pytest.param("example.com", ["*.example.com"], False, id="wildcard-not-apex"),
    pytest.param("evil-example.com", ["*.example.com"], False, id="suffix-trick"),
    pytest.param("HOOKS.example.com.", ["hooks.example.com"], True, id="case-and-dot"),
])
def test_host_allowed(host: str, patterns: list[str], allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


@pytest.mark.parametrize("url", [
    pytest.param("https://127.0.0.1/r", id="loopback"),
    pytest.param("https://10.1.2.3/r", id="private-10"),
    pytest.param("https://192.168.1.1/r", id="private-192"),
    pytest.param("https://169.254.169.254/latest", id="link-local-metadata"),
    pytest.param("https://[::1]/r", id="ipv6-loopback"),
    pytest.param("https://[::ffff:127.0.0.1]/r", id="ipv4-mapped"),
    pytest.param("https://localhost/r", id="localhost-name"),
    pytest.param("https://0.0.0.0/r", id="unspecified"),
])
async def test_private_targets_refused(url: str) -> None:
    guard = AddressGuard(allow_private=False, allow_http=False)
    with pytest.raises(UrlRefused):
        await guard.check(url, "callback_url", None)


async def test_public_ip_allowed_and_private_allowed_when_configured() -> None:
    assert await AddressGuard(allow_private=False, allow_http=False).check(
        "https://8.8.8.8/r", "callback_url", None) == "8.8.8.8"
    assert await AddressGuard(allow_private=True, allow_http=True).check(
        "http://127.0.0.1:9/r", "callback_url", None) == "127.0.0.1"


@pytest.mark.parametrize(("url", "hosts"), [
    pytest.param("http://8.8.8.8/r", None, id="http-not-allowed"),
    pytest.param("https://8.8.8.8/r", ["hooks.example.com"], id="not-on-allow-list"),
    pytest.param("not a url", None, id="garbage"),
    pytest.param("https://8.8.8.8:99999/r", None, id="bad-port"),
])
async def test_refused_urls(url: str, hosts: list[str] | None) -> None:
    with pytest.raises(UrlRefused):
        await AddressGuard(allow_private=False, allow_http=False).check(url, "x", hosts)


@pytest.mark.parametrize(("address", "public"), [
    pytest.param("64:ff9b::7f00:1", False, id="nat64-loopback"),
    pytest.param("64:ff9b::a01:203", False, id="nat64-private"),
    pytest.param("64:ff9b::808:808", True, id="nat64-public"),
    pytest.param("64:ff9b:1::808:808", False, id="nat64-local-use"),
    pytest.param("2002:7f00:1::1", False, id="6to4-loopback"),
    pytest.param("2002:a9fe:a9fe::1", False, id="6to4-link-local"),
    pytest.param("2002:808:808::1", True, id="6to4-public"),
    pytest.param("::127.0.0.1", False, id="ipv4-compatible-loopback"),
    pytest.param("::10.0.0.1", False, id="ipv4-compatible-private"),
    pytest.param("::ffff:10.0.0.1", False, id="ipv4-mapped-private"),
    pytest.param("2606:4700::1111", True, id="plain-public-v6"),
])
def test_ipv6_forms_are_judged_by_the_ipv4_they_carry(address: str, public: bool) -> None:
    assert is_public(address) is public


@pytest.mark.parametrize(("url", "words"), [
    pytest.param("https://u:p@hooks.example.com/r", "credentials", id="userinfo"),
    pytest.param("https://u@hooks.example.com/r", "credentials", id="user-only"),
    pytest.param("https://hooks.exa\tmple.com/r", "control", id="tab"),
    pytest.param("https://hooks.example.com/r\n", "control", id="newline"),
    pytest.param("https://hooks.example.com/a b", "spaces", id="space"),
    pytest.param("https://evil.example\\@hooks.example.com/", "control", id="backslash"),
])
async def test_urls_outbound_requests_cannot_carry_are_refused(url: str, words: str) -> None:
    guard = AddressGuard(allow_private=True, allow_http=True)
    with pytest.raises(UrlRefused) as refused:
        await guard.check(url, "callback_url", None)
    assert refused.value.message.startswith("callback_url ") and words in refused.value.message


class FakeDns:
    """A resolver the test controls: answers in turn, an OSError entry raises it."""

    def __init__(self, *answers: list[str] | OSError) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, OSError):
            raise answer
        return answer


async def test_a_resolver_failure_is_retryable_and_not_remembered() -> None:
    dns = FakeDns(socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), ["8.8.4.4"])
    guard = AddressGuard(allow_private=False, allow_http=False, resolve=dns)
    with pytest.raises(DnsUnavailable) as failed:
        await guard.check("https://hooks.example.com/r", "callback_url", None)
    assert (failed.value.status, failed.value.retryable) == (503, True)
    assert "callback_url" in failed.value.message
    assert await guard.check("https://hooks.example.com/r", "callback_url", None)
    assert await guard.check("https://hooks.example.com/r", "callback_url", None)
    assert dns.asked == ["hooks.example.com"] * 2  # the good answer is cached


async def test_the_connection_uses_the_checked_addresses_not_a_second_answer() -> None:
    dns = FakeDns(["8.8.4.4"], ["127.0.0.1"])  # public when checked, loopback afterwards
    guard = AddressGuard(allow_private=False, allow_http=False, resolve=dns)
    await guard.check("https://rebind.example/r", "callback_url", None)
    assert await guard.addresses("rebind.example") == ("8.8.4.4",)  # what HttpClient pins
    assert dns.asked == ["rebind.example"]


async def listener() -> tuple[TcpServer, list[int]]:
    accepted: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    return await TcpServer(answer).start(), accepted


async def test_a_rebinding_host_never_reaches_the_loopback_listener() -> None:
    server, accepted = await listener()
    port = server.port
    # ttl=0: the connection's own look-up comes after the check and answers loopback
    dns = FakeDns(["8.8.4.4"], ["127.0.0.1"])
    guard = AddressGuard(allow_private=False, allow_http=True, resolve=dns, ttl=0.0)
    http = HttpClient(pin=guard.addresses)
    url = f"http://rebind.example:{port}/r"
    async with server:
        try:
            await guard.check(url, "callback_url", None)
            with pytest.raises(VendorUnavailable):
                await http.send(Request("POST", url, {}, b"[]"), 2.0, what="report")
        finally:
            await http.close()
    assert dns.asked == ["rebind.example"] * 2
    assert accepted == []


async def test_private_networks_allowed_still_connect_by_name() -> None:
    server, accepted = await listener()
    port = server.port
    guard = AddressGuard(allow_private=True, allow_http=True, resolve=FakeDns(["127.0.0.1"]))
    http = HttpClient(pin=guard.addresses)
    url = f"http://receiver.test:{port}/r"
    async with server:
        try:
            await guard.check(url, "callback_url", None)
            answer = await http.send(Request("POST", url, {}, b"[]"), 2.0,
                                     what="report")
        finally:
            await http.close()
    assert answer.status_code == 204 and accepted == [1]


async def test_a_url_checked_before_still_has_its_host_resolved_and_judged() -> None:
    """The URL's form is remembered; whether its host may be reached is looked at each time
    (within the address cache's lifetime)."""
    dns = FakeDns(["8.8.4.4"], ["127.0.0.1"])
    guard = AddressGuard(allow_private=False, allow_http=False, resolve=dns, ttl=0.0)
    assert await guard.check("https://hooks.example.com/r", "callback_url", None) == \
        "hooks.example.com"
    with pytest.raises(UrlRefused) as refused:
        await guard.check("https://hooks.example.com/r", "callback_url", None)
    assert "private or loopback" in refused.value.message
    assert dns.asked == ["hooks.example.com"] * 2


async def test_a_remembered_url_is_judged_again_under_another_allow_list() -> None:
    guard = AddressGuard(allow_private=True, allow_http=False)
    url = "https://api.example.com/v1"
    assert await guard.check(url, "Chan-Base-Url", ("api.example.com",)) == "api.example.com"
    assert await guard.check(url, "Chan-Base-Url", ("api.example.com",)) == "api.example.com"
    with pytest.raises(UrlRefused, match="allow-list"):
        await guard.check(url, "Chan-Base-Url", ("other.example.com",))
    with pytest.raises(UrlRefused, match="allow-list"):
        await guard.check(url, "Chan-Base-Url", ["other.example.com"])  # not a tuple: no cache


async def test_a_refused_url_stays_refused() -> None:
    guard = AddressGuard(allow_private=True, allow_http=False)
    for _ in range(2):
        with pytest.raises(UrlRefused, match="https"):
            await guard.check("http://hooks.example.com/r", "callback_url", None)
