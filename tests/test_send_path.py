"""POST /sms/send in process: the answers the platform gets, and the work each send does once.

The app runs with its real store and services; only the vendor's HTTP client is a stand-in
(it answers like Twilio), so every layer between the ASGI call and the vendor is the real one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from starlette.responses import Response

from connector.api.send import Answer
from connector.app import Front, create_app
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


@dataclass
class Running:
    client: httpx.AsyncClient  # through Front, as uvicorn calls it
    app: Front
    services: Services
    vendor: FakeTwilio


Started = Callable[..., contextlib.AbstractAsyncContextManager[Running]]


@pytest.fixture
def started(tmp_path: Path) -> Started:
    @contextlib.asynccontextmanager
    async def start(**env: str) -> AsyncIterator[Running]:
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
            yield Running(client, app, services, vendor)

    return start


async def test_a_send_answers_200_once_and_replays_its_answer(started: Started) -> None:
    async with started() as running:
        first = await running.client.post("/sms/send", headers=HEADERS, content=body())
        again = await running.client.post("/sms/send", headers=HEADERS, content=body())
    assert first.status_code == again.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.headers["content-length"] == str(len(first.content))
    assert first.json()["status"] == "accepted"
    assert again.content == first.content
    assert len(running.vendor.requests) == 1


async def test_the_tenant_is_named_once_per_send(started: Started,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim's key and the suppression list and rate bucket use one keyed hash."""
    async with started(CONNECTOR_SUPPRESS_OPT_OUTS="true") as running:
        named: list[Tenant] = []
        real = running.services.sender.tenants.of

        def of(vendor_name: str, settings: Mapping[str, str]) -> Tenant:
            named.append(real(vendor_name, settings))
            return named[-1]

        monkeypatch.setattr(running.services.sender.tenants, "of", of)
        answer = await running.client.post("/sms/send", headers=HEADERS, content=body())
    assert answer.status_code == 200
    assert len(named) == 1
    assert len(running.vendor.requests) == 1


Asgi = Callable[[dict[str, Any], Callable[[], Any], Callable[[dict[str, Any]], Any]], Any]


async def call(asgi: Asgi, headers: Mapping[str, str], chunks: list[bytes],
               disconnect: bool = False) -> tuple[int, dict[bytes, bytes], bytes]:
    """POST /sms/send straight into an ASGI callable, the body in the chunks given."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/sms/send", "raw_path": b"/sms/send",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8123),
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                         for k, v in headers.items()]}
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)]
    if disconnect:
        messages = [*messages[:1], {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    return (start["status"], dict(start["headers"]),
            b"".join(part.get("body", b"") for part in bodies))


async def test_a_body_in_chunks_is_read_whole(started: Started) -> None:
    async with started() as running:
        raw = body()
        status, headers, answer = await call(running.app, HEADERS, [raw[:7], b"", raw[7:50],
                                                              raw[50:]])
    assert status == 200
    assert json.loads(answer)["status"] == "accepted"
    assert headers[b"content-length"] == str(len(answer)).encode()
    assert headers[b"content-type"] == b"application/json"
    assert b"To=%2B447900000123" in running.vendor.requests[0].content


@pytest.mark.parametrize("declared", [True, False])
async def test_a_body_over_the_limit_is_a_413_and_sends_nothing(started: Started,
                                                                declared: bool) -> None:
    raw = body(custom_data="x" * 3000)
    headers = {**HEADERS, "Content-Length": str(len(raw))} if declared else HEADERS
    async with started(CONNECTOR_MAX_BODY_BYTES="2048") as running:
        status, _headers, answer = await call(running.app, headers, [raw[:1000], raw[1000:]])
    assert status == 413
    assert json.loads(answer)["error"]["code"] == "payload_too_large"
    assert running.vendor.requests == []


@pytest.mark.parametrize(("headers", "raw"), [
    pytest.param(HEADERS, b"{not json", id="malformed-json"),
    pytest.param(HEADERS, body(recipient="0044123"), id="bad-recipient"),
    pytest.param(HEADERS, body(recipient="00441234567"), id="invalid-recipient"),
    pytest.param({"Content-Type": "application/json", "Chan-Account-Sid": SID}, body(),
                 id="missing-setting"),
    pytest.param({**HEADERS, "Chan-Vendor": "nobody"}, body(), id="unknown-vendor"),
    pytest.param({**HEADERS, "Chan-Vendor": "nobody"}, b"[]", id="body-before-headers"),
])
async def test_refusals_are_the_apps_own(started: Started, headers: dict[str, str],
                                         raw: bytes) -> None:
    """Front's raw /sms/send answers a refusal byte for byte as the Starlette route does."""
    async with started() as running:
        direct = await call(running.app, headers, [raw])
        routed = await call(running.app.app, headers, [raw])
    assert direct == routed
    assert 400 <= direct[0] < 500
    assert running.vendor.requests == []


async def test_a_vendor_429_answers_with_retry_after(started: Started) -> None:
    async with started() as running:
        running.vendor.answer = httpx.Response(429, json={"code": 20429, "message": "Too many"},
                                       headers={"Retry-After": "3"})
        answer = await running.client.post("/sms/send", headers=HEADERS, content=body())
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "3"
    assert answer.json()["error"]["retryable"] is True


async def test_an_unexpected_error_is_a_logged_500(started: Started,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async with started() as running:
        def broken(*_: object) -> str:
            raise RuntimeError("bug")

        monkeypatch.setattr(running.services.rules, "check", broken)
        answer = await running.client.post("/sms/send", headers=HEADERS, content=body())
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"
    assert running.vendor.requests == []


async def test_a_client_gone_mid_body_sends_nothing(started: Started) -> None:
    async with started() as running:
        raw = body()
        status, _headers, _answer = await call(running.app, HEADERS, [raw[:10], raw[10:]],
                                               disconnect=True)
    assert status == 500  # as Starlette's Request.stream() left it: nobody reads it
    assert running.vendor.requests == []


@pytest.mark.parametrize(("answer", "expected"), [
    pytest.param(Answer(204, b"", {}), [(b"content-type", b"application/json")], id="204"),
    pytest.param(Answer(200, b"<Response/>", {"Content-Type": "text/xml"}),
                 [(b"content-type", b"text/xml"), (b"content-length", b"11")], id="own-type"),
    pytest.param(Answer(429, b"{}", {"Retry-After": "2"}),
                 [(b"retry-after", b"2"), (b"content-length", b"2"),
                  (b"content-type", b"application/json")], id="json-with-header"),
    # The status callback's answers: a bare Response(status_code=...) names no type.
    pytest.param(Answer(204, b"", {}, None), [], id="204-untyped"),
    pytest.param(Answer(404, b"", {}, None), [(b"content-length", b"0")], id="404-untyped"),
])
async def test_a_raw_endpoint_answers_as_a_response_would(started: Started, answer: Answer,
                                                           expected: list[Any]) -> None:
    """Front writes a raw endpoint's answer with the headers Starlette's Response gives it."""
    async def endpoint(_scope: Any, _receive: Any, _services: Any) -> Answer:
        return answer

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with started() as running:
        status = await running.app._answer_raw(endpoint, {}, send, send)
        response = Response(answer.body, status_code=answer.status, headers=answer.headers,
                            media_type=answer.media_type)
    assert status == answer.status
    assert sent[0]["headers"] == expected
    assert sorted(sent[0]["headers"]) == sorted(response.raw_headers)
    assert sent[1]["body"] == answer.body


async def test_a_second_request_in_one_context_does_not_inherit_the_firsts_log_context(
        started: Started) -> None:
    # httpx's ASGI transport runs the app in this task: one context serves both requests.
    async with started() as running:
        sent = await running.client.post("/sms/send", headers=HEADERS, content=body())
        assert sent.status_code == 200
        bound = structlog.contextvars.get_contextvars()
        assert bound.get("message_id") == sent.json()["message_id"]  # what the send bound
        broken = await running.client.post("/sms/send", headers=HEADERS, content=b"{")
        assert broken.status_code == 400
        left = structlog.contextvars.get_contextvars()
    assert "message_id" not in left and "vendor" not in left and "request_id" not in left
    assert left.get("error") is not None  # the refusal's own context is there
