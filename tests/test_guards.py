"""At the ASGI level: what a refused request costs. The platform key and a callback's token
and Basic auth are checked before the body is read; JSON nested too deeply is a 400."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from starlette.requests import Request
from starlette.responses import Response

from connector.app import Front, create_app
from connector.services import Services
from connector.settings import Settings
from tests.fakes.server import ServerThread

PLATFORM_KEY = "platform-key-" + "k" * 32
ADMIN = "operator-key-123"
BIG = b"MessageStatus=delivered&Pad=" + b"x" * 256 * 1024


class Exchange:
    """One request played against the app; `reads` counts how often it asked for the body."""

    def __init__(self, status: int, body: bytes, reads: int) -> None:
        self.status, self.body, self.reads = status, body, reads

    @property
    def code(self) -> Any:
        return msgspec.json.decode(self.body)["error"]["code"]


async def play(app: Front, method: str, path: str, body: bytes = b"", query: str = "",
               headers: dict[str, str] | None = None) -> Exchange:
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "root_path": "", "headers": raw,
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    return Exchange(sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), reads)


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings.from_env({
        "CONNECTOR_DATA_DIR": str(tmp_path), "CONNECTOR_PLATFORM_KEY": PLATFORM_KEY,
        "CONNECTOR_ADMIN_KEY": ADMIN, "CONNECTOR_CALLBACK_BASIC_AUTH": "vendor:pass-word",
        "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "true", "CONNECTOR_ALLOW_HTTP": "true",
        "CONNECTOR_VENDOR_HOSTS": "127.0.0.1"})
    built = Services.build(settings)
    await built.start()
    yield built
    await built.close()


@pytest.fixture
def app(services: Services) -> Front:
    return create_app(services.settings, services)


BASIC = "Basic " + base64.b64encode(b"vendor:pass-word").decode()
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("path", ["/sms/send", "/sms/verify", "/mms/send", "/sms"])
@pytest.mark.parametrize("key", [None, "", "wrong", PLATFORM_KEY.upper()])
async def test_platform_key_is_checked_before_the_body_is_read(
        app: Front, path: str, key: str | None) -> None:
    given = {} if key is None else {"chan-connector-key": key}
    answer = await play(app, "POST", path, b'{"sender":', headers=given)
    assert (answer.status, answer.code, answer.reads) == (401, "platform_key", 0)
    assert PLATFORM_KEY.encode() not in answer.body


async def test_other_routes_do_not_ask_for_the_platform_key(app: Front) -> None:
    assert (await play(app, "GET", "/healthz")).status == 200


async def test_forged_callback_is_refused_before_its_body_is_read(
        app: Front, services: Services) -> None:
    token = services.tokens.sign("0" * 32)
    forged = await play(app, "POST", "/callbacks/twilio/status", BIG, "m=forged",
                        {**FORM, "authorization": BASIC})
    assert (forged.status, forged.code, forged.reads) == (403, "invalid_signature", 0)
    no_basic = await play(app, "POST", "/callbacks/twilio/status", BIG, f"m={token}", FORM)
    assert (no_basic.status, no_basic.reads) == (403, 0)
    too_big = await play(app, "POST", "/callbacks/twilio/status", BIG, f"m={token}",
                         {**FORM, "authorization": BASIC})
    assert too_big.status == 413


@pytest.mark.parametrize(("path", "query", "headers"), [
    ("/callbacks/nope/status", "", {}),  # unknown vendor: a bare 404
    ("/callbacks/twilio/status", "m=forged", {**FORM, "authorization": BASIC}),  # 403
    ("/callbacks/twilio/status", "", FORM),  # no Basic credentials: 403
    ("/callbacks/twilio/status", "m=x", {**FORM, "authorization": BASIC,
                                          "content-length": str(10**6)}),  # 413 unread
])
async def test_a_hot_callback_answers_byte_for_byte_as_the_app_route(
        app: Front, path: str, query: str, headers: dict[str, str]) -> None:
    """Front serves the status callback itself; the app's route (HEAD reaches it) is the
    reference its answers keep to: status, headers and body."""
    async def answers(target: Any) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        await target({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                      "method": "POST", "scheme": "http", "path": path,
                      "raw_path": path.encode(), "query_string": query.encode(),
                      "root_path": "", "headers": raw, "client": ("127.0.0.1", 5000),
                      "server": ("127.0.0.1", 8000)}, receive, send)
        return sent

    hot, routed = await answers(app), await answers(app.app)
    assert hot == routed
    status = hot[0]["status"]
    if status == 404:  # what the endpoint's Response(status_code=404) wrote
        expected = Response(status_code=404)
    else:
        assert status in (403, 413)
        expected = Response(hot[1]["body"], status_code=status, media_type="application/json")
    assert hot[0]["headers"] == expected.raw_headers


async def test_callback_fields_are_capped(app: Front, services: Services) -> None:
    token = services.tokens.sign("0" * 32)
    many = "&".join(f"f{i}=v" for i in range(101)).encode()
    auth = {**FORM, "authorization": BASIC}
    answer = await play(app, "POST", "/callbacks/twilio/status", many, f"m={token}", auth)
    assert answer.status == 400
    query = await play(app, "GET", "/callbacks/twilio/status",
                       query=f"m={token}&" + many.decode(), headers=auth)
    assert query.status == 400


async def test_deeply_nested_json_callback_is_400(app: Front, services: Services) -> None:
    token = services.tokens.sign("0" * 32)
    deep = b'{"status":' + b"[" * 2000 + b"]" * 2000 + b"}"
    answer = await play(app, "POST", "/callbacks/vonage/status", deep, f"m={token}",
                        {"content-type": "application/json", "authorization": BASIC})
    assert (answer.status, answer.code) == (400, "invalid_request")


async def test_deeply_nested_json_send_and_test_send_are_400(
        app: Front, services: Services) -> None:
    deep = b'{"metadata":' + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"}"
    send = await play(app, "POST", "/sms/send", deep, headers={
        "chan-connector-key": PLATFORM_KEY, "content-type": "application/json"})
    assert (send.status, send.code) == (400, "malformed_json")
    operator = await play(app, "POST", "/api/v1/app-integrations/twilio/sms/test", deep,
                          headers={"auth-key": ADMIN, "brand-url": "https://brand.example"})
    assert operator.status == 400
    assert await services.store.find("req-1") is None


async def nested_vendor(scope: Any, receive: Any, send: Any) -> None:
    """A vendor whose every answer is JSON nested 2,000 levels deep."""
    await Request(scope, receive).body()
    deep = b'{"sid":"SM1","extra":' + b"[" * 2000 + b"]" * 2000 + b"}"
    await Response(deep, status_code=201, media_type="application/json")(scope, receive, send)


async def test_vendor_answer_nested_too_deeply_is_ambiguous_not_a_500(
        app: Front, services: Services) -> None:
    with ServerThread(nested_vendor) as vendor:
        settings = {"chan-connector-key": PLATFORM_KEY, "chan-account-sid": "AC" + "0" * 32,
                    "chan-auth-token": "t" * 32, "chan-base-url": vendor.url}
        verify = await play(app, "GET", "/sms/verify", headers=settings)
        body = (b'{"sender":"MyBrand","recipient":"00447911123456","message":"Hi",'
                b'"request_id":"req-1","custom_data":"cd","callback_url":"http://127.0.0.1:9/r"}')
        send = await play(app, "POST", "/sms/send", body, headers=settings)
    assert verify.status == 502
    # The vendor may have taken it: at_most_once keeps the claim and answers ambiguous.
    assert (send.status, send.code) == (502, "ambiguous_outcome")
    row = await services.store.find("req-1")
    assert row is not None and row.ambiguous
