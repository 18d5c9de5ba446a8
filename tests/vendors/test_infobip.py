"""The Infobip adapter: the v3 send it builds, refusals inside a 200, reports, verify, look-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector import http
from connector.errors import (
    AmbiguousOutcome,
    VendorAuthFailed,
    VendorError,
    VendorRejected,
    VendorThrottled,
    VendorUnavailable,
)
from connector.model import Outgoing, Status
from connector.vendors import infobip
from connector.vendors.base import Callback
from tests.answers import reply

PAYLOADS = Path(__file__).parent / "payloads" / "infobip"
ADAPTER = infobip.Infobip()
KEY = "0123abcd-ib-api-key-secret"
BASE = "https://x9k2p.api.infobip.com"
SETTINGS = {"api-key": KEY, "base-url": BASE}
MID = "c0ffee00c0ffee00c0ffee00c0ffee00"
MESSAGE = Outgoing(message_id=MID, sender="MyBrand", to_e164="+447911123456", text="Hi there",
                   callback_url="https://connector.example/callbacks/infobip/status?m=tok")


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def answer(status: int, name: str, headers: dict[str, str] | None = None) -> http.Response:
    return reply(status, content=(PAYLOADS / name).read_bytes(), headers=headers)


def test_send_is_a_v3_json_post_with_app_auth_and_our_message_id() -> None:
    request = ADAPTER.build_send(MESSAGE, SETTINGS)
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/sms/3/messages"
    assert request.headers["authorization"] == f"App {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"messages": [{
        "sender": "MyBrand",
        "destinations": [{"to": "447911123456", "messageId": MID}],
        "content": {"text": "Hi there"},
        "webhooks": {"delivery": {"url": MESSAGE.callback_url, "intermediateReport": True},
                     "contentType": "application/json"},
    }]}


@pytest.mark.parametrize(("sender", "sent"), [
    pytest.param("MyBrand", "MyBrand", id="alphanumeric"),
    pytest.param("+15005550006", "15005550006", id="number-bare-digits"),
    pytest.param("12345", "12345", id="short-code"),
])
def test_sender_format(sender: str, sent: str) -> None:
    message = Outgoing(message_id=MID, sender=sender, to_e164="+447911123456", text="x",
                       callback_url="https://c.example/cb?m=t")
    body = json.loads(ADAPTER.build_send(message, SETTINGS).content)
    assert body["messages"][0]["sender"] == sent


@pytest.mark.parametrize(("base", "url"), [
    pytest.param("https://x9k2p.api.infobip.com/", f"{BASE}/sms/3/messages", id="slash"),
    pytest.param("x9k2p.api.infobip.com", f"{BASE}/sms/3/messages", id="portal-no-scheme"),
    pytest.param("http://127.0.0.1:9", "http://127.0.0.1:9/sms/3/messages", id="fake"),
])
def test_base_url_setting(base: str, url: str) -> None:
    assert str(ADAPTER.build_send(MESSAGE, {**SETTINGS, "base-url": base}).url) == url


def test_accepted_answer_gives_id_and_parts() -> None:
    accepted = ADAPTER.parse_send(answer(200, "send_accepted.json"))
    assert (accepted.vendor_message_id, accepted.segments, accepted.status) == (
        MID, 2, Status.ACCEPTED)


def _inside_200(group: str, status_id: int, name: str) -> http.Response:
    body = payload("send_rejected_dnd.json")
    body["messages"][0]["status"].update(groupName=group, id=status_id, name=name)
    return reply(200, json=body)


def test_duplicate_message_id_means_infobip_already_has_it() -> None:
    accepted = ADAPTER.parse_send(_inside_200("REJECTED", 23, "REJECTED_DUPLICATE_MESSAGE_ID"))
    assert accepted.vendor_message_id == MID


@pytest.mark.parametrize(("status_id", "name", "kind", "code"), [
    pytest.param(52, "REJECTED_DESTINATION", VendorRejected, "invalid_recipient", id="52"),
    pytest.param(51, "MISSING_TO", VendorRejected, "invalid_recipient", id="51"),
    pytest.param(8, "REJECTED_PREFIX_MISSING", VendorRejected, "invalid_recipient", id="8"),
    pytest.param(10, "REJECTED_DND", VendorRejected, "opted_out", id="10-dnd"),
    pytest.param(14, "REJECTED_DESTINATION_BLOCKLISTED", VendorRejected, "blocked", id="14"),
    pytest.param(11, "REJECTED_SOURCE", VendorRejected, "sender_not_allowed", id="11"),
    pytest.param(13, "REJECTED_SENDER", VendorRejected, "sender_not_allowed", id="13"),
    pytest.param(6, "REJECTED_NETWORK", VendorRejected, "region_not_permitted", id="6"),
    pytest.param(19, "REJECTED_ROUTE_NOT_AVAILABLE", VendorRejected, "region_not_permitted",
                 id="19"),
    pytest.param(25, "REJECTED_MESSAGE_TOO_LONG", VendorRejected, "message_too_long", id="25"),
    pytest.param(24, "REJECTED_INVALID_UDH", VendorRejected, "content_rejected", id="24"),
    pytest.param(87, "SIGNALS_BLOCKED", VendorRejected, "content_rejected", id="87"),
    pytest.param(12, "REJECTED_NOT_ENOUGH_CREDITS", VendorAuthFailed, "insufficient_funds",
                 id="12-credits"),
    pytest.param(17, "REJECTED_PREPAID_PACKAGE_EXPIRED", VendorAuthFailed,
                 "insufficient_funds", id="17"),
    pytest.param(21, "REJECTED_SYSTEM_ERROR", VendorUnavailable, "vendor_unavailable",
                 id="21-retry"),
    pytest.param(20, "REJECTED_FLOODING_FILTER", VendorRejected, "rejected", id="unlisted"),
])
def test_refusals_inside_a_200_are_classified_by_status_id(
        status_id: int, name: str, kind: type[VendorError], code: str) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_send(_inside_200("REJECTED", status_id, name))
    assert caught.value.code == code
    assert caught.value.vendor_code == name
    assert caught.value.retryable is (kind is VendorUnavailable)


def test_every_refusal_id_is_tested() -> None:
    tested = {"8", "51", "52", "10", "14", "11", "13", "6", "19", "25", "24", "87", "12", "17",
              "21"}
    assert set(infobip.REFUSALS) == tested


def test_undeliverable_inside_a_200_is_a_refusal() -> None:
    with pytest.raises(VendorRejected) as caught:
        ADAPTER.parse_send(_inside_200("UNDELIVERABLE", 31, "UNDELIVERABLE_NOT_SENT"))
    assert (caught.value.code, caught.value.status) == ("rejected", 422)


def test_refusal_by_group_id_without_group_name() -> None:
    body = payload("send_rejected_dnd.json")
    del body["messages"][0]["status"]["groupName"]
    with pytest.raises(VendorRejected, match="REJECTED_DND"):
        ADAPTER.parse_send(reply(200, json=body))


@pytest.mark.parametrize(("response", "kind", "status", "code", "vendor_code"), [
    pytest.param(answer(401, "error_401.json"), VendorAuthFailed, 401, "vendor_auth_failed",
                 "E401", id="E401"),
    pytest.param(answer(401, "legacy_401.json"), VendorAuthFailed, 401, "vendor_auth_failed",
                 "UNAUTHORIZED", id="legacy-401"),
    pytest.param(answer(403, "error_403.json"), VendorAuthFailed, 401, "vendor_auth_failed",
                 "E403", id="E403-scope"),
    pytest.param(answer(429, "error_429.json"), VendorThrottled, 429, "throttled", "E429",
                 id="E429"),
    pytest.param(answer(429, "legacy_429.json"), VendorThrottled, 429, "throttled",
                 "TOO_MANY_REQUESTS", id="legacy-429"),
    pytest.param(answer(500, "error_500.json"), VendorUnavailable, 502, "vendor_unavailable",
                 "E500", id="E500"),
    pytest.param(reply(503, text="<html>down</html>"), VendorUnavailable, 502,
                 "vendor_unavailable", None, id="503-html"),
    pytest.param(answer(400, "error_400.json"), VendorRejected, 422, "rejected", "E400",
                 id="E400"),
    pytest.param(answer(400, "error_400_to.json"), VendorRejected, 422, "invalid_recipient",
                 "E400", id="E400-violation-to"),
    pytest.param(answer(400, "legacy_400.json"), VendorRejected, 422, "rejected",
                 "BAD_REQUEST", id="legacy-400"),
])
def test_http_errors_are_classified(response: http.Response, kind: type[VendorError],
                                    status: int, code: str, vendor_code: str | None) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_send(response)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.vendor_code == vendor_code
    assert caught.value.retryable is (status in (429, 502))


def test_throttle_keeps_retry_after_and_error_says_what_infobip_said() -> None:
    with pytest.raises(VendorThrottled) as caught:
        ADAPTER.parse_send(answer(429, "error_429.json", {"Retry-After": "4"}))
    assert caught.value.retry_after == 4.0
    assert "Too many requests sent." in caught.value.message


def test_violations_appear_in_the_message() -> None:
    with pytest.raises(VendorRejected) as caught:
        ADAPTER.parse_send(answer(400, "error_400.json"))
    assert "messages[0].content.text: must not be null" in caught.value.message


@pytest.mark.parametrize("content", [b"<html>ok</html>", b'{"bulkId": "1", "messages": []}'])
def test_unreadable_200_is_ambiguous_so_the_look_up_decides(content: bytes) -> None:
    with pytest.raises(AmbiguousOutcome):
        ADAPTER.parse_send(reply(200, content=content))


def test_errors_never_carry_the_api_key() -> None:
    shown = [repr(ADAPTER.build_send(MESSAGE, SETTINGS)), repr(ADAPTER)]
    for response in (answer(401, "error_401.json"), answer(400, "error_400.json"),
                     _inside_200("REJECTED", 10, "REJECTED_DND")):
        with pytest.raises(VendorError) as caught:
            ADAPTER.parse_send(response)
        shown += [str(caught.value), repr(caught.value), caught.value.body().decode()]
    assert not [text for text in shown if KEY in text]


# No vendors.md section 8 vector exists for Infobip: its per-message reports carry no
# signature (vendors.md 5.4), so the connector's signed ?m= token is the whole check.
def _callback(body: Any) -> Callback:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Callback(url=MESSAGE.callback_url, headers={"content-type": "application/json"},
                    body=raw, params=[])


def test_verify_accepts_reports_because_infobip_signs_none() -> None:
    ADAPTER.verify(_callback(payload("dlr_delivered.json")), SETTINGS)
    ADAPTER.verify(_callback(payload("dlr_delivered.json")), {})


def _report(group: str, status_id: int, name: str = "X") -> dict[str, Any]:
    body: dict[str, Any] = payload("dlr_delivered.json")
    body["results"][0]["status"].update(groupName=group, id=status_id, name=name)
    return body


@pytest.mark.parametrize(("group", "status_id", "status"), [
    pytest.param("ACCEPTED", 0, Status.ACCEPTED, id="ACCEPTED"),
    pytest.param("PENDING", 26, Status.ACCEPTED, id="PENDING_ACCEPTED-26"),
    pytest.param("PENDING", 3, Status.SENT, id="PENDING_WAITING_DELIVERY-3"),
    pytest.param("PENDING", 7, Status.SENT, id="PENDING_ENROUTE-7"),
    pytest.param("DELIVERED", 2, Status.SENT, id="DELIVERED_TO_OPERATOR-2"),
    pytest.param("DELIVERED", 5, Status.DELIVERED, id="DELIVERED_TO_HANDSET-5"),
    pytest.param("UNDELIVERABLE", 9, Status.UNDELIVERED, id="UNDELIVERABLE-9"),
    pytest.param("EXPIRED", 15, Status.EXPIRED, id="EXPIRED-15"),
    pytest.param("EXPIRED", 29, Status.EXPIRED, id="EXPIRED_DLR_UNKNOWN-29"),
    pytest.param("REJECTED", 10, Status.REJECTED, id="REJECTED-10"),
])
def test_report_statuses_map(group: str, status_id: int, status: Status) -> None:
    (update,) = ADAPTER.parse_status(_callback(_report(group, status_id)))
    assert update.status is status
    assert (update.message_ref, update.vendor_message_id) == (MID, MID)


def test_every_status_map_key_and_override_is_covered() -> None:
    assert set(infobip.STATUS_MAP) == {"ACCEPTED", "PENDING", "DELIVERED", "UNDELIVERABLE",
                                       "EXPIRED", "REJECTED"}
    assert set(infobip.STATUS_BY_ID) == {("PENDING", 3), ("PENDING", 7), ("DELIVERED", 2)}


def test_delivered_report_reads_time_sender_and_parts() -> None:
    (update,) = ADAPTER.parse_status(_callback(payload("dlr_delivered.json")))
    assert update.occurred_at == 1573311605.0  # doneAt 2019-11-09T16:00:05.000+0100
    assert (update.from_number, update.segments) == ("MyBrand", 2)
    assert (update.error_code, update.error_message) == (None, None)


def test_undeliverable_report_carries_the_error_id() -> None:
    (update,) = ADAPTER.parse_status(_callback(payload("dlr_undeliverable.json")))
    assert (update.status, update.error_code) == (Status.UNDELIVERED, "27")
    assert update.error_message == "Absent Subscriber"


def test_failure_without_an_error_object_names_the_status() -> None:
    body = _report("REJECTED", 10, "REJECTED_DND")
    del body["results"][0]["error"]
    (update,) = ADAPTER.parse_status(_callback(body))
    assert (update.status, update.error_code) == (Status.REJECTED, "REJECTED_DND")


def test_one_request_with_several_results_gives_one_update_each() -> None:
    updates = ADAPTER.parse_status(_callback(payload("dlr_two_results.json")))
    assert [(u.message_ref, u.status, u.error_code) for u in updates] == [
        (MID, Status.SENT, None),
        ("12db39c3-7822-4e72-a3ec-c87442c0ffc5", Status.EXPIRED, "EXPIRED_EXPIRED")]


@pytest.mark.parametrize("body", [
    pytest.param(_report("TELEPORTED", 99), id="unknown-group"),
    pytest.param(b"<xml/>", id="not-json"),
    pytest.param({"results": []}, id="empty"),
])
def test_unknown_or_unreadable_reports_are_ignored_not_raised(body: Any) -> None:
    assert ADAPTER.parse_status(_callback(body)) == []


def test_verify_credentials_reads_the_balance() -> None:
    request = ADAPTER.build_verify(SETTINGS)
    assert (request.method, str(request.url)) == ("GET", f"{BASE}/account/1/balance")
    assert request.headers["authorization"] == f"App {KEY}"
    ADAPTER.parse_verify(answer(200, "balance.json"))
    ADAPTER.parse_verify(answer(403, "error_403.json"))  # a send-only key still works


@pytest.mark.parametrize(("response", "kind"), [
    pytest.param(answer(401, "error_401.json"), VendorAuthFailed, id="401"),
    pytest.param(answer(429, "error_429.json"), VendorThrottled, id="429"),
    pytest.param(answer(500, "error_500.json"), VendorUnavailable, id="500"),
])
def test_verify_credentials_failures(response: http.Response, kind: type[VendorError]) -> None:
    with pytest.raises(kind) as caught:
        ADAPTER.parse_verify(response)
    if kind is VendorAuthFailed:
        assert caught.value.message == "infobip: the API key was not accepted"


def test_look_up_asks_the_logs_for_our_message_id() -> None:
    request = ADAPTER.build_lookup(MESSAGE, SETTINGS)
    assert request is not None
    assert (request.method, httpx.URL(request.url).path) == ("GET", "/sms/3/logs")
    assert httpx.URL(request.url).params["messageId"] == MID
    assert request.headers["authorization"] == f"App {KEY}"


def test_look_up_answers() -> None:
    found = ADAPTER.parse_lookup(answer(200, "logs_found.json"))
    assert found is not None and (found.vendor_message_id, found.segments) == (MID, 1)
    assert ADAPTER.parse_lookup(answer(200, "logs_empty.json")) is None
    # Infobip refused that attempt: nothing went out, so a new attempt is safe.
    assert ADAPTER.parse_lookup(answer(200, "logs_rejected.json")) is None


@pytest.mark.parametrize(("response", "kind"), [
    pytest.param(answer(401, "error_401.json"), VendorAuthFailed, id="401"),
    pytest.param(answer(403, "error_403.json"), VendorAuthFailed, id="403-no-logs-scope"),
    pytest.param(answer(500, "error_500.json"), VendorUnavailable, id="500"),
])
def test_failed_look_up_raises(response: http.Response, kind: type[VendorError]) -> None:
    with pytest.raises(kind):
        ADAPTER.parse_lookup(response)
