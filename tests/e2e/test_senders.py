"""Sender pools end to end: the platform names a pool, the vendor sees the recipient's number."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Connector, checked, headers, row, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio
from tests.fakes.vonage import FakeVonage

pytestmark = pytest.mark.e2e

ADMIN = "operator-key-456"
NY, LA, SF = "+12125550100", "+13105550100", "+14155550100"
POOLS = f"marketing={NY},{LA},{SF};uk=+447400123456"
VONAGE_KEY, VONAGE_SECRET = "p00lk3y1", "vonage-pool-api-secret-" + "p" * 8


@pytest.fixture
def pooled(start_connector: Any) -> Connector:
    started: Connector = start_connector(CONNECTOR_SENDER_POOLS=POOLS, CONNECTOR_ADMIN_KEY=ADMIN)
    return started


@pytest.fixture
def vonage() -> Iterator[FakeVonage]:
    fake = FakeVonage({VONAGE_KEY: VONAGE_SECRET}).start()
    yield fake
    fake.stop()
    assert fake.contract_violations == [], "against the vendor's own document"
    assert fake.violations == [], "the connector sent a request Vonage would mangle"


def send(connector: Connector, body: dict[str, Any], sent_headers: dict[str, str]
         ) -> httpx.Response:
    return checked(httpx.post(connector.url + "/sms/send", json=body, headers=sent_headers,
                              timeout=30))


def look_up(connector: Connector, message_id: str) -> dict[str, Any]:
    answer = checked(httpx.get(f"{connector.url}/api/v1/messages/{message_id}",
                               headers={"Auth-Key": ADMIN}, timeout=30))
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_pool_sends_from_the_area_code_number_and_keeps_it_per_recipient(
        pooled: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    ids = []
    for request_id, recipient in [("p-1", "0013105551234"), ("p-2", "0013105551234"),
                                  ("p-3", "0012125559876")]:
        answer = send(pooled, send_body(receiver, sender="marketing", recipient=recipient,
                                        request_id=request_id), headers(twilio))
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["message_id"])
    assert [m["params"]["From"] for m in twilio.messages] == [LA, LA, NY]
    assert [look_up(pooled, i)["from_number"] for i in ids] == [LA, LA, NY]
    assert row(pooled, ids[0])["sender"] == LA

    assert twilio.send_status(twilio.messages[0]["sid"], "delivered").status_code == 204
    (event,) = receiver.wait_for(1)
    assert (event["message_id"], event["from"]) == (ids[0], LA)


def test_pool_pick_is_recorded_when_the_vendor_answer_names_no_sender(
        pooled: Connector, vonage: FakeVonage, receiver: ReportReceiver) -> None:
    answer = send(pooled, send_body(receiver, sender="uk", recipient="00447911123456"),
                  {"Chan-Vendor": "vonage", "Chan-Api-Key": VONAGE_KEY,
                   "Chan-Api-Secret": VONAGE_SECRET, "Chan-Base-Url": vonage.base_url})
    assert answer.status_code == 200, answer.text
    (sent,) = vonage.messages
    assert sent["params"]["from"] == "447400123456"
    assert look_up(pooled, answer.json()["message_id"])["from_number"] == "+447400123456"


def test_pool_name_with_a_messaging_service_is_refused_before_any_vendor_call(
        pooled: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    answer = send(pooled, send_body(receiver, sender="marketing", recipient="0013105551234"),
                  headers(twilio, **{"Chan-Messaging-Service-Sid": "MG" + "0" * 32}))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_sender"
    assert twilio.create_calls == 0


def test_without_pools_the_name_is_an_ordinary_alphanumeric_sender(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    answer = send(connector, send_body(receiver, sender="marketing"), headers(twilio))
    assert answer.status_code == 200, answer.text
    assert twilio.messages[0]["params"]["From"] == "marketing"
