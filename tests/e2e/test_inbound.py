"""Inbound (MO) messages over real loopback HTTP, every vendor: a signed message reaches the
platform's inbound URL once, a forged one nobody, STOP and START steer later sends."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from typing import Any, Protocol

import httpx
import pytest

from tests.e2e.conftest import (
    REPORT_SECRET,
    SID,
    TOKEN,
    Connector,
    checked,
    send_body,
)
from tests.e2e.conftest import headers as twilio_headers
from tests.fakes.bird import FakeBird
from tests.fakes.inbound import (
    bird_inbound,
    infobip_inbound,
    post,
    sinch_inbound,
    twilio_inbound,
    vonage_inbound,
)
from tests.fakes.infobip import FakeInfobip
from tests.fakes.receiver import ReportReceiver
from tests.fakes.server import ServedApp
from tests.fakes.sinch import FakeSinch
from tests.fakes.twilio import FakeTwilio
from tests.fakes.vonage import FakeVonage
from tests.openapi_check import assert_report_conforms

pytestmark = pytest.mark.e2e
WRITER = "+447911123456"  # the recipient who writes back
BIRD_KEY, BIRD_SIGNING = "bird-in-access-key-" + "s3" * 8, "bird-in-signing-key-" + "k3" * 6
WS, CHANNEL = "0b9a3c4e-ws", "5d6e7f80-ch"
PLAN, SINCH_TOKEN, SINCH_SECRET = "in0123456789abcdef0123456789abcd", "sinch-in-tok", "sinch-in-s"
INFOBIP_KEY, PUSH_AUTH = "infobip-in-key-" + "s3" * 8, "infobip:push-password-123"
VONAGE_KEY, VONAGE_SECRET = "in3k3y01", "vonage-in-api-secret-123"
VONAGE_SIG = "vonage-in-signature-secret-" + "s1" * 4


class Account(Protocol):
    """One vendor account: its fake, the headers a send carries, and its inbound webhook."""

    vendor: str
    fake: ServedApp
    env: dict[str, str]

    def headers(self) -> dict[str, str]: ...

    def vendor_calls(self) -> int: ...

    def inbound(self, connector: Connector, mid: str, text: str, *,
                forged: bool = False) -> httpx.Request: ...


def _url(connector: Connector, vendor: str, query: str = "") -> str:
    return f"{connector.url}/callbacks/{vendor}/inbound{query}"


class TwilioAccount:
    vendor, env = "twilio", {}

    def __init__(self) -> None:
        self.fake = FakeTwilio({SID: TOKEN})

    def headers(self) -> dict[str, str]:
        return twilio_headers(self.fake)

    def vendor_calls(self) -> int:
        return self.fake.create_calls

    def inbound(self, connector: Connector, mid: str, text: str, *,
                forged: bool = False) -> httpx.Request:
        return twilio_inbound(self.fake, _url(connector, "twilio"), SID, sid=mid,
                              sender=WRITER, to="+15005550006", text=text,
                              token=TOKEN + "-forged" if forged else None)


class BirdAccount:
    vendor, env = "bird", {}

    def __init__(self) -> None:
        self.fake = FakeBird(BIRD_KEY, WS, CHANNEL, signing_key=BIRD_SIGNING)

    def headers(self) -> dict[str, str]:
        return {"Chan-Vendor": "bird", "Chan-Access-Key": BIRD_KEY, "Chan-Workspace-Id": WS,
                "Chan-Channel-Id": CHANNEL, "Chan-Signing-Key": BIRD_SIGNING,
                "Chan-Base-Url": self.fake.base_url}

    def vendor_calls(self) -> int:
        return len(self.fake.messages)

    def inbound(self, connector: Connector, mid: str, text: str, *,
                forged: bool = False) -> httpx.Request:
        return bird_inbound(self.fake, _url(connector, "bird"), message_id=mid, sender=WRITER,
                            text=text, key=BIRD_SIGNING + "-forged" if forged else None)


class SinchAccount:
    vendor, env = "sinch", {}

    def __init__(self) -> None:
        self.fake = FakeSinch({PLAN: SINCH_TOKEN}, secrets={PLAN: SINCH_SECRET})

    def headers(self) -> dict[str, str]:
        return {"Chan-Vendor": "sinch", "Chan-Service-Plan-Id": PLAN,
                "Chan-Api-Token": SINCH_TOKEN, "Chan-Webhook-Secret": SINCH_SECRET,
                "Chan-Base-Url": self.fake.base_url}

    def vendor_calls(self) -> int:
        return self.fake.create_calls

    def inbound(self, connector: Connector, mid: str, text: str, *,
                forged: bool = False) -> httpx.Request:
        return sinch_inbound(_url(connector, "sinch", f"?account={PLAN}"),
                             SINCH_SECRET + "-forged" if forged else SINCH_SECRET,
                             mo_id=mid, sender=WRITER, to="+15550001111", text=text)


class InfobipAccount:
    vendor, env = "infobip", {"CONNECTOR_CALLBACK_BASIC_AUTH": PUSH_AUTH}

    def __init__(self) -> None:
        self.fake = FakeInfobip([INFOBIP_KEY])

    def headers(self) -> dict[str, str]:
        return {"Chan-Vendor": "infobip", "Chan-Api-Key": INFOBIP_KEY,
                "Chan-Base-Url": self.fake.base_url}

    def vendor_calls(self) -> int:
        return self.fake.send_calls

    def inbound(self, connector: Connector, mid: str, text: str, *,
                forged: bool = False) -> httpx.Request:
        # The account is the host of the base URL sends use: the fake's, on loopback.
        return infobip_inbound(
            _url(connector, "infobip", "?account=127.0.0.1"),
            "infobip:forged" if forged else PUSH_AUTH,
            [{"messageId": mid, "from": WRITER[1:], "to": "447860099299", "text": text}])


class VonageAccount:
    vendor, env = "vonage", {}

    def __init__(self) -> None:
        self.fake = FakeVonage({VONAGE_KEY: VONAGE_SECRET},
                               signing={VONAGE_KEY: (VONAGE_SIG, "sha256")})

    def headers(self) -> dict[str, str]:
        return {"Chan-Vendor": "vonage", "Chan-Api-Key": VONAGE_KEY,
                "Chan-Api-Secret": VONAGE_SECRET, "Chan-Signature-Secret": VONAGE_SIG,
                "Chan-Signature-Method": "sha256", "Chan-Base-Url": self.fake.base_url}

    def vendor_calls(self) -> int:
        return self.fake.send_calls

    def inbound(self, connector: Connector, mid: str, text: str, *,
                forged: bool = False) -> httpx.Request:
        return vonage_inbound(self.fake, _url(connector, "vonage"), VONAGE_KEY,
                              message_id=mid, msisdn=WRITER[1:], to="447700900000", text=text,
                              method="JSON", secret=VONAGE_SIG + "-forged" if forged else None)


ACCOUNTS: dict[str, type[Account]] = {
    "bird": BirdAccount, "infobip": InfobipAccount, "sinch": SinchAccount,
    "twilio": TwilioAccount, "vonage": VonageAccount}


@pytest.fixture(params=sorted(ACCOUNTS))
def account(request: pytest.FixtureRequest) -> Iterator[Account]:
    made = ACCOUNTS[request.param]()
    made.fake.start()
    yield made
    made.fake.stop()


@pytest.fixture
def inbox() -> Iterator[ReportReceiver]:
    """The platform's inbound endpoint: checks the JWT; every POST held to openapi.yaml."""
    fake = ReportReceiver(REPORT_SECRET).start()
    yield fake
    fake.stop()
    assert fake.auth_failures == [], "an inbound POST arrived without a valid JWT"
    for sent in fake.posts:
        assert_report_conforms(sent.headers, json.dumps(sent.events).encode(),
                               webhook="inboundMessage")


def deliver(request: httpx.Request) -> httpx.Response:
    return checked(post(request))


def send(connector: Connector, account: Account, receiver: ReportReceiver,
         request_id: str) -> httpx.Response:
    body = send_body(receiver, request_id=request_id, recipient="00" + WRITER[1:])
    return checked(httpx.post(connector.url + "/sms/send", json=body,
                              headers=account.headers(), timeout=30))


def taken(connector: Connector) -> list[tuple[str, str]]:
    db = sqlite3.connect(connector.data_dir / "connector.db")
    try:
        return db.execute("SELECT vendor, vendor_message_id FROM inbound_messages "
                          "ORDER BY vendor_message_id").fetchall()
    finally:
        db.close()


def accepted(answer: httpx.Response, vendor: str) -> None:
    assert answer.status_code == (200 if vendor == "twilio" else 204), answer.text
    if vendor == "twilio":
        assert answer.headers["content-type"].startswith("text/xml")
        assert answer.content == b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


def test_inbound_is_forwarded_once_and_its_keywords_steer_sends(
        start_connector: Any, account: Account, inbox: ReportReceiver,
        receiver: ReportReceiver) -> None:
    connector: Connector = start_connector(CONNECTOR_INBOUND_URL=inbox.url("inbound"),
                                           **account.env)
    vendor = account.vendor

    # No send or verify has brought this account's credentials yet: refused, nothing kept.
    early = deliver(account.inbound(connector, "mo-0", "Hello"))
    assert early.status_code == 403
    assert early.json()["error"]["code"] == "invalid_signature"
    assert "inbound_forbidden" in connector.logs() and "is unknown here" in connector.logs()
    assert taken(connector) == []

    assert send(connector, account, receiver, "req-1").status_code == 200
    assert account.vendor_calls() == 1

    hello = account.inbound(connector, "mo-1", "Hello")
    accepted(deliver(hello), vendor)
    accepted(deliver(hello), vendor)  # the vendor's retry: acknowledged, not forwarded again

    forged = deliver(account.inbound(connector, "mo-forged", "STOP", forged=True))
    assert forged.status_code == 403

    accepted(deliver(account.inbound(connector, "mo-2", "  stop ")), vendor)
    refused = send(connector, account, receiver, "req-2")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "opted_out"
    assert account.vendor_calls() == 1  # refused before any vendor call

    accepted(deliver(account.inbound(connector, "mo-3", "Start")), vendor)
    assert send(connector, account, receiver, "req-3").status_code == 200
    assert account.vendor_calls() == 2

    events = inbox.wait_for(3)
    assert sorted(e["vendor_message_id"] for e in events) == ["mo-1", "mo-2", "mo-3"]
    assert taken(connector) == [(vendor, "mo-1"), (vendor, "mo-2"), (vendor, "mo-3")]
    first = next(e for e in events if e["vendor_message_id"] == "mo-1")
    assert (first["type"], first["vendor"]) == ("inbound", vendor)
    assert first["message"]["from"] == "00447911123456"
    assert (first["message"]["text"], first["message"]["media"]) == ("Hello", [])
    assert len({e["event_id"] for e in events}) == 3


def test_without_an_inbound_url_inbound_answers_404_and_keeps_nothing(
        connector: Connector, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    assert checked(httpx.post(connector.url + "/sms/send", json=send_body(receiver),
                              headers=twilio_headers(twilio))).status_code == 200
    request = twilio_inbound(twilio, _url(connector, "twilio"), SID, sid="mo-1",
                             sender=WRITER, to="+15005550006", text="STOP")
    assert deliver(request).status_code == 404
    assert taken(connector) == []


def test_mms_media_is_forwarded_as_urls_under_the_inbound_secret(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver) -> None:
    secret = "inbound-secret-" + "i" * 32
    inbox = ReportReceiver(secret).start()
    try:
        connector: Connector = start_connector(CONNECTOR_INBOUND_URL=inbox.url("inbound"),
                                               CONNECTOR_INBOUND_SECRET=secret)
        assert checked(httpx.post(connector.url + "/sms/verify",
                                  headers=twilio_headers(twilio))).status_code == 200
        media = [("https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM1/Media/ME1",
                  "image/jpeg")]
        request = twilio_inbound(twilio, _url(connector, "twilio"), SID, sid="MM1",
                                 sender=WRITER, to="+15005550006", text="", media=media)
        accepted(deliver(request), "twilio")
        (event,) = inbox.wait_for(1)
        assert event["message"]["media"] == [{"url": media[0][0], "content_type": "image/jpeg"}]
        assert inbox.auth_failures == []
    finally:
        inbox.stop()


def test_credentials_a_vendor_refused_do_not_replace_the_working_ones(
        start_connector: Any, twilio: FakeTwilio, receiver: ReportReceiver,
        inbox: ReportReceiver) -> None:
    connector: Connector = start_connector(CONNECTOR_INBOUND_URL=inbox.url("inbound"))
    good = send_body(receiver, request_id="req-1")
    assert checked(httpx.post(connector.url + "/sms/send", json=good,
                              headers=twilio_headers(twilio))).status_code == 200
    wrong = twilio_headers(twilio, **{"Chan-Auth-Token": "not-the-token"})
    refused = checked(httpx.post(connector.url + "/sms/send",
                                 json=send_body(receiver, request_id="req-2"), headers=wrong))
    assert refused.status_code == 401
    # Twilio signs with the real token: still verified with the one that worked.
    request = twilio_inbound(twilio, _url(connector, "twilio"), SID, sid="SM1", sender=WRITER,
                             to="+15005550006", text="Hi")
    accepted(deliver(request), "twilio")
    (event,) = inbox.wait_for(1)
    assert event["vendor_message_id"] == "SM1"


@pytest.mark.parametrize("basic_auth", [None, "sinch:push-password-456"])
def test_an_unsigned_account_is_taken_only_with_basic_auth(
        start_connector: Any, receiver: ReportReceiver, inbox: ReportReceiver,
        basic_auth: str | None) -> None:
    sinch = FakeSinch({PLAN: SINCH_TOKEN}).start()  # no webhook secret: Sinch signs nothing
    try:
        env = {"CONNECTOR_INBOUND_URL": inbox.url("inbound")}
        if basic_auth:
            env["CONNECTOR_CALLBACK_BASIC_AUTH"] = basic_auth
        connector: Connector = start_connector(**env)
        unsigned = {"Chan-Vendor": "sinch", "Chan-Service-Plan-Id": PLAN,
                    "Chan-Api-Token": SINCH_TOKEN, "Chan-Base-Url": sinch.base_url}
        assert checked(httpx.post(connector.url + "/sms/verify",
                                  headers=unsigned)).status_code == 200
        request = sinch_inbound(_url(connector, "sinch", f"?account={PLAN}"), None,
                                mo_id="mo-1", sender=WRITER, to="+15550001111", text="STOP")
        if basic_auth:
            request.headers["Authorization"] = "Basic " + base64.b64encode(
                basic_auth.encode()).decode()
            assert deliver(request).status_code == 204
            assert [e["vendor_message_id"] for e in inbox.wait_for(1)] == ["mo-1"]
        else:
            assert deliver(request).status_code == 403
            assert "does not sign its webhooks" in connector.logs()
            assert taken(connector) == []
    finally:
        sinch.stop()
