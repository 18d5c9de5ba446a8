"""A caller with an account id and a wrong secret reaches none of that account's state
(issue #15 items 8 and 9): not its stored answers, its claims, its opt-outs or its rate."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SID, Connector, checked, headers, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e
WRONG = "not-the-auth-token-" + "x" * 14
STOP = {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400,
        "more_info": "https://www.twilio.com/docs/errors/21610"}


def send(connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver,
         request_id: str, **extra: str) -> httpx.Response:
    return checked(httpx.post(connector.url + "/sms/send",
                              json=send_body(receiver, request_id=request_id),
                              headers=headers(twilio, **extra)))


def test_a_wrong_token_never_gets_the_owners_stored_answer(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    owner = send(connector, twilio, receiver, "shared-id")
    assert owner.status_code == 200
    stranger = send(connector, twilio, receiver, "shared-id", **{"Chan-Auth-Token": WRONG})
    assert stranger.status_code == 401  # the vendor's answer to its own credentials
    assert owner.json()["message_id"] not in stranger.text
    again = send(connector, twilio, receiver, "shared-id")
    assert again.content == owner.content  # the owner's dedupe is untouched
    assert len(twilio.messages) == 1


def test_pre_claiming_an_id_with_bad_credentials_does_not_block_the_owner(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    squatter = send(connector, twilio, receiver, "future-id", **{"Chan-Auth-Token": WRONG})
    assert squatter.status_code == 401
    owner = send(connector, twilio, receiver, "future-id")
    assert owner.status_code == 200
    assert [m["account_sid"] for m in twilio.messages] == [SID]


def test_a_message_is_still_found_by_its_request_id(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector: Connector = start_connector(CONNECTOR_ADMIN_KEY="operator-key-123")
    sent = send(connector, twilio, receiver, "look-me-up")
    found = checked(httpx.get(connector.url + "/api/v1/messages/look-me-up",
                              headers={"Auth-Key": "operator-key-123"}))
    assert found.status_code == 200
    assert sent.json()["message_id"] in found.text


def test_an_opted_out_number_is_no_oracle_for_a_wrong_token(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(400, STOP)
    assert send(connector, twilio, receiver, "stop-1").status_code == 422
    assert send(connector, twilio, receiver, "stop-2").status_code == 422  # listed: no call
    assert twilio.create_calls == 1
    probe = send(connector, twilio, receiver, "probe", **{"Chan-Auth-Token": WRONG})
    assert probe.status_code == 401  # what any number answers with that token


def test_wrong_tokens_never_spend_the_owners_rate(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector: Connector = start_connector(CONNECTOR_RATE_LIMITS=f"twilio:{SID}=2")
    for n in range(2):
        assert send(connector, twilio, receiver, f"bad-{n}",
                    **{"Chan-Auth-Token": WRONG}).status_code == 401
    limited = send(connector, twilio, receiver, "bad-2", **{"Chan-Auth-Token": WRONG})
    assert limited.status_code == 429  # the configured rate holds for the account id ...
    for n in range(2):  # ... and the owner still has its own second's worth
        assert send(connector, twilio, receiver, f"good-{n}").status_code == 200
