"""The Bird adapter: requests it builds, how it reads answers and callbacks, signatures."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import msgspec
import pytest

from connector import http
from connector.errors import (
    InvalidSignature,
    VendorAuthFailed,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnavailable,
)
from connector.model import Outgoing, Status
from connector.vendors import bird
from connector.vendors.base import Callback
from tests.answers import reply

PAYLOADS = Path(__file__).parent / "payloads" / "bird"
NOW = 1719823259
ADAPTER = bird.Bird(clock=lambda: NOW)
KEY = "bird-access-key-s3cr3t"
SIGNING = "bird-signing-key-s3cr3t"
WS, CHANNEL = "ws-1111", "ch-2222"
SETTINGS = {"access-key": KEY, "workspace-id": WS, "channel-id": CHANNEL, "signing-key": SIGNING}
MESSAGE = Outgoing(message_id="c0ffee", sender="MyBrand", to_e164="+447911123456",
                   text="Your code is 1234",
                   callback_url="https://connector.example/callbacks/bird/status?m=tok")
HOOK = "https://connector.example/callbacks/bird/status"
VENDOR_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def answer(status: int, name: str | None = None, **headers: str) -> http.Response:
    return reply(status, content=payload(name) if name else b"", headers=headers)


def test_send_request_is_json_post_with_access_key() -> None:
    request = ADAPTER.build_send(MESSAGE, SETTINGS)
    assert request.method == "POST"
    assert str(request.url) == f"https://api.bird.com/workspaces/{WS}/channels/{CHANNEL}/messages"
    assert request.headers["authorization"] == f"AccessKey {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "receiver": {"contacts": [{"identifierKey": "phonenumber",
                                   "identifierValue": "+447911123456"}]},
        "body": {"type": "text", "text": {"text": "Your code is 1234"}},
        "reference": "c0ffee",
    }


def test_platform_sender_is_not_forwarded() -> None:
    sent = ADAPTER.build_send(MESSAGE, SETTINGS).content.decode()
    assert "MyBrand" not in sent and "sender" not in sent and "from" not in sent


def test_base_url_setting_moves_the_host() -> None:
    request = ADAPTER.build_send(MESSAGE, {**SETTINGS, "base-url": "http://127.0.0.1:9/"})
    assert str(request.url) == f"http://127.0.0.1:9/workspaces/{WS}/channels/{CHANNEL}/messages"


def test_path_ids_are_escaped() -> None:
    request = ADAPTER.build_send(MESSAGE, {**SETTINGS, "channel-id": "../x"})
    assert httpx.URL(request.url).raw_path.endswith(b"/channels/..%2Fx/messages")


@pytest.mark.parametrize("status", [200, 201, 202])
def test_accepted_message_gives_id_and_channel_sender(status: int) -> None:
    accepted = ADAPTER.parse_send(answer(status, "send_accepted.json"))
    assert accepted.vendor_message_id == VENDOR_ID
    assert accepted.status is Status.ACCEPTED
    assert accepted.from_number == "+31970102030"


@pytest.mark.parametrize(("response", "kind", "status", "code", "vendor_code"), [
    pytest.param(answer(422, "error_invalid_payload.json"), VendorRejected, 422, "rejected",
                 "InvalidPayload", id="422-InvalidPayload"),
    pytest.param(answer(404, "error_not_found.json"), VendorRejected, 422, "rejected",
                 "NotFound", id="404-NotFound"),
    pytest.param(answer(401, "error_unauthorized.json"), VendorAuthFailed, 401,
                 "vendor_auth_failed", "Unauthorized", id="401-Unauthorized"),
    pytest.param(answer(403, "error_forbidden.json"), VendorAuthFailed, 401,
                 "vendor_auth_failed", "Forbidden", id="403-Forbidden"),
    pytest.param(answer(429, "error_too_many_requests.json", **{"Retry-After": "3"}),
                 VendorThrottled, 429, "throttled", "TooManyRequests", id="429-TooManyRequests"),
    pytest.param(answer(429), VendorThrottled, 429, "throttled", None, id="429-no-body"),
    pytest.param(reply(500, json={"code": "InternalServerError", "message": "x"}),
                 VendorUnavailable, 502, "vendor_unavailable", "InternalServerError", id="500"),
    pytest.param(reply(503, text="<html>down</html>"), VendorUnavailable, 502,
                 "vendor_unavailable", None, id="503-html"),
    pytest.param(reply(400, json={"code": "SomethingNew", "message": "?"}),
                 VendorRejected, 422, "rejected", "SomethingNew", id="unknown-4xx-code"),
])
def test_error_answers_are_classified(response: http.Response, kind: type[VendorError],
                                      status: int, code: str, vendor_code: str | None) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_send(response)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.vendor_code == vendor_code
    assert caught.value.retryable is (status in (429, 502))


def test_validation_error_names_the_field_and_not_found_says_what() -> None:
    with pytest.raises(VendorRejected) as invalid:
        ADAPTER.parse_send(answer(422, "error_invalid_payload.json"))
    assert "receiver.contacts[0].identifierValue" in invalid.value.message
    with pytest.raises(VendorRejected) as missing:
        ADAPTER.parse_send(answer(404, "error_not_found.json"))
    assert "workspace or channel not found" in missing.value.message


def test_throttle_keeps_retry_after_and_no_secret_leaks() -> None:
    with pytest.raises(VendorThrottled) as caught:
        ADAPTER.parse_send(answer(429, "error_too_many_requests.json", **{"Retry-After": "3"}))
    assert caught.value.retry_after == 3.0
    shown = caught.value.body().decode() + repr(caught.value) + repr(ADAPTER)
    assert KEY not in shown and SIGNING not in shown


# --- signatures (vendors.md 8.3: constructed with the documented algorithm) ---

VECTOR_BODY = (b'{"service":"channels","event":"sms.outbound",'
               b'"payload":{"id":"m1","status":"delivered"}}')
VECTOR_SIG = "Mj1sk47DPujtXhWyT0aduUyqv5wWs8ICBCIvbWtDtro="


def test_signature_matches_vector() -> None:
    assert bird.signature("secureSigningKey", str(NOW), "https://domain.com/webhook/bird",
                          VECTOR_BODY) == VECTOR_SIG


def _callback(body: bytes, *, url: str = HOOK, stamp: int = NOW, key: str = SIGNING,
              sig: str | None = None) -> Callback:
    signed = bird.signature(key, str(stamp), url, body) if sig is None else sig
    return Callback(url=url, body=body, params=[], headers={
        "messagebird-signature": signed, "messagebird-request-timestamp": str(stamp)})


GOOD = bird.signature(SIGNING, str(NOW), HOOK, VECTOR_BODY)


def test_verify_accepts_the_vector() -> None:
    callback = Callback(url="https://domain.com/webhook/bird", body=VECTOR_BODY, params=[],
                        headers={"messagebird-signature": VECTOR_SIG,
                                 "messagebird-request-timestamp": str(NOW)})
    ADAPTER.verify(callback, {"signing-key": "secureSigningKey"})


@pytest.mark.parametrize(("callback", "settings"), [
    pytest.param(_callback(VECTOR_BODY + b" ", sig=GOOD), SETTINGS, id="tampered-body"),
    pytest.param(_callback(VECTOR_BODY, url=HOOK + "?x=1", sig=GOOD), SETTINGS, id="other-url"),
    pytest.param(_callback(VECTOR_BODY, key="other-key"), SETTINGS, id="other-key"),
    pytest.param(_callback(VECTOR_BODY, sig=""), SETTINGS, id="no-signature"),
    pytest.param(_callback(VECTOR_BODY, sig="not base64!"), SETTINGS, id="garbage-signature"),
    pytest.param(_callback(VECTOR_BODY, stamp=NOW - 301), SETTINGS, id="stale-timestamp"),
    pytest.param(_callback(VECTOR_BODY, stamp=NOW + 301), SETTINGS, id="future-timestamp"),
    pytest.param(Callback(url=HOOK, body=VECTOR_BODY, params=[], headers={
        "messagebird-signature": bird.signature(SIGNING, "", HOOK, VECTOR_BODY)}), SETTINGS,
        id="no-timestamp"),
    pytest.param(_callback(VECTOR_BODY), {"access-key": KEY}, id="no-signing-key-stored"),
])
def test_verify_refuses(callback: Callback, settings: dict[str, str]) -> None:
    with pytest.raises(InvalidSignature):
        ADAPTER.verify(callback, settings)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_verify_allows_five_minutes_of_skew(skew: int) -> None:
    ADAPTER.verify(_callback(VECTOR_BODY, stamp=NOW + skew), SETTINGS)


# --- status callbacks ---

def _envelope(status: str, **extra: object) -> bytes:
    message = {"id": VENDOR_ID, "status": status, "reference": "c0ffee", **extra}
    return json.dumps({"service": "channels", "event": "sms.outbound",
                       "payload": message}).encode()


@pytest.mark.parametrize(("vendor_status", "status"), [
    pytest.param(name, status, id=name) for name, status in bird.STATUS_MAP.items()
])
def test_every_bird_status_maps(vendor_status: str, status: Status) -> None:
    (update,) = ADAPTER.parse_status(_callback(_envelope(vendor_status)))
    assert update.status is status
    assert (update.vendor_message_id, update.message_ref) == (VENDOR_ID, "c0ffee")


@pytest.mark.parametrize(("name", "status", "code", "reason"), [
    pytest.param("callback_delivered.json", Status.DELIVERED, None, None, id="delivered"),
    pytest.param("callback_delivery_failed.json", Status.UNDELIVERED, "15005",
                 "details: unknown subscriber; reason: unknown_subscriber; code: 1",
                 id="delivery_failed-15005"),
    pytest.param("callback_expired.json", Status.EXPIRED, "15010", "DLR not received",
                 id="delivery_failed-dlr-not-received"),
    pytest.param("callback_sending_failed.json", Status.FAILED, "15001",
                 "system failure / network error", id="sending_failed-15001"),
    # No channel-agnostic code given: the SMS platform's own code stands in for it.
    pytest.param("callback_opted_out.json", Status.UNDELIVERED, "103",
                 "details: subscriber opted out; reason: opted_out; code: 103",
                 id="delivery_failed-103-opted-out"),
])
def test_documented_callbacks_parse(name: str, status: Status, code: str | None,
                                    reason: str | None) -> None:
    callback = _callback(payload(name))
    ADAPTER.verify(callback, SETTINGS)
    (update,) = ADAPTER.parse_status(callback)
    assert (update.status, update.error_code, update.error_message) == (status, code, reason)
    assert (update.vendor_message_id, update.message_ref) == (VENDOR_ID, "c0ffee")
    assert update.occurred_at is not None and update.occurred_at > 1.7e9


def test_expired_reason_turns_delivery_failed_into_expired() -> None:
    (update,) = ADAPTER.parse_status(_callback(_envelope("delivery_failed", reason="Expired")))
    assert update.status is Status.EXPIRED


def test_delivered_callback_resolves_the_channel_sender() -> None:
    (update,) = ADAPTER.parse_status(_callback(payload("callback_delivered.json")))
    assert update.from_number == "+31970102030"
    assert update.occurred_at == 1719823272.0


@pytest.mark.parametrize("body", [
    pytest.param(payload("callback_inbound.json"), id="inbound-event"),
    pytest.param(_envelope("teleported"), id="unknown-status"),
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'{"service":"channels","event":"sms.outbound","payload":{}}', id="no-id"),
])
def test_other_callbacks_are_ignored_not_raised(body: bytes) -> None:
    assert ADAPTER.parse_status(_callback(body)) == []


# --- verify credentials and look-up ---

def test_verify_request_reads_the_channel() -> None:
    request = ADAPTER.build_verify(SETTINGS)
    assert (request.method, str(request.url)) == (
        "GET", f"https://api.bird.com/workspaces/{WS}/channels/{CHANNEL}")
    assert request.headers["authorization"] == f"AccessKey {KEY}"
    ADAPTER.parse_verify(answer(200, "channel.json"))


@pytest.mark.parametrize(("response", "kind", "code", "words"), [
    pytest.param(answer(401, "error_unauthorized.json"), VendorAuthFailed,
                 "vendor_auth_failed", "access key", id="401"),
    pytest.param(answer(403, "error_forbidden.json"), VendorAuthFailed,
                 "vendor_auth_failed", "access policy", id="403"),
    pytest.param(answer(404, "error_not_found.json"), VendorRejected, "rejected",
                 "workspace or channel not found", id="404"),
    pytest.param(reply(503, text="down"), VendorUnavailable, "vendor_unavailable", "",
                 id="503"),
])
def test_verify_failures_say_what_is_wrong(response: http.Response, kind: type[VendorError],
                                           code: str, words: str) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_verify(response)
    assert caught.value.code == code
    assert words in caught.value.message


def test_lookup_asks_for_our_reference() -> None:
    request = ADAPTER.build_lookup(MESSAGE, SETTINGS)
    assert request is not None
    assert request.method == "GET"
    assert httpx.URL(request.url).path == f"/workspaces/{WS}/channels/{CHANNEL}/messages"
    assert httpx.URL(request.url).params["reference"] == "c0ffee"
    assert request.headers["authorization"] == f"AccessKey {KEY}"


def _lookup(status: int, body: bytes, ref: str = "c0ffee") -> http.Response:
    message = Outgoing(message_id=ref, sender="x", to_e164="+447911123456", text="x",
                       callback_url="https://x")
    return reply(status, content=body, request=ADAPTER.build_lookup(message, SETTINGS))


def test_lookup_found_is_accepted() -> None:
    found = ADAPTER.parse_lookup(_lookup(200, payload("lookup_found.json")))
    assert found is not None and found.vendor_message_id == VENDOR_ID


@pytest.mark.parametrize("response", [
    pytest.param(_lookup(200, payload("lookup_empty.json")), id="empty"),
    pytest.param(_lookup(200, payload("lookup_found.json"), ref="other"),
                 id="filter-ignored-other-reference"),
    # Without the request there is no reference to compare: a result without one is not ours.
    pytest.param(reply(200, json={"results": [{"id": VENDOR_ID}]}), id="no-reference-known"),
])
def test_lookup_without_our_message_is_none(response: http.Response) -> None:
    assert ADAPTER.parse_lookup(response) is None


def test_lookup_failure_raises() -> None:
    with pytest.raises(VendorAuthFailed):
        ADAPTER.parse_lookup(_lookup(401, payload("error_unauthorized.json")))


def test_verify_window_is_the_deployment_setting() -> None:
    inside = msgspec.structs.replace(_callback(VECTOR_BODY, stamp=NOW - 119), max_age=120.0)
    ADAPTER.verify(inside, SETTINGS)
    outside = msgspec.structs.replace(_callback(VECTOR_BODY, stamp=NOW - 121), max_age=120.0)
    with pytest.raises(InvalidSignature, match="120-second window"):
        ADAPTER.verify(outside, SETTINGS)
