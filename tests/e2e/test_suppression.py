"""Opt-outs: a vendor's opted_out puts the recipient on the account's suppression list, later
sends to them are refused before any vendor call, and operators list and remove entries."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.conftest import SID, Connector, checked, headers, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e
ADMIN = "operator-key-123"
ACCOUNT = f"twilio:{SID}"
RECIPIENT = "+447911123456"
STOP = {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400,
        "more_info": "https://www.twilio.com/docs/errors/21610"}


@pytest.fixture
def operated(start_connector: Any) -> Connector:
    started: Connector = start_connector(CONNECTOR_ADMIN_KEY=ADMIN)
    return started


def send(connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver,
         request_id: str, recipient: str = "00447911123456") -> httpx.Response:
    return checked(httpx.post(connector.url + "/sms/send",
                              json=send_body(receiver, request_id=request_id,
                                             recipient=recipient),
                              headers=headers(twilio)))


def listed(connector: Connector, auth: str = ADMIN, **query: str) -> httpx.Response:
    return checked(httpx.get(connector.url + "/api/v1/suppressions", params=query,
                             headers={"Auth-Key": auth}))


def remove(connector: Connector, account: str, number: str, auth: str = ADMIN
           ) -> httpx.Response:
    path = f"/api/v1/suppressions/{quote(account, safe='')}/{quote(number, safe='')}"
    return checked(httpx.delete(connector.url + path, headers={"Auth-Key": auth}))


def error(answer: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = answer.json()["error"]
    return body


def test_an_opt_out_is_remembered_until_an_operator_removes_it(
        operated: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(400, STOP)
    first = send(operated, twilio, receiver, "req-1")
    assert first.status_code == 422
    assert (error(first)["code"], error(first)["vendor_code"]) == ("opted_out", "21610")
    assert twilio.create_calls == 1

    # A new request to the same recipient is refused here, without a vendor call.
    again = send(operated, twilio, receiver, "req-2")
    assert again.status_code == 422
    assert error(again)["code"] == "opted_out"
    assert error(again)["retryable"] is False
    assert "suppression list" in error(again)["message"]
    assert twilio.create_calls == 1
    looked_up = checked(httpx.get(f"{operated.url}/api/v1/messages/req-2",
                                  headers={"Auth-Key": ADMIN})).json()
    assert (looked_up["status"], looked_up["error_code"]) == ("rejected", "opted_out")

    # Another recipient on the same account still goes out.
    other = send(operated, twilio, receiver, "req-3", recipient="00447912345678")
    assert other.status_code == 200
    assert twilio.create_calls == 2

    page = listed(operated)
    assert page.status_code == 200
    (entry,) = page.json()["suppressions"]
    assert (entry["account"], entry["number"], entry["vendor_code"]) == (
        ACCOUNT, RECIPIENT, "21610")
    assert entry["reason"] and entry["created_at"]
    assert listed(operated, account=ACCOUNT).json()["suppressions"] == [entry]
    assert listed(operated, account="twilio:ACother").json()["suppressions"] == []
    assert listed(operated, limit="1", offset="1").json() == {
        "suppressions": [], "limit": 1, "offset": 1}

    assert remove(operated, ACCOUNT, RECIPIENT).status_code == 204
    assert remove(operated, ACCOUNT, RECIPIENT).status_code == 404
    assert listed(operated).json()["suppressions"] == []

    # Removed: the next send reaches the vendor again.
    after = send(operated, twilio, receiver, "req-4")
    assert after.status_code == 200
    assert twilio.create_calls == 3
    assert twilio.messages[-1]["params"]["To"] == RECIPIENT


def test_a_repeat_of_the_opted_out_request_replays_its_answer(
        operated: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(400, STOP)
    first = send(operated, twilio, receiver, "req-1")
    repeat = send(operated, twilio, receiver, "req-1")
    assert (repeat.status_code, repeat.content) == (first.status_code, first.content)
    assert twilio.create_calls == 1


def test_a_number_given_in_00_form_is_removed_too(
        operated: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(400, STOP)
    assert send(operated, twilio, receiver, "req-1").status_code == 422
    assert remove(operated, ACCOUNT, "00447911123456").status_code == 204


def test_with_the_setting_off_nothing_is_remembered(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector: Connector = start_connector(CONNECTOR_ADMIN_KEY=ADMIN,
                                           CONNECTOR_SUPPRESS_OPT_OUTS="false")
    twilio.queue(400, STOP)
    first = send(connector, twilio, receiver, "req-1")
    assert (first.status_code, error(first)["code"]) == (422, "opted_out")
    assert listed(connector).json()["suppressions"] == []
    assert send(connector, twilio, receiver, "req-2").status_code == 200
    assert twilio.create_calls == 2


@pytest.mark.parametrize("auth", ["", "wrong"])
def test_the_endpoints_need_the_admin_key(operated: Connector, auth: str) -> None:
    assert listed(operated, auth).status_code == 401
    assert remove(operated, ACCOUNT, RECIPIENT, auth).status_code == 401


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "1001"}, {"offset": "-1"},
                                   {"limit": "x"}])
def test_a_bad_page_is_a_400(operated: Connector, query: dict[str, str]) -> None:
    answer = listed(operated, **query)
    assert answer.status_code == 400
    assert error(answer)["code"] == "invalid_request"


def test_an_account_with_slashes_can_be_removed(operated: Connector) -> None:
    # Infobip accounts are their base URL; nothing listed here, so the route answers 404.
    answer = remove(operated, "infobip:https://x.api.infobip.com", RECIPIENT)
    assert answer.status_code == 404
    assert error(answer)["code"] == "not_found"
