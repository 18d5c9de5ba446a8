"""The connector's real request builders, held to each vendor's own published OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from connector import http
from connector.model import Media, Mms, Outgoing, new_message_id
from connector.tokens import CallbackTokens
from connector.vendors import VENDORS
from connector.vendors.base import build_request
from tests.fakes.specs.subset import subset
from tests.fakes.vendor_contracts import (
    DOCUMENTS,
    check_built,
    check_response,
    check_webhook,
    contract,
)
from tests.vendors.cases import Case
from tests.vendors.test_contract import case_for

PUBLISHED = sorted(DOCUMENTS)  # Bird publishes no machine-readable document
PAYLOADS = Path(__file__).parent / "payloads"
# The longest public base the settings allow, and a real token: the URL the vendors get.
CALLBACK = ("https://" + "c" * 32 + "/callbacks/{vendor}/status?m="
            + CallbackTokens("contract-secret").sign(new_message_id()))


def messages(vendor: str) -> list[Outgoing]:
    """What the builders meet: GSM and Unicode text, with and without a validity."""
    url = CALLBACK.format(vendor=vendor)
    return [Outgoing(message_id=new_message_id(), sender=sender, to_e164="+447911123456",
                     text=text, callback_url=url, validity=validity)
            for sender, text, validity in [("MyBrand", "Your code is 1234", None),
                                           ("+447700900123", "Grüße 👋 " * 30, 3600)]]


def settings_for(vendor: str) -> Mapping[str, str]:
    case: Case = case_for(vendor)
    return case.settings


@pytest.mark.parametrize("vendor", PUBLISHED)
def test_send_requests_conform(vendor: str) -> None:
    adapter = VENDORS[vendor]
    for message in messages(vendor):
        request = adapter.build_send(message, settings_for(vendor))
        assert check_built(vendor, request) == []


@pytest.mark.parametrize("vendor", PUBLISHED)
def test_verify_requests_conform(vendor: str) -> None:
    assert check_built(vendor, VENDORS[vendor].build_verify(settings_for(vendor))) == []


# Twilio and Vonage have no look-up by the connector's reference (README: ambiguous outcomes).
WITH_LOOKUP = ["infobip", "sinch"]


def test_the_vendors_with_a_lookup_are_the_ones_checked() -> None:
    found = [v for v in PUBLISHED
             if VENDORS[v].build_lookup(messages(v)[0], settings_for(v)) is not None]
    assert found == WITH_LOOKUP


@pytest.mark.parametrize("vendor", WITH_LOOKUP)
def test_lookup_requests_conform(vendor: str) -> None:
    request = VENDORS[vendor].build_lookup(messages(vendor)[0], settings_for(vendor))
    assert request is not None and check_built(vendor, request) == []


def test_vonage_callback_fits_100_characters_at_the_longest_public_base() -> None:
    request = VENDORS["vonage"].build_send(messages("vonage")[0], settings_for("vonage"))
    callback = dict(parse_qsl(request.content.decode()))["callback"]
    assert len(callback) <= 100, callback


# -- the validator finds drift -------------------------------------------------------------

def _rebuilt(request: http.Request, **json_changes: object) -> http.Request:
    body = {**json.loads(request.content), **json_changes}
    return http.request(request.method, request.url, request.headers, json=body)


def test_an_unknown_field_is_drift() -> None:
    sent = VENDORS["sinch"].build_send(messages("sinch")[0], settings_for("sinch"))
    errors = check_built("sinch", _rebuilt(sent, callbackUrl="https://x.example/"))
    assert any("callbackUrl" in error for error in errors), errors


def test_a_wrong_type_deep_inside_is_drift() -> None:
    sent = VENDORS["infobip"].build_send(messages("infobip")[0], settings_for("infobip"))
    body = json.loads(sent.content)
    body["messages"][0]["destinations"][0]["to"] = 447911123456
    errors = check_built("infobip", _rebuilt(sent, **body))
    assert any("destinations/0/to" in error for error in errors), errors


def test_a_form_value_of_the_wrong_type_is_drift() -> None:
    sent = VENDORS["vonage"].build_send(messages("vonage")[0], settings_for("vonage"))
    form = [(k, "1" if k == "status-report-req" else v)
            for k, v in parse_qsl(sent.content.decode())]
    request = http.request("POST", sent.url, sent.headers, form=dict(form))
    assert any("status-report-req" in error for error in check_built("vonage", request))


def test_a_path_no_document_has_is_drift() -> None:
    request = http.request("GET", "https://rest.nexmo.com/sms/status", {})
    assert check_built("vonage", request)


def test_a_missing_required_query_parameter_is_drift() -> None:
    # Basic auth stands for api_key/api_secret; without it the balance call lacks both.
    request = http.request("GET", "https://rest.nexmo.com/account/get-balance", {})
    assert check_built("vonage", request) == ["vonage-account.openapi.json: query parameter "
                                              "api_key: required",
                                              "vonage-account.openapi.json: query parameter "
                                              "api_secret: required"]


# -- MMS --------------------------------------------------------------------------------

INFOBIP_MMS = {"messages": [{"sender": "441134960000", "destinations": [{"to": "447911123456"}],
                             "content": {"title": "Hi",
                                         "messageSegments": [{"type": "TEXT",
                                                              "text": "Hello"}]}}]}
MEDIA = {kind: Media(url=f"https://cdn.example/spring.{ext}", content_type=mime)
         for kind, ext, mime in [("image", "jpg", "image/jpeg"), ("vcard", "vcf", "text/vcard"),
                                 ("video", "mp4", "video/mp4"), ("audio", "mp3", "audio/mpeg"),
                                 ("file", "pdf", "application/pdf")]}


def vonage_mms(*media: Media, text: str = "Spring is here", validity: int | None = None
               ) -> http.Request:
    outgoing = Outgoing(message_id=new_message_id(), sender="+12125550199",
                        to_e164="+12125550100", text=text, validity=validity,
                        callback_url=CALLBACK.format(vendor="vonage"),
                        mms=Mms(media=media, subject="Spring"))
    return build_request(VENDORS["vonage"], outgoing, {"api-key": "k", "api-secret": "s"})


@pytest.mark.parametrize("text", ["Spring is here", ""], ids=["caption", "no-caption"])
@pytest.mark.parametrize("kind", sorted(MEDIA))
def test_vonage_mms_builder_conforms_to_messages_v1(kind: str, text: str) -> None:
    request = vonage_mms(MEDIA[kind], text=text, validity=86400)
    assert json.loads(request.content)["message_type"] == kind
    assert check_built("vonage", request) == []


def test_vonage_mms_of_several_items_is_a_conforming_content_message() -> None:
    request = vonage_mms(*MEDIA.values(), validity=60)  # the ttl is raised to Vonage's 300
    assert json.loads(request.content)["message_type"] == "content"
    assert check_built("vonage", request) == []


def _vonage_drift(change: Mapping[str, object], **headers: str) -> list[str]:
    sent = vonage_mms(MEDIA["image"])
    body = {**json.loads(sent.content), **change}
    return check_built("vonage", http.request("POST", sent.url, {**sent.headers, **headers},
                                              json=body))


@pytest.mark.parametrize("change", [
    {"image": {"caption": "no url"}}, {"ttl": 60}, {"image": {"url": "u", "caption": ""}},
    {"channel": "sms"}, {"to": "1" * 16}, {"webhook_version": "v2"},
], ids=["no-url", "short-ttl", "empty-caption", "sms-channel", "long-to", "version"])
def test_an_mms_the_messages_v1_document_refuses_is_drift(change: Mapping[str, object]) -> None:
    assert _vonage_drift(change)


def test_messages_v1_takes_basic_or_bearer_auth_only() -> None:
    assert _vonage_drift({}, authorization="Bearer a.jwt.token") == []
    assert _vonage_drift({}, authorization="Token abc") == [
        "vonage-messages.openapi.json: Authorization: one of basic, bearer is required"]


STATUS = {"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab", "to": "12125550100",
          "from": "12125550199", "timestamp": "2025-02-03T12:14:25Z", "status": "rejected",
          "channel": "mms", "client_ref": "m1d", "destination": {"network_code": "310260"},
          "usage": {"currency": "EUR", "price": "0.0150"},
          "error": {"type": "https://developer.vonage.com/api-errors/messages#1240",
                    "title": "1240", "detail": "Illegal Number"}}


@pytest.mark.parametrize(("change", "valid"), [
    ({}, True), ({"status": "accepted"}, False), ({"status": None}, False),
    ({"channel": None}, False), ({"to": "1" * 16}, False),
], ids=["as-sent", "unknown-status", "no-status", "no-channel", "long-to"])
def test_vonage_mms_message_status_against_messages_v1(change: Mapping[str, object],
                                                       valid: bool) -> None:
    event = {k: v for k, v in {**STATUS, **change}.items() if v is not None}
    errors = check_webhook("vonage", "message-status", "application/json",
                           json.dumps(event).encode())
    assert (errors == []) is valid, errors


@pytest.mark.parametrize(("url", "body", "valid"), [
    pytest.param("https://x.api.infobip.com/mms/2/messages", INFOBIP_MMS, True, id="mms-2"),
    pytest.param("https://x.api.infobip.com/mms/2/messages", {"messages": [{"sender": 5}]},
                 False, id="mms-2-bad"),
])
def test_infobip_mms_2_is_there_for_a_builder(url: str, body: object, valid: bool) -> None:
    errors = check_built("infobip", http.request("POST", url, {}, json=body))
    assert (errors == []) is valid, errors


def test_infobip_mms_1_advanced_is_there_for_a_builder() -> None:
    errors = check_built("infobip", http.request(
        "POST", "https://x.api.infobip.com/mms/1/advanced", {}, json={"head": {}}))
    assert errors and all("infobip-mms.openapi.json: body" in e for e in errors), errors


# -- webhooks: the vendors' documented examples, as the adapters' tests use them ----------

@pytest.mark.parametrize(("vendor", "webhook", "payload"), [
    ("infobip", "receive-outbound-sms-message-reports-v3", "infobip/dlr_delivered.json"),
    ("infobip", "receive-outbound-sms-message-reports-v3", "infobip/dlr_two_results.json"),
    ("infobip", "receive-outbound-sms-message-reports-v3", "infobip/dlr_rejected_dnd.json"),
    ("vonage", "delivery-receipt", "vonage/dlr_delivered.json"),
    ("sinch", "incomingSMS", "sinch/mo_text.json"),
    ("sinch", "deliveryReport", "sinch/delivery_report_summary.json"),
])
def test_payloads_the_adapter_tests_use_conform(vendor: str, webhook: str, payload: str) -> None:
    body = (PAYLOADS / payload).read_bytes()
    assert check_webhook(vendor, webhook, "application/json", body) == []


@pytest.mark.parametrize("payload", ["dlr_delivered_vector.json", "dlr_dispatched.json",
                                     "dlr_failed.json"])
def test_sinch_recipient_reports_conform(payload: str) -> None:
    template = "/xms/v1/{service_plan_id}/batches/{batch_id}/delivery_report/{recipient_msisdn}"
    body = (PAYLOADS / "sinch" / payload).read_bytes()
    assert check_response("sinch", "sinch-sms.openapi.json", "GET", template, 200, body) == []


def test_a_webhook_body_missing_its_results_is_drift() -> None:
    errors = check_webhook("infobip", "receive-outbound-sms-message-reports-v3",
                           "application/json", b'{"results": [{"status": "DELIVERED"}]}')
    assert errors


# -- the subsets are what subset.py makes of what they keep -------------------------------

@pytest.mark.parametrize("name", sorted({n for names in DOCUMENTS.values() for n in names}))
def test_each_subset_is_self_contained(name: str) -> None:
    doc = json.loads((Path(__file__).parents[1] / "fakes" / "specs" / name).read_text())
    ops = [f"{method} {path}" for path, item in doc["paths"].items()
           for method in item if method in ("get", "post", "put", "delete")]
    hooks = list(doc.get("webhooks", doc.get("x-webhooks", {})))
    again = subset(doc, ops, hooks)  # every $ref it keeps must resolve inside it
    assert again["paths"].keys() == doc["paths"].keys()


def _webhook_examples() -> list[tuple[str, str, str, object]]:
    found: list[tuple[str, str, str, object]] = []
    for vendor, names in sorted(DOCUMENTS.items()):
        for name in names:
            doc = contract(vendor, name)
            for hook in doc.doc.get("webhooks") or doc.doc.get("x-webhooks") or {}:
                op = doc.webhook_operation(hook) or {}
                media = op.get("requestBody", {}).get("content", {}).get("application/json", {})
                for label, example in (media.get("examples") or {}).items():
                    example = doc.deref(example)  # an example may be a $ref
                    if "value" in example:
                        found.append((vendor, hook, f"{name} {hook} {label}", example["value"]))
    return found


@pytest.mark.parametrize(("vendor", "webhook", "label", "example"),
                         [pytest.param(*e, id=e[2]) for e in _webhook_examples()])
def test_each_documented_webhook_example_conforms(vendor: str, webhook: str, label: str,
                                                  example: object) -> None:
    # Inbound and report webhooks alike: what a fake sends (or will) is held to the same.
    body = json.dumps(example).encode()
    assert check_webhook(vendor, webhook, "application/json", body) == []
