"""Refused before any work, over loopback against `connector serve`: the platform key, callbacks
that are forged or too costly to read, bodies nested too deeply, weak secrets at start-up."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.e2e.conftest import Connector, checked, headers, row, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e
PLATFORM_KEY = "platform-key-" + "k" * 32
ADMIN = "operator-key-123"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def deep_json(levels: int) -> bytes:
    """A send body whose `metadata` nests `levels` objects (built as text: json.dumps would
    refuse it)."""
    return (b'{"sender":"MyBrand","recipient":"00447911123456","message":"Hi",'
            b'"custom_data":"cd","callback_url":"http://127.0.0.1:9/r","metadata":'
            + b'{"a":' * levels + b"1" + b"}" * levels + b"}")


def stored_messages(connector: Connector) -> int:
    db = sqlite3.connect(connector.data_dir / "connector.db")
    try:
        (count,) = db.execute("SELECT count(*) FROM messages").fetchone()
        return int(count)
    finally:
        db.close()


def test_platform_calls_need_the_platform_key(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    keyed: Connector = start_connector(CONNECTOR_PLATFORM_KEY=PLATFORM_KEY)
    body = send_body(receiver)
    for given in (None, "", "wrong", PLATFORM_KEY[:-1], PLATFORM_KEY + "k"):
        extra = {} if given is None else {"Chan-Connector-Key": given}
        sent = checked(httpx.post(keyed.url + "/sms/send", json=body,
                                  headers=headers(twilio, **extra)))
        verified = checked(httpx.get(keyed.url + "/sms/verify", headers=headers(twilio, **extra)))
        # No /mms route exists yet; the check stands in front of wherever one will be.
        mms = httpx.post(keyed.url + "/mms/send", json=body, headers=headers(twilio, **extra))
        for answer in (sent, verified, mms):
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["code"] == "platform_key"
    assert twilio.create_calls == 0 and twilio.requests == []
    assert stored_messages(keyed) == 0
    right = headers(twilio, **{"Chan-Connector-Key": PLATFORM_KEY})
    assert checked(httpx.post(keyed.url + "/sms/send", json=body, headers=right)
                   ).status_code == 200
    assert checked(httpx.get(keyed.url + "/sms/verify", headers=right)).status_code == 200
    logs = keyed.logs()
    assert PLATFORM_KEY not in logs and "k" * 32 not in logs
    assert "platform_calls_unauthenticated" not in logs


def test_start_up_warns_once_when_platform_calls_are_open(connector: Connector) -> None:
    assert connector.logs().count("platform_calls_unauthenticated") == 1


def test_deeply_nested_json_is_400_and_changes_nothing(
        start_connector: Any, twilio: FakeTwilio) -> None:
    operated: Connector = start_connector(CONNECTOR_ADMIN_KEY=ADMIN)
    answer = checked(httpx.post(operated.url + "/sms/send", content=deep_json(2000),
                                headers=headers(twilio, **{"Content-Type": "application/json"})))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "malformed_json"
    test_send = checked(httpx.post(
        operated.url + "/api/v1/app-integrations/twilio/sms/test", content=deep_json(2000),
        headers={"Auth-Key": ADMIN, "Brand-URL": "https://brand.example"}))
    assert test_send.status_code == 400
    assert test_send.json()["statusCode"] == 400
    assert twilio.create_calls == 0 and stored_messages(operated) == 0


def test_forged_or_costly_callbacks_are_refused_and_change_nothing(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    sent = checked(httpx.post(connector.url + "/sms/send", json=send_body(receiver),
                              headers=headers(twilio))).json()
    callback = twilio.messages[0]["status_callback"]
    forged = callback.split("?m=")[0] + "?m=not-a-token"
    big = urlencode({"MessageStatus": "delivered", "Pad": "x" * 256 * 1024}).encode()
    many = urlencode([("MessageStatus", "delivered")] + [(f"F{i}", "v") for i in range(150)])
    cases = [(forged, big, 403), (callback, big, 413), (callback, many.encode(), 400)]
    for url, body, status in cases:
        answer = checked(httpx.post(url, content=body, headers=FORM))
        assert answer.status_code == status, answer.text
    assert row(connector, sent["message_id"])["status"] == "accepted"
    # A real receipt still lands afterwards, and is the only report.
    assert twilio.send_status(twilio.messages[0]["sid"], "delivered").status_code == 204
    (event,) = receiver.wait_for(1)
    assert event["status"] == "delivered"


@pytest.mark.parametrize("name", ["CONNECTOR_SECRET_KEY", "CONNECTOR_REPORT_SECRET",
                                  "CONNECTOR_PLATFORM_KEY"])
def test_weak_secret_stops_the_start_naming_the_variable(tmp_path: Path, name: str) -> None:
    env = {**os.environ, "CONNECTOR_DATA_DIR": str(tmp_path), name: "short-secret-0123456789"}
    done = subprocess.run([sys.executable, "-m", "connector.cli", "serve"], env=env,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert name in done.stderr.decode()
    assert b"short-secret" not in done.stderr + done.stdout
    assert not (tmp_path / "connector.db").exists()  # refused before anything was set up
