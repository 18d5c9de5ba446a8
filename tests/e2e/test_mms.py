"""/mms/send and /mms/verify over loopback: an MMS per vendor with its report, the fallback SMS,
422 mms_not_supported, and media URLs held to the callback_url rules (SPEC section 8)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SID, TOKEN, Connector, checked, row, send_body
from tests.e2e.test_bird import CheckedBird
from tests.e2e.test_infobip import CheckedInfobip
from tests.e2e.test_sinch import CheckedSinch
from tests.e2e.test_vonage import CheckedVonage
from tests.fakes.receiver import ReportReceiver
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.e2e

US_TO, US_FROM, GB_TO = "0012125550100", "0012125550199", "00447911123456"
JPG = "https://cdn.example.com/spring.jpg"
BIRD_KEY, WS, CHANNEL = "bird-mms-access-key-" + "k" * 12, "ws-mms", "ch-mms"
BIRD_SIGNING = "bird-mms-signing-key-" + "s" * 12
PLAN, SINCH_TOKEN = "mmsplan0123456789abcdef01234567", "sinch-mms-token-" + "t" * 12
INFOBIP_KEY = "infobip-mms-key-" + "k" * 12
VONAGE_KEY, VONAGE_SECRET = "mmsk3y01", "vonage-mms-secret-" + "v" * 12
VONAGE_SIG = "vonage-mms-signature-secret-" + "s" * 12


class Vendor:
    """One fake vendor, the headers that reach it, and how it reports delivery."""

    def __init__(self, name: str, fake: Any, headers: dict[str, str],
                 deliver: Callable[[str], httpx.Response]) -> None:
        self.name, self.fake, self.headers, self.deliver = name, fake, headers, deliver


def start_vendor(name: str) -> Vendor:
    if name == "twilio":
        twilio = FakeTwilio({SID: TOKEN}).start()
        return Vendor(name, twilio, {"Chan-Account-Sid": SID, "Chan-Auth-Token": TOKEN,
                                     "Chan-Base-Url": twilio.base_url},
                      lambda sid: checked(twilio.send_status(sid, "delivered")))
    if name == "bird":
        bird = CheckedBird(BIRD_KEY, WS, CHANNEL, signing_key=BIRD_SIGNING, mms=True,
                           channel_number="+12125550199").start()
        return Vendor(name, bird, {"Chan-Vendor": "bird", "Chan-Access-Key": BIRD_KEY,
                                   "Chan-Workspace-Id": WS, "Chan-Channel-Id": CHANNEL,
                                   "Chan-Signing-Key": BIRD_SIGNING,
                                   "Chan-Base-Url": bird.base_url},
                      lambda vid: bird.send_status(vid, "delivered"))
    if name == "sinch":
        sinch = CheckedSinch({PLAN: SINCH_TOKEN}).start()
        return Vendor(name, sinch, {"Chan-Vendor": "sinch", "Chan-Service-Plan-Id": PLAN,
                                    "Chan-Api-Token": SINCH_TOKEN, "Chan-Mms": "true",
                                    "Chan-Base-Url": sinch.base_url},
                      lambda vid: sinch.send_status(vid, "Delivered"))
    if name == "infobip":
        infobip = CheckedInfobip([INFOBIP_KEY]).start()
        return Vendor(name, infobip, {"Chan-Vendor": "infobip", "Chan-Api-Key": INFOBIP_KEY,
                                      "Chan-Base-Url": infobip.base_url},
                      lambda vid: infobip.send_status(vid))
    vonage = CheckedVonage({VONAGE_KEY: VONAGE_SECRET},
                           signing={VONAGE_KEY: (VONAGE_SIG, "sha256")}).start()
    return Vendor(name, vonage, {"Chan-Vendor": "vonage", "Chan-Api-Key": VONAGE_KEY,
                                 "Chan-Api-Secret": VONAGE_SECRET,
                                 "Chan-Signature-Secret": VONAGE_SIG,
                                 "Chan-Signature-Method": "sha256",
                                 "Chan-Base-Url": vonage.base_url},
                  lambda uuid: checked(vonage.send_mms_status(uuid, "delivered")))


@pytest.fixture(params=["bird", "infobip", "sinch", "twilio", "vonage"])
def vendor(request: pytest.FixtureRequest) -> Iterator[Vendor]:
    started = start_vendor(request.param)
    yield started
    started.fake.stop()
    violations = getattr(started.fake, "schema_violations", None)
    if violations is None:
        violations = getattr(started.fake, "violations", [])
    assert violations == [], f"the connector sent {started.name} a request it documents not"
    assert current(started.name, started.fake.contract_violations) == [], \
        "an exchange the vendor's document forbids"


# Where the documents the fakes hold exchanges to predate MMS (tests/fakes/specs/README.md):
# Sinch's is a 2021 third-party copy without mt_media batches or their MMS reports. Those
# exchanges are held to Sinch's current reference by tests/vendors/test_mms.py and the fake's
# own checks instead. (Vonage's sends and message-status webhooks are held to Messages v1.)
DOCUMENT_GAPS = {
    "sinch": ("is not of type 'string'", "recipient_delivery_report_mms", "mt_media"),
}


def current(vendor: str, violations: list[str]) -> list[str]:
    gaps = DOCUMENT_GAPS.get(vendor, ())
    return [v for v in violations if not any(gap in v for gap in gaps)]


def mms_body(receiver: ReportReceiver, **changes: Any) -> dict[str, Any]:
    body = send_body(receiver, sender=US_FROM, recipient=US_TO, message="Spring is here",
                     subject="Spring", media={"url": JPG, "content_type": "image/jpeg"},
                     fallback_message="Spring is here: https://shop.example/spring")
    body.pop("metadata")
    body.update(changes)
    return body


def post(connector: Connector, vendor: Vendor, body: dict[str, Any],
         path: str = "/mms/send") -> httpx.Response:
    if vendor.name == "bird":
        vendor.fake.webhook_url = f"{connector.url}/callbacks/bird/status"
    return checked(httpx.post(connector.url + path, json=body, headers=vendor.headers,
                              timeout=30))


def sent_media(vendor: Vendor) -> list[str]:
    """The media URLs the fake received for its one message."""
    fake = vendor.fake
    if vendor.name == "twilio":
        return list(fake.messages[0]["params"]["MediaUrl"])
    if vendor.name == "bird":
        return [i["mediaUrl"] for i in fake.messages[0]["request"]["body"]["image"]["images"]]
    if vendor.name == "sinch":
        return [fake.batches[0]["request"]["body"]["url"]]
    if vendor.name == "infobip":
        return [m["contentUrl"] for m in fake.messages[0]["media"]]
    return [fake.mms_sent[0]["body"]["image"]["url"]]


def test_an_mms_per_vendor_with_its_delivery_report(
        connector: Connector, vendor: Vendor, receiver: ReportReceiver) -> None:
    body = mms_body(receiver)
    answer = post(connector, vendor, body)
    assert answer.status_code == 200, answer.text
    accepted = answer.json()
    assert (accepted["fallback"], accepted["encoding"], accepted["segments"]) == (
        False, "mms", 1)
    assert sent_media(vendor) == [JPG]
    assert vendor.deliver(accepted["vendor_message_id"]).status_code == 204
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["fallback"], event["to"]) == ("delivered", False, US_TO)
    assert event["custom_data"] == body["custom_data"]
    assert event["message_id"] == accepted["message_id"]
    assert row(connector, accepted["message_id"])["encoding"] == "mms"


@pytest.fixture
def twilio() -> Iterator[Vendor]:
    started = start_vendor("twilio")
    yield started
    started.fake.stop()
    assert started.fake.schema_violations == []


def test_a_destination_without_mms_gets_the_fallback_sms_and_says_so(
        connector: Connector, twilio: Vendor, receiver: ReportReceiver) -> None:
    body = mms_body(receiver, recipient=GB_TO, sender="MyBrand")
    answer = post(connector, twilio, body)
    assert answer.status_code == 200, answer.text
    accepted = answer.json()
    assert (accepted["fallback"], accepted["encoding"]) == (True, "gsm7")
    (sent,) = twilio.fake.messages
    assert sent["params"]["Body"] == body["fallback_message"]
    assert "MediaUrl" not in sent["params"]
    assert twilio.deliver(sent["sid"]).status_code == 204
    (event,) = receiver.wait_for(1)
    assert (event["status"], event["fallback"]) == ("delivered", True)


def test_without_fallback_text_it_is_422_mms_not_supported_and_no_vendor_call(
        connector: Connector, twilio: Vendor, receiver: ReportReceiver) -> None:
    body = mms_body(receiver, recipient=GB_TO, sender="MyBrand", fallback_message=None)
    answer = post(connector, twilio, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "mms_not_supported"
    assert twilio.fake.create_calls == 0


def test_a_repeat_replays_the_mms_answer_without_a_second_vendor_call(
        connector: Connector, twilio: Vendor, receiver: ReportReceiver) -> None:
    first = post(connector, twilio, mms_body(receiver))
    again = post(connector, twilio, mms_body(receiver))
    assert (first.status_code, again.content) == (200, first.content)
    assert twilio.fake.create_calls == 1


def test_bad_mms_bodies_are_400(connector: Connector, twilio: Vendor,
                                receiver: ReportReceiver) -> None:
    no_media = post(connector, twilio, mms_body(receiver, media=None))
    eleven = post(connector, twilio, mms_body(receiver, media=[{"url": JPG}] * 11))
    assert (no_media.status_code, eleven.status_code) == (400, 400)
    assert twilio.fake.create_calls == 0


def test_a_media_url_on_a_private_address_is_refused(
        start_connector: Any, tmp_path: Path, twilio: Vendor) -> None:
    # The harness allows private networks (its fakes live on loopback); this connector does
    # not, as in production. The callback URL is a public address literal (no DNS, and the
    # refusal comes before any report could be due).
    strict = start_connector(tmp_path / "strict", CONNECTOR_ALLOW_PRIVATE_NETWORKS="false")
    body = {"sender": US_FROM, "recipient": US_TO, "message": "hi", "custom_data": "c",
            "callback_url": "https://93.184.216.34/reports",
            "media": [{"url": JPG.replace("cdn.example.com", "93.184.216.35")},
                      {"url": "https://10.1.2.3/cat.jpg"}]}
    refused = post(strict, twilio, body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "url_refused" and "media[1].url" in error["message"]
    assert twilio.fake.create_calls == 0
    # With only public media the same request passes the media check and is refused later,
    # for the loopback vendor Base-Url: the media URL was what the first refusal was about.
    body["media"] = [{"url": "https://93.184.216.35/cat.jpg"}]
    later = post(strict, twilio, body).json()["error"]
    assert later["code"] == "url_refused" and "Chan-Base-Url" in later["message"]


@pytest.mark.parametrize(("name", "mms"), [("bird", True), ("sinch", True), ("twilio", None)])
def test_mms_verify_says_whether_the_account_sends_mms(
        connector: Connector, name: str, mms: bool | None) -> None:
    vendor = start_vendor(name)
    try:
        answer = checked(httpx.get(connector.url + "/mms/verify", headers=vendor.headers,
                                   timeout=30))
        assert answer.status_code == 200, answer.text
        assert (answer.json()["ok"], answer.json()["mms"]) == (True, mms)
        plain = checked(httpx.get(connector.url + "/sms/verify", headers=vendor.headers,
                                  timeout=30))
        assert "mms" not in plain.json()
    finally:
        vendor.fake.stop()


def test_sinch_without_mms_enabled_sends_the_fallback(
        connector: Connector, receiver: ReportReceiver) -> None:
    sinch = start_vendor("sinch")
    try:
        sinch.headers.pop("Chan-Mms")
        verify = checked(httpx.get(connector.url + "/mms/verify", headers=sinch.headers))
        assert verify.json()["mms"] is False
        answer = post(connector, sinch, mms_body(receiver))
        assert answer.status_code == 200 and answer.json()["fallback"] is True
        (batch,) = sinch.fake.batches
        assert batch["resource"]["type"] == "mt_text"
        assert batch["request"]["body"] == mms_body(receiver)["fallback_message"]
    finally:
        sinch.fake.stop()


def test_a_forged_vonage_message_status_is_403_and_reports_nothing(
        connector: Connector, receiver: ReportReceiver) -> None:
    vonage = start_vendor("vonage")
    try:
        accepted = post(connector, vonage, mms_body(receiver)).json()
        uuid = accepted["vendor_message_id"]
        forged = checked(vonage.fake.send_mms_status(
            uuid, "delivered", secret_override="forged-" + VONAGE_SIG))
        assert forged.status_code == 403
        assert row(connector, accepted["message_id"])["status"] == "accepted"
        assert vonage.deliver(uuid).status_code == 204
        (event,) = receiver.wait_for(1)
        assert event["status"] == "delivered"
    finally:
        vonage.fake.stop()
