"""Send -> Twilio -> signed status callback -> delivery report, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e.conftest import (
    REPORT_SECRET,
    TOKEN,
    Connector,
    checked,
    headers,
    row,
    send_body,
)
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e


def send(connector: Connector, twilio: FakeTwilio, body: dict[str, Any],
         **extra: str) -> httpx.Response:
    return checked(httpx.post(connector.url + "/sms/send", json=body,
                              headers=headers(twilio, **extra), timeout=30))




def test_round_trip_reports_delivery_with_exact_custom_data(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    body = send_body(receiver)
    answer = send(connector, twilio, body)
    assert answer.status_code == 200, answer.text
    accepted = answer.json()
    (sent,) = twilio.messages
    assert accepted == {
        "message_id": accepted["message_id"], "request_id": "req-1", "vendor": "twilio",
        "vendor_message_id": sent["sid"], "status": "accepted", "segments": 1,
        "encoding": "gsm7",
    }
    assert sent["params"]["To"] == "+447911123456"
    assert sent["params"]["From"] == "MyBrand"
    assert sent["params"]["Body"] == "Your code is 1234"

    assert twilio.send_status(sent["sid"], "sent").status_code == 204
    assert twilio.send_status(sent["sid"], "delivered").status_code == 204
    (event,) = receiver.wait_for(1)
    assert event["custom_data"] == body["custom_data"]
    assert event["status"] == "delivered"
    assert event["to"] == "00447911123456"
    assert event["request_id"] == "req-1"
    assert event["message_id"] == accepted["message_id"]
    assert event["vendor"] == "twilio"
    assert event["vendor_message_id"] == sent["sid"]
    assert event["from"] == "MyBrand"
    assert event["event_id"]
    assert event["timestamp"].endswith("Z")
    post = receiver.posts[0]
    claims = jwt.decode(post.headers["authorization"], REPORT_SECRET, algorithms=["HS256"])
    assert isinstance(claims["iat"], int)

    stored = row(connector, accepted["message_id"])
    assert stored["status"] == "delivered"
    assert stored["handed_off_at"] is not None and stored["delivered_at"] is not None
    assert TOKEN.encode() not in stored["sealed_settings"]


def test_undelivered_becomes_failed_report_with_error_code(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    assert send(connector, twilio, send_body(receiver)).status_code == 200
    sid = twilio.messages[0]["sid"]
    twilio.send_status(sid, "undelivered", error_code=30003)
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"]) == ("failed", "30003")


async def test_fifty_concurrent_repeats_send_once_and_answer_alike(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(201, None, delay=0.5)  # hold the original in flight while repeats arrive
    body = send_body(receiver, request_id="storm-1")
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(*(
            client.post(connector.url + "/sms/send", json=body, headers=headers(twilio))
            for _ in range(50)))
    assert {checked(a).status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert twilio.create_calls == 1
    # and later repeats still get the stored answer without a vendor call
    again = send(connector, twilio, body)
    assert again.content == answers[0].content
    assert twilio.create_calls == 1


def test_late_sent_after_delivered_changes_nothing(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_REPORT_STATUSES="sent,delivered,failed")
    message_id = send(connector, twilio, send_body(receiver)).json()["message_id"]
    sid = twilio.messages[0]["sid"]
    twilio.send_status(sid, "delivered")
    receiver.wait_for(1)
    assert twilio.send_status(sid, "sent").status_code == 204
    assert twilio.send_status(sid, "delivered").status_code == 204  # a repeat, too
    # a fresh message's report proves the dispatcher ran after the late callbacks
    send(connector, twilio, send_body(receiver, request_id="req-2"))
    twilio.send_status(twilio.messages[1]["sid"], "delivered")
    events = receiver.wait_for(2)
    assert [e["status"] for e in events] == ["delivered", "delivered"]
    assert row(connector, message_id)["status"] == "delivered"


def test_forged_signature_is_403_and_changes_nothing(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    message_id = send(connector, twilio, send_body(receiver)).json()["message_id"]
    sid = twilio.messages[0]["sid"]
    forged = twilio.send_status(sid, "delivered", signature_override="AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "invalid_signature"
    bad_token = twilio.send_status(sid, "delivered", url_override=(
        twilio.message(sid)["status_callback"].split("?m=")[0] + "?m=forged.token"))
    assert bad_token.status_code == 403
    assert row(connector, message_id)["status"] == "accepted"
    assert receiver.posts == []


def test_unknown_message_with_valid_token_is_204(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    message_id = send(connector, twilio, send_body(receiver)).json()["message_id"]
    db = sqlite3.connect(connector.data_dir / "connector.db")
    db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
    db.commit()
    db.close()
    assert twilio.send_status(twilio.messages[0]["sid"], "delivered").status_code == 204


def test_receiver_503_twice_then_report_arrives_on_third_try(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    receiver.script([503, 503, 200])
    send(connector, twilio, send_body(receiver))
    twilio.send_status(twilio.messages[0]["sid"], "delivered")
    (event,) = receiver.wait_for(1, timeout=20)
    assert [p.status for p in receiver.posts] == [503, 503, 200]
    assert len({e["event_id"] for p in receiver.posts for e in p.events}) == 1
    assert event["status"] == "delivered"


def test_report_survives_restart_between_status_change_and_post(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    # No dispatcher in the web process: the status change is stored, nothing posts it.
    web = start_connector(CONNECTOR_DISPATCHER="false")
    send(web, twilio, send_body(receiver))
    assert twilio.send_status(twilio.messages[0]["sid"], "delivered").status_code == 204
    web.kill()
    assert receiver.posts == []
    restarted = start_connector(data_dir=web.data_dir)
    (event,) = receiver.wait_for(1, timeout=20)
    assert event["status"] == "delivered"
    restarted.stop()


def test_standalone_worker_delivers_reports(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    web = start_connector(CONNECTOR_DISPATCHER="false")
    start_connector(data_dir=web.data_dir, command="worker")
    send(web, twilio, send_body(receiver))
    twilio.send_status(twilio.messages[0]["sid"], "delivered")
    (event,) = receiver.wait_for(1, timeout=20)
    assert event["status"] == "delivered"
