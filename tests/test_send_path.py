"""POST /sms/send in process: the answers the platform gets, and the work each send does once.

The app runs with its real store and services; only the vendor's HTTP client is a stand-in
(it answers like Twilio), so every layer between the ASGI call and the vendor is the real one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.app import create_app
from connector.services import Services
from connector.settings import Settings
from connector.tenants import Tenant

BASE = "http://127.0.0.1:8123"
SID = "AC" + "0" * 32
HEADERS = {"Content-Type": "application/json", "Chan-Account-Sid": SID,
           "Chan-Auth-Token": "token-" + "t" * 20}


class FakeTwilio:
    """Stands in for the HttpClient: answers every send as Twilio does, or as told."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = httpx.Response(201, json={"sid": "SM" + "1" * 32, "status": "queued",
                                                "num_segments": "1"})

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, request: httpx.Request, timeout: float,  # noqa: ASYNC109
                   *, what: str) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.answer.status_code, headers=self.answer.headers,
                              content=self.answer.content, request=request)


def body(request_id: str = "req-1", **fields: Any) -> bytes:
    return json.dumps({"sender": "MyBrand", "recipient": "00447900000123", "message": "Hi",
                       "request_id": request_id, "custom_data": "cd",
                       "callback_url": "https://hooks.example.com/r", **fields}).encode()


Started = Callable[..., contextlib.AbstractAsyncContextManager[tuple[httpx.AsyncClient,
                                                                     Services, FakeTwilio]]]


@pytest.fixture
def started(tmp_path: Path) -> Started:
    @contextlib.asynccontextmanager
    async def start(**env: str) -> AsyncIterator[tuple[httpx.AsyncClient, Services,
                                                       FakeTwilio]]:
        settings = Settings.from_env({
            "CONNECTOR_DATA_DIR": str(tmp_path), "CONNECTOR_DISPATCHER": "false",
            "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "true", **env})
        services = Services.build(settings)
        vendor = FakeTwilio()
        services.http = services.sender.http = vendor  # type: ignore[assignment]
        app = create_app(settings, services)
        async with (app.router.lifespan_context(app),  # type: ignore[arg-type]
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                      base_url=BASE) as client):
            yield client, services, vendor

    return start


async def test_a_send_answers_200_once_and_replays_its_answer(started: Started) -> None:
    async with started() as (client, _services, vendor):
        first = await client.post("/sms/send", headers=HEADERS, content=body())
        again = await client.post("/sms/send", headers=HEADERS, content=body())
    assert first.status_code == again.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.headers["content-length"] == str(len(first.content))
    assert first.json()["status"] == "accepted"
    assert again.content == first.content
    assert len(vendor.requests) == 1


async def test_the_tenant_is_named_once_per_send(started: Started,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim's key and the suppression list and rate bucket use one keyed hash."""
    async with started(CONNECTOR_SUPPRESS_OPT_OUTS="true") as (client, services, vendor):
        named: list[Tenant] = []
        real = services.sender.tenants.of

        def of(vendor_name: str, settings: Mapping[str, str]) -> Tenant:
            named.append(real(vendor_name, settings))
            return named[-1]

        monkeypatch.setattr(services.sender.tenants, "of", of)
        answer = await client.post("/sms/send", headers=HEADERS, content=body())
    assert answer.status_code == 200
    assert len(named) == 1
    assert len(vendor.requests) == 1
