"""The fakes' inbound webhooks carry what each vendor's published document says they carry,
and are signed so that the vendor's own algorithm (the fakes' implementation) verifies."""

from __future__ import annotations

import json
from typing import Final
from urllib.parse import parse_qsl

from tests.fakes.bird import FakeBird, bird_signature
from tests.fakes.inbound import (
    bird_inbound,
    infobip_inbound,
    sinch_inbound,
    twilio_inbound,
    vonage_inbound,
)
from tests.fakes.sinch import sinch_signature
from tests.fakes.twilio import FakeTwilio, twilio_signature
from tests.fakes.vonage import FakeVonage, vonage_signature

URL = "https://connector.example/callbacks/{}/inbound"
# Nexmo/api-specification definitions/sms.yml, InboundMessage.required
VONAGE_REQUIRED: Final = {"msisdn", "to", "messageId", "text", "type", "keyword",
                          "message-timestamp", "api-key"}
# api-evangelist/infobip openapi/infobip-sms-openapi.json, SmsMoReport properties (subset the
# example carries) and SmsMoReportResponse
INFOBIP_RESULT: Final = {"messageId", "from", "to", "text", "cleanText", "keyword",
                         "receivedAt", "smsCount", "price", "callbackData"}
# ballerina-platform/openapi-connectors openapi/sinch.sms/openapi.yaml, inboundsObject
SINCH_FIELDS: Final = {"type", "id", "from", "to", "body", "operator_id", "received_at"}


def test_twilio_inbound_is_a_signed_form_with_the_documented_fields() -> None:
    fake = FakeTwilio({"AC1": "token"})
    request = twilio_inbound(fake, URL.format("twilio"), "AC1", sid="SM1", sender="+447911123456",
                             to="+15005550006", text="Hi", media=[("https://m/1", "image/png")])
    params = parse_qsl(request.content.decode())
    fields = dict(params)
    assert {"MessageSid", "AccountSid", "From", "To", "Body", "NumMedia"} <= set(fields)
    assert (fields["NumMedia"], fields["MediaUrl0"], fields["MediaContentType0"]) == (
        "1", "https://m/1", "image/png")
    assert request.headers["x-twilio-signature"] == twilio_signature(
        "token", URL.format("twilio"), params)


def test_bird_inbound_is_a_signed_sms_inbound_event() -> None:
    fake = FakeBird("k", "ws", "ch-1", signing_key="signing")
    request = bird_inbound(fake, URL.format("bird"), message_id="m1", sender="+31612345678",
                           text="Hi", timestamp=1_780_000_000)
    event = json.loads(request.content)
    assert (event["service"], event["event"]) == ("channels", "sms.inbound")
    assert (event["payload"]["channelId"], event["payload"]["direction"]) == ("ch-1", "incoming")
    assert request.headers["messagebird-signature"] == bird_signature(
        "signing", "1780000000", URL.format("bird"), request.content)


def test_sinch_inbound_has_the_inbounds_object_fields_and_its_hmac() -> None:
    request = sinch_inbound(URL.format("sinch"), "secret", mo_id="01", sender="+1555",
                            to="+1666", text="Hi")
    assert set(json.loads(request.content)) == SINCH_FIELDS
    headers = request.headers
    assert headers["x-sinch-webhook-signature"] == sinch_signature(
        "secret", request.content, headers["x-sinch-webhook-signature-nonce"],
        headers["x-sinch-webhook-signature-timestamp"])
    unsigned = sinch_inbound(URL.format("sinch"), None, mo_id="01", sender="+1", to="+2",
                             text="Hi")
    assert "x-sinch-webhook-signature" not in unsigned.headers


def test_infobip_inbound_has_the_documented_results() -> None:
    request = infobip_inbound(URL.format("infobip"), "user:pass", [
        {"messageId": "1", "from": "385916242493", "to": "385921004026", "text": "QUIZ Paris"}])
    push = json.loads(request.content)
    assert (push["messageCount"], push["pendingMessageCount"]) == (1, 0)
    (result,) = push["results"]
    assert set(result) == INFOBIP_RESULT and result["keyword"] == "QUIZ"
    assert request.headers["authorization"] == "Basic dXNlcjpwYXNz"


def test_vonage_inbound_has_the_required_fields_and_a_verifiable_sig() -> None:
    fake = FakeVonage({"abcd1234": "s"}, signing={"abcd1234": ("sig-secret", "sha256")})
    for method in ("GET", "POST", "JSON"):
        request = vonage_inbound(fake, URL.format("vonage"), "abcd1234", message_id="0A1",
                                 msisdn="447700900001", to="447700900000", text="Hi",
                                 method=method)  # type: ignore[arg-type]
        if method == "GET":
            fields = dict(request.url.params)
        elif method == "JSON":
            fields = json.loads(request.content)
        else:
            fields = dict(parse_qsl(request.content.decode()))
        assert VONAGE_REQUIRED <= set(fields)
        sig = fields.pop("sig")
        assert sig == vonage_signature(fields, "sig-secret", "sha256")
