"""The Twilio adapter: requests it builds, how it reads answers and callbacks, signatures."""

from __future__ import annotations

import base64
import hmac
from urllib.parse import parse_qsl

import httpx
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
from connector.vendors import twilio
from connector.vendors.base import Callback
from tests.answers import reply
from tests.fakes.twilio_schema import validate_create_form

ADAPTER = twilio.Twilio()
SID = "AC" + "1" * 32
TOKEN = "tok-secret-123"
SETTINGS = {"account-sid": SID, "auth-token": TOKEN}
MESSAGE = Outgoing(message_id="m1", sender="MyBrand", to_e164="+447911123456", text="Hi there",
                   callback_url="https://connector.example/callbacks/twilio/status?m=tok")


def _form(request: http.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode()))


def test_send_request_is_form_post_with_basic_auth() -> None:
    request = ADAPTER.build_send(MESSAGE, SETTINGS)
    assert request.method == "POST"
    assert str(request.url) == f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["authorization"] == httpx.BasicAuth(SID, TOKEN)._auth_header
    assert _form(request) == {"To": "+447911123456", "Body": "Hi there", "From": "MyBrand",
                              "StatusCallback": MESSAGE.callback_url}


def test_messaging_service_replaces_from() -> None:
    request = ADAPTER.build_send(MESSAGE, {**SETTINGS, "messaging-service-sid": "MG" + "2" * 32})
    form = _form(request)
    assert form["MessagingServiceSid"] == "MG" + "2" * 32
    assert "From" not in form


def test_base_url_setting_moves_the_host() -> None:
    request = ADAPTER.build_send(MESSAGE, {**SETTINGS, "base-url": "http://127.0.0.1:9/"})
    assert str(request.url).startswith(f"http://127.0.0.1:9/2010-04-01/Accounts/{SID}/")


@pytest.mark.parametrize("settings", [
    pytest.param(SETTINGS, id="from"),
    pytest.param({**SETTINGS, "messaging-service-sid": "MG" + "2" * 32}, id="messaging-service"),
])
def test_send_request_matches_twilio_openapi(settings: dict[str, str]) -> None:
    request = ADAPTER.build_send(MESSAGE, settings)
    assert validate_create_form(parse_qsl(request.content.decode())) == []


def test_created_response_gives_sid_and_segments() -> None:
    answer = reply(201, json={"sid": "SM" + "a" * 32, "status": "queued",
                                       "num_segments": "2", "from": "+15005550006"})
    accepted = ADAPTER.parse_send(answer)
    assert accepted.vendor_message_id == "SM" + "a" * 32
    assert accepted.segments == 2
    assert accepted.from_number == "+15005550006"


def _error(status: int, code: int | None, headers: dict[str, str] | None = None) -> http.Response:
    body = {"code": code, "message": "boom", "status": status} if code else {"status": status}
    return reply(status, json=body, headers=headers)


@pytest.mark.parametrize(("answer", "kind", "status", "code"), [
    pytest.param(_error(400, 21211), VendorRejected, 422, "invalid_recipient", id="21211"),
    pytest.param(_error(400, 21614), VendorRejected, 422, "invalid_recipient", id="21614"),
    pytest.param(_error(400, 21610), VendorRejected, 422, "opted_out", id="21610-opted-out"),
    pytest.param(_error(400, 21408), VendorRejected, 422, "region_not_permitted", id="21408"),
    pytest.param(_error(400, 21617), VendorRejected, 422, "message_too_long", id="21617"),
    pytest.param(_error(401, 20003), VendorAuthFailed, 401, "vendor_auth_failed", id="20003"),
    pytest.param(_error(403, 20005), VendorAuthFailed, 401, "vendor_account_inactive",
                 id="20005"),
    pytest.param(_error(429, 20429, {"Retry-After": "7"}), VendorThrottled, 429, "throttled",
                 id="20429"),
    pytest.param(_error(400, 30001), VendorUnavailable, 502, "vendor_unavailable", id="30001"),
    pytest.param(_error(500, 20500), VendorUnavailable, 502, "vendor_unavailable", id="20500"),
    pytest.param(_error(503, None), VendorUnavailable, 502, "vendor_unavailable",
                 id="503-no-code"),
    pytest.param(reply(502, text="<html>bad gateway</html>"), VendorUnavailable, 502,
                 "vendor_unavailable", id="502-html"),
    pytest.param(_error(400, 99999), VendorRejected, 422, "rejected", id="unknown-4xx-code"),
])
def test_error_answers_are_classified(answer: http.Response, kind: type[VendorError],
                                      status: int, code: str) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_send(answer)
    assert caught.value.status == status
    assert caught.value.code == code
    assert caught.value.retryable is (status in (429, 502))


def test_throttle_keeps_retry_after() -> None:
    with pytest.raises(VendorThrottled) as caught:
        ADAPTER.parse_send(_error(429, 20429, {"Retry-After": "7"}))
    assert caught.value.retry_after == 7.0
    assert caught.value.headers() == {"Retry-After": "7"}


def test_error_carries_vendor_code_but_no_secret() -> None:
    with pytest.raises(VendorRejected) as caught:
        ADAPTER.parse_send(_error(400, 21610))
    assert caught.value.vendor_code == "21610"
    assert TOKEN not in caught.value.body().decode() + repr(caught.value)


# Official vectors: twilio-python tests/unit/test_request_validator.py (vendors.md 8.1).
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = [("CallSid", "CA1234567890ABCDE"), ("Digits", "1234"), ("From", "+14158675309"),
                 ("To", "+18005551212"), ("Caller", "+14158675309")]
REPEATED = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"),
            ("Digits", "1234")]


@pytest.mark.parametrize(("url", "params", "expected"), [
    pytest.param(VECTOR_URL, VECTOR_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", id="basic"),
    pytest.param(VECTOR_URL, REPEATED, "IK+Dwps556ElfBT0I3Rgjkr1wJU=", id="repeated-keys"),
    pytest.param("https://mycompany.com:443/myapp.php?foo=1&bar=2", VECTOR_PARAMS,
                 "kvajT1Ptam85bY51eRf/AJRuM3w=", id="https-port"),
    pytest.param("http://mycompany.com:80/myapp.php?foo=1&bar=2", VECTOR_PARAMS,
                 "0ZXoZLH/DfblKGATFgpif+LLRf4=", id="http-port"),
    pytest.param("http://mycompany.com:1234/myapp.php?foo=1&bar=2", VECTOR_PARAMS,
                 "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=", id="custom-port"),
])
def test_signature_matches_official_vectors(url: str, params: list[tuple[str, str]],
                                            expected: str) -> None:
    assert twilio.signature("12345", url, params) == expected


def _callback(url: str, params: list[tuple[str, str]], signature: str) -> Callback:
    return Callback(url=url, headers={"x-twilio-signature": signature}, body=b"",
                    params=params)


@pytest.mark.parametrize(("signed_url", "received_url"), [
    pytest.param(VECTOR_URL, VECTOR_URL, id="same"),
    pytest.param("https://mycompany.com:443/myapp.php?foo=1&bar=2", VECTOR_URL,
                 id="signed-with-port"),
    pytest.param(VECTOR_URL, "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                 id="received-with-port"),
])
def test_verify_accepts_signature_with_or_without_default_port(signed_url: str,
                                                               received_url: str) -> None:
    sig = twilio.signature("12345", signed_url, VECTOR_PARAMS)
    ADAPTER.verify(_callback(received_url, VECTOR_PARAMS, sig), {"auth-token": "12345"})


@pytest.mark.parametrize(("change", "token"), [
    pytest.param("param", "12345", id="tampered-param"),
    pytest.param("url", "12345", id="other-url"),
    pytest.param(None, "54321", id="other-token"),
    pytest.param("empty", "12345", id="no-signature"),
])
def test_verify_refuses_tampering(change: str | None, token: str) -> None:
    sig = twilio.signature("12345", VECTOR_URL, VECTOR_PARAMS)
    params, url = list(VECTOR_PARAMS), VECTOR_URL
    if change == "param":
        params[1] = ("Digits", "9999")
    elif change == "url":
        url = VECTOR_URL.replace("foo=1", "foo=2")
    elif change == "empty":
        sig = ""
    with pytest.raises(InvalidSignature):
        ADAPTER.verify(_callback(url, params, sig), {"auth-token": token})


@pytest.mark.parametrize(("vendor_status", "status"), [
    pytest.param(name, status, id=name) for name, status in twilio.STATUS_MAP.items()
])
def test_every_twilio_status_maps(vendor_status: str, status: Status) -> None:
    params = [("MessageSid", "SM1"), ("MessageStatus", vendor_status), ("From", "+15005550006")]
    (update,) = ADAPTER.parse_status(_callback("https://x", params, ""))
    assert update.status is status
    assert update.vendor_message_id == "SM1"
    assert update.from_number == "+15005550006"


def test_undelivered_carries_error_code() -> None:
    params = [("MessageSid", "SM1"), ("MessageStatus", "undelivered"), ("ErrorCode", "30003")]
    (update,) = ADAPTER.parse_status(_callback("https://x", params, ""))
    assert (update.status, update.error_code) == (Status.UNDELIVERED, "30003")


def test_unknown_status_is_ignored_not_raised() -> None:
    params = [("MessageSid", "SM1"), ("MessageStatus", "teleported")]
    assert ADAPTER.parse_status(_callback("https://x", params, "")) == []


def test_signatures_stay_right_when_keyed_macs_are_reused_and_evicted() -> None:
    # The keyed HMAC kept per auth token is copied, never fed: the same input signs the same.
    for _ in range(3):
        assert twilio.signature("12345", VECTOR_URL, VECTOR_PARAMS) == \
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    for n in range(600):  # more tokens than it keeps
        token = f"token-{n}"
        expected = base64.b64encode(hmac.digest(
            token.encode(), (VECTOR_URL + "".join(map("".join, sorted(set(VECTOR_PARAMS)))))
            .encode(), "sha1")).decode()
        assert twilio.signature(token, VECTOR_URL, VECTOR_PARAMS) == expected
    assert len(twilio._KEYED) <= 256
    assert twilio.signature("12345", VECTOR_URL, VECTOR_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
