"""MSISDN and sender parsing: the platform's 00-form numbers to E.164 and back, on phonenumbers."""

from __future__ import annotations

import re
from typing import Final

import phonenumbers

from connector.errors import BadRequest, RefusedMessage

_MSISDN: Final = re.compile(r"(?:00|\+)([1-9][0-9]{6,14})")
_ALPHA_SENDER: Final = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_SHORT_CODE: Final = re.compile(r"[0-9]{3,8}")
_DIGITS: Final = re.compile(r"[0-9]+")


def parse_recipient(raw: str) -> str:
    """Return the E.164 form (+...) of a `00...` or `+...` MSISDN (see recipient())."""
    return recipient(raw)[0]


def recipient(raw: str) -> tuple[str, phonenumbers.PhoneNumber]:
    """The E.164 form (+...) of a `00...` or `+...` MSISDN, and the parsed number.

    A malformed value is a 400 (the request is wrong); a well-formed number that no numbering
    plan allows is a 422 `invalid_recipient` (the message can never be delivered).
    """
    match = _MSISDN.fullmatch(raw)
    if match is None:
        raise BadRequest("recipient must be 00 or + followed by 7-15 digits",
                         code="invalid_recipient")
    e164 = "+" + match.group(1)
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        raise BadRequest("recipient has no valid country calling code",
                         code="invalid_recipient") from None
    if not phonenumbers.is_valid_number(number):
        raise RefusedMessage("recipient is not a valid number in its numbering plan",
                             code="invalid_recipient")
    return e164, number


def parse_sender(raw: str) -> str:
    """Return the sender as vendors take it: an alphanumeric name, a short code, or E.164."""
    if _SHORT_CODE.fullmatch(raw):
        return raw
    match = _MSISDN.fullmatch(raw)
    if match is not None:
        return "+" + match.group(1)
    if _ALPHA_SENDER.fullmatch(raw):
        return raw
    raise BadRequest(
        "sender must be a name of 1-11 letters, digits or spaces with at least one letter, "
        "a short code of 3-8 digits, or a 00/+ international number",
        code="invalid_sender",
    )


def is_number(sender: str) -> bool:
    return sender.startswith("+") or _DIGITS.fullmatch(sender) is not None


def digits(e164: str) -> str:
    """Bare international digits, as Infobip and Vonage want them."""
    return e164.removeprefix("+")


def to_platform(e164: str) -> str:
    """The 00 form the platform uses."""
    return "00" + e164.removeprefix("+")


def mask(number: str) -> str:
    """Keep the country code and two last digits: enough to debug, not enough to identify."""
    if len(number) <= 6:
        return "*" * len(number)
    return number[:5] + "*" * (len(number) - 7) + number[-2:]
