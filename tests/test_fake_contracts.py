"""Every fake holds what it receives and what it sends to its vendor's published document."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.sinch import FakeSinch

PLAN = "plan0123456789abcdef0123456789ab"
TOKEN = "fake-sinch-token-1"


@pytest.fixture
def sinch() -> Iterator[FakeSinch]:
    fake = FakeSinch({PLAN: TOKEN}).start()
    yield fake
    fake.stop()


def _create(fake: FakeSinch, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{fake.base_url}/xms/v1/{PLAN}/batches", json=body,
                      headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False)


def test_a_conforming_request_and_its_reports_leave_no_violation(sinch: FakeSinch) -> None:
    answer = _create(sinch, {"from": "MyBrand", "to": ["+447911123456"], "body": "Hi",
                             "delivery_report": "per_recipient",
                             "callback_url": "http://127.0.0.1:9/never"})
    assert answer.status_code == 201, answer.text
    with pytest.raises(httpx.ConnectError):  # nobody listens; the report was still checked
        sinch.send_status(answer.json()["id"], "Delivered", timeout=2.0)
    assert sinch.contract_violations == []


def test_a_request_the_document_forbids_is_recorded(sinch: FakeSinch) -> None:
    _create(sinch, {"from": "MyBrand", "to": "+447911123456", "body": "Hi", "colour": "red"})
    violations = sinch.contract_violations
    assert any("colour" in v for v in violations), violations
    assert any("body/to" in v for v in violations), violations
