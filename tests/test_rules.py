"""Destination and sender rules: refused before any vendor call, with a precise reason."""

from __future__ import annotations

import phonenumbers
import pytest

from connector.errors import RefusedMessage
from connector.rules import Rules
from connector.settings import Settings, SettingsError


def rules(**env: str) -> Rules:
    return Rules(Settings.from_env(env))


@pytest.mark.parametrize(("env", "to", "sender", "code"), [
    pytest.param({"CONNECTOR_ALLOWED_REGIONS": "GB,DE"}, "+33142685300", "Brand",
                 "region_not_permitted", id="fr-not-in-iso-list"),
    pytest.param({"CONNECTOR_ALLOWED_REGIONS": "44"}, "+4930123456", "Brand",
                 "region_not_permitted", id="de-not-in-calling-code-list"),
    pytest.param({"CONNECTOR_REFUSE_LANDLINES": "true"}, "+442071838750", "Brand", "landline",
                 id="uk-landline-refused"),
    pytest.param({}, "+14155552671", "Brand", "sender_not_allowed", id="alpha-to-us"),
    pytest.param({}, "+16135550123", "Brand", "sender_not_allowed", id="alpha-to-ca"),
])
def test_refusals(env: dict[str, str], to: str, sender: str, code: str) -> None:
    with pytest.raises(RefusedMessage) as caught:
        rules(**env).check(phonenumbers.parse(to), sender)
    assert (caught.value.status, caught.value.code) == (422, code)


@pytest.mark.parametrize(("env", "to", "sender", "region"), [
    pytest.param({}, "+33142685300", "Brand", "FR", id="no-rules-any-region"),
    pytest.param({"CONNECTOR_ALLOWED_REGIONS": "gb, fr"}, "+33142685300", "Brand", "FR",
                 id="iso-list-case-insensitive"),
    pytest.param({"CONNECTOR_ALLOWED_REGIONS": "+44"}, "+442071838750", "Brand", "GB",
                 id="calling-code"),
    pytest.param({}, "+442071838750", "Brand", "GB", id="landline-allowed-by-default"),
    pytest.param({"CONNECTOR_REFUSE_LANDLINES": "true"}, "+14155552671", "+14155550000", "US",
                 id="nanp-fixed-or-mobile-is-not-refused"),
    pytest.param({}, "+14155552671", "12345", "US", id="short-code-to-us"),
    pytest.param({}, "+14155552671", "+14155550000", "US", id="number-to-us"),
    pytest.param({"CONNECTOR_ALPHA_SENDER_BLOCKED_REGIONS": "none"}, "+14155552671", "Brand",
                 "US",
                 id="alpha-block-list-emptied"),
])
def test_allowed(env: dict[str, str], to: str, sender: str, region: str) -> None:
    assert rules(**env).check(phonenumbers.parse(to), sender) == region


def test_bad_region_setting_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="CONNECTOR_ALLOWED_REGIONS"):
        Settings.from_env({"CONNECTOR_ALLOWED_REGIONS": "Britain"})


def test_a_region_the_caller_found_is_used_as_given() -> None:
    """The send passes the region msisdn.destination found instead of matching again."""
    allowed = rules(CONNECTOR_ALLOWED_REGIONS="GB")
    number = phonenumbers.parse("+442071838750")
    assert allowed.check(number, "Brand") == "GB"
    with pytest.raises(RefusedMessage) as caught:
        allowed.check(number, "Brand", "IM")
    assert caught.value.code == "region_not_permitted"
