"""The operator test send for every vendor: the platform's username/password pair, mapped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Connector, checked
from tests.fakes.bird import FakeBird
from tests.fakes.infobip import FakeInfobip
from tests.fakes.server import ServedApp
from tests.fakes.sinch import FakeSinch
from tests.fakes.twilio import FakeTwilio
from tests.fakes.vonage import FakeVonage

pytestmark = pytest.mark.e2e
ADMIN = "operator-key-123"
TO = "+447911123456"


def _bird(fake: Any) -> str:
    return str(fake.messages[0]["request"]["receiver"]["contacts"][0]["identifierValue"])


# vendor: (the fake, username, password, where the fake keeps the recipient it was sent)
VENDORS: dict[str, tuple[Callable[[], ServedApp], Callable[[ServedApp], str], str,
                         Callable[[Any], str]]] = {
    "twilio": (lambda: FakeTwilio({"AC" + "1" * 32: "tw-token"}),
               lambda fake: "AC" + "1" * 32, "tw-token",
               lambda fake: str(fake.messages[0]["params"]["To"])),
    "bird": (lambda: FakeBird("bird-key", "ws-1", "ch-1"), lambda fake: "ws-1/ch-1",
             "bird-key", _bird),
    "sinch": (lambda: FakeSinch({"plan0123456789abcdef0123456789ab": "sinch-token"}),
              lambda fake: "plan0123456789abcdef0123456789ab", "sinch-token",
              lambda fake: str(fake.batches[0]["request"]["to"][0])),
    "infobip": (lambda: FakeInfobip(["infobip-key"]), lambda fake: fake.base_url,
                "infobip-key", lambda fake: "+" + str(fake.messages[0]["to"])),
    "vonage": (lambda: FakeVonage({"abcd1234": "vonage-secret"}), lambda fake: "abcd1234",
               "vonage-secret", lambda fake: "+" + str(fake.messages[0]["params"]["to"])),
}


@pytest.fixture(params=sorted(VENDORS))
def vendor(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServedApp]]:
    fake = VENDORS[request.param][0]().start()
    yield request.param, fake
    fake.stop()
    assert fake.contract_violations == [], "against the vendor's own document"


@pytest.fixture
def operated(start_connector: Any) -> Connector:
    started: Connector = start_connector(CONNECTOR_ADMIN_KEY=ADMIN)
    return started


def try_send(operated: Connector, name: str, fake: ServedApp,
              password: str | None = None) -> httpx.Response:
    _, username, given, _ = VENDORS[name]
    body = {"username": username(fake), "password": password or given,
            "phoneNumberFrom": "+15005550006", "phoneNumberTo": TO,
            "message": "Test from the platform"}
    return checked(httpx.post(
        f"{operated.url}/api/v1/app-integrations/{name}/sms/test", json=body,
        headers={"Auth-Key": ADMIN, "Brand-URL": "https://brand.example",
                 "Chan-Base-Url": fake.base_url}, timeout=20))


def test_the_username_and_password_reach_each_vendor(
        operated: Connector, vendor: tuple[str, ServedApp]) -> None:
    name, fake = vendor
    answer = try_send(operated, name, fake)
    body = answer.json()
    assert (answer.status_code, body["success"], body["data"]) == (200, True, True), body
    assert VENDORS[name][3](fake) == TO


def test_a_wrong_password_is_401_in_the_envelope(
        operated: Connector, vendor: tuple[str, ServedApp]) -> None:
    name, fake = vendor
    answer = try_send(operated, name, fake, password="wrong-secret")
    body = answer.json()
    assert (answer.status_code, body["success"], body["statusCode"]) == (401, False, 401), body
