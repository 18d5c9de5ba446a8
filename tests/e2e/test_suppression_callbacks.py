"""Opt-outs a vendor reports after accepting the send: the signed status callback reports
`failed` to the platform and lists the recipient, so the next send to them is refused before
any vendor call until an operator removes the entry. Real server, vendor fakes, loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e import test_infobip, test_vonage
from tests.e2e.conftest import SID, Connector, checked, send_body
from tests.e2e.conftest import headers as twilio_headers
from tests.e2e.test_suppression import ADMIN, error, listed, remove
from tests.fakes.infobip import FakeInfobip
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio
from tests.fakes.vonage import FakeVonage

pytestmark = pytest.mark.e2e
RECIPIENT = "+447911123456"


@pytest.fixture
def infobip() -> Iterator[FakeInfobip]:
    fake = test_infobip.CheckedInfobip([test_infobip.KEY]).start()
    yield fake
    fake.stop()
    assert fake.contract_violations == [], "against the vendor's own document"
    assert fake.schema_violations == []


@pytest.fixture
def vonage() -> Iterator[FakeVonage]:
    fake = test_vonage.CheckedVonage(
        {test_vonage.KEY: test_vonage.SECRET},
        signing={test_vonage.KEY: (test_vonage.SIG_SECRET, "sha256")}).start()
    yield fake
    fake.stop()
    assert fake.contract_violations == [], "against the vendor's own document"
    assert fake.violations == []


@dataclass(frozen=True)
class Route:
    """How one vendor's fake is driven: its Chan-* headers, its account on the list, how many
    sends reached it, and its signed status callback carrying the opt-out (or another) code."""

    fixture: str
    headers: Callable[[Any], dict[str, str]]
    account: Callable[[Any], str]
    calls: Callable[[Any], int]
    report: Callable[[Any, str], list[httpx.Response]]
    opt_out_code: str


def _twilio_report(fake: FakeTwilio, code: str) -> list[httpx.Response]:
    return [fake.send_status(fake.messages[-1]["sid"], "undelivered", code)]


def _infobip_report(fake: FakeInfobip, name: str) -> list[httpx.Response]:
    return [fake.send_status(fake.messages[-1]["message_id"], name)]


def _vonage_report(fake: FakeVonage, code: str) -> list[httpx.Response]:
    return fake.send_statuses(fake.messages[-1]["id"], "failed", code)


ROUTES = {
    "twilio": Route("twilio", twilio_headers, lambda _: f"twilio:{SID}",
                    lambda fake: fake.create_calls, _twilio_report, "21610"),
    "infobip": Route("infobip", test_infobip.headers, lambda fake: f"infobip:{fake.base_url}",
                     lambda fake: fake.send_calls, _infobip_report, "REJECTED_DND"),
    "vonage": Route("vonage", test_vonage.headers, lambda _: f"vonage:{test_vonage.KEY}",
                    lambda fake: fake.send_calls, _vonage_report, "9"),
}
# A failure code of the same vendor that is not an opt-out.
PLAIN = {"twilio": "30003", "infobip": "UNDELIVERABLE_NOT_DELIVERED", "vonage": "2"}


@pytest.fixture
def operated(start_connector: Any) -> Connector:
    started: Connector = start_connector(CONNECTOR_ADMIN_KEY=ADMIN)
    return started


def send(connector: Connector, route: Route, fake: Any, receiver: ReportReceiver,
         request_id: str) -> httpx.Response:
    return checked(httpx.post(connector.url + "/sms/send", timeout=30,
                              json=send_body(receiver, request_id=request_id),
                              headers=route.headers(fake)))


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_an_opt_out_in_a_status_callback_is_refused_next_time(
        name: str, operated: Connector, receiver: ReportReceiver,
        request: pytest.FixtureRequest) -> None:
    route = ROUTES[name]
    fake = request.getfixturevalue(route.fixture)
    first = send(operated, route, fake, receiver, "req-1")
    assert first.status_code == 200, first.text
    assert route.calls(fake) == 1

    assert {r.status_code for r in route.report(fake, route.opt_out_code)} == {204}
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"]) == ("failed", route.opt_out_code)
    assert event["message_id"] == first.json()["message_id"]

    (entry,) = listed(operated).json()["suppressions"]
    assert (entry["account"], entry["number"], entry["vendor_code"]) == (
        route.account(fake), RECIPIENT, route.opt_out_code)
    assert entry["reason"].endswith("(status callback)")

    refused = send(operated, route, fake, receiver, "req-2")
    assert refused.status_code == 422
    assert (error(refused)["code"], error(refused)["retryable"]) == ("opted_out", False)
    assert route.calls(fake) == 1  # no vendor call

    assert remove(operated, route.account(fake), RECIPIENT).status_code == 204
    again = send(operated, route, fake, receiver, "req-3")
    assert again.status_code == 200, again.text
    assert route.calls(fake) == 2


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_a_plain_failure_in_a_status_callback_lists_nobody(
        name: str, operated: Connector, receiver: ReportReceiver,
        request: pytest.FixtureRequest) -> None:
    route = ROUTES[name]
    fake = request.getfixturevalue(route.fixture)
    assert send(operated, route, fake, receiver, "req-1").status_code == 200
    assert {r.status_code for r in route.report(fake, PLAIN[name])} == {204}
    (event,) = receiver.wait_for(1)
    assert event["status"] == "failed"
    assert listed(operated).json()["suppressions"] == []
    assert send(operated, route, fake, receiver, "req-2").status_code == 200
    assert route.calls(fake) == 2


def test_a_repeated_opt_out_callback_reports_once_and_lists_once(
        operated: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    route = ROUTES["twilio"]
    assert send(operated, route, twilio, receiver, "req-1").status_code == 200
    for _ in range(2):
        assert [r.status_code for r in _twilio_report(twilio, "21610")] == [204]
    receiver.wait_for(1)
    assert len(listed(operated).json()["suppressions"]) == 1
    # A third send, to someone else, proves the dispatcher has caught up: still one report.
    other = checked(httpx.post(operated.url + "/sms/send", headers=twilio_headers(twilio),
                               json=send_body(receiver, request_id="req-2",
                                              recipient="00447912345678")))
    assert other.status_code == 200
    twilio.send_status(twilio.messages[-1]["sid"], "delivered")
    events = receiver.wait_for(2)
    assert [e["status"] for e in events] == ["failed", "delivered"]


def test_a_forged_opt_out_callback_is_403_and_lists_nobody(
        operated: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    route = ROUTES["twilio"]
    assert send(operated, route, twilio, receiver, "req-1").status_code == 200
    forged = twilio.send_status(twilio.messages[-1]["sid"], "undelivered", 21610,
                                signature_override="bm90IGEgc2lnbmF0dXJl")
    assert forged.status_code == 403
    assert listed(operated).json()["suppressions"] == []
    assert send(operated, route, twilio, receiver, "req-2").status_code == 200
    assert twilio.create_calls == 2


def test_with_the_setting_off_a_callback_opt_out_lists_nobody(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    connector: Connector = start_connector(CONNECTOR_ADMIN_KEY=ADMIN,
                                           CONNECTOR_SUPPRESS_OPT_OUTS="false")
    route = ROUTES["twilio"]
    assert send(connector, route, twilio, receiver, "req-1").status_code == 200
    assert [r.status_code for r in _twilio_report(twilio, "21610")] == [204]
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["error_code"]) == ("failed", "21610")
    assert listed(connector).json()["suppressions"] == []
    assert send(connector, route, twilio, receiver, "req-2").status_code == 200
    assert twilio.create_calls == 2
