"""CONNECTOR_VALIDITY over real loopback HTTP: the vendor gets its own validity field, and a
message the vendor lets expire is reported `failed` with code `expired`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e import test_sinch, test_vonage
from tests.e2e.conftest import row, send_body
from tests.e2e.test_sinch import sinch  # noqa: F401 (fixture)
from tests.e2e.test_spine import send as send_twilio
from tests.e2e.test_vonage import vonage  # noqa: F401 (fixture)
from tests.fakes.receiver import ReportReceiver
from tests.fakes.sinch import FakeSinch
from tests.fakes.twilio import FakeTwilio
from tests.fakes.vonage import FakeVonage

pytestmark = pytest.mark.e2e


def test_twilio_gets_validity_period(start_connector: Any, twilio: FakeTwilio,
                                     receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VALIDITY="600")
    answer = send_twilio(connector, twilio, send_body(receiver))
    assert answer.status_code == 200, answer.text
    (sent,) = twilio.messages
    assert sent["params"]["ValidityPeriod"] == "600"


def test_twilio_clamps_validity_period(start_connector: Any, twilio: FakeTwilio,
                                       receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VALIDITY="86400")  # a day; Twilio allows 10 h
    answer = send_twilio(connector, twilio, send_body(receiver))
    assert answer.status_code == 200, answer.text
    (sent,) = twilio.messages
    assert sent["params"]["ValidityPeriod"] == "36000"


def test_sinch_expiry_reports_failed_expired(start_connector: Any, sinch: FakeSinch,  # noqa: F811
                                             receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VALIDITY="600")
    before = time.time()
    answer = test_sinch.send(connector, sinch, send_body(receiver))
    assert answer.status_code == 200, answer.text
    (batch,) = sinch.batches
    expire_at = datetime.fromisoformat(batch["request"]["expire_at"])
    assert expire_at.tzinfo == UTC
    assert int(before) + 599 <= expire_at.timestamp() <= time.time() + 600
    assert batch["resource"]["expire_at"].startswith(batch["request"]["expire_at"][:19])

    assert sinch.send_status(batch["id"], "Expired").status_code == 204
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"], event["error_message"]) == (
        "failed", "expired", "406: Internal expiry")
    assert row(connector, answer.json()["message_id"])["status"] == "expired"


def test_vonage_expiry_reports_failed_expired(start_connector: Any, vonage: FakeVonage,  # noqa: F811
                                              receiver: ReportReceiver) -> None:
    connector = start_connector(CONNECTOR_VALIDITY="600")
    answer = test_vonage.send(connector, vonage, send_body(receiver))
    assert answer.status_code == 200, answer.text
    (sent,) = vonage.messages
    assert sent["params"]["ttl"] == "600000"

    assert vonage.send_status(sent["id"], "expired").status_code == 204
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"]) == ("failed", "expired")
