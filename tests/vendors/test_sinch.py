"""The Sinch adapter: requests it builds, how it reads answers and callbacks, signatures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from connector import http
from connector.errors import (
    AmbiguousOutcome,
    BadRequest,
    InvalidSignature,
    VendorAuthFailed,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnavailable,
)
from connector.model import Outgoing, Status
from connector.vendors import sinch
from connector.vendors.base import Callback
from tests.answers import reply

PAYLOADS = Path(__file__).parent / "payloads" / "sinch"
PLAN = "jd63jf88477ll123ab4567cd89012ef3"
TOKEN = "sinch-api-token-secret-42"
SETTINGS = {"service-plan-id": PLAN, "api-token": TOKEN}
MESSAGE = Outgoing(message_id="c0ffee", sender="MyBrand", to_e164="+447911123456",
                   text="Your code is 1234",
                   callback_url="https://connector.example/callbacks/sinch/status?m=tok")
BATCH = "01FC66621XXXXX119Z8PMV1QPQ"

# Official vector: sinch-sdk-java SinchEventsServiceTest (vendors.md 8.5).
VECTOR_SECRET = "SMSWebhooksSecret"
VECTOR_NONCE = "01JHFFHWYY7HSS4FWTMDTQEK8V"
VECTOR_TIMESTAMP = "1736760161"
VECTOR_SIGNATURE = "ZoHei66PPN/kZjw7hFVfGhJOnml3iGNCMWoyQVcE5o0="
VECTOR_BODY = (PAYLOADS / "dlr_delivered_vector.json").read_bytes()

ADAPTER = sinch.Sinch(clock=lambda: float(VECTOR_TIMESTAMP) + 30)


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def answer(status: int, name: str, headers: dict[str, str] | None = None) -> http.Response:
    return reply(status, content=payload(name), headers=headers)


def _json(request: http.Request) -> Any:
    return json.loads(request.content)


def test_send_is_one_recipient_batch_with_bearer_token_and_our_reference() -> None:
    request = ADAPTER.build_send(MESSAGE, SETTINGS)
    assert request.method == "POST"
    assert str(request.url) == f"https://us.sms.api.sinch.com/xms/v1/{PLAN}/batches"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert _json(request) == {
        "from": "MyBrand", "to": ["+447911123456"], "body": "Your code is 1234",
        "delivery_report": "per_recipient", "callback_url": MESSAGE.callback_url,
        "client_reference": "c0ffee",
    }


@pytest.mark.parametrize(("settings", "url"), [
    pytest.param({}, "https://us.sms.api.sinch.com", id="default-us"),
    pytest.param({"region": "eu"}, "https://eu.sms.api.sinch.com", id="eu"),
    pytest.param({"region": "AU"}, "https://au.sms.api.sinch.com", id="au-any-case"),
    pytest.param({"region": "br"}, "https://br.sms.api.sinch.com", id="br"),
    pytest.param({"region": "ca"}, "https://ca.sms.api.sinch.com", id="ca"),
    pytest.param({"region": "eu", "base-url": "http://127.0.0.1:9/"}, "http://127.0.0.1:9",
                 id="base-url-wins"),
])
def test_region_picks_the_host(settings: dict[str, str], url: str) -> None:
    request = ADAPTER.build_send(MESSAGE, {**SETTINGS, **settings})
    assert str(request.url) == f"{url}/xms/v1/{PLAN}/batches"
    assert httpx.URL(request.url).host in ADAPTER.hosts or "base-url" in settings


@pytest.mark.parametrize("region", ["uk", "apac", "", "us.evil.example"])
def test_other_regions_are_a_400_naming_chan_region(region: str) -> None:
    with pytest.raises(BadRequest) as caught:
        ADAPTER.build_send(MESSAGE, {**SETTINGS, "region": region})
    assert "Chan-Region" in caught.value.message
    assert caught.value.status == 400


def test_plan_id_cannot_escape_its_path() -> None:
    request = ADAPTER.build_send(MESSAGE, {**SETTINGS, "service-plan-id": "../x?y"})
    assert httpx.URL(request.url).raw_path == b"/xms/v1/..%2Fx%3Fy/batches"


def test_created_batch_gives_the_batch_id() -> None:
    accepted = ADAPTER.parse_send(answer(201, "batch_created.json"))
    assert accepted.vendor_message_id == BATCH
    assert accepted.status is Status.ACCEPTED
    assert accepted.from_number == "MyBrand"


def test_unreadable_success_is_ambiguous_so_the_lookup_decides() -> None:
    with pytest.raises(AmbiguousOutcome):
        ADAPTER.parse_send(reply(201, text="<html>ok</html>"))


@pytest.mark.parametrize(("response", "kind", "status", "code", "vendor_code"), [
    pytest.param(answer(400, "error_invalid_parameter_format.json"), VendorRejected, 422,
                 "invalid_recipient", "syntax_invalid_parameter_format", id="bad-msisdn"),
    pytest.param(answer(400, "error_invalid_json.json"), VendorRejected, 422, "rejected",
                 "syntax_invalid_json", id="invalid-json"),
    pytest.param(answer(400, "error_constraint_violation.json"), VendorRejected, 422,
                 "rejected", "syntax_constraint_violation", id="constraint"),
    pytest.param(answer(403, "error_unknown_group.json"), VendorRejected, 422,
                 "invalid_recipient", "unknown_group", id="unknown-group"),
    pytest.param(answer(403, "error_unknown_campaign.json"), VendorRejected, 422,
                 "sender_not_allowed", "unknown_campaign", id="unknown-campaign"),
    pytest.param(answer(403, "error_missing_callback_url.json"), VendorRejected, 422,
                 "rejected", "missing_callback_url", id="missing-callback-url"),
    pytest.param(reply(401, text="Unauthorized"), VendorAuthFailed, 401,
                 "vendor_auth_failed", None, id="401-bad-token"),
    pytest.param(reply(403, json={}), VendorAuthFailed, 401, "vendor_auth_failed",
                 None, id="403-no-code"),
    pytest.param(reply(429, json={}, headers={"Retry-After": "3"}), VendorThrottled,
                 429, "throttled", None, id="429"),
    pytest.param(reply(500, json={}), VendorUnavailable, 502, "vendor_unavailable",
                 None, id="500"),
    pytest.param(reply(503, text="<html>down</html>"), VendorUnavailable, 502,
                 "vendor_unavailable", None, id="503-html"),
    pytest.param(reply(400, json={"code": "brand_new_code", "text": "?"}),
                 VendorRejected, 422, "rejected", "brand_new_code", id="unknown-4xx-code"),
])
def test_error_answers_are_classified(response: http.Response, kind: type[VendorError],
                                      status: int, code: str, vendor_code: str | None) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_send(response)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.vendor_code == vendor_code
    assert caught.value.retryable is (status in (429, 502))
    assert TOKEN not in caught.value.body().decode() + repr(caught.value)


def test_throttle_keeps_retry_after() -> None:
    with pytest.raises(VendorThrottled) as caught:
        ADAPTER.parse_send(reply(429, json={}, headers={"Retry-After": "3"}))
    assert caught.value.retry_after == 3.0


def test_error_text_reaches_the_message() -> None:
    with pytest.raises(VendorRejected) as caught:
        ADAPTER.parse_send(answer(400, "error_invalid_parameter_format.json"))
    assert caught.value.message == "sinch: Invalid MSISDN format: 4479"


def test_signature_matches_the_official_vector() -> None:
    assert sinch.signature(VECTOR_SECRET, VECTOR_BODY, VECTOR_NONCE,
                           VECTOR_TIMESTAMP) == VECTOR_SIGNATURE


def signed(body: bytes = VECTOR_BODY, *, signature: str = VECTOR_SIGNATURE,
           nonce: str = VECTOR_NONCE, timestamp: str = VECTOR_TIMESTAMP,
           algorithm: str = "HmacSHA256") -> Callback:
    """A callback as Sinch sends it; an empty value leaves that header out."""
    headers = {"x-sinch-webhook-signature": signature,
               "x-sinch-webhook-signature-nonce": nonce,
               "x-sinch-webhook-signature-timestamp": timestamp,
               "x-sinch-webhook-signature-algorithm": algorithm,
               "content-type": "application/json"}
    return Callback(url="https://connector.example/callbacks/sinch/status?m=tok",
                    headers={k: v for k, v in headers.items() if v}, body=body, params=[])


WITH_SECRET = {**SETTINGS, "webhook-secret": VECTOR_SECRET}


def test_verify_accepts_the_official_vector_within_the_window() -> None:
    ADAPTER.verify(signed(), WITH_SECRET)


@pytest.mark.parametrize(("callback", "settings"), [
    pytest.param(signed(VECTOR_BODY.replace(b"Delivered", b"Failed")), WITH_SECRET,
                 id="tampered-body"),
    pytest.param(signed(nonce="01JHFFHWYY7HSS4FWTMDTQEK8W"), WITH_SECRET, id="other-nonce"),
    pytest.param(signed(), {**SETTINGS, "webhook-secret": "other"}, id="other-secret"),
    pytest.param(signed(algorithm="HmacSHA1"), WITH_SECRET, id="other-algorithm"),
    pytest.param(signed(timestamp=""), WITH_SECRET, id="no-timestamp"),
    pytest.param(signed(timestamp="yesterday"), WITH_SECRET, id="bad-timestamp"),
    pytest.param(signed(signature=""), WITH_SECRET, id="no-signature"),
])
def test_verify_refuses_tampering(callback: Callback, settings: dict[str, str]) -> None:
    with pytest.raises(InvalidSignature):
        ADAPTER.verify(callback, settings)


@pytest.mark.parametrize(("offset", "ok"), [
    pytest.param(299, True, id="late-inside"), pytest.param(-299, True, id="early-inside"),
    pytest.param(301, False, id="replayed-late"), pytest.param(-301, False, id="from-future"),
])
def test_timestamp_window_is_five_minutes(offset: float, ok: bool) -> None:
    adapter = sinch.Sinch(clock=lambda: float(VECTOR_TIMESTAMP) + offset)
    if ok:
        adapter.verify(signed(), WITH_SECRET)
    else:
        with pytest.raises(InvalidSignature):
            adapter.verify(signed(), WITH_SECRET)


def test_without_a_secret_the_url_token_is_the_authentication() -> None:
    ADAPTER.verify(signed(b"{}", signature=""), SETTINGS)


def test_vector_report_reads_as_delivered() -> None:
    (update,) = ADAPTER.parse_status(signed())
    assert update.status is Status.DELIVERED
    assert update.vendor_message_id == "01JHFFHQ0P99JPPNQPJDV7JTBP"
    assert update.message_ref == "a client reference"
    assert update.occurred_at == 1736760160.914
    assert update.error_code is None


def test_failed_report_carries_code_originator_and_parts() -> None:
    (update,) = ADAPTER.parse_status(signed(payload("dlr_failed.json")))
    assert (update.status, update.error_code) == (Status.UNDELIVERED, "402")
    assert update.error_message == "Message unroutable"
    assert (update.message_ref, update.vendor_message_id) == ("c0ffee", BATCH)
    assert (update.from_number, update.segments) == ("MyBrand", 1)


def test_a_string_code_is_read_not_dropped() -> None:
    body = json.dumps({**json.loads(payload("dlr_failed.json")), "code": "413"}).encode()
    (update,) = ADAPTER.parse_status(signed(body))
    assert (update.error_code, update.error_message) == (
        "413", "Blocked: account blocked, possibly out of credit")


def test_intermediate_report_has_no_error_code() -> None:
    (update,) = ADAPTER.parse_status(signed(payload("dlr_dispatched.json")))
    assert (update.status, update.error_code) == (Status.SENT, None)


def _report(status: str, code: int) -> bytes:
    body = json.loads(payload("dlr_failed.json"))
    return json.dumps({**body, "status": status, "code": code}).encode()


@pytest.mark.parametrize(("vendor_status", "status"), [
    pytest.param(name, status, id=name) for name, status in sinch.STATUS_MAP.items()
])
def test_every_sinch_status_maps(vendor_status: str, status: Status) -> None:
    (update,) = ADAPTER.parse_status(signed(_report(vendor_status, 406)))
    assert update.status is status
    failure = status in (Status.UNDELIVERED, Status.FAILED, Status.EXPIRED, Status.REJECTED)
    assert update.error_code == ("406" if failure else None)


@pytest.mark.parametrize("name", ["delivery_report_summary.json", "mo_text.json"])
def test_other_callback_types_are_ignored(name: str) -> None:
    assert ADAPTER.parse_status(signed(payload(name))) == []


@pytest.mark.parametrize("body", [b"not json", b"[]", _report("Teleported", 0)])
def test_unreadable_or_unknown_is_ignored_not_raised(body: bytes) -> None:
    assert ADAPTER.parse_status(signed(body)) == []


def test_verify_call_lists_one_batch() -> None:
    request = ADAPTER.build_verify({**SETTINGS, "region": "eu"})
    assert request.method == "GET"
    assert str(request.url) == f"https://eu.sms.api.sinch.com/xms/v1/{PLAN}/batches?page_size=1"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    ADAPTER.parse_verify(answer(200, "list_batches_empty.json"))


@pytest.mark.parametrize("status", [401, 403, 404])
def test_refused_credentials_say_so(status: int) -> None:
    with pytest.raises(VendorAuthFailed) as caught:
        ADAPTER.parse_verify(reply(status, json={}))
    assert "service plan ID and API token" in caught.value.message


def test_verify_outage_is_retryable() -> None:
    with pytest.raises(VendorUnavailable):
        ADAPTER.parse_verify(reply(503, text="down"))


def test_lookup_filters_batches_by_our_reference() -> None:
    request = ADAPTER.build_lookup(MESSAGE, SETTINGS)
    assert request is not None and request.method == "GET"
    assert httpx.URL(request.url).path == f"/xms/v1/{PLAN}/batches"
    assert dict(httpx.URL(request.url).params) == {"client_reference": "c0ffee", "page_size": "1"}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


def test_lookup_found_is_accepted_and_empty_is_none() -> None:
    found = ADAPTER.parse_lookup(answer(200, "list_batches.json"))
    assert found is not None and found.vendor_message_id == BATCH
    assert ADAPTER.parse_lookup(answer(200, "list_batches_empty.json")) is None


def test_lookup_failure_raises() -> None:
    with pytest.raises(VendorAuthFailed):
        ADAPTER.parse_lookup(reply(401, json={}))


@pytest.mark.parametrize(("offset", "ok"), [
    pytest.param(59, True, id="inside"), pytest.param(61, False, id="outside"),
])
def test_timestamp_window_is_the_deployment_setting(offset: float, ok: bool) -> None:
    adapter = sinch.Sinch(clock=lambda: float(VECTOR_TIMESTAMP) + offset)
    callback = msgspec.structs.replace(signed(), max_age=60.0)
    if ok:
        adapter.verify(callback, WITH_SECRET)
    else:
        with pytest.raises(InvalidSignature, match="too old"):
            adapter.verify(callback, WITH_SECRET)
