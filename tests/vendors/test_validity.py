"""CONNECTOR_VALIDITY in each vendor's send: its field, its unit, clamped to its documented range."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import pytest

from connector import http
from connector.model import Outgoing
from connector.vendors import bird, infobip, sinch, twilio, vonage
from connector.vendors.base import Vendor
from tests.fakes.infobip import FakeInfobip
from tests.fakes.twilio_schema import validate_create_form
from tests.vendors.test_contract import case_for

NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
MESSAGE = Outgoing(message_id="c0ffee", sender="MyBrand", to_e164="+447911123456",
                   text="Validity test", callback_url="https://connector.example/cb?m=tok")
DAY = 86400


def _build(vendor: str, validity: int | None) -> http.Request:
    adapter, _ = ADAPTERS[vendor]
    return adapter.build_send(msgspec.structs.replace(MESSAGE, validity=validity),
                              case_for(vendor).settings)


def _form(request: http.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode()))


def _json(request: http.Request) -> Any:
    return json.loads(request.content)


def _twilio(request: http.Request) -> Any:
    return _form(request).get("ValidityPeriod")


def _sinch(request: http.Request) -> Any:
    return _json(request).get("expire_at")


def _infobip(request: http.Request) -> Any:
    (message,) = _json(request)["messages"]
    return message.get("options", {}).get("validityPeriod")


def _vonage(request: http.Request) -> Any:
    return _form(request).get("ttl")


def _bird(request: http.Request) -> Any:
    body = _json(request)
    assert set(body) == {"receiver", "body", "reference"}  # nothing invented for validity
    return None


ADAPTERS: dict[str, tuple[Vendor, Callable[[http.Request], Any]]] = {
    "twilio": (twilio.Twilio(), _twilio),
    "sinch": (sinch.Sinch(clock=lambda: NOW + 0.75), _sinch),
    "infobip": (infobip.Infobip(), _infobip),
    "vonage": (vonage.Vonage(), _vonage),
    "bird": (bird.Bird(), _bird),
}


@pytest.mark.parametrize(("vendor", "validity", "sent"), [
    # Twilio ValidityPeriod: seconds, 1-36000.
    pytest.param("twilio", None, None, id="twilio-unset"),
    pytest.param("twilio", 1, "1", id="twilio-min"),
    pytest.param("twilio", 600, "600", id="twilio"),
    pytest.param("twilio", 36000, "36000", id="twilio-max"),
    pytest.param("twilio", 36001, "36000", id="twilio-clamped"),
    # Sinch expire_at: now + validity, RFC 3339 UTC; at most 3 days (less a minute of skew).
    pytest.param("sinch", None, None, id="sinch-unset"),
    pytest.param("sinch", 600, "2027-01-15T08:10:00Z", id="sinch"),
    pytest.param("sinch", 3 * DAY - 60, "2027-01-18T07:59:00Z", id="sinch-max"),
    pytest.param("sinch", 10 * DAY, "2027-01-18T07:59:00Z", id="sinch-clamped"),
    # Infobip v3 messages[].options.validityPeriod in SECONDS, at most 48 h.
    pytest.param("infobip", None, None, id="infobip-unset"),
    pytest.param("infobip", 600, {"amount": 600, "timeUnit": "SECONDS"}, id="infobip"),
    pytest.param("infobip", 2 * DAY, {"amount": 2 * DAY, "timeUnit": "SECONDS"},
                 id="infobip-max"),
    pytest.param("infobip", 2 * DAY + 1, {"amount": 2 * DAY, "timeUnit": "SECONDS"},
                 id="infobip-clamped"),
    # Vonage ttl: milliseconds, 20000-604800000.
    pytest.param("vonage", None, None, id="vonage-unset"),
    pytest.param("vonage", 5, "20000", id="vonage-clamped-up"),
    pytest.param("vonage", 600, "600000", id="vonage"),
    pytest.param("vonage", 7 * DAY, "604800000", id="vonage-max"),
    pytest.param("vonage", 30 * DAY, "604800000", id="vonage-clamped"),
    # Bird's Channels API send documents no validity field: nothing is sent.
    pytest.param("bird", None, None, id="bird-unset"),
    pytest.param("bird", 600, None, id="bird-has-none"),
])
def test_validity_maps_to_the_vendor_field(vendor: str, validity: int | None, sent: Any) -> None:
    _, read = ADAPTERS[vendor]
    assert read(_build(vendor, validity)) == sent


@pytest.mark.parametrize("validity", [1, 600, 36000, 99999])
def test_twilio_validity_passes_twilio_openapi(validity: int) -> None:
    request = _build("twilio", validity)
    assert validate_create_form(parse_qsl(request.content.decode())) == []


@pytest.mark.parametrize("validity", [1, 600, 10 * DAY])
def test_infobip_validity_passes_the_request_schema(validity: int) -> None:
    request = _build("infobip", validity)
    assert FakeInfobip._validate("application/json", request.content) == []
