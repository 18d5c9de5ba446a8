"""The Chan-* settings of a send: which vendor, and one 400 naming every missing header."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from connector.api.send import vendor_settings
from connector.errors import BadRequest
from connector.vendors import VENDORS


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/sms/send", "headers": raw})


def _header(setting: str) -> str:
    return "Chan-" + "-".join(part.capitalize() for part in setting.split("-"))


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_one_400_names_every_missing_header(vendor: str) -> None:
    with pytest.raises(BadRequest) as caught:
        vendor_settings(_request({"Chan-Vendor": vendor}), "twilio")
    assert caught.value.code == "missing_setting"
    for setting in VENDORS[vendor].required:
        assert _header(setting) in caught.value.message, caught.value.message


def test_only_the_missing_ones_are_named() -> None:
    given = {"Chan-Vendor": "bird", "Chan-Workspace-Id": "ws-1"}
    with pytest.raises(BadRequest) as caught:
        vendor_settings(_request(given), "twilio")
    assert caught.value.message == ("missing headers Chan-Access-Key, Chan-Channel-Id "
                                    "(required for bird)")


def test_all_present_gives_the_known_settings() -> None:
    given = {"Chan-Account-Sid": "AC1", "Chan-Auth-Token": "t", "Chan-Colour": "red"}
    vendor, config = vendor_settings(_request(given), "twilio")
    assert vendor.name == "twilio"
    assert config == {"account-sid": "AC1", "auth-token": "t"}


@pytest.mark.parametrize("value", ["AC1\tx", "AC1\x01x", "AC1\x7fx"])
def test_a_setting_with_a_control_character_is_a_400_that_does_not_echo_it(value: str) -> None:
    """Found by the fuzz run: a tab in Chan-Account-Sid went into Twilio's URL and answered
    500 from /sms/verify. Every setting goes into a vendor URL or header: refuse it up front."""
    with pytest.raises(BadRequest) as caught:
        vendor_settings(_request({"Chan-Vendor": "twilio", "Chan-Account-Sid": value,
                                  "Chan-Auth-Token": "token"}), "twilio")
    assert caught.value.code == "invalid_setting"
    assert "Chan-Account-Sid" in caught.value.message and value not in caught.value.message
