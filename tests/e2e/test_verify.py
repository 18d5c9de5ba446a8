"""GET /sms/verify: the platform's integration screen learns whether the credentials work."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SID, TOKEN, Connector, checked, headers, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio, twilio_signature

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_working_credentials_are_200(connector: Connector, twilio: FakeTwilio,
                                     method: str) -> None:
    answer = checked(httpx.request(method, connector.url + "/sms/verify",
                                   headers=headers(twilio)))
    assert answer.status_code == 200
    assert answer.json()["ok"] is True


def test_wrong_token_is_401_with_a_readable_message(connector: Connector,
                                                    twilio: FakeTwilio) -> None:
    answer = checked(httpx.get(connector.url + "/sms/verify",
                               headers=headers(twilio, **{"Chan-Auth-Token": "wrong"})))
    assert answer.status_code == 401
    body = answer.json()
    assert body["ok"] is False
    assert "Account SID and Auth Token" in body["message"]
    assert "wrong" not in answer.text


def test_missing_setting_is_400_naming_it(connector: Connector, twilio: FakeTwilio) -> None:
    answer = checked(httpx.get(connector.url + "/sms/verify",
                               headers={"Chan-Account-Sid": SID,
                                        "Chan-Base-Url": twilio.base_url}))
    assert answer.status_code == 400
    assert "Chan-Auth-Token" in answer.json()["message"]


def test_unreachable_vendor_is_retryable(connector: Connector, twilio: FakeTwilio) -> None:
    hdrs = headers(twilio, **{"Chan-Base-Url": "http://127.0.0.1:9"})
    answer = checked(httpx.get(connector.url + "/sms/verify", headers=hdrs))
    assert answer.status_code == 502
    assert answer.json()["error"]["retryable"] is True


def test_callback_basic_auth_when_configured(start_connector: Any, twilio: FakeTwilio,
                                             receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_CALLBACK_BASIC_AUTH="vendor:hook-pass")
    answer = httpx.post(connector.url + "/sms/send", json=send_body(receiver),
                        headers=headers(twilio))
    sid = twilio.messages[0]["sid"]
    assert twilio.send_status(sid, "delivered").status_code == 403  # no credentials
    url = twilio.message(sid)["status_callback"]
    params = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": SID}
    signed = {"X-Twilio-Signature": twilio_signature(TOKEN, url, params)}
    wrong = httpx.post(url, data=params, headers=signed, auth=("vendor", "nope"))
    assert wrong.status_code == 403
    right = checked(httpx.post(url, data=params, headers=signed, auth=("vendor", "hook-pass")))
    assert right.status_code == 204
    assert receiver.wait_for(1)[0]["message_id"] == answer.json()["message_id"]
