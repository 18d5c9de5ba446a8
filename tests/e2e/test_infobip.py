"""Send -> Infobip -> delivery report -> the platform's report, over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Connector, checked, row, send_body
from tests.fakes.infobip import FakeInfobip
from tests.fakes.receiver import ReportReceiver

pytestmark = pytest.mark.e2e

KEY = "infobip-e2e-key-" + "s3cr3t" * 3


class CheckedInfobip(FakeInfobip):
    """The Infobip fake, with every report exchange held to openapi.yaml."""

    def send_status(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return checked(super().send_status(*args, **kwargs))


@pytest.fixture
def infobip() -> Iterator[FakeInfobip]:
    fake = CheckedInfobip([KEY]).start()
    yield fake
    fake.stop()
    assert fake.contract_violations == [], "against the vendor's own document"
    assert fake.schema_violations == [], "the connector sent a request Infobip's schema forbids"
    assert fake.unused_canned() == [], "a canned Infobip answer was never asked for"


def headers(infobip: FakeInfobip, key: str = KEY) -> dict[str, str]:
    return {"Chan-Vendor": "infobip", "Chan-Api-Key": key, "Chan-Base-Url": infobip.base_url}


def send(connector: Connector, infobip: FakeInfobip, body: dict[str, Any],
         key: str = KEY) -> httpx.Response:
    return checked(httpx.post(connector.url + "/sms/send", json=body,
                              headers=headers(infobip, key), timeout=30))




def test_round_trip_reports_delivery_with_exact_custom_data(
        connector: Connector, infobip: FakeInfobip, receiver: ReportReceiver) -> None:
    body = send_body(receiver)
    answer = send(connector, infobip, body)
    assert answer.status_code == 200, answer.text
    accepted = answer.json()
    (sent,) = infobip.messages
    # Our id travels as Infobip's messageId, so the vendor id is the connector's own.
    assert accepted["vendor"] == "infobip"
    assert accepted["vendor_message_id"] == sent["message_id"] == accepted["message_id"]
    assert (sent["to"], sent["sender"], sent["text"]) == (
        "447911123456", "MyBrand", "Your code is 1234")
    assert "?m=" in sent["callback_url"] and sent["intermediate"]

    assert infobip.send_status(sent["message_id"], "PENDING_ENROUTE").status_code == 204
    assert infobip.send_status(sent["message_id"], "DELIVERED_TO_HANDSET").status_code == 204
    (event,) = receiver.wait_for(1)
    assert event["custom_data"] == body["custom_data"]
    assert (event["status"], event["to"], event["from"]) == (
        "delivered", "00447911123456", "MyBrand")
    assert (event["vendor"], event["vendor_message_id"]) == ("infobip", sent["message_id"])
    assert (event["message_id"], event["request_id"]) == (accepted["message_id"], "req-1")
    assert row(connector, accepted["message_id"])["status"] == "delivered"
    assert KEY not in connector.logs()


def test_undeliverable_becomes_failed_report_with_the_error_id(
        connector: Connector, infobip: FakeInfobip, receiver: ReportReceiver) -> None:
    assert send(connector, infobip, send_body(receiver)).status_code == 200
    infobip.send_status(infobip.messages[0]["message_id"], "UNDELIVERABLE_NOT_DELIVERED",
                        "EC_ABSENT_SUBSCRIBER")
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"]) == ("failed", "27")


def test_forged_or_missing_token_is_403_and_changes_nothing(
        connector: Connector, infobip: FakeInfobip, receiver: ReportReceiver) -> None:
    message_id = send(connector, infobip, send_body(receiver)).json()["message_id"]
    url = infobip.message(message_id)["callback_url"].split("?m=")[0]
    for forged in (url + "?m=forged.token", url):
        answer = infobip.send_status(message_id, "DELIVERED_TO_HANDSET", url_override=forged)
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "invalid_signature"
    assert row(connector, message_id)["status"] == "accepted"
    assert receiver.posts == []


@pytest.mark.parametrize(("reject", "status", "code"), [
    pytest.param(10, 422, "opted_out", id="REJECTED_DND"),
    pytest.param(52, 422, "invalid_recipient", id="REJECTED_DESTINATION"),
    pytest.param(21, 502, "vendor_unavailable", id="REJECTED_SYSTEM_ERROR"),
])
def test_refusal_inside_a_200_reaches_the_platform_classified(
        connector: Connector, infobip: FakeInfobip, receiver: ReportReceiver,
        reject: int, status: int, code: str) -> None:
    infobip.queue(200, reject=reject)
    answer = send(connector, infobip, send_body(receiver))
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code


def test_infobip_throttling_is_429_with_retry_after(
        connector: Connector, infobip: FakeInfobip, receiver: ReportReceiver) -> None:
    infobip.queue(429, headers={"Retry-After": "5"})
    answer = send(connector, infobip, send_body(receiver))
    assert (answer.status_code, answer.headers["retry-after"]) == (429, "5")
    assert answer.json()["error"]["vendor_code"] == "E429"
    # retryable, but the account now holds for Infobip's Retry-After: no second vendor call
    again = send(connector, infobip, send_body(receiver))
    assert again.status_code == 429
    assert 4 <= int(again.headers["retry-after"]) <= 5
    assert again.json()["error"]["vendor_code"] is None


def test_wrong_key_is_401_and_never_echoed(
        connector: Connector, infobip: FakeInfobip, receiver: ReportReceiver) -> None:
    answer = send(connector, infobip, send_body(receiver), key="wrong-key-zz")
    assert answer.status_code == 401
    assert "wrong-key-zz" not in answer.text


def test_verify_is_200_with_a_good_key_and_401_with_a_bad_one(
        connector: Connector, infobip: FakeInfobip) -> None:
    good = checked(httpx.get(connector.url + "/sms/verify", headers=headers(infobip)))
    assert (good.status_code, good.json()["ok"]) == (200, True)
    bad = checked(httpx.get(connector.url + "/sms/verify",
                            headers=headers(infobip, "not-a-key")))
    assert bad.status_code == 401
    assert bad.json()["message"] == "infobip: the API key was not accepted"
    assert "not-a-key" not in bad.text and KEY not in bad.text


def test_missing_base_url_is_400_naming_it(connector: Connector, infobip: FakeInfobip,
                                            receiver: ReportReceiver) -> None:
    answer = checked(httpx.post(connector.url + "/sms/send", json=send_body(receiver),
                                headers={"Chan-Vendor": "infobip", "Chan-Api-Key": KEY}))
    assert answer.status_code == 400
    assert "Chan-Base-Url" in answer.json()["error"]["message"]


def test_timed_out_send_that_infobip_took_is_found_in_its_logs(
        start_connector: Any, infobip: FakeInfobip, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VENDOR_TIMEOUT="1")
    infobip.queue(200, delay=3.0)  # takes the message, answers too late
    answer = send(connector, infobip, send_body(receiver))
    assert answer.status_code == 200, answer.text
    (sent,) = infobip.messages
    assert answer.json()["vendor_message_id"] == sent["message_id"]
    assert infobip.lookups == [{"messageId": [sent["message_id"]]}]
    infobip.send_status(sent["message_id"], "DELIVERED_TO_HANDSET")
    assert receiver.wait_for(1)[0]["status"] == "delivered"


def test_timed_out_send_infobip_never_took_is_safe_to_retry(
        start_connector: Any, infobip: FakeInfobip, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VENDOR_TIMEOUT="1")
    infobip.queue(500, delay=3.0)  # nothing taken, and no answer in time
    first = send(connector, infobip, send_body(receiver))
    assert first.status_code == 502 and first.json()["error"]["retryable"] is True
    assert infobip.messages == [] and len(infobip.lookups) == 1
    again = send(connector, infobip, send_body(receiver))
    assert again.status_code == 200
    assert len(infobip.messages) == 1


def test_reports_need_the_deployment_basic_auth_when_configured(
        start_connector: Any, infobip: FakeInfobip, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_CALLBACK_BASIC_AUTH="infobip:hook-pass")
    message_id = send(connector, infobip, send_body(receiver)).json()["message_id"]
    assert infobip.send_status(message_id, "DELIVERED_TO_HANDSET").status_code == 403
    assert infobip.send_status(message_id, "DELIVERED_TO_HANDSET",
                               auth=("infobip", "hook-pass")).status_code == 204
    assert receiver.wait_for(1)[0]["message_id"] == message_id
