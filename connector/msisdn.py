"""MSISDN and sender parsing: the platform's 00-form numbers to E.164 and back, on phonenumbers."""

from __future__ import annotations

import re
from typing import Final, NamedTuple

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberDesc

from connector.errors import BadRequest, RefusedMessage

# phonenumbers compiles a metadata pattern on every match unless told to keep them (parse,
# number_type and the sender pools match some on every send; #11). The metadata is fixed, so
# the cache is bounded. (Older releases have no such cache: they keep compiling.)
if hasattr(phonenumbers, "enable_pattern_cache"):
    phonenumbers.enable_pattern_cache()

_MSISDN: Final = re.compile(r"(?:00|\+)([1-9][0-9]{6,14})")
_ALPHA_SENDER: Final = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_SHORT_CODE: Final = re.compile(r"[0-9]{3,8}")
_DIGITS: Final = re.compile(r"[0-9]+")
_MIN_NATIONAL: Final = 2  # phonenumbers' shortest national significant number
_NON_GEO: Final = "001"  # phonenumbers' region for non-geographic calling codes (e.g. +800)


def parse_recipient(raw: str) -> str:
    """Return the E.164 form (+...) of a `00...` or `+...` MSISDN (see recipient())."""
    return recipient(raw)[0]


def recipient(raw: str) -> tuple[str, phonenumbers.PhoneNumber]:
    """The E.164 form (+...) of a `00...` or `+...` MSISDN, and the parsed number (see
    destination())."""
    found = destination(raw)
    return found.e164, found.number


class Destination(NamedTuple):
    e164: str
    number: phonenumbers.PhoneNumber
    region: str  # ISO 3166 (or "001", non-geographic), as region_code_for_number names it


def destination(raw: str) -> Destination:
    """The E.164 form (+...) of a `00...` or `+...` MSISDN, the parsed number and its region.

    A malformed value is a 400 (the request is wrong); a well-formed number that no numbering
    plan allows is a 422 `invalid_recipient` (the message can never be delivered).
    """
    match = _MSISDN.fullmatch(raw)
    if match is None:
        raise BadRequest("recipient must be 00 or + followed by 7-15 digits",
                         code="invalid_recipient")
    e164 = "+" + match.group(1)
    try:
        number = parse_international(match.group(1))
    except phonenumbers.NumberParseException:
        raise BadRequest("recipient has no valid country calling code",
                         code="invalid_recipient") from None
    region, valid = region_and_validity(number)
    if not valid or region is None:
        raise RefusedMessage("recipient is not a valid number in its numbering plan",
                             code="invalid_recipient")
    return Destination(e164, number, region)


def parse_international(digits: str) -> phonenumbers.PhoneNumber:
    """phonenumbers.parse("+" + digits), for the 7-15 digits (the first not 0) _MSISDN takes.

    parse reads any written form: it finds the number in the text, normalises every kind of
    digit, strips extensions, then splits off the calling code and may strip a national
    prefix. For plain digits only the last two steps do anything, and most often they only
    split: that case (about 90 Python calls in parse) is done here; a national number that
    its plan's national prefix could start, or that starts with 0 (Italian leading zeros),
    goes to parse itself. tests/test_msisdn.py compares both over every example number.
    """
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return phonenumbers.parse("+" + digits)  # no calling code: parse says so
    national = digits[size:]
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code))
    prefix = metadata.national_prefix_for_parsing if metadata is not None else None
    if (metadata is None or len(national) < _MIN_NATIONAL or national[0] == "0"
            or (prefix and _PATTERNS[prefix].match(national))):
        return phonenumbers.parse("+" + digits)
    return phonenumbers.PhoneNumber(country_code=code, national_number=int(national))


def region_and_validity(number: phonenumbers.PhoneNumber) -> tuple[str | None, bool]:
    """(region_code_for_number(number), is_valid_number(number)), matching the number against
    its region's patterns once instead of up to three times, mobiles first.

    is_valid_number is region_code_for_number followed by is_valid_number_for_region. Where a
    calling code has several regions, region_code_for_number picks the first whose leading
    digits match or, for a region without leading digits, whose patterns the number matches,
    which is is_valid_number_for_region for that region: so that answer is the validity too.
    tests/test_msisdn.py checks both against phonenumbers for every example number.
    """
    code = number.country_code or 0
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code)
    if not regions:
        return None, False
    national = phonenumbers.national_significant_number(number)
    if len(regions) == 1:
        return regions[0], _valid_in(code, regions[0], national)
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region, None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            if _PATTERNS[metadata.leading_digits].match(national):
                return region, _valid_in(code, region, national)
        elif _valid_in(code, region, national):
            return region, True
    return None, False


def _valid_in(code: int, region: str, national: str) -> bool:
    """is_valid_number_for_region for a number of calling code `code` whose national
    significant number is `national`.

    phonenumbers decides it by the number's type, trying eleven kinds of number in turn (a
    mobile last); valid means some type other than UNKNOWN, i.e. the number matches the
    region's general pattern and any one type's, whatever the order. Mobiles, what an SMS is
    sent to, are tried first: two matches rather than eleven (#11).
    """
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if metadata is None or (region != _NON_GEO and metadata.country_code != code):
        return False
    if not _matches(national, metadata.general_desc):
        return False
    return any(_matches(national, desc) for desc in (
        metadata.mobile, metadata.fixed_line, metadata.premium_rate, metadata.toll_free,
        metadata.shared_cost, metadata.voip, metadata.personal_number, metadata.pager,
        metadata.uan, metadata.voicemail))


def _matches(national: str, desc: PhoneNumberDesc | None) -> bool:
    """Whether the number is of this kind: one of its lengths (when it lists any) and its
    whole pattern, as phonenumbers matches a number description."""
    if desc is None or not desc.national_number_pattern:
        return False
    if desc.possible_length and len(national) not in desc.possible_length:
        return False
    return _PATTERNS[desc.national_number_pattern].fullmatch(national) is not None


class _Compiled(dict[str, "re.Pattern[str]"]):
    """Metadata patterns, compiled on first use and kept (the metadata is fixed, so this is
    bounded); a hit costs no Python call, where re.fullmatch(text) costs three."""

    def __missing__(self, pattern: str) -> re.Pattern[str]:
        compiled = self[pattern] = re.compile(pattern)
        return compiled


_PATTERNS: Final = _Compiled()


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
