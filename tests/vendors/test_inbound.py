"""Inbound (MO) webhooks, every vendor: the account each names, the messages it carries (from
the vendor's documented sample), and the signature that makes it authentic."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest

from connector.errors import InvalidSignature
from connector.inbound import Inbound, InboundAdapter, Media, e164
from connector.inbound.bird import BirdInbound
from connector.inbound.infobip import InfobipInbound
from connector.inbound.keywords import Keywords
from connector.inbound.registry import INBOUND
from connector.inbound.sinch import SinchInbound
from connector.inbound.twilio import TwilioInbound
from connector.inbound.vonage import VonageInbound
from connector.settings import Settings
from connector.vendors import VENDORS
from connector.vendors.base import Callback
from tests.fakes.bird import bird_signature
from tests.fakes.sinch import sinch_signature
from tests.fakes.twilio import twilio_signature
from tests.fakes.vonage import vonage_signature

PAYLOADS = Path(__file__).parent / "payloads"
NOW = 1_780_000_000
BASE = "https://connector.example/callbacks"


@dataclass(frozen=True)
class InboundCase:
    """One vendor: a documented sample, the settings it is verified with, what it holds."""

    adapter: InboundAdapter
    url: str
    body: bytes
    settings: dict[str, str]
    account: str
    expected: list[Inbound]
    headers: dict[str, str] = field(default_factory=dict)
    form: bool = False
    secret: str | None = None  # the setting the vendor signs with


def _callback(case: InboundCase, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> Callback:
    raw = case.body if body is None else body
    params = parse_qsl(raw.decode(), keep_blank_values=True) if case.form else []
    return Callback(url=case.url, headers=headers if headers is not None else case.headers,
                    body=raw, params=params)


def _twilio() -> InboundCase:
    url = f"{BASE}/twilio/inbound"
    body = (PAYLOADS / "twilio" / "inbound_mms.form").read_bytes()
    token = "twilio-auth-token-0123456789"
    params = parse_qsl(body.decode())
    sid = dict(params)["AccountSid"]
    return InboundCase(
        adapter=TwilioInbound(), url=url, body=body, form=True,
        settings={"account-sid": sid, "auth-token": token}, account=sid, secret="auth-token",
        headers={"x-twilio-signature": twilio_signature(token, url, params)},
        expected=[Inbound(vendor_message_id="MM0123456789abcdef0123456789abcdef",
                          sender="+14155552671", to="+15005550006", text="Hello there",
                          media=(Media(url=dict(params)["MediaUrl0"],
                                       content_type="image/jpeg"),))])


def _bird() -> InboundCase:
    url = f"{BASE}/bird/inbound"
    body = (PAYLOADS / "bird" / "inbound_text.json").read_bytes()
    key, stamp = "bird-signing-key-0123", str(NOW)
    channel = "614208aa-b153-4d5d-9989-2fddfc0ce4c3"
    return InboundCase(
        adapter=BirdInbound(clock=lambda: NOW), url=url, body=body,
        settings={"access-key": "k", "workspace-id": "ws", "channel-id": channel,
                  "signing-key": key}, account=channel, secret="signing-key",
        headers={"messagebird-request-timestamp": stamp,
                 "messagebird-signature": bird_signature(key, stamp, url, body)},
        expected=[Inbound(vendor_message_id="96a0b5fa-a986-453d-be5c-3117f989f025",
                          sender="+31612345678", to=channel,
                          text="Sample incoming text message", received_at=1671697970.736)])


def _sinch() -> InboundCase:
    plan = "e2e0123456789abcdef0123456789abc"
    url = f"{BASE}/sinch/inbound?account={plan}"
    body = (PAYLOADS / "sinch" / "inbound_mo_text.json").read_bytes()
    secret, nonce, stamp = "sinch-webhook-secret", "01JHFFHWYY7HSS4FWTMDTQEK8V", str(NOW)
    return InboundCase(
        adapter=SinchInbound(clock=lambda: NOW), url=url, body=body,
        settings={"service-plan-id": plan, "api-token": "t", "webhook-secret": secret},
        account=plan, secret="webhook-secret",
        headers={"x-sinch-webhook-signature": sinch_signature(secret, body, nonce, stamp),
                 "x-sinch-webhook-signature-nonce": nonce,
                 "x-sinch-webhook-signature-timestamp": stamp,
                 "x-sinch-webhook-signature-algorithm": "HmacSHA256"},
        expected=[Inbound(vendor_message_id="01FC66621VHDBN119Z8PMV1QPA",
                          sender="+11203494390", to="+11203453453",
                          text="This is a test message")])


def _infobip() -> InboundCase:
    url = f"{BASE}/infobip/inbound?account=xyz123.api.infobip.com"
    body = (PAYLOADS / "infobip" / "inbound_push.json").read_bytes()
    return InboundCase(
        adapter=InfobipInbound(), url=url, body=body,
        settings={"api-key": "k", "base-url": "https://XYZ123.api.infobip.com/"},
        account="xyz123.api.infobip.com",
        expected=[Inbound(vendor_message_id="817790313235066447", sender="385916242493",
                          to="385921004026", text="QUIZ Correct answer is Paris",
                          received_at=1573315200.0)])


def _vonage() -> InboundCase:
    url = f"{BASE}/vonage/inbound"
    fields = json.loads((PAYLOADS / "vonage" / "inbound_sms.json").read_text())
    secret = "vonage-signature-secret"
    fields.update({"timestamp": str(NOW), "nonce": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"})
    fields["sig"] = vonage_signature(fields, secret, "sha256")
    return InboundCase(
        adapter=VonageInbound(clock=lambda: NOW), url=url, body=urlencode(fields).encode(),
        form=True, account="abcd1234", secret="signature-secret",
        settings={"api-key": "abcd1234", "api-secret": "s", "signature-secret": secret,
                  "signature-method": "sha256"},
        expected=[Inbound(vendor_message_id="0A0000000123ABCD1", sender="447700900001",
                          to="447700900000", text="Hello world", received_at=1577880000.0)])


CASES = {"twilio": _twilio, "bird": _bird, "sinch": _sinch, "infobip": _infobip,
         "vonage": _vonage}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> InboundCase:
    return CASES[request.param]()


def test_every_vendor_has_an_inbound_adapter_and_case() -> None:
    assert set(INBOUND) == set(VENDORS) == set(CASES)


def test_the_webhook_names_the_account_its_sends_name(case: InboundCase) -> None:
    assert case.adapter.account(_callback(case)) == case.account
    assert case.adapter.settings_account(case.settings) == case.account


def test_the_documented_sample_parses_to_its_messages(case: InboundCase) -> None:
    assert case.adapter.parse(_callback(case)) == case.expected


def _where(keep: Callable[[InboundCase], object]) -> list[str]:
    """The vendors whose documented case has what a test needs (a signature, a secret...)."""
    return [name for name in sorted(CASES) if keep(CASES[name]())]


# Infobip signs nothing (Basic auth is checked before the adapter); the rest sign.
SIGNED = _where(lambda c: c.adapter.signed(c.settings))
WITH_SECRET = _where(lambda c: c.secret is not None)
# Vonage carries its signature in the body (`sig`), the others in headers.
WITH_HEADERS = _where(lambda c: c.headers)


def test_which_vendors_sign_is_as_documented() -> None:
    assert SIGNED == WITH_SECRET == ["bird", "sinch", "twilio", "vonage"]
    assert WITH_HEADERS == ["bird", "sinch", "twilio"]


@pytest.mark.parametrize("name", SIGNED)
def test_a_signed_sample_verifies(name: str) -> None:
    case = CASES[name]()
    case.adapter.verify(_callback(case), case.settings)


@pytest.mark.parametrize("name", SIGNED)
def test_a_changed_body_fails_verification(name: str) -> None:
    case = CASES[name]()
    forged = case.body.replace(b"e", b"E", 1)
    with pytest.raises(InvalidSignature):
        case.adapter.verify(_callback(case, body=forged), case.settings)


@pytest.mark.parametrize("name", WITH_SECRET)
def test_another_accounts_secret_fails_verification(name: str) -> None:
    case = CASES[name]()
    assert case.secret is not None
    wrong = {**case.settings, case.secret: case.settings[case.secret] + "x"}
    with pytest.raises(InvalidSignature):
        case.adapter.verify(_callback(case), wrong)


@pytest.mark.parametrize("name", WITH_HEADERS)
def test_missing_signature_headers_fail_verification(name: str) -> None:
    case = CASES[name]()
    with pytest.raises(InvalidSignature):
        case.adapter.verify(_callback(case, headers={}), case.settings)


@pytest.mark.parametrize(("vendor", "settings"), [
    pytest.param("sinch", {"service-plan-id": "p", "api-token": "t"}, id="sinch-no-secret"),
    pytest.param("vonage", {"api-key": "k", "api-secret": "s"}, id="vonage-no-secret"),
    pytest.param("infobip", {"api-key": "k", "base-url": "https://x.api.infobip.com"},
                 id="infobip-never"),
])
def test_accounts_without_a_secret_are_unsigned(vendor: str, settings: dict[str, str]) -> None:
    assert INBOUND[vendor].signed(settings) is False


def test_a_stale_signed_bird_webhook_is_refused() -> None:
    case = _bird()
    late = BirdInbound(clock=lambda: NOW + 301)
    with pytest.raises(InvalidSignature, match="window"):
        late.verify(_callback(case), case.settings)


def test_a_vonage_webhook_for_another_api_key_is_refused() -> None:
    case = _vonage()
    with pytest.raises(InvalidSignature, match="another API key"):
        case.adapter.verify(_callback(case), {**case.settings, "api-key": "zzzz9999"})


def test_vonage_json_and_get_webhooks_read_the_same() -> None:
    case = _vonage()
    fields = dict(parse_qsl(case.body.decode()))
    as_json = Callback(url=case.url, headers={}, body=json.dumps(fields).encode(), params=[])
    as_get = Callback(url=f"{case.url}?{urlencode(fields)}", method="GET", headers={},
                      body=b"", params=list(fields.items()))
    for callback in (as_json, as_get):
        assert case.adapter.parse(callback) == case.expected
        case.adapter.verify(callback, case.settings)


def test_bird_image_messages_forward_their_media_urls() -> None:
    body = (PAYLOADS / "bird" / "inbound_image.json").read_bytes()
    (message,) = BirdInbound().parse(Callback(url="u", headers={}, body=body, params=[]))
    assert (message.text, message.to) == ("Look", "+31970102030")
    assert message.media == (
        Media(url="https://media.api.bird.com/workspaces/ws/messages/m/media/1"),)


@pytest.mark.parametrize("body", [
    pytest.param(b'{"service":"channels","event":"sms.outbound","payload":{"id":"m"}}',
                 id="bird-outbound-event"),
    pytest.param(b"not json", id="unreadable"),
])
def test_bird_events_without_an_inbound_message_carry_none(body: bytes) -> None:
    assert BirdInbound().parse(Callback(url="u", headers={}, body=body, params=[])) == []


def test_sinch_binary_mo_carries_no_text_and_media_mo_its_url() -> None:
    binary = json.dumps({"type": "mo_binary", "id": "b1", "from": "1", "to": "2",
                         "body": base64.b64encode(b"\x00").decode()}).encode()
    media = json.dumps({"type": "mo_media", "id": "m1", "from": "+1555", "to": "+1666",
                        "body": {"url": "https://media.sinch.com/x.jpg",
                                 "message": "pic"}}).encode()
    adapter = SinchInbound()
    assert adapter.parse(Callback(url="u", headers={}, body=binary, params=[])) == []
    (message,) = adapter.parse(Callback(url="u", headers={}, body=media, params=[]))
    assert (message.text, message.media) == ("pic", (Media(url="https://media.sinch.com/x.jpg"),))


def test_sinch_and_infobip_without_an_account_in_the_url_name_none() -> None:
    bare = Callback(url=f"{BASE}/sinch/inbound", headers={}, body=b"{}", params=[])
    assert SinchInbound().account(bare) is None
    assert InfobipInbound().account(bare) is None


@pytest.mark.parametrize(("raw", "expected"), [
    ("+447911123456", "+447911123456"), ("447911123456", "+447911123456"),
    ("00447911123456", "+447911123456"), (" +15005550006 ", "+15005550006"),
    ("MyBrand", "MyBrand"),
])
def test_numbers_in_every_vendor_form_become_e164(raw: str, expected: str) -> None:
    assert e164(raw) == expected


KEYWORDS = Keywords(Settings(opt_out_keywords=("arret",), opt_in_keywords=("join",)))


@pytest.mark.parametrize(("text", "listed"), [
    pytest.param("STOP", True, id="stop"),
    pytest.param("  stop\n", True, id="stop-lower-whitespace"),
    pytest.param("StopAll", True, id="stopall"),
    pytest.param("unsubscribe", True, id="unsubscribe"),
    pytest.param("Cancel", True, id="cancel"),
    pytest.param("END", True, id="end"),
    pytest.param("quit", True, id="quit"),
    pytest.param("ARRET", True, id="configured-opt-out"),
    pytest.param("START", False, id="start"),
    pytest.param(" unstop ", False, id="unstop"),
    pytest.param("Join", False, id="configured-opt-in"),
    pytest.param("please stop sending me these", None, id="inside-a-sentence"),
    pytest.param("STOP NOW", None, id="two-words"),
    pytest.param("stopp", None, id="near-miss"),
    pytest.param("", None, id="empty"),
])
def test_keywords_count_only_as_the_whole_message(text: str, listed: bool | None) -> None:
    assert KEYWORDS.listed(text) is listed


def test_a_vonage_webhook_without_its_sig_is_refused_when_the_account_signs() -> None:
    case = _vonage()
    fields = dict(parse_qsl(case.body.decode()))
    del fields["sig"]
    unsigned = Callback(url=case.url, headers={}, body=urlencode(fields).encode(),
                        params=list(fields.items()))
    with pytest.raises(InvalidSignature, match="sig is missing"):
        case.adapter.verify(unsigned, case.settings)
