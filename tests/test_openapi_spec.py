"""openapi.yaml is a valid OpenAPI 3.1 document, names exactly the app's routes, documents every
error code the code can produce, and the conformance checker really checks (it can fail)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import yaml
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.routing import Route

from connector import errors
from connector.app import create_app
from connector.server import MAX_HEAD_BYTES, MAX_HEAD_FIELDS
from connector.settings import Settings
from connector.vendors import VENDORS
from connector.vendors.twilio import ERROR_CODES as TWILIO_ERROR_CODES
from tests.openapi_check import SPEC_PATH, assert_conforms, assert_report_conforms

BASE = "http://127.0.0.1:8123"
JSON = {"content-type": "application/json"}
SEND_HEADERS = {"Content-Type": "application/json", "Chan-Account-Sid": "AC" + "0" * 32,
                "Chan-Auth-Token": "token"}
SEND_BODY = json.dumps({
    "sender": "MyBrand", "recipient": "00447911123456", "message": "Your code is 1234",
    "request_id": "req-1", "custom_data": "opaque", "callback_url": "https://example.com/r",
    "metadata": {"campaign": "c1"}, "something_extra": True,
}).encode()
ACCEPTED: dict[str, Any] = {
    "message_id": "0123456789abcdef0123456789abcdef", "request_id": "req-1", "vendor": "twilio",
    "vendor_message_id": "SM" + "a" * 32, "status": "accepted", "segments": 1,
    "encoding": "gsm7",
}
CONNECTOR = Path(__file__).resolve().parents[1] / "connector"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return loaded


def _error(code: str, retryable: bool = False, vendor_code: str | None = None) -> bytes:
    return json.dumps({"error": {"code": code, "message": "m", "retryable": retryable,
                                 "vendor_code": vendor_code}}).encode()


def _all_subclasses(cls: type[errors.ConnectorError]) -> Iterator[type[errors.ConnectorError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


# An OpenAPI path item's keys that name operations (the others are parameters, summary, ...).
HTTP_METHODS: Final = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


# --- the document itself ------------------------------------------------------------------


def test_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert str(spec["openapi"]).startswith("3.1.")
    errors_found = [e.message for e in OpenAPIV31SpecValidator(spec).iter_errors()]
    assert errors_found == []


def test_every_route_is_documented_with_the_same_methods_and_vice_versa(
        tmp_path: Path, spec: dict[str, Any]) -> None:
    app = create_app(Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)}))
    served: dict[str, set[str]] = {}
    for route in app.routes:
        assert isinstance(route, Route), f"unexpected route type {route!r}"
        methods = set(route.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette adds HEAD to every GET by itself
        # a convertor ({account:path}) is the same path parameter in the spec
        served[re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)] = {m.lower() for m in methods}
    documented = {path: {m for m in item if m in HTTP_METHODS}
                  for path, item in spec["paths"].items()}
    assert documented == served


def test_vendor_enums_list_exactly_the_registered_vendors(spec: dict[str, Any]) -> None:
    registered = set(VENDORS)
    parameters = spec["components"]["parameters"]
    assert set(parameters["ChanVendor"]["schema"]["enum"]) == registered
    (vendor_param,) = [p for p in spec["paths"]["/callbacks/{vendor}/status"]["parameters"]
                       if p["in"] == "path"]
    assert set(vendor_param["schema"]["enum"]) == registered
    accepted = spec["components"]["schemas"]["SendAccepted"]["properties"]
    assert set(accepted["vendor"]["enum"]) == registered


def test_every_error_code_the_code_can_produce_is_documented(spec: dict[str, Any]) -> None:
    produced = {cls.code for cls in _all_subclasses(errors.ConnectorError)}
    produced.add(errors.ConnectorError.code)
    produced |= {code for _, code in TWILIO_ERROR_CODES.values()}
    for source in CONNECTOR.rglob("*.py"):
        text = source.read_text()
        produced |= set(re.findall(r'(?<![\w.])code\s*=\s*"([a-z_]+)"', text))
        # vendor tables: (class, "platform_code") pairs
        produced |= set(re.findall(
            r'(?:AUTH|REJECTED|THROTTLED|TRANSIENT|"rejected"|"auth")\s*,\s*"([a-z_]+)"\)', text))
    documented = set(spec["components"]["schemas"]["Error"]["properties"]["error"]
                     ["properties"]["code"]["enum"])
    assert produced - documented == set(), "codes the app can answer but the spec lacks"
    assert documented - produced == set(), "documented codes nothing produces"


def test_every_send_error_status_is_documented(spec: dict[str, Any]) -> None:
    statuses = {cls.status for cls in _all_subclasses(errors.ConnectorError)}
    statuses.discard(errors.InvalidSignature.status)  # callbacks only
    documented = {int(code) for code in spec["paths"]["/sms/send"]["post"]["responses"]}
    assert statuses - documented == set()
    assert {200, 400, 401, 413, 422, 429, 502, 503, 504} <= documented


def test_every_operation_documents_the_servers_431_with_its_limits(spec: dict[str, Any]) -> None:
    lacking = [f"{method.upper()} {path}" for path, item in spec["paths"].items()
               for method, operation in item.items()
               if method in HTTP_METHODS and "431" not in operation["responses"]]
    assert lacking == [], "the HTTP server answers 431 on every route"
    text = " ".join(spec["components"]["responses"]["HeadTooLarge"]["description"].split())
    assert f"over {MAX_HEAD_BYTES} bytes" in text
    assert f"more than {MAX_HEAD_FIELDS} header fields" in text


# --- the checker can pass and can fail ---------------------------------------------------


def test_a_valid_accepted_send_conforms() -> None:
    assert_conforms("POST", f"{BASE}/sms/send", SEND_HEADERS, SEND_BODY, 200, JSON,
                    json.dumps(ACCEPTED).encode())


def test_a_send_answer_missing_a_field_fails() -> None:
    missing = {k: v for k, v in ACCEPTED.items() if k != "segments"}
    with pytest.raises(AssertionError, match="segments"):
        assert_conforms("POST", f"{BASE}/sms/send", SEND_HEADERS, SEND_BODY, 200, JSON,
                        json.dumps(missing).encode())


def test_a_wrong_encoding_fails() -> None:
    wrong = {**ACCEPTED, "encoding": "utf8"}
    with pytest.raises(AssertionError, match="encoding"):
        assert_conforms("POST", f"{BASE}/sms/send", SEND_HEADERS, SEND_BODY, 200, JSON,
                        json.dumps(wrong).encode())


def test_an_accepted_request_the_spec_forbids_fails() -> None:
    body = json.loads(SEND_BODY)
    del body["callback_url"]
    with pytest.raises(AssertionError, match="request the spec does not allow"):
        assert_conforms("POST", f"{BASE}/sms/send", SEND_HEADERS, json.dumps(body).encode(),
                        200, JSON, json.dumps(ACCEPTED).encode())


def test_errors_conform_and_break_the_retry_contract_when_wrong() -> None:
    url = f"{BASE}/sms/send"
    assert_conforms("POST", url, SEND_HEADERS, b"{", 400, JSON, _error("malformed_json"))
    assert_conforms("POST", url, SEND_HEADERS, SEND_BODY, 422, JSON,
                    _error("opted_out", vendor_code="21610"))
    assert_conforms("POST", url, SEND_HEADERS, SEND_BODY, 429, {**JSON, "Retry-After": "2"},
                    _error("throttled", retryable=True, vendor_code="20429"))
    assert_conforms("POST", url, SEND_HEADERS, SEND_BODY, 503, {**JSON, "Retry-After": "1"},
                    _error("in_flight", retryable=True))
    with pytest.raises(AssertionError, match="Retry-After"):
        assert_conforms("POST", url, SEND_HEADERS, SEND_BODY, 429, JSON,
                        _error("throttled", retryable=True))
    with pytest.raises(AssertionError, match="retryable"):
        assert_conforms("POST", url, SEND_HEADERS, b"{", 400, JSON,
                        _error("malformed_json", retryable=True))
    with pytest.raises(AssertionError, match="code"):
        assert_conforms("POST", url, SEND_HEADERS, b"{", 400, JSON, _error("no_such_code"))
    with pytest.raises(AssertionError, match="409"):
        assert_conforms("POST", url, SEND_HEADERS, SEND_BODY, 409, JSON, _error("in_flight"))


def test_callbacks_conform() -> None:
    url = f"{BASE}/callbacks/twilio/status?m=token"
    form = {"content-type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": "c2lnbmF0dXJl"}
    assert_conforms("POST", url, form, b"MessageSid=SM1&MessageStatus=delivered&Extra=1",
                    204, {}, b"")
    assert_conforms("GET", url + "&MessageSid=SM1&MessageStatus=sent", {}, None, 204, {}, b"")
    assert_conforms("POST", url, form, b"", 403, JSON, _error("invalid_signature"))
    assert_conforms("POST", f"{BASE}/callbacks/nobody/status?m=t", {}, b"", 404, {}, b"")
    with pytest.raises(AssertionError):  # callbacks never answer 200
        assert_conforms("POST", url, form, b"", 200, JSON, b"{}")


def test_an_undocumented_path_fails() -> None:
    with pytest.raises(AssertionError, match="Path not found"):
        assert_conforms("GET", f"{BASE}/nowhere", {}, None, 200, JSON, b"{}")


def test_delivery_reports_conform_to_the_webhook() -> None:
    event = {
        "event_id": "0d9c6d2c-4d7c-5f3e-9a55-2b7bbd6c1f10", "request_id": "req-1",
        "message_id": ACCEPTED["message_id"], "custom_data": "opaque", "status": "failed",
        "timestamp": "2025-01-31T12:00:00.123Z", "vendor": "twilio",
        "vendor_message_id": "SM1", "error_code": "30003", "error_message": "Unreachable",
        "segments": 1, "from": "MyBrand", "to": "00447911123456",
    }
    headers = {"Content-Type": "application/json", "Authorization": "eyJh.eyJp.c2ln"}
    assert_report_conforms(headers, json.dumps([event]).encode())
    with pytest.raises(AssertionError, match="Authorization"):
        assert_report_conforms({"Content-Type": "application/json"},
                               json.dumps([event]).encode())
    with pytest.raises(AssertionError, match="custom_data"):
        assert_report_conforms(headers, json.dumps(
            [{k: v for k, v in event.items() if k != "custom_data"}]).encode())


# --- the real app, in process ---------------------------------------------------------------
# httpx's ASGITransport (starlette's TestClient warns about plain httpx in this version).


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path),
                                  "CONNECTOR_DISPATCHER": "false"})
    app = create_app(settings)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as started):
        yield started


async def _check(client: httpx.AsyncClient, method: str, path: str,
                 headers: dict[str, str] | None = None, body: bytes | None = None) -> int:
    answer = await client.request(method, path, headers=headers, content=body)
    assert_conforms(method, f"{BASE}{path}", headers or {}, body, answer.status_code,
                    dict(answer.headers), answer.content)
    return answer.status_code


async def test_the_running_app_answers_as_documented(client: httpx.AsyncClient) -> None:
    assert await _check(client, "GET", "/healthz") == 200
    assert await _check(client, "GET", "/readyz") == 200
    assert await _check(client, "GET", "/openapi.yaml") == 200
    assert await _check(client, "POST", "/sms/send", SEND_HEADERS, b"{not json") == 400
    no_token = {k: v for k, v in SEND_HEADERS.items() if k != "Chan-Auth-Token"}
    assert await _check(client, "POST", "/sms/send", no_token, SEND_BODY) == 400
    assert await _check(client, "POST", "/sms/send", {**SEND_HEADERS, "Chan-Vendor": "nobody"},
                        SEND_BODY) == 400
    assert await _check(client, "POST", "/sms/send", SEND_HEADERS, b"x" * 70_000) == 413
    assert await _check(client, "POST", "/callbacks/twilio/status", {}, b"") == 403
    assert await _check(client, "GET", "/callbacks/twilio/status?m=forged") == 403
    assert await _check(client, "POST", "/callbacks/nobody/status?m=x", {}, b"") == 404
    # No route matches a newline in a path parameter: still the documented JSON 404.
    assert await _check(client, "DELETE", "/api/v1/suppressions/twilio%0AAC1/447911123456"
                        ) == 404


async def test_readyz_without_a_store_is_a_documented_503(tmp_path: Path) -> None:
    # Without the lifespan the store is never opened.
    app = create_app(Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE) as client:
        assert await _check(client, "GET", "/readyz") == 503
