"""Send -> fake Vonage -> signed per-part receipts -> one delivery report, over real loopback HTTP."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Connector, checked, row, send_body
from tests.fakes.receiver import ReportReceiver
from tests.fakes.vonage import DlrMethod, FakeVonage

pytestmark = pytest.mark.e2e

KEY, SECRET = "e2ek3y01", "vonage-e2e-api-secret-" + "v0n" * 3
SIG_SECRET = "vonage-e2e-signature-secret-" + "s1g" * 3


class CheckedVonage(FakeVonage):
    """The Vonage fake, with every receipt exchange held to openapi.yaml."""

    def send_status(self, *args: Any, **kwargs: Any) -> httpx.Response:
        return checked(super().send_status(*args, **kwargs))


@pytest.fixture
def vonage() -> Iterator[FakeVonage]:
    fake = CheckedVonage({KEY: SECRET}, signing={KEY: (SIG_SECRET, "sha256")}).start()
    yield fake
    fake.stop()
    assert fake.contract_violations == [], "against the vendor's own document"
    assert fake.violations == [], "the connector sent a request Vonage would mangle"
    assert fake.unused_canned() == [], "a canned Vonage answer was never asked for"


def headers(vonage: FakeVonage, **extra: str) -> dict[str, str]:
    return {"Chan-Vendor": "vonage", "Chan-Api-Key": KEY, "Chan-Api-Secret": SECRET,
            "Chan-Signature-Secret": SIG_SECRET, "Chan-Signature-Method": "sha256",
            "Chan-Base-Url": vonage.base_url, **extra}


def send(connector: Connector, vonage: FakeVonage, body: dict[str, Any],
         **extra: str) -> httpx.Response:
    return checked(httpx.post(connector.url + "/sms/send", json=body,
                              headers=headers(vonage, **extra), timeout=30))




@pytest.mark.parametrize("method", ["POST", "GET", "JSON"])
def test_round_trip_reports_delivery_with_exact_custom_data(
        connector: Connector, vonage: FakeVonage, receiver: ReportReceiver,
        method: DlrMethod) -> None:
    vonage.dlr_method = method
    body = send_body(receiver)
    answer = send(connector, vonage, body)
    assert answer.status_code == 200, answer.text
    accepted = answer.json()
    (sent,) = vonage.messages
    assert accepted == {
        "message_id": accepted["message_id"], "request_id": "req-1", "vendor": "vonage",
        "vendor_message_id": sent["id"], "status": "accepted", "segments": 1, "encoding": "gsm7",
    }
    params = sent["params"]
    assert (params["to"], params["from"], params["text"]) == (
        "447911123456", "MyBrand", "Your code is 1234")
    assert (params["client-ref"], params["type"], params["status-report-req"]) == (
        accepted["message_id"], "text", "true")
    assert "/callbacks/vonage/status?m=" in params["callback"]
    assert len(params["callback"]) <= 100

    assert vonage.send_status(sent["id"], "accepted").status_code == 204
    assert vonage.send_status(sent["id"], "delivered").status_code == 204
    (event,) = receiver.wait_for(1)
    assert event["custom_data"] == body["custom_data"]
    assert (event["status"], event["to"], event["from"]) == ("delivered", "00447911123456", "MyBrand")
    assert (event["vendor"], event["vendor_message_id"]) == ("vonage", sent["id"])
    assert (event["message_id"], event["request_id"]) == (accepted["message_id"], "req-1")
    assert row(connector, accepted["message_id"])["status"] == "delivered"


def test_two_part_message_gives_one_report_after_both_parts_are_delivered(
        connector: Connector, vonage: FakeVonage, receiver: ReportReceiver) -> None:
    answer = send(connector, vonage, send_body(receiver, message="Long " * 40)).json()
    (sent,) = vonage.messages
    first, second = sent["part_ids"]
    assert (answer["segments"], answer["vendor_message_id"]) == (2, first)

    assert vonage.send_status(first, "delivered").status_code == 204
    assert row(connector, answer["message_id"])["status"] == "sent"  # one part is not the message
    assert vonage.send_status(second, "delivered").status_code == 204
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["vendor_message_id"]) == ("delivered", first)
    assert [r.status_code for r in vonage.send_statuses(first, "delivered")] == [204, 204]
    time.sleep(0.5)  # repeats must not produce a second report
    assert len(receiver.events) == 1


def test_a_failed_part_fails_the_message_once(
        connector: Connector, vonage: FakeVonage, receiver: ReportReceiver) -> None:
    answer = send(connector, vonage, send_body(receiver, message="Long " * 40)).json()
    first, second = vonage.messages[0]["part_ids"]
    vonage.send_status(first, "delivered")
    vonage.send_status(second, "failed", err_code=2)
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"]) == ("failed", "2")
    assert event["error_message"] == "Absent Subscriber - Temporary"
    assert row(connector, answer["message_id"])["status"] == "undelivered"


def test_unicode_text_is_sent_as_type_unicode(
        connector: Connector, vonage: FakeVonage, receiver: ReportReceiver) -> None:
    answer = send(connector, vonage, send_body(receiver, message="Zdravo, čestitamo! 🎉"))
    assert answer.json()["encoding"] == "ucs2"
    assert vonage.messages[0]["params"]["type"] == "unicode"


def test_forged_stale_or_untokened_receipts_are_403_and_change_nothing(
        connector: Connector, vonage: FakeVonage, receiver: ReportReceiver) -> None:
    message_id = send(connector, vonage, send_body(receiver)).json()["message_id"]
    part = vonage.messages[0]["id"]
    forged = vonage.send_status(part, "delivered", signature_override="A" * 64)
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "invalid_signature"
    assert vonage.send_status(part, "delivered", timestamp=time.time() - 600).status_code == 403
    assert vonage.send_status(part, "delivered", extra={"sig": None}).status_code == 403
    assert vonage.send_status(part, "expired", extra={"status": "delivered"}).status_code == 403
    callback = vonage.message(part)["params"]["callback"]
    bad_token = callback.split("?m=")[0] + "?m=forged.token"
    assert vonage.send_status(part, "delivered", url_override=bad_token).status_code == 403
    assert row(connector, message_id)["status"] == "accepted"
    assert receiver.posts == []


def test_unsigned_account_is_authenticated_by_the_url_token(
        connector: Connector, vonage: FakeVonage, receiver: ReportReceiver) -> None:
    vonage.signing.clear()
    unsigned = {"Chan-Signature-Secret": "", "Chan-Signature-Method": ""}
    send(connector, vonage, send_body(receiver), **unsigned)
    assert vonage.send_status(vonage.messages[0]["id"], "delivered").status_code == 204
    assert receiver.wait_for(1)[0]["status"] == "delivered"


@pytest.mark.parametrize(("code", "text", "status", "error"), [
    pytest.param(6, "Unroutable message - rejected", 422, "invalid_recipient", id="6"),
    pytest.param(7, "Number barred", 422, "blocked", id="7"),
    pytest.param(15, "Illegal Sender Address - rejected", 422, "sender_not_allowed", id="15"),
    pytest.param(12, "Message too long", 422, "message_too_long", id="12"),
    pytest.param(1, "Throughput Rate Exceeded - please wait [ 3000 ] and retry", 429,
                 "throttled", id="1"),
    pytest.param(5, "Internal Error", 502, "vendor_unavailable", id="5"),
    pytest.param(8, "Account barred", 401, "vendor_account_suspended", id="8"),
    pytest.param(9, "Quota Exceeded - rejected", 401, "insufficient_funds", id="9"),
])
def test_vonage_status_codes_become_platform_answers(
        connector: Connector, vonage: FakeVonage, receiver: ReportReceiver, code: int,
        text: str, status: int, error: str) -> None:
    vonage.queue_refusal(code, text)
    answer = send(connector, vonage, send_body(receiver, request_id=f"err-{code}"))
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == error
    assert answer.json()["error"]["vendor_code"] == str(code)
    if status == 429:
        assert answer.headers["retry-after"] == "3"


def test_wrong_secret_at_send_is_401(connector: Connector, vonage: FakeVonage,
                                     receiver: ReportReceiver) -> None:
    answer = send(connector, vonage, send_body(receiver), **{"Chan-Api-Secret": "wrong-one"})
    assert answer.status_code == 401
    assert "wrong-one" not in answer.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_verify_working_credentials_is_200(connector: Connector, vonage: FakeVonage,
                                           method: str) -> None:
    answer = checked(httpx.request(method, connector.url + "/sms/verify",
                                   headers=headers(vonage)))
    assert answer.status_code == 200
    assert answer.json()["ok"] is True


def test_verify_wrong_secret_is_401_with_a_readable_message(connector: Connector,
                                                            vonage: FakeVonage) -> None:
    answer = checked(httpx.get(connector.url + "/sms/verify",
                               headers=headers(vonage, **{"Chan-Api-Secret": "wrong-one"})))
    assert answer.status_code == 401
    assert answer.json()["ok"] is False
    assert "API key and secret" in answer.json()["message"]
    assert "wrong-one" not in answer.text


def test_verify_unknown_signature_method_is_400_naming_it(connector: Connector,
                                                          vonage: FakeVonage) -> None:
    answer = checked(httpx.get(connector.url + "/sms/verify",
                               headers=headers(vonage, **{"Chan-Signature-Method": "sha3"})))
    assert answer.status_code == 400
    assert "Chan-Signature-Method" in answer.json()["message"]


def test_send_with_unknown_signature_method_is_400_naming_it(
        connector: Connector, vonage: FakeVonage, receiver: ReportReceiver) -> None:
    answer = send(connector, vonage, send_body(receiver), **{"Chan-Signature-Method": "sha3"})
    assert answer.status_code == 400
    assert "Chan-Signature-Method" in answer.json()["error"]["message"]
    assert vonage.send_calls == 0


def test_part_receipt_before_the_send_answer_waits_for_the_part_count(
        connector: Connector, vonage: FakeVonage, receiver: ReportReceiver) -> None:
    """Part 1 `delivered` lands while Vonage's answer (which says there are two parts) is
    still on its way; part 2 then fails. The message fails, reported once."""
    hold = vonage.hold_answers()
    body = send_body(receiver, message="Two parts: " + "x" * 150)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(send, connector, vonage, body)
        assert hold.arrived.wait(10), "the send never reached the fake"
        (sent,) = vonage.messages
        first, second = sent["part_ids"]
        assert vonage.send_status(first, "delivered").status_code == 204
        hold.release.set()
        answer = pending.result(timeout=30)
    assert answer.status_code == 200, answer.text
    message_id = answer.json()["message_id"]
    assert vonage.send_status(second, "failed", 5).status_code == 204
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"]) == ("failed", "5")
    stored = row(connector, message_id)
    assert (stored["status"], stored["parts"]) == ("undelivered", 2)
    db = sqlite3.connect(connector.data_dir / "connector.db")
    try:
        (reports,) = db.execute("SELECT count(*) FROM outbox WHERE message_id = ?",
                                (message_id,)).fetchone()
    finally:
        db.close()
    assert reports == 1
