"""Send -> Bird -> signed webhook event -> the platform's report, over real loopback HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Connector, checked, row, send_body
from tests.fakes.bird import FakeBird
from tests.fakes.receiver import ReportReceiver

pytestmark = pytest.mark.e2e

KEY = "bird-e2e-access-key-" + "s3cr3t" * 3
SIGNING = "bird-e2e-signing-key-" + "k3y" * 4
WS, CHANNEL = "0b9a3c4e-ws", "5d6e7f80-ch"
NUMBER = "+31970102030"


class CheckedBird(FakeBird):
    """The Bird fake, with every webhook exchange held to openapi.yaml."""

    def send_status(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return checked(super().send_status(*args, **kwargs))


@pytest.fixture
def bird() -> Iterator[FakeBird]:
    fake = CheckedBird(KEY, WS, CHANNEL, signing_key=SIGNING, channel_number=NUMBER).start()
    yield fake
    fake.stop()
    assert fake.violations == [], "the connector sent a body Bird would refuse"
    assert fake.unused_canned() == [], "a canned Bird answer was never asked for"


def headers(bird: FakeBird, **changes: str | None) -> dict[str, str]:
    settings: dict[str, str | None] = {
        "Chan-Vendor": "bird", "Chan-Access-Key": KEY, "Chan-Workspace-Id": WS,
        "Chan-Channel-Id": CHANNEL, "Chan-Signing-Key": SIGNING, "Chan-Base-Url": bird.base_url,
        **changes}
    return {k: v for k, v in settings.items() if v is not None}


def send(connector: Connector, bird: FakeBird, body: dict[str, Any],
         **changes: str | None) -> httpx.Response:
    # Bird's workspace webhook subscription points at the connector that sends.
    bird.webhook_url = f"{connector.url}/callbacks/bird/status"
    return checked(httpx.post(connector.url + "/sms/send", json=body,
                              headers=headers(bird, **changes), timeout=30))




def test_round_trip_reports_delivery_with_exact_custom_data(
        connector: Connector, bird: FakeBird, receiver: ReportReceiver) -> None:
    body = send_body(receiver)
    answer = send(connector, bird, body)
    assert answer.status_code == 200, answer.text
    accepted = answer.json()
    (sent,) = bird.messages
    assert (accepted["vendor"], accepted["vendor_message_id"]) == ("bird", sent["id"])
    assert sent["request"] == {
        "receiver": {"contacts": [{"identifierKey": "phonenumber",
                                   "identifierValue": "+447911123456"}]},
        "body": {"type": "text", "text": {"text": "Your code is 1234"}},
        "reference": accepted["message_id"],
    }

    assert bird.send_status(sent["id"], "sent").status_code == 204
    assert bird.send_status(sent["id"], "delivered").status_code == 204
    (event,) = receiver.wait_for(1)
    assert event["custom_data"] == body["custom_data"]
    assert (event["status"], event["to"]) == ("delivered", "00447911123456")
    assert (event["vendor"], event["vendor_message_id"]) == ("bird", sent["id"])
    assert (event["message_id"], event["request_id"]) == (accepted["message_id"], "req-1")
    assert event["from"] == NUMBER  # the channel's number: Bird sends from the channel
    assert row(connector, accepted["message_id"])["status"] == "delivered"
    assert KEY not in connector.logs() and SIGNING not in connector.logs()


@pytest.mark.parametrize(("vendor_status", "kwargs", "code"), [
    pytest.param("delivery_failed", {"reason": "details: unknown subscriber; reason: "
                                     "unknown_subscriber; code: 1", "failure_code": 15005,
                                     "source_code": "1"}, "15005", id="delivery_failed-15005"),
    # An expiry reports code `expired` (issue #6); Bird's 15010 moves to error_message.
    pytest.param("delivery_failed", {"reason": "DLR not received", "failure_code": 15010},
                 "expired", id="expired"),
    pytest.param("sending_failed", {"reason": "system failure", "failure_code": 15001,
                                    "source_code": "34"}, "15001", id="sending_failed-15001"),
    pytest.param("rejected", {"failure_code": 11001}, "11001", id="rejected-11001"),
])
def test_failures_become_failed_reports_with_the_failure_code(
        connector: Connector, bird: FakeBird, receiver: ReportReceiver,
        vendor_status: str, kwargs: dict[str, Any], code: str) -> None:
    assert send(connector, bird, send_body(receiver)).status_code == 200
    assert bird.send_status(bird.messages[0]["id"], vendor_status, **kwargs).status_code == 204
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"]) == ("failed", code)


def test_forged_stale_or_unsigned_callbacks_are_403_and_change_nothing(
        connector: Connector, bird: FakeBird, receiver: ReportReceiver) -> None:
    message_id = send(connector, bird, send_body(receiver)).json()["message_id"]
    vendor_id = bird.messages[0]["id"]
    forged = bird.send_status(vendor_id, "delivered", signature_override="A" * 43 + "=")
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "invalid_signature"
    stale = bird.send_status(vendor_id, "delivered", timestamp=int(time.time()) - 600)
    assert stale.status_code == 403
    assert row(connector, message_id)["status"] == "accepted"
    assert receiver.posts == []


def test_without_a_signing_key_callbacks_cannot_be_trusted(
        connector: Connector, bird: FakeBird, receiver: ReportReceiver) -> None:
    message_id = send(connector, bird, send_body(receiver),
                      **{"Chan-Signing-Key": None}).json()["message_id"]
    assert bird.send_status(bird.messages[0]["id"], "delivered").status_code == 403
    assert row(connector, message_id)["status"] == "accepted"


def test_callback_before_the_send_answer_matches_by_reference(
        connector: Connector, bird: FakeBird, receiver: ReportReceiver) -> None:
    bird.queue(202, None, delay=1.5)  # Bird creates the message, then answers late
    answers: list[httpx.Response] = []
    sending = threading.Thread(target=lambda: answers.append(
        send(connector, bird, send_body(receiver))))
    sending.start()
    deadline = time.monotonic() + 10
    while not bird.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bird.send_status(bird.messages[0]["id"], "delivered").status_code == 204
    sending.join(15)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["message_id"]) == ("delivered", answer.json()["message_id"])
    assert row(connector, answer.json()["message_id"])["status"] == "delivered"


@pytest.mark.parametrize(("canned", "status", "code"), [
    pytest.param((422, {"code": "InvalidPayload", "message": "The request did not pass "
                        "validation", "details": {"receiver": ["invalid"]}}),
                 422, "rejected", id="422-InvalidPayload"),
    pytest.param((429, None, {"Retry-After": "4"}), 429, "throttled", id="429"),
    pytest.param((503, b"<html>down</html>"), 502, "vendor_unavailable", id="503"),
])
def test_vendor_errors_reach_the_platform_as_documented(
        connector: Connector, bird: FakeBird, receiver: ReportReceiver,
        canned: tuple[Any, ...], status: int, code: str) -> None:
    bird.queue(*canned)
    answer = send(connector, bird, send_body(receiver))
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    if status == 429:
        assert answer.headers["retry-after"] == "4"


def test_wrong_access_key_is_401(connector: Connector, bird: FakeBird,
                                 receiver: ReportReceiver) -> None:
    answer = send(connector, bird, send_body(receiver), **{"Chan-Access-Key": "wrong"})
    assert answer.status_code == 401
    assert answer.json()["error"]["vendor_code"] == "Unauthorized"


def test_ambiguous_send_is_reconciled_by_reference(
        start_connector: Any, bird: FakeBird, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VENDOR_TIMEOUT="1")
    bird.queue(202, None, delay=3)  # Bird takes it; the connector's read times out
    answer = send(connector, bird, send_body(receiver))
    assert answer.status_code == 200, answer.text
    (sent,) = bird.messages
    assert answer.json()["vendor_message_id"] == sent["id"]
    assert bird.lookups[-1]["reference"] == answer.json()["message_id"]


def test_ambiguous_send_bird_never_took_is_safe_to_retry(
        start_connector: Any, bird: FakeBird, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VENDOR_TIMEOUT="1")
    bird.queue(503, None, delay=3)  # nothing is created, and the answer comes too late
    answer = send(connector, bird, send_body(receiver))
    assert answer.status_code in (502, 503), answer.text
    assert answer.json()["error"]["retryable"] is True
    assert bird.messages == [] and len(bird.lookups) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_verify_with_working_credentials_is_200(connector: Connector, bird: FakeBird,
                                                method: str) -> None:
    answer = checked(httpx.request(method, connector.url + "/sms/verify",
                                   headers=headers(bird)))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["ok"], answer.json()["vendor"]) == (True, "bird")


@pytest.mark.parametrize(("changes", "status", "words"), [
    pytest.param({"Chan-Access-Key": "wrong"}, 401, "access key", id="wrong-key"),
    pytest.param({"Chan-Channel-Id": "no-such-channel"}, 422,
                 "workspace or channel not found", id="unknown-channel"),
])
def test_verify_with_bad_settings_says_what_is_wrong(
        connector: Connector, bird: FakeBird, changes: dict[str, str], status: int,
        words: str) -> None:
    answer = checked(httpx.get(connector.url + "/sms/verify", headers=headers(bird, **changes)))
    assert answer.status_code == status
    assert answer.json()["ok"] is False and words in answer.json()["message"]
    assert "wrong" not in answer.text
