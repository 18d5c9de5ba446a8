"""Send -> Sinch -> HMAC-signed delivery report -> platform report, over real loopback HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Connector, checked, row, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.sinch import FakeSinch

pytestmark = pytest.mark.e2e

PLAN = "e2e0123456789abcdef0123456789abc"
TOKEN = "sinch-e2e-api-token-" + "t0k" * 4
SECRET = "sinch-e2e-webhook-secret"


class CheckedSinch(FakeSinch):
    """The Sinch fake, with every callback exchange held to openapi.yaml."""

    def send_status(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return checked(super().send_status(*args, **kwargs))


@pytest.fixture
def sinch() -> Iterator[FakeSinch]:
    fake = CheckedSinch({PLAN: TOKEN}, secrets={PLAN: SECRET}).start()
    yield fake
    fake.stop()
    assert fake.contract_violations == [], "against the vendor's own document"
    assert fake.unused_canned() == [], "a canned Sinch answer was never asked for"


def headers(fake: FakeSinch, **extra: str) -> dict[str, str]:
    return {"Chan-Vendor": "sinch", "Chan-Service-Plan-Id": PLAN, "Chan-Api-Token": TOKEN,
            "Chan-Webhook-Secret": SECRET, "Chan-Base-Url": fake.base_url, **extra}


def send(connector: Connector, fake: FakeSinch, body: dict[str, Any],
         **extra: str) -> httpx.Response:
    return checked(httpx.post(connector.url + "/sms/send", json=body,
                              headers=headers(fake, **extra), timeout=30))




def test_round_trip_reports_delivery_with_exact_custom_data(
        connector: Connector, sinch: FakeSinch, receiver: ReportReceiver) -> None:
    body = send_body(receiver)
    answer = send(connector, sinch, body)
    assert answer.status_code == 200, answer.text
    accepted = answer.json()
    (batch,) = sinch.batches
    assert accepted["vendor"] == "sinch"
    assert accepted["vendor_message_id"] == batch["id"]
    assert batch["request"] == {
        "from": "MyBrand", "to": ["+447911123456"], "body": "Your code is 1234",
        "delivery_report": "per_recipient", "client_reference": accepted["message_id"],
        "callback_url": batch["request"]["callback_url"],
    }
    assert "/callbacks/sinch/status?m=" in batch["request"]["callback_url"]

    assert sinch.send_status(batch["id"], "Dispatched").status_code == 204
    assert sinch.send_status(batch["id"], "Delivered").status_code == 204
    (event,) = receiver.wait_for(1)
    assert event["custom_data"] == body["custom_data"]
    assert (event["status"], event["to"]) == ("delivered", "00447911123456")
    assert (event["vendor"], event["vendor_message_id"]) == ("sinch", batch["id"])
    assert (event["message_id"], event["request_id"]) == (accepted["message_id"], "req-1")
    assert event["error_code"] is None
    assert row(connector, accepted["message_id"])["status"] == "delivered"


def test_failed_report_carries_the_sinch_code(
        connector: Connector, sinch: FakeSinch, receiver: ReportReceiver) -> None:
    assert send(connector, sinch, send_body(receiver)).status_code == 200
    sinch.send_status(sinch.batches[0]["id"], "Failed", 402)
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"]) == ("failed", "402")
    assert event["error_message"] == "Message unroutable"


def test_forged_or_replayed_reports_are_403_and_change_nothing(
        connector: Connector, sinch: FakeSinch, receiver: ReportReceiver) -> None:
    message_id = send(connector, sinch, send_body(receiver)).json()["message_id"]
    batch = sinch.batches[0]
    forged = sinch.send_status(batch["id"], "Delivered",
                               signature_override="ZoHei66PPN/kZjw7hFVfGhJOnml3iGNCMWoyQVcE5o0=")
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "invalid_signature"
    replayed = sinch.send_status(batch["id"], "Delivered", timestamp=int(time.time()) - 3600)
    assert replayed.status_code == 403
    callback = batch["request"]["callback_url"]
    bad_token = sinch.send_status(batch["id"], "Delivered",
                                  url_override=callback.split("?m=")[0] + "?m=forged.token")
    assert bad_token.status_code == 403
    assert row(connector, message_id)["status"] == "accepted"
    assert receiver.posts == []


def test_without_a_webhook_secret_the_signed_url_is_enough(
        connector: Connector, receiver: ReportReceiver) -> None:
    with CheckedSinch({PLAN: TOKEN}) as unsigned:  # HMAC is opt-in per service plan
        hdrs = headers(unsigned)
        del hdrs["Chan-Webhook-Secret"]
        answer = checked(httpx.post(connector.url + "/sms/send", json=send_body(receiver),
                                    headers=hdrs, timeout=30))
        assert answer.status_code == 200, answer.text
        assert unsigned.send_status(unsigned.batches[0]["id"], "Delivered").status_code == 204
    (event,) = receiver.wait_for(1)
    assert event["status"] == "delivered"


@pytest.mark.parametrize(("canned", "status", "code", "vendor_code"), [
    pytest.param((400, {"code": "syntax_invalid_parameter_format", "text": "Invalid MSISDN"}),
                 422, "invalid_recipient", "syntax_invalid_parameter_format", id="bad-msisdn"),
    pytest.param((403, {"code": "unknown_campaign", "text": "Campaign does not match"}),
                 422, "sender_not_allowed", "unknown_campaign", id="unknown-campaign"),
    pytest.param((429, {"text": "Too many requests"}, {"Retry-After": "5"}), 429, "throttled",
                 None, id="throttled"),
    pytest.param((503, b"<html>unavailable</html>"), 502, "vendor_unavailable", None,
                 id="unavailable"),
])
def test_sinch_errors_reach_the_platform_as_its_statuses(
        connector: Connector, sinch: FakeSinch, receiver: ReportReceiver,
        canned: tuple[Any, ...], status: int, code: str, vendor_code: str | None) -> None:
    sinch.queue(*canned)
    answer = send(connector, sinch, send_body(receiver))
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["vendor_code"]) == (code, vendor_code)
    if status == 429:
        assert answer.headers["retry-after"] == "5"


def test_wrong_token_is_401(connector: Connector, sinch: FakeSinch,
                            receiver: ReportReceiver) -> None:
    answer = send(connector, sinch, send_body(receiver), **{"Chan-Api-Token": "wrong"})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "vendor_auth_failed"
    assert sinch.batches == []


def test_unknown_region_is_400_naming_chan_region(
        connector: Connector, sinch: FakeSinch, receiver: ReportReceiver) -> None:
    answer = send(connector, sinch, send_body(receiver, request_id="region-1"),
                  **{"Chan-Region": "mars"})
    assert answer.status_code == 400
    assert "Chan-Region" in answer.json()["error"]["message"]
    assert sinch.create_calls == 0


def test_verify_says_whether_the_credentials_work(connector: Connector,
                                                  sinch: FakeSinch) -> None:
    good = checked(httpx.get(connector.url + "/sms/verify", headers=headers(sinch)))
    assert (good.status_code, good.json()["ok"]) == (200, True)
    bad = checked(httpx.get(connector.url + "/sms/verify",
                            headers=headers(sinch, **{"Chan-Api-Token": "wrong"})))
    assert bad.status_code == 401
    assert "service plan ID and API token" in bad.json()["message"]
    assert "wrong" not in bad.text and TOKEN not in bad.text


def test_timed_out_send_is_reconciled_by_client_reference(
        start_connector: Any, sinch: FakeSinch, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VENDOR_TIMEOUT="1")
    sinch.queue(201, None, delay=3)  # Sinch creates the batch, the answer comes too late
    answer = send(connector, sinch, send_body(receiver))
    assert answer.status_code == 200, answer.text
    (batch,) = sinch.batches
    assert answer.json()["vendor_message_id"] == batch["id"]
    assert sinch.list_calls[-1]["client_reference"] == answer.json()["message_id"]


def test_timed_out_send_sinch_never_took_is_safe_to_retry(
        start_connector: Any, sinch: FakeSinch, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VENDOR_TIMEOUT="1")
    sinch.queue(500, {"text": "lost"}, delay=3)  # nothing created, and no answer in time
    answer = send(connector, sinch, send_body(receiver))
    assert answer.status_code == 502, answer.text
    assert answer.json()["error"]["retryable"] is True
    assert sinch.batches == [] and len(sinch.list_calls) == 1
    assert send(connector, sinch, send_body(receiver)).status_code == 200  # the retry sends
    assert len(sinch.batches) == 1
