"""Outbound URLs at the send: refused with the field named, or retryable when DNS fails."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from connector.app import create_app
from connector.netcheck import AddressGuard
from connector.services import Services
from connector.settings import Settings
from tests.openapi_check import assert_conforms
from tests.test_netcheck import FakeDns

BASE = "http://127.0.0.1:8123"
HEADERS = {"Content-Type": "application/json", "Chan-Account-Sid": "AC" + "0" * 32,
           "Chan-Auth-Token": "token"}

# (resolver, allow private networks) -> a client of the app, started in process
Client = Callable[[FakeDns, bool], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


def body(callback_url: str) -> bytes:
    return json.dumps({"sender": "MyBrand", "recipient": "00447911123456", "message": "Hi",
                       "request_id": "req-1", "custom_data": "cd",
                       "callback_url": callback_url}).encode()


@pytest.fixture
def app_with(tmp_path: Path) -> Client:
    @contextlib.asynccontextmanager
    async def started(dns: FakeDns, allow_private: bool) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings.from_env({
            "CONNECTOR_DATA_DIR": str(tmp_path), "CONNECTOR_DISPATCHER": "false",
            "CONNECTOR_ALLOW_PRIVATE_NETWORKS": str(allow_private).lower(),
            "CONNECTOR_VENDOR_HOSTS": "127.0.0.1"})
        services = Services.build(settings)
        services.guard = AddressGuard(allow_private=allow_private, allow_http=False, resolve=dns)
        app = create_app(settings, services)
        async with (app.router.lifespan_context(app),
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                      base_url=BASE) as client):
            yield client

    return started


async def post(client: httpx.AsyncClient, headers: dict[str, str], raw: bytes
               ) -> httpx.Response:
    answer = await client.post("/sms/send", headers=headers, content=raw)
    assert_conforms("POST", f"{BASE}/sms/send", headers, raw, answer.status_code,
                    dict(answer.headers), answer.content)
    return answer


async def test_a_resolver_failure_answers_a_retryable_503(app_with: Client) -> None:
    dns = FakeDns(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    async with app_with(dns, False) as client:
        answer = await post(client, HEADERS, body("https://hooks.example.com/r"))
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert (error["code"], error["retryable"]) == ("dns_unavailable", True)
    assert "callback_url" in error["message"]


@pytest.mark.parametrize(("headers", "callback_url", "field"), [
    pytest.param({}, "https://user:pw@hooks.example.com/r", "callback_url", id="userinfo"),
    pytest.param({}, "https://hooks.example.com/r\t", "callback_url", id="tab"),
    pytest.param({"Chan-Base-Url": "http://u:p@127.0.0.1:9"}, "https://hooks.example.com/r",
                 "Chan-Base-Url", id="base-url-userinfo"),
])
async def test_urls_that_cannot_be_requested_answer_400_naming_the_field(
        app_with: Client, headers: dict[str, str], callback_url: str, field: str) -> None:
    async with app_with(FakeDns(["127.0.0.1"]), True) as client:
        answer = await post(client, {**HEADERS, **headers}, body(callback_url))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "url_refused" and error["message"].startswith(field + " ")
