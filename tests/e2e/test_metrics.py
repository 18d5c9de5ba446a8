"""GET /metrics: what an operator's Prometheus sees after real traffic."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import TOKEN, Connector, checked, headers, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e


def value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(connector: Connector) -> str:
    answer = checked(httpx.get(connector.url + "/metrics"))
    assert answer.status_code == 200
    return answer.text


def round_trip(connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    body = send_body(receiver)
    assert httpx.post(connector.url + "/sms/send", json=body,
                      headers=headers(twilio)).status_code == 200
    assert httpx.post(connector.url + "/sms/send", json=body,
                      headers=headers(twilio)).status_code == 200  # a dedupe hit
    sid = twilio.messages[0]["sid"]
    twilio.send_status(sid, "delivered")
    twilio.send_status(sid, "delivered")  # a duplicate
    twilio.send_status(sid, "sent", signature_override="forged")
    receiver.wait_for(1)


def test_metrics_count_requests_vendor_calls_callbacks_and_reports(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    round_trip(connector, twilio, receiver)
    text = scrape(connector)
    assert value(text, "connector_requests_total", route="/sms/send", status="200") == 2
    assert value(text, "connector_vendor_outcomes_total", vendor="twilio",
                 outcome="accepted") == 1
    assert value(text, "connector_vendor_call_seconds_count", vendor="twilio") == 1
    assert value(text, "connector_dedupe_total", result="stored") == 1
    for result, count in (("applied", 1), ("duplicate", 1), ("forbidden", 1)):
        assert value(text, "connector_callbacks_total", vendor="twilio", result=result) == count
    assert value(text, "connector_report_attempts_total", outcome="delivered") == 1
    assert value(text, "connector_outbox_depth") == 0
    assert TOKEN not in text
    assert not re.search(r"447911123456", text)


def test_metrics_add_up_across_worker_processes(start_connector: Any) -> None:
    workers = start_connector(args=("--workers", "2"))
    for _ in range(20):
        httpx.get(workers.url + "/healthz")
    # each scrape is served by one of the two processes; every one must count all 20
    counts = [value(scrape(workers), "connector_requests_total", route="/healthz")
              for _ in range(6)]
    assert min(counts) >= 20
