"""NUL and other control characters in custom_data reach the report exactly, on PostgreSQL as
on SQLite (PostgreSQL `text` cannot hold NUL: see connector/store/nul.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import checked, headers, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio
from tests.store.conftest import fresh_database

pytestmark = pytest.mark.e2e
ADMIN = "operator-key-123"
# Every C0 control, NUL at both ends, DEL, and text that looks like an escaped form.
CUSTOM_DATA = "\x00" + "".join(map(chr, range(1, 32))) + "\x7f \\u0000 \\0 é 😀\x00"
TEXT = "Your code is 1234\x00\x01 (kept)"


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with fresh_database() as dsn:
        yield dsn


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_custom_data_with_nul_reaches_the_report_exactly(
        store: str, request: pytest.FixtureRequest, start_connector: Any,
        twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    env = {"CONNECTOR_ADMIN_KEY": ADMIN, "CONNECTOR_KEEP_MESSAGE_TEXT": "true"}
    if store == "postgresql":
        env["CONNECTOR_DATABASE_URL"] = request.getfixturevalue("database")
    connector = start_connector(**env)
    body = send_body(receiver, custom_data=CUSTOM_DATA, message=TEXT,
                     metadata={"note": "a\x00b"})
    answer = checked(httpx.post(connector.url + "/sms/send", json=body,
                                headers=headers(twilio), timeout=30))
    assert answer.status_code == 200, answer.text
    message_id = answer.json()["message_id"]
    (sent,) = twilio.messages
    assert twilio.send_status(sent["sid"], "sent").status_code == 204
    assert twilio.send_status(sent["sid"], "undelivered", error_code=30003).status_code == 204
    (event,) = receiver.wait_for(1)  # `sent` is not reported by default
    assert event["custom_data"] == CUSTOM_DATA
    assert event["custom_data"].encode() == CUSTOM_DATA.encode()
    assert (event["message_id"], event["status"]) == (message_id, "failed")
    view = checked(httpx.get(f"{connector.url}/api/v1/messages/{message_id}",
                             headers={"Auth-Key": ADMIN})).json()
    assert view["text"] == TEXT
    # A repeat of the request is answered from the store, the first answer replayed.
    again = checked(httpx.post(connector.url + "/sms/send", json=body,
                               headers=headers(twilio), timeout=30))
    assert again.status_code == 200 and again.json()["message_id"] == message_id
    assert len(twilio.messages) == 1
