"""Outbound URL checks: allow-lists and private-address refusal."""

from __future__ import annotations

import pytest

from connector.netcheck import AddressGuard, UrlRefused, host_allowed


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
