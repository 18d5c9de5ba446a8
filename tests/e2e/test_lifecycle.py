"""Process lifecycle: SIGTERM finishes in-flight sends, health endpoints tell the truth."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Connector, checked, headers, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e


def test_sigterm_finishes_the_in_flight_send_then_exits(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    twilio.queue(201, None, delay=1.5)
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(httpx.post(
        connector.url + "/sms/send", json=send_body(receiver), headers=headers(twilio),
        timeout=30)))
    thread.start()
    deadline = time.monotonic() + 5
    while not twilio.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    assert connector.process is not None
    connector.process.send_signal(signal.SIGTERM)
    thread.join(20)
    assert answers and answers[0].status_code == 200
    # uvicorn re-raises SIGTERM after its graceful shutdown, as process managers expect
    assert connector.process.wait(20) in (0, -signal.SIGTERM)
    assert "dispatcher_stopped" in connector.logs()


def test_store_answer_survives_a_restart(start_connector: Any, twilio: FakeTwilio,
                                         receiver: ReportReceiver) -> None:
    first = start_connector()
    answer = httpx.post(first.url + "/sms/send", json=send_body(receiver),
                        headers=headers(twilio))
    first.stop()
    again = start_connector(data_dir=first.data_dir)
    repeat = httpx.post(again.url + "/sms/send", json=send_body(receiver),
                        headers=headers(twilio))
    assert repeat.content == answer.content
    assert twilio.create_calls == 1


def test_health_and_readiness(connector: Connector) -> None:
    assert checked(httpx.get(connector.url + "/healthz")).json() == {"status": "ok"}
    assert checked(httpx.get(connector.url + "/readyz")).json() == {"status": "ready"}
    spec = checked(httpx.get(connector.url + "/openapi.yaml"))
    assert spec.text.startswith("openapi:")
