"""The Vonage adapter: the send it builds, refusals inside a 200, per-part receipts, `sig`."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
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
from connector.vendors import vonage
from connector.vendors.base import Callback
from tests.answers import reply

PAYLOADS = Path(__file__).parent / "payloads" / "vonage"
NOW = 1_780_000_000.0
ADAPTER = vonage.Vonage(clock=lambda: NOW)
KEY, SECRET, SIG_SECRET = "abcd1234", "vonage-api-secret-9f2c", "vonage-signature-secret-77"
SETTINGS = {"api-key": KEY, "api-secret": SECRET}
MID = "c0ffee00c0ffee00c0ffee00c0ffee00"
URL = "https://connector.example/callbacks/vonage/status?m=tok"
MESSAGE = Outgoing(message_id=MID, sender="MyBrand", to_e164="+447911123456", text="Hi there",
                   callback_url=URL)


def answer(name: str, status: int = 200, headers: dict[str, str] | None = None) -> http.Response:
    return reply(status, content=(PAYLOADS / name).read_bytes(), headers=headers)


def refusal(code: str, text: str = "refused") -> http.Response:
    return reply(200, json={"message-count": "1",
                                     "messages": [{"status": code, "error-text": text}]})


def _form(request: http.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode()))


def test_send_is_a_form_post_with_basic_auth_bare_digits_and_our_reference() -> None:
    request = ADAPTER.build_send(MESSAGE, SETTINGS)
    assert (request.method, str(request.url)) == ("POST", "https://rest.nexmo.com/sms/json")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["authorization"] == httpx.BasicAuth(KEY, SECRET)._auth_header
    assert _form(request) == {
        "from": "MyBrand", "to": "447911123456", "text": "Hi there", "type": "text",
        "callback": URL, "status-report-req": "true", "client-ref": MID,
    }
    assert SECRET not in request.content.decode() + str(request.url)


@pytest.mark.parametrize(("sender", "sent"), [
    pytest.param("MyBrand", "MyBrand", id="alphanumeric"),
    pytest.param("My Brand", "My Brand", id="alphanumeric-space"),
    pytest.param("+15005550006", "15005550006", id="number-bare-digits"),
    pytest.param("12345", "12345", id="short-code"),
])
def test_sender_format(sender: str, sent: str) -> None:
    message = Outgoing(message_id=MID, sender=sender, to_e164="+447911123456", text="x",
                       callback_url=URL)
    assert _form(ADAPTER.build_send(message, SETTINGS))["from"] == sent


@pytest.mark.parametrize(("text", "kind"), [
    pytest.param("Plain GSM text", "text", id="gsm7"),
    pytest.param("Price: 5€ [now]", "text", id="gsm7-extension"),
    pytest.param("Zdravo, čestitamo", "unicode", id="ucs2"),
    pytest.param("Hi 👋", "unicode", id="emoji"),
])
def test_type_is_unicode_only_for_non_gsm_text(text: str, kind: str) -> None:
    message = Outgoing(message_id=MID, sender="MyBrand", to_e164="+447911123456", text=text,
                       callback_url=URL)
    assert _form(ADAPTER.build_send(message, SETTINGS))["type"] == kind


def test_base_url_setting_moves_the_host() -> None:
    request = ADAPTER.build_send(MESSAGE, {**SETTINGS, "base-url": "http://127.0.0.1:9/"})
    assert str(request.url) == "http://127.0.0.1:9/sms/json"


def test_unknown_signature_method_is_a_bad_request_naming_the_header() -> None:
    for build in (lambda s: ADAPTER.build_send(MESSAGE, s), ADAPTER.build_verify):
        with pytest.raises(BadRequest) as caught:
            build({**SETTINGS, "signature-method": "sha3"})
        assert caught.value.status == 400
        assert "Chan-Signature-Method" in caught.value.message


def test_accepted_single_part() -> None:
    accepted = ADAPTER.parse_send(answer("send_accepted.json"))
    assert accepted.vendor_message_id == "0A0000000123ABCD1"
    assert (accepted.segments, accepted.part_ids) == (1, ("0A0000000123ABCD1",))


def test_accepted_two_parts_lists_every_part() -> None:
    accepted = ADAPTER.parse_send(answer("send_two_parts.json"))
    assert accepted.vendor_message_id == "0A0000000123ABCD1"
    assert accepted.part_ids == ("0A0000000123ABCD1", "0A0000000123ABCD2")
    assert accepted.segments == 2


EXPECTED_CODES = {
    "1": (VendorThrottled, "throttled"), "2": (VendorRejected, "rejected"),
    "3": (VendorRejected, "rejected"), "4": (VendorAuthFailed, "vendor_auth_failed"),
    "5": (VendorUnavailable, "vendor_unavailable"), "6": (VendorRejected, "invalid_recipient"),
    "7": (VendorRejected, "blocked"), "8": (VendorAuthFailed, "vendor_account_suspended"),
    "9": (VendorAuthFailed, "insufficient_funds"), "10": (VendorUnavailable, "vendor_unavailable"),
    "11": (VendorAuthFailed, "vendor_account_inactive"),
    "12": (VendorRejected, "message_too_long"), "14": (VendorAuthFailed, "vendor_auth_failed"),
    "15": (VendorRejected, "sender_not_allowed"), "22": (VendorRejected, "invalid_recipient"),
    "23": (VendorRejected, "rejected"), "29": (VendorRejected, "rejected"),
    "32": (VendorAuthFailed, "vendor_auth_failed"), "33": (VendorRejected, "invalid_recipient"),
}


def test_every_documented_send_status_is_in_the_table() -> None:
    assert set(vonage.ERROR_CODES) == set(EXPECTED_CODES)


@pytest.mark.parametrize(("vendor_code", "kind", "code"), [
    pytest.param(code, kind, platform, id=f"{code}-{platform}")
    for code, (kind, platform) in EXPECTED_CODES.items()
])
def test_every_send_status_code_is_classified(vendor_code: str, kind: type[VendorError],
                                              code: str) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_send(refusal(vendor_code))
    assert (caught.value.code, caught.value.vendor_code) == (code, vendor_code)
    assert caught.value.retryable is (kind in (VendorThrottled, VendorUnavailable))


@pytest.mark.parametrize(("response", "kind", "status", "code"), [
    pytest.param(answer("send_missing_to.json"), VendorRejected, 422, "rejected", id="2-missing"),
    pytest.param(answer("send_bad_credentials.json"), VendorAuthFailed, 401,
                 "vendor_auth_failed", id="4-credentials"),
    pytest.param(answer("send_invalid_message.json"), VendorRejected, 422, "invalid_recipient",
                 id="6-invalid-message"),
    pytest.param(refusal("7", "Number barred"), VendorRejected, 422, "blocked", id="7-barred"),
    pytest.param(answer("send_partner_quota.json"), VendorAuthFailed, 401, "insufficient_funds",
                 id="9-out-of-credit"),
    pytest.param(refusal("29", "Non White-listed Destination"), VendorRejected, 422, "rejected",
                 id="29-demo"),
    pytest.param(refusal("99"), VendorRejected, 422, "rejected", id="unlisted-code"),
    pytest.param(answer("send_second_part_failed.json"), VendorUnavailable, 502,
                 "vendor_unavailable", id="second-part-5"),
    pytest.param(reply(401, text="Unauthorized"), VendorAuthFailed, 401,
                 "vendor_auth_failed", id="http-401"),
    pytest.param(reply(429, headers={"Retry-After": "4"}), VendorThrottled, 429,
                 "throttled", id="http-429"),
    pytest.param(reply(503, text="<html>down</html>"), VendorUnavailable, 502,
                 "vendor_unavailable", id="http-503"),
])
def test_documented_refusals(response: http.Response, kind: type[VendorError], status: int,
                             code: str) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_send(response)
    assert (caught.value.status, caught.value.code) == (status, code)


@pytest.mark.parametrize(("response", "seconds"), [
    pytest.param(answer("send_throttled.json"), 2.5, id="wait-2500ms"),
    pytest.param(refusal("1", "Throughput Rate Exceeded - please wait [ 250 ] and retry"), 1.0,
                 id="wait-under-a-second"),
    pytest.param(refusal("1", "Throttled"), 1.0, id="no-wait"),
])
def test_throttle_carries_retry_after_from_the_wait(response: http.Response,
                                                    seconds: float) -> None:
    with pytest.raises(VendorThrottled) as caught:
        ADAPTER.parse_send(response)
    assert (caught.value.retry_after, caught.value.vendor_code) == (seconds, "1")


def test_unreadable_200_is_ambiguous() -> None:
    with pytest.raises(AmbiguousOutcome):
        ADAPTER.parse_send(reply(200, text="<html>gateway</html>"))


def test_refusal_carries_vendor_text_but_no_secret() -> None:
    with pytest.raises(VendorRejected) as caught:
        ADAPTER.parse_send(answer("send_invalid_message.json"))
    assert "Unroutable message" in caught.value.message
    assert SECRET not in caught.value.body().decode() + repr(caught.value)


def test_verify_credentials_asks_for_the_balance_with_basic_auth() -> None:
    request = ADAPTER.build_verify({**SETTINGS, "base-url": "http://127.0.0.1:9"})
    assert (request.method, str(request.url)) == ("GET", "http://127.0.0.1:9/account/get-balance")
    assert request.headers["authorization"] == httpx.BasicAuth(KEY, SECRET)._auth_header
    ADAPTER.parse_verify(answer("balance.json"))


@pytest.mark.parametrize(("response", "kind"), [
    pytest.param(answer("balance_401.json", 401), VendorAuthFailed, id="401"),
    pytest.param(reply(500, text="oops"), VendorUnavailable, id="500"),
    pytest.param(reply(200, text="<html/>"), VendorUnavailable, id="200-no-value"),
])
def test_verify_credentials_refusals(response: http.Response, kind: type[VendorError]) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_verify(response)
    if kind is VendorAuthFailed:
        assert caught.value.message == "vonage: the API key and secret were not accepted"


def test_no_lookup_by_client_ref() -> None:
    assert ADAPTER.build_lookup(MESSAGE, SETTINGS) is None


# Official vectors: vonage-python-sdk http_client/tests/test_auth.py (vendors.md 8.6), and the
# pre-4.x SDK's test_check_signature for the default "MD5 hash" method.
P12 = {"param1": "value1", "param2": "value2", "timestamp": "1234567890"}


@pytest.mark.parametrize(("params", "secret", "method", "expected"), [
    pytest.param(P12, "signature_secret", "sha256",
                 "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287", id="sha256"),
    pytest.param(P12, "signature_secret", "md5", "724c2bf6ca423c36e20631b11d1c5753", id="md5"),
    pytest.param(P12, "signature_secret", "md5hash", "d72f75ac8cda9bbce891c4fa62bee6cd",
                 id="md5hash-computed"),
    pytest.param({"param": "value", "timestamp": "1234567890"}, "signature_secret", "md5",
                 "655a4d0b7f064dff438defc52b012cf5", id="md5-one-param"),
    pytest.param({"param1": "value&1", "param2": "value=2", "timestamp": "1234567890"},
                 "signature_secret", "md5", "2bbf0abafb2c55e5af6231513896a2ac",
                 id="md5-escaped-values"),
    pytest.param({"a": "1", "b": "2", "timestamp": "1461605396"}, "secret", "md5hash",
                 "6af838ef94998832dbfc29020b564830", id="md5hash-sdk2"),
])
def test_signature_matches_official_vectors(params: dict[str, str], secret: str, method: str,
                                            expected: str) -> None:
    assert vonage.signature(params, secret, method) == expected


def _dlr(status: str = "delivered", **changes: str) -> dict[str, str]:
    fields = json.loads((PAYLOADS / "dlr_delivered.json").read_text())
    return {**fields, "status": status, **changes}


def _signed(fields: dict[str, str], method: str = "md5hash", at: float = NOW) -> dict[str, str]:
    fields = {**fields, "timestamp": str(int(at)), "nonce": "ec11dd3e-1e7f-4db5-9467-82b02cd223b9"}
    return {**fields, "sig": vonage.signature(fields, SIG_SECRET, method).upper()}


def _post(fields: dict[str, str], url: str = URL) -> Callback:
    return Callback(url=url, headers={"content-type": "application/x-www-form-urlencoded"},
                    body=urlencode(fields).encode(), params=list(fields.items()))


def _get(fields: dict[str, str]) -> Callback:
    return Callback(url=f"{URL}&{urlencode(fields)}", method="GET", headers={}, body=b"",
                    params=list(fields.items()))


def _json(fields: dict[str, str]) -> Callback:
    return Callback(url=URL, headers={"content-type": "application/json"},
                    body=json.dumps(fields).encode(), params=[])


def _settings(method: str | None = None) -> dict[str, str]:
    extra = {"signature-method": method} if method else {}
    return {**SETTINGS, "signature-secret": SIG_SECRET, **extra}


@pytest.mark.parametrize("method", list(vonage.SIGNATURE_METHODS))
@pytest.mark.parametrize("shape", [_post, _get, _json], ids=["post-form", "get", "post-json"])
def test_signed_receipts_verify_in_every_method_and_shape(method: str, shape: object) -> None:
    assert callable(shape)
    ADAPTER.verify(shape(_signed(_dlr(), method)), _settings(method))


def test_default_method_is_md5hash() -> None:
    ADAPTER.verify(_post(_signed(_dlr(), "md5hash")), _settings())
    with pytest.raises(InvalidSignature):
        ADAPTER.verify(_post(_signed(_dlr(), "sha256")), _settings())


def test_get_receipt_signed_with_our_token_too_is_accepted() -> None:
    fields = {**_dlr(), "timestamp": str(int(NOW))}
    sig = vonage.signature({**fields, "m": "tok"}, SIG_SECRET, "sha256")
    ADAPTER.verify(_get({**fields, "sig": sig}), _settings("sha256"))


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda f: {**f, "status": "failed"}, id="changed-status"),
    pytest.param(lambda f: {k: v for k, v in f.items() if k != "sig"}, id="no-sig"),
    pytest.param(lambda f: {**f, "sig": "0" * 32}, id="wrong-sig"),
    pytest.param(lambda f: {**f, "client-ref": "another"}, id="changed-ref"),
])
def test_tampered_receipts_are_refused(tamper: object) -> None:
    assert callable(tamper)
    with pytest.raises(InvalidSignature):
        ADAPTER.verify(_post(tamper(_signed(_dlr(), "sha256"))), _settings("sha256"))


@pytest.mark.parametrize("extra", ["&extra=1", "&status=failed"], ids=["new", "conflicting"])
def test_unsigned_url_parameter_is_refused(extra: str) -> None:
    with pytest.raises(InvalidSignature):
        ADAPTER.verify(_post(_signed(_dlr()), url=URL + extra), _settings())


@pytest.mark.parametrize(("skew", "ok"), [
    pytest.param(0, True, id="now"), pytest.param(-299, True, id="299s-old"),
    pytest.param(-301, False, id="301s-old"), pytest.param(301, False, id="301s-ahead"),
])
def test_timestamp_must_be_fresh(skew: float, ok: bool) -> None:
    callback = _post(_signed(_dlr(), at=NOW + skew))
    if ok:
        ADAPTER.verify(callback, _settings())
    else:
        with pytest.raises(InvalidSignature):
            ADAPTER.verify(callback, _settings())


@pytest.mark.parametrize("stamp", [None, "nan", "1.78e9"], ids=["absent", "nan", "float"])
def test_signed_receipt_without_integer_timestamp_is_refused(stamp: str | None) -> None:
    fields = _dlr() if stamp is None else _dlr(timestamp=stamp)
    with pytest.raises(InvalidSignature):
        ADAPTER.verify(_post({**fields, "sig": vonage.signature(fields, SIG_SECRET)}), _settings())


def test_without_a_signature_secret_the_url_token_is_the_authentication() -> None:
    ADAPTER.verify(_post(_dlr()), SETTINGS)


@pytest.mark.parametrize("settings", [SETTINGS, _settings()], ids=["unsigned", "signed"])
def test_receipt_for_another_api_key_is_refused(settings: dict[str, str]) -> None:
    with pytest.raises(InvalidSignature):
        ADAPTER.verify(_post(_signed(_dlr(**{"api-key": "other999"}))), settings)


EXPECTED_STATUSES = {
    "accepted": Status.SENT, "buffered": Status.SENT, "delivered": Status.DELIVERED,
    "expired": Status.EXPIRED, "failed": Status.UNDELIVERED, "rejected": Status.REJECTED,
    "unknown": Status.FAILED,
}


def test_every_documented_receipt_status_is_mapped() -> None:
    assert set(vonage.STATUS_MAP) == set(EXPECTED_STATUSES)


@pytest.mark.parametrize(("vendor_status", "status"), [
    pytest.param(name, status, id=name) for name, status in EXPECTED_STATUSES.items()
])
def test_every_vonage_status_maps(vendor_status: str, status: Status) -> None:
    (update,) = ADAPTER.parse_status(_post(_dlr(vendor_status)))
    assert update.status is status
    assert update.vendor_message_id == update.part_id == "0A0000000123ABCD1"
    assert update.message_ref == MID
    assert update.from_number == "MyBrand"


def test_json_receipt_reads_every_field() -> None:
    (update,) = ADAPTER.parse_status(_json(_dlr()))
    assert update.status is Status.DELIVERED
    assert update.occurred_at == 1577887200.0  # scts 2001011400 = 2020-01-01 14:00 UTC
    assert (update.error_code, update.error_message) == (None, None)


def test_form_receipt_of_a_failed_part_carries_the_error() -> None:
    body = (PAYLOADS / "dlr_failed.form").read_bytes()
    callback = Callback(url=URL, headers={}, body=body, params=parse_qsl(body.decode()))
    (update,) = ADAPTER.parse_status(callback)
    assert (update.status, update.part_id) == (Status.UNDELIVERED, "0A0000000123ABCD2")
    assert (update.error_code, update.error_message) == ("2", "Absent Subscriber - Temporary")
    assert update.from_number == "+447700900000"


def test_get_receipt_without_client_ref() -> None:
    query = (PAYLOADS / "dlr_accepted_no_ref.query").read_text()
    callback = Callback(url=f"{URL}&{query}", method="GET", headers={}, body=b"",
                        params=parse_qsl(query))
    (update,) = ADAPTER.parse_status(callback)
    assert (update.status, update.message_ref) == (Status.SENT, None)


@pytest.mark.parametrize("callback", [
    pytest.param(_post(_dlr("teleported")), id="unknown-status"),
    pytest.param(Callback(url=URL, headers={}, body=b"not json", params=[]), id="garbage"),
])
def test_unreadable_or_unknown_receipts_are_ignored_not_raised(callback: Callback) -> None:
    assert ADAPTER.parse_status(callback) == []
