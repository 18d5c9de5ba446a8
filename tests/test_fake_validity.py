"""Self-tests: each fake accepts its vendor's validity field in range and refuses it outside,
as the vendor documents (Infobip caps instead of refusing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.fakes.infobip import FakeInfobip
from tests.fakes.sinch import FakeSinch
from tests.fakes.twilio import FakeTwilio
from tests.fakes.vonage import FakeVonage

SID, TOKEN = "AC" + "7" * 32, "fake-twilio-token"
PLAN, BEARER = "plan" + "0" * 28, "fake-sinch-token"
IB_KEY = "fake-infobip-key"
VN_KEY, VN_SECRET = "abcd1234", "fake-vonage-secret"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, trust_env=False) as c:
        yield c


@pytest.mark.parametrize(("validity", "status"), [
    ("1", 201), ("36000", 201), ("0", 400), ("36001", 400),
])
def test_twilio_validity_period_range(client: httpx.Client, validity: str, status: int) -> None:
    fake = FakeTwilio({SID: TOKEN}).start()
    try:
        answer = client.post(
            f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages.json", auth=(SID, TOKEN),
            data={"To": "+447911123456", "From": "MyBrand", "Body": "Hi",
                  "ValidityPeriod": validity})
    finally:
        fake.stop()
    assert answer.status_code == status, answer.text
    if status == 400:
        assert answer.json()["code"] == 90007
    assert fake.schema_violations == []


def _stamp(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


# Offsets, not timestamps: the stamp is taken when the test runs, not when it is collected.
@pytest.mark.parametrize(("offset", "status", "code"), [
    (timedelta(minutes=10), 201, None),
    (timedelta(days=3, minutes=-1), 201, None),
    (timedelta(days=3, minutes=5), 400, "syntax_constraint_violation"),
    (timedelta(minutes=-1), 400, "syntax_constraint_violation"),
    ("in ten minutes", 400, "syntax_invalid_parameter_format"),
])
def test_sinch_expire_at_at_most_three_days(client: httpx.Client, offset: timedelta | str,
                                            status: int, code: str | None) -> None:
    expire_at = offset if isinstance(offset, str) else _stamp(offset)
    fake = FakeSinch({PLAN: BEARER}).start()
    try:
        answer = client.post(f"{fake.base_url}/xms/v1/{PLAN}/batches",
                             headers={"Authorization": f"Bearer {BEARER}"},
                             json={"from": "MyBrand", "to": ["+447911123456"], "body": "Hi",
                                   "expire_at": expire_at})
    finally:
        fake.stop()
    assert answer.status_code == status, answer.text
    if code is None:
        sent = datetime.fromisoformat(expire_at)
        assert datetime.fromisoformat(answer.json()["expire_at"]) == sent.replace(
            microsecond=sent.microsecond // 1000 * 1000)
    else:
        assert answer.json()["code"] == code


def _infobip_body(validity: Any) -> dict[str, Any]:
    return {"messages": [{"sender": "MyBrand", "destinations": [{"to": "447911123456"}],
                          "content": {"text": "Hi"}, "options": {"validityPeriod": validity}}]}


@pytest.mark.parametrize(("validity", "applied"), [
    ({"amount": 600, "timeUnit": "SECONDS"}, 600),
    ({"amount": 30}, 1800),  # MINUTES by default
    ({"amount": 72, "timeUnit": "HOURS"}, 48 * 3600),  # capped, not refused
    ({"amount": 0, "timeUnit": "SECONDS"}, None),
    ({"amount": "600", "timeUnit": "SECONDS"}, None),
    ({"amount": 600, "timeUnit": "DAYS"}, None),
])
def test_infobip_validity_period(client: httpx.Client, validity: Any, applied: int | None) -> None:
    with FakeInfobip([IB_KEY]) as fake:
        answer = client.post(fake.base_url + "/sms/3/messages", json=_infobip_body(validity),
                             headers={"Authorization": f"App {IB_KEY}"})
        messages = fake.messages
    if applied is None:
        assert answer.status_code == 400, answer.text
        assert "validityPeriod" in json.dumps(answer.json())
    else:
        assert answer.status_code == 200, answer.text
        (message,) = messages
        assert message["validity"] == applied


@pytest.mark.parametrize(("ttl", "status"), [
    ("20000", "0"), ("604800000", "0"), ("19999", "3"), ("604800001", "3"), ("1h", "3"),
])
def test_vonage_ttl_range(client: httpx.Client, ttl: str, status: str) -> None:
    fake = FakeVonage({VN_KEY: VN_SECRET}).start()
    try:
        answer = client.post(fake.base_url + "/sms/json", data={
            "api_key": VN_KEY, "api_secret": VN_SECRET, "from": "MyBrand",
            "to": "447911123456", "text": "Hi", "ttl": ttl})
    finally:
        fake.stop()
    assert answer.json()["messages"][0]["status"] == status
