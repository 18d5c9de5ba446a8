"""The platform's retry contract at /sms/send: every outcome's status code and body."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import TOKEN, Connector, checked, headers, row, send_body
from tests.e2e.test_spine import send
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e


def error(answer: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = answer.json()["error"]
    assert set(body) == {"code", "message", "retryable", "vendor_code"}
    return body


@pytest.mark.parametrize(("canned", "status", "code", "retryable"), [
    pytest.param((400, {"code": 21211, "message": "bad To", "status": 400}), 422,
                 "invalid_recipient", False, id="21211-invalid-recipient"),
    pytest.param((400, {"code": 21610, "message": "unsubscribed", "status": 400}), 422,
                 "opted_out", False, id="21610-opted-out"),
    pytest.param((401, {"code": 20003, "message": "Authenticate", "status": 401}), 401,
                 "vendor_auth_failed", False, id="20003-auth"),
    pytest.param((429, None, {"Retry-After": "7"}), 429, "throttled", True, id="20429-throttled"),
    pytest.param((500, None), 502, "vendor_unavailable", True, id="500"),
    pytest.param((503, b"<html>down</html>"), 502, "vendor_unavailable", True, id="503-html"),
])
def test_vendor_outcomes_map_to_platform_statuses(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver,
        canned: tuple[Any, ...], status: int, code: str, retryable: bool) -> None:
    twilio.queue(*canned)
    answer = send(connector, twilio, send_body(receiver))
    assert answer.status_code == status
    body = error(answer)
    assert (body["code"], body["retryable"]) == (code, retryable)
    if status == 429:
        assert answer.headers["retry-after"] == "7"


def test_retryable_outcome_lets_a_repeat_send_again(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(503)
    assert send(connector, twilio, send_body(receiver)).status_code == 502
    assert send(connector, twilio, send_body(receiver)).status_code == 200
    assert twilio.create_calls == 2


def test_permanent_outcome_is_replayed_without_a_vendor_call(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(400, {"code": 21610, "message": "unsubscribed", "status": 400})
    first = send(connector, twilio, send_body(receiver))
    again = send(connector, twilio, send_body(receiver))
    assert (first.status_code, again.status_code) == (422, 422)
    assert first.content == again.content
    assert twilio.create_calls == 1


def test_no_request_id_means_no_dedupe(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    for request_id in (None, ""):
        body = send_body(receiver, request_id=request_id)
        assert send(connector, twilio, body).status_code == 200
        assert send(connector, twilio, body).status_code == 200
    assert twilio.create_calls == 4


def test_timeout_is_ambiguous_and_never_resent_at_most_once(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VENDOR_TIMEOUT="0.5")
    twilio.queue(201, None, delay=3)  # Twilio creates it, but answers too late
    first = send(connector, twilio, send_body(receiver))
    assert first.status_code == 502
    assert error(first)["code"] == "ambiguous_outcome"
    repeat = send(connector, twilio, send_body(receiver))
    assert repeat.content == first.content
    assert twilio.create_calls == 1
    # the message did go out: its callback still lands and the platform hears of it
    twilio.send_status(twilio.messages[0]["sid"], "delivered")
    assert receiver.wait_for(1)[0]["status"] == "delivered"


def test_callback_before_the_send_answer_is_stored_still_matches(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(201, None, delay=1.5)
    answers: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(send(connector, twilio, send_body(receiver))))
    thread.start()
    deadline = time.monotonic() + 5
    while not twilio.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    sid = twilio.messages[0]["sid"]
    assert twilio.send_status(sid, "delivered").status_code == 204
    thread.join()
    assert answers[0].status_code == 200
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["vendor_message_id"]) == ("delivered", sid)
    assert row(connector, answers[0].json()["message_id"])["status"] == "delivered"


@pytest.mark.parametrize(("mutate", "code"), [
    pytest.param(lambda b: b.pop("recipient"), "invalid_field", id="missing-recipient"),
    pytest.param(lambda b: b.update(message=42), "invalid_field", id="message-not-string"),
    pytest.param(lambda b: b.update(message=""), "invalid_field", id="empty-message"),
    pytest.param(lambda b: b.update(recipient="447911123456"), "invalid_recipient",
                 id="recipient-without-00"),
    pytest.param(lambda b: b.update(sender="Way-too-long-name"), "invalid_sender",
                 id="bad-sender"),
    pytest.param(lambda b: b.pop("callback_url"), "invalid_field", id="no-callback-url"),
    pytest.param(lambda b: b.update(custom_data="x" * 4097), "invalid_field",
                 id="custom-data-too-big"),
    pytest.param(lambda b: b.update(callback_url="ftp://127.0.0.1/r"), "url_refused",
                 id="callback-not-http"),
    pytest.param(lambda b: b.update(request_id="req\x00-1"), "invalid_field",
                 id="request-id-with-nul"),
])
def test_bad_requests_are_400_and_call_nobody(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver,
        mutate: Any, code: str) -> None:
    body = send_body(receiver)
    mutate(body)
    answer = send(connector, twilio, body)
    assert answer.status_code == 400, answer.text
    assert error(answer)["code"] == code
    assert twilio.create_calls == 0


def test_malformed_json_is_400(connector: Connector, twilio: FakeTwilio) -> None:
    answer = checked(httpx.post(connector.url + "/sms/send", content=b"{not json",
                                headers=headers(twilio)))
    assert answer.status_code == 400
    assert error(answer)["code"] == "malformed_json"


def test_missing_setting_names_the_header(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    hdrs = headers(twilio)
    del hdrs["Chan-Auth-Token"]
    answer = checked(httpx.post(connector.url + "/sms/send", json=send_body(receiver),
                                headers=hdrs))
    assert answer.status_code == 400
    assert "Chan-Auth-Token" in error(answer)["message"]
    assert twilio.create_calls == 0


def test_webhook_url_alias_is_accepted(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    body = send_body(receiver)
    body["webhook_url"] = body.pop("callback_url")
    assert send(connector, twilio, body).status_code == 200
    twilio.send_status(twilio.messages[0]["sid"], "delivered")
    assert receiver.wait_for(1)[0]["status"] == "delivered"


def test_oversized_body_is_413(connector: Connector, twilio: FakeTwilio,
                               receiver: ReportReceiver) -> None:
    body = send_body(receiver, metadata={"pad": "x" * 70_000})
    answer = send(connector, twilio, body)
    assert answer.status_code == 413
    assert error(answer)["code"] == "payload_too_large"


def test_message_over_1600_characters_is_422(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    answer = send(connector, twilio, send_body(receiver, message="x" * 1601))
    assert answer.status_code == 422
    assert error(answer)["code"] == "message_too_long"
    assert twilio.create_calls == 0


def test_private_callback_url_refused_unless_allowed(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_ALLOW_PRIVATE_NETWORKS="false")
    answer = send(connector, twilio, send_body(receiver))
    assert answer.status_code == 400
    assert error(answer)["code"] == "url_refused"
    assert twilio.create_calls == 0


def test_unknown_vendor_base_url_host_is_refused(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VENDOR_HOSTS="")
    answer = send(connector, twilio, send_body(receiver))
    assert answer.status_code == 400
    assert "allow-list" in error(answer)["message"]


def test_logs_hold_no_credential_and_no_full_number(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    send(connector, twilio, send_body(receiver))
    twilio.queue(401, {"code": 20003, "message": "Authenticate", "status": 401})
    send(connector, twilio, send_body(receiver, request_id="r2"))
    twilio.send_status(twilio.messages[0]["sid"], "delivered")
    receiver.wait_for(1)
    logs = connector.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" for line in lines)
    assert TOKEN not in logs
    assert not re.search(r"447911123456", logs)


@pytest.mark.parametrize(("env", "changes", "code"), [
    pytest.param({"CONNECTOR_ALLOWED_REGIONS": "DE"}, {}, "region_not_permitted",
                 id="region"),
    pytest.param({}, {"recipient": "0014155552671"}, "sender_not_allowed",
                 id="alpha-sender-to-us"),
    pytest.param({"CONNECTOR_REFUSE_LANDLINES": "true"}, {"recipient": "00442071838750"},
                 "landline", id="landline"),
])
def test_destination_rules_refuse_before_the_vendor(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver,
        env: dict[str, str], changes: dict[str, str], code: str) -> None:
    connector = start_connector(**env)
    answer = send(connector, twilio, send_body(receiver, **changes))
    assert answer.status_code == 422
    assert error(answer)["code"] == code
    assert twilio.create_calls == 0


def test_account_rate_limit_answers_429_with_an_accurate_wait(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_RATE_LIMITS="twilio=2")
    answers = [send(connector, twilio, send_body(receiver, request_id=f"rate-{i}"))
               for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].headers["retry-after"] == "1"
    assert error(answers[2])["code"] == "throttled"
    assert twilio.create_calls == 2
    time.sleep(1.0)
    # the throttled request_id was not kept: the platform's retry sends it
    assert send(connector, twilio, send_body(receiver, request_id="rate-2")).status_code == 200


def test_vendor_429_pauses_the_whole_account(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(429, None, {"Retry-After": "30"})
    first = send(connector, twilio, send_body(receiver, request_id="p-1"))
    second = send(connector, twilio, send_body(receiver, request_id="p-2"))
    assert (first.status_code, second.status_code) == (429, 429)
    assert 28 <= int(second.headers["retry-after"]) <= 30
    assert twilio.create_calls == 1  # the second never reached the vendor
