"""Operator endpoints: message look-up and test send, behind Auth-Key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SID, TOKEN, Connector, checked, headers, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e
ADMIN = "operator-key-123"


@pytest.fixture
def operated(start_connector: Any) -> Connector:
    started: Connector = start_connector(CONNECTOR_ADMIN_KEY=ADMIN)
    return started


def look_up(connector: Connector, key: str, auth: str = ADMIN) -> httpx.Response:
    return checked(httpx.get(f"{connector.url}/api/v1/messages/{key}",
                             headers={"Auth-Key": auth}))


def test_message_lifecycle_with_report_attempts(
        operated: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    receiver.script([503])
    sent = httpx.post(operated.url + "/sms/send", json=send_body(receiver),
                      headers=headers(twilio)).json()
    sid = twilio.messages[0]["sid"]
    twilio.send_status(sid, "sent")
    twilio.send_status(sid, "delivered")
    receiver.wait_for(1, timeout=20)
    for key in (sent["message_id"], "req-1"):
        view = look_up(operated, key).json()
        assert view["id"] == sent["message_id"]
        assert (view["status"], view["vendor_message_id"]) == ("delivered", sid)
        assert view["to_number"] == "+447911123456"
        assert view["handed_off_at"] and view["delivered_at"]
        assert view["text"] is None  # CONNECTOR_KEEP_MESSAGE_TEXT is off by default
        (report,) = view["reports"]
        assert report["state"] == "delivered"
        assert [a["status_code"] for a in report["attempts"]] == [503, 200]


def test_look_up_shows_the_text_when_the_deployment_keeps_it(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    keeping: Connector = start_connector(CONNECTOR_ADMIN_KEY=ADMIN,
                                         CONNECTOR_KEEP_MESSAGE_TEXT="true")
    body = send_body(receiver, message="Grüße, your code is 1234")
    sent = checked(httpx.post(keeping.url + "/sms/send", json=body, headers=headers(twilio)))
    assert look_up(keeping, sent.json()["message_id"]).json()["text"] == body["message"]


@pytest.mark.parametrize("auth", ["", "wrong"])
def test_look_up_needs_the_admin_key(operated: Connector, auth: str) -> None:
    assert look_up(operated, "anything", auth).status_code == 401


def test_operator_endpoints_refuse_when_no_admin_key_is_set(connector: Connector) -> None:
    assert look_up(connector, "anything", "").status_code == 401
    assert look_up(connector, "anything", "x").status_code == 401


def test_unknown_message_is_404(operated: Connector) -> None:
    assert look_up(operated, "nope").status_code == 404


def try_send(operated: Connector, twilio: FakeTwilio, auth: str = ADMIN,
              **changes: str) -> httpx.Response:
    body = {"username": SID, "password": TOKEN, "phoneNumberFrom": "+15005550006",
            "phoneNumberTo": "+447911123456", "message": "Test from the platform", **changes}
    return checked(httpx.post(
        f"{operated.url}/api/v1/app-integrations/twilio/sms/test", json=body,
        headers={"Auth-Key": auth, "Brand-URL": "https://brand.example",
                 "Chan-Base-Url": twilio.base_url}))


def test_test_send_goes_to_the_vendor(operated: Connector, twilio: FakeTwilio) -> None:
    answer = try_send(operated, twilio)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["success"], body["statusCode"], body["data"]) == (True, 200, True)
    (message,) = twilio.messages
    assert message["params"]["To"] == "+447911123456"
    assert message["params"]["From"] == "+15005550006"


@pytest.mark.parametrize(("changes", "status"), [
    pytest.param({"password": "wrong"}, 401, id="bad-credentials"),
    pytest.param({"phoneNumberTo": "12"}, 400, id="bad-number"),
    pytest.param({"message": ""}, 400, id="empty-message"),
])
def test_test_send_failures_keep_the_envelope(operated: Connector, twilio: FakeTwilio,
                                              changes: dict[str, str], status: int) -> None:
    answer = try_send(operated, twilio, **changes)
    assert answer.status_code == status
    body = answer.json()
    assert (body["success"], body["statusCode"], body["data"]) == (False, status, False)
    assert body["message"]


def test_test_send_needs_the_admin_key(operated: Connector, twilio: FakeTwilio) -> None:
    answer = try_send(operated, twilio, auth="wrong")
    assert (answer.status_code, answer.json()["success"]) == (401, False)
    assert twilio.create_calls == 0
