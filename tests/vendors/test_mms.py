"""MMS builders, parsers and destination rules, one table row per vendor (SPEC section 8)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import httpx
import jwt
import pytest

from connector import http
from connector import mms as mms_rules
from connector.errors import InvalidSignature, VendorAuthFailed, VendorRejected
from connector.model import Media, Mms, Outgoing, Status
from connector.vendors import VENDORS
from connector.vendors.base import Callback, build_request, parse_answer
from tests.answers import reply

US, CA, GB, AU = "+12125550100", "+14165550100", "+447911123456", "+61491570156"
JPG = Media(url="https://cdn.example/cat.jpg", content_type="image/jpeg")
PNG = Media(url="https://cdn.example/dog.png")  # type from the extension
VCF = Media(url="https://cdn.example/card.vcf", content_type="text/vcard")
SETTINGS: dict[str, dict[str, str]] = {
    "twilio": {"account-sid": "AC" + "1" * 32, "auth-token": "tok"},
    "bird": {"access-key": "ak", "workspace-id": "ws", "channel-id": "ch"},
    "sinch": {"service-plan-id": "plan", "api-token": "tok", "mms": "true"},
    "infobip": {"api-key": "key", "base-url": "https://xyz.api.infobip.com"},
    "vonage": {"api-key": "k", "api-secret": "s"},
}


def message(to: str = US, *media: Media, text: str = "Look", subject: str = "Hi",
            validity: int | None = None) -> Outgoing:
    return Outgoing(message_id="m1d", sender="+12125550199", to_e164=to, text=text,
                    callback_url="https://connector.example/cb?m=tok", validity=validity,
                    mms=Mms(media=media or (JPG,), subject=subject))


def form(request: http.Request) -> list[tuple[str, str]]:
    return parse_qsl(request.content.decode(), keep_blank_values=True)


def body(request: http.Request) -> Any:
    return json.loads(request.content)


def twilio_rows(request: http.Request) -> None:
    assert httpx.URL(request.url).path == f"/2010-04-01/Accounts/{'AC' + '1' * 32}/Messages.json"
    fields = form(request)
    assert ("MediaUrl", JPG.url) in fields and ("MediaUrl", PNG.url) in fields
    assert ("Body", "Look") in fields and ("To", US) in fields
    assert not any(name == "Subject" for name, _ in fields)  # Twilio has no subject field


def infobip_rows(request: http.Request) -> None:
    assert str(request.url) == "https://xyz.api.infobip.com/mms/1/advanced"
    sent = body(request)["messages"][0]
    assert sent["destinations"] == [{"to": "12125550100", "messageId": "m1d"}]
    assert sent["title"] == "Hi" and sent["notifyUrl"].endswith("?m=tok")
    assert sent["messageSegments"] == [
        {"text": "Look"},
        {"contentId": "mediaa", "contentType": "image/jpeg", "contentUrl": JPG.url},
        {"contentId": "mediab", "contentType": "image/png", "contentUrl": PNG.url}]


def sinch_rows(request: http.Request) -> None:
    sent = body(request)
    assert httpx.URL(request.url).path == "/xms/v1/plan/batches"
    assert sent["type"] == "mt_media" and sent["client_reference"] == "m1d"
    assert sent["body"] == {"url": JPG.url, "message": "Look", "subject": "Hi"}


def vonage_rows(request: http.Request) -> None:
    sent = body(request)
    assert str(request.url) == "https://api.nexmo.com/v1/messages"
    assert request.headers["authorization"].startswith("Basic ")
    assert sent["channel"] == "mms" and sent["to"] == "12125550100"
    assert sent["message_type"] == "content" and sent["client_ref"] == "m1d"
    assert sent["content"] == [{"type": "image", "url": JPG.url, "caption": "Look"},
                               {"type": "image", "url": PNG.url}]
    assert sent["webhook_url"].endswith("?m=tok")


def bird_rows(request: http.Request) -> None:
    sent = body(request)
    assert httpx.URL(request.url).path == "/workspaces/ws/channels/ch/messages"
    assert sent["body"] == {"type": "image", "image": {
        "images": [{"mediaUrl": JPG.url}, {"mediaUrl": PNG.url}], "title": "Hi",
        "text": "Look"}}
    assert sent["reference"] == "m1d"


BUILDS: dict[str, Callable[[http.Request], None]] = {
    "twilio": twilio_rows, "infobip": infobip_rows, "vonage": vonage_rows, "bird": bird_rows,
}


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_build_mms_per_vendor(name: str) -> None:
    outgoing = message(US, JPG, PNG)
    request = build_request(VENDORS[name], outgoing, SETTINGS[name])
    assert request.method == "POST"
    BUILDS[name](request)


def test_sinch_build_mms() -> None:
    sinch_rows(build_request(VENDORS["sinch"], message(US, JPG), SETTINGS["sinch"]))


def test_single_vcard_on_vonage_is_a_vcard_message_and_bird_a_file() -> None:
    sent = body(VENDORS["vonage"].build_mms(message(US, VCF, text=""), SETTINGS["vonage"]))
    assert sent["message_type"] == "vcard" and sent["vcard"] == {"url": VCF.url}
    bird = body(VENDORS["bird"].build_mms(message(US, VCF), SETTINGS["bird"]))
    assert bird["body"] == {"type": "file", "file": {
        "files": [{"mediaUrl": VCF.url, "contentType": "text/vcard"}], "text": "Look"}}


def test_validity_per_vendor_mms_limits() -> None:
    day = message(US, JPG, validity=3 * 86400)
    assert body(VENDORS["vonage"].build_mms(day, SETTINGS["vonage"]))["ttl"] == 259200
    infobip = body(VENDORS["infobip"].build_mms(day, SETTINGS["infobip"]))
    assert infobip["messages"][0]["validityPeriod"] == 48 * 60  # minutes, capped at 48 h


def test_an_sms_still_goes_through_build_send() -> None:
    sms = Outgoing(message_id="m", sender="+12125550199", to_e164=US, text="t",
                   callback_url="https://c/cb")
    assert httpx.URL(build_request(VENDORS["vonage"], sms, SETTINGS["vonage"]).url).path == "/sms/json"


REFUSALS = [
    ("twilio", US, (JPG,), {}, None),
    ("twilio", CA, (JPG,), {}, None),
    ("twilio", GB, (JPG,), {}, "US and Canadian"),
    ("vonage", CA, (JPG,), {}, None),
    ("vonage", GB, (JPG,), {}, "US and Canadian"),
    ("bird", US, (JPG, PNG), {}, None),
    ("bird", GB, (JPG,), {}, "US and Canadian"),
    ("sinch", AU, (JPG,), {}, None),
    ("sinch", GB, (JPG,), {}, "US, Canadian"),
    ("sinch", US, (JPG, PNG), {}, "exactly one media"),
    ("sinch", US, (JPG,), {"mms": ""}, "not marked MMS-enabled"),
    ("infobip", GB, (JPG,), {}, None),
]


@pytest.mark.parametrize(("name", "to", "media", "change", "why"), REFUSALS)
def test_where_each_vendor_takes_mms(name: str, to: str, media: tuple[Media, ...],
                                     change: dict[str, str], why: str | None) -> None:
    settings = {**SETTINGS[name], **change}
    refusal = VENDORS[name].mms_refusal(to, Mms(media=media), settings)
    if why is None:
        assert refusal is None
    else:
        assert refusal is not None and why in refusal


ACCEPTED = [
    ("twilio", reply(201, json={"sid": "MM" + "a" * 32, "status": "queued",
                                         "num_segments": "1"}), "MM" + "a" * 32),
    ("infobip", reply(200, json={"bulkId": "b", "messages": [{
        "to": "12125550100", "messageId": "m1d", "status": {
            "groupId": 1, "groupName": "PENDING", "id": 26, "name": "PENDING_ACCEPTED"}}]}),
     "m1d"),
    ("sinch", reply(201, json={"id": "01FC66621XXXXX119Z8PMV1QPQ",
                                        "type": "mt_media"}), "01FC66621XXXXX119Z8PMV1QPQ"),
    ("vonage", reply(202, json={"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123"}),
     "aaaaaaaa-bbbb-4ccc-8ddd-0123"),
    ("bird", reply(202, json={"id": "9f1e", "status": "accepted"}), "9f1e"),
]


@pytest.mark.parametrize(("name", "answer", "vendor_id"), ACCEPTED)
def test_parse_mms_acceptance(name: str, answer: http.Response, vendor_id: str) -> None:
    accepted = parse_answer(VENDORS[name], message(), answer)
    assert accepted.vendor_message_id == vendor_id
    assert accepted.segments is None  # an MMS is one message: the send keeps segments 1


def test_vonage_mms_refusals_by_problem_type() -> None:
    vonage = VENDORS["vonage"]
    with pytest.raises(VendorRejected) as caught:
        vonage.parse_mms(reply(422, json={
            "type": "https://developer.vonage.com/api-errors/messages#1430",
            "title": "Invalid recipient", "detail": "bad to", "instance": "x"}))
    assert caught.value.code == "invalid_recipient" and caught.value.vendor_code == "1430"
    with pytest.raises(VendorAuthFailed):
        vonage.parse_mms(reply(401, json={"type": "x", "title": "no", "instance": "i"}))
    with pytest.raises(VendorAuthFailed) as funds:
        vonage.parse_mms(reply(402, json={"type": "x", "title": "Low balance",
                                                   "instance": "i"}))
    assert funds.value.code == "insufficient_funds"


def test_infobip_mms_lookup_reads_the_mms_logs() -> None:
    lookup = VENDORS["infobip"].build_lookup(message(), SETTINGS["infobip"])
    assert lookup is not None and httpx.URL(lookup.url).path == "/mms/1/logs"
    assert httpx.URL(lookup.url).params["messageId"] == "m1d"


SECRET = "vonage-signature-secret-" + "s1g" * 6
STATUS = {"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123", "to": "12125550100",
          "from": "12125550199", "timestamp": "2025-02-03T12:14:25Z", "status": "rejected",
          "channel": "mms", "client_ref": "m1d",
          "error": {"type": "https://developer.vonage.com/api-errors/messages#1240",
                    "title": "1240", "detail": "Illegal Number"}}


def vonage_status(payload: dict[str, Any], *, secret: str = SECRET,
                  hashed: bytes | None = None, iat: float | None = None) -> Callback:
    raw = json.dumps(payload).encode()
    token = jwt.encode({"iat": int(iat or time.time()), "jti": "j1", "iss": "Vonage",
                        "payload_hash": hashlib.sha256(hashed or raw).hexdigest()},
                       secret, algorithm="HS256")
    return Callback(url="https://connector.example/callbacks/vonage/status?m=tok",
                    headers={"authorization": f"Bearer {token}",
                             "content-type": "application/json"}, body=raw, params=[])


def test_vonage_message_status_is_parsed_with_opt_out() -> None:
    (update,) = VENDORS["vonage"].parse_status(vonage_status(STATUS))
    assert update.status is Status.REJECTED and update.message_ref == "m1d"
    assert update.vendor_message_id == STATUS["message_uuid"]
    assert update.error_code == "1240" and update.opted_out
    delivered = {**STATUS, "status": "delivered", "error": None}
    (ok,) = VENDORS["vonage"].parse_status(vonage_status(delivered))
    assert ok.status is Status.DELIVERED and ok.error_code is None and not ok.opted_out


@pytest.mark.parametrize("forged", ["secret", "body", "stale", "missing"])
def test_vonage_message_status_signature(forged: str) -> None:
    settings = {**SETTINGS["vonage"], "signature-secret": SECRET}
    vonage = VENDORS["vonage"]
    vonage.verify(vonage_status(STATUS), settings)  # the genuine one passes
    bad = {
        "secret": lambda: vonage_status(STATUS, secret="other-" + SECRET),
        "body": lambda: vonage_status(STATUS, hashed=b"{}"),
        "stale": lambda: vonage_status(STATUS, iat=time.time() - 3600),
        "missing": lambda: Callback(url="u", headers={}, body=json.dumps(STATUS).encode(),
                                    params=[]),
    }[forged]()
    with pytest.raises(InvalidSignature):
        vonage.verify(bad, settings)


def test_bird_channel_capabilities_say_whether_it_sends_mms() -> None:
    bird = VENDORS["bird"]
    capable = {"id": "ch", "capabilities": {"messaging": {"messaging": {"outgoing": {
        "mms": {"status": "active", "paused": False}}}}}}
    paused = {"id": "ch", "capabilities": {"messaging": {"outgoing": {
        "mms": {"status": "active", "paused": True}}}}}
    assert bird.mms_capability({}, reply(200, json=capable)) is True
    assert bird.mms_capability({}, reply(200, json=paused)) is False
    assert bird.mms_capability({}, reply(200, json={"id": "ch"})) is False
    assert VENDORS["twilio"].mms_capability({}, reply(200, json={})) is None
    assert VENDORS["sinch"].mms_capability(SETTINGS["sinch"], reply(200)) is True


@pytest.mark.parametrize(("encoding", "fallback", "stored", "flag"), [
    ("gsm7", None, "gsm7", None), ("ucs2", False, "mms", False),
    ("ucs2", True, "ucs2+fallback", True)])
def test_the_encoding_column_records_mms_and_fallback(
        encoding: str, fallback: bool | None, stored: str, flag: bool | None) -> None:
    assert mms_rules.stored_encoding(encoding, fallback) == stored
    assert mms_rules.fallback_flag(stored) is flag


@pytest.fixture(params=sorted(VENDORS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_vendor_builds_an_mms_on_its_hosts_carrying_our_reference(name: str) -> None:
    adapter = VENDORS[name]
    outgoing = message(US, JPG)
    request = adapter.build_mms(outgoing, SETTINGS[name])
    host = httpx.URL(request.url).host
    assert any(host == h or (h.startswith("*.") and host.endswith(h[1:]))
               for h in adapter.hosts), host
    raw = request.content.decode()
    sent = raw + "\n" + unquote_plus(raw)  # form bodies are percent-encoded, JSON not
    assert JPG.url in sent
    assert outgoing.message_id in sent or outgoing.callback_url in sent


def test_every_vendor_classifies_mms_answers_as_it_does_sms(name: str) -> None:
    from connector.errors import VendorThrottled, VendorUnavailable

    adapter = VENDORS[name]
    with pytest.raises(VendorThrottled) as throttled:
        adapter.parse_mms(reply(429, headers={"Retry-After": "7"}, json={}))
    assert throttled.value.retry_after == 7.0
    with pytest.raises(VendorUnavailable):
        adapter.parse_mms(reply(503, text="<html>down</html>"))


@pytest.mark.parametrize("name", ["infobip", "twilio"])
def test_mms_requests_conform_to_the_published_documents(name: str) -> None:
    """Infobip's MMS document and Twilio's Messages document (MediaUrl) are current; Sinch's
    and Vonage's kept copies predate their MMS (tests/fakes/specs/README.md)."""
    from tests.fakes.vendor_contracts import check_built

    request = VENDORS[name].build_mms(message(US, JPG, PNG, validity=600), SETTINGS[name])
    assert check_built(name, request) == []
