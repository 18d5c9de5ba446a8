"""MSISDN and sender parsing: what the platform may send, and what each vendor gets."""

import contextlib
import random
from typing import Final

import phonenumbers
import pytest

from connector import msisdn
from connector.errors import BadRequest, RefusedMessage


@pytest.mark.parametrize(("raw", "e164"), [
    pytest.param("00447911123456", "+447911123456", id="uk-mobile-00"),
    pytest.param("+447911123456", "+447911123456", id="uk-mobile-plus"),
    pytest.param("00421905123456", "+421905123456", id="sk-mobile"),
    pytest.param("0014155552671", "+14155552671", id="us-nanp"),
])
def test_recipient_becomes_e164(raw: str, e164: str) -> None:
    assert msisdn.parse_recipient(raw) == e164


@pytest.mark.parametrize("raw", [
    pytest.param("447911123456", id="no-prefix"),
    pytest.param("00", id="prefix-only"),
    pytest.param("00123", id="too-short"),
    pytest.param("0044791112345678901", id="too-long"),
    pytest.param("0044 7911 123456", id="spaces"),
    pytest.param("00447911l23456", id="letter"),
    pytest.param("000447911123456", id="leading-zero-country"),
    pytest.param("00999123456789", id="unassigned-country-code"),
    pytest.param("", id="empty"),
])
def test_malformed_recipient_is_a_400(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        msisdn.parse_recipient(raw)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_recipient"


def test_number_outside_any_numbering_plan_is_a_422() -> None:
    with pytest.raises(RefusedMessage) as caught:
        msisdn.parse_recipient("00441234567")  # UK number too short for its plan
    assert caught.value.status == 422
    assert caught.value.code == "invalid_recipient"


@pytest.mark.parametrize(("raw", "expected"), [
    pytest.param("MyBrand", "MyBrand", id="alpha"),
    pytest.param("My Brand 1", "My Brand 1", id="alpha-space-digit"),
    pytest.param("ABCDEFGHIJK", "ABCDEFGHIJK", id="alpha-11"),
    pytest.param("12345", "12345", id="short-code"),
    pytest.param("00447911123456", "+447911123456", id="number-00"),
    pytest.param("+447911123456", "+447911123456", id="number-plus"),
])
def test_sender_forms(raw: str, expected: str) -> None:
    assert msisdn.parse_sender(raw) == expected


@pytest.mark.parametrize("raw", [
    pytest.param("ABCDEFGHIJKL", id="alpha-12"),
    pytest.param("12", id="short-code-too-short"),
    pytest.param("My-Brand", id="punctuation"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="spaces-only"),
])
def test_bad_sender_is_a_400(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        msisdn.parse_sender(raw)
    assert caught.value.code == "invalid_sender"


def test_formats_for_vendors_and_platform() -> None:
    assert msisdn.digits("+447911123456") == "447911123456"
    assert msisdn.to_platform("+447911123456") == "00447911123456"


def test_mask_keeps_country_and_last_two() -> None:
    assert msisdn.mask("+447911123456") == "+4479******56"
    assert "7911123" not in msisdn.mask("00447911123456")


_TYPES: Final = [getattr(phonenumbers.PhoneNumberType, name)
                 for name in dir(phonenumbers.PhoneNumberType)
                 if name.isupper() and name != "UNKNOWN"]


def _numbers() -> list[phonenumbers.PhoneNumber]:
    """Every example number phonenumbers has (each region and non-geographic calling code,
    each number type, and each region's invalid example), each also one digit shorter, one
    longer and with its last digit changed; then random digits behind every calling code. So
    valid and invalid numbers of every plan, and of every region sharing a calling code, are
    compared."""
    examples = [phonenumbers.example_number_for_type(region, kind)
                for region in phonenumbers.SUPPORTED_REGIONS for kind in _TYPES]
    examples += [phonenumbers.invalid_example_number(region)
                 for region in phonenumbers.SUPPORTED_REGIONS]
    examples += [phonenumbers.example_number_for_non_geo_entity(code)
                 for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS]
    texts = []
    for number in filter(None, examples):
        digits = str(number.national_number)
        changed = digits[:-1] + str((int(digits[-1]) + 3) % 10)
        texts += [f"+{number.country_code}{variant}"
                  for variant in (digits, digits[:-1], digits + "5", changed)]
    chance = random.Random(11)
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        for _ in range(20):
            texts.append(f"+{code}" + "".join(chance.choices("0123456789",
                                                             k=chance.randint(6, 12))))
    found = []
    for text in texts:
        with contextlib.suppress(phonenumbers.NumberParseException):
            found.append(phonenumbers.parse(text))
    return found


def test_region_and_validity_agree_with_phonenumbers() -> None:
    numbers = _numbers()
    assert len(numbers) > 10_000
    valid = 0
    for number in numbers:
        expected = (phonenumbers.region_code_for_number(number),
                    phonenumbers.is_valid_number(number))
        assert msisdn.region_and_validity(number) == expected, number
        valid += expected[1]
    assert 0 < valid < len(numbers)  # both outcomes were compared


def test_parse_international_agrees_with_phonenumbers() -> None:
    texts = [f"+{number.country_code}{number.national_number}" for number in _numbers()]
    chance = random.Random(7)
    texts += ["+" + chance.choice("123456789") + "".join(chance.choices("0123456789",
                                                                          k=chance.randint(6, 14)))
              for _ in range(10_000)]
    texts += ["+44" + "0" * zeros + "7911123456"[:9 - zeros] for zeros in range(1, 5)]
    texts += ["+39" + "0" * zeros + "6123456"[:7 - zeros] for zeros in range(1, 7)]
    texts += ["+44180020123456", "+14155552671", "+11234567", "+999123456", "+80012345678"]
    failures = 0
    for text in texts:
        try:
            expected = phonenumbers.parse(text)
        except phonenumbers.NumberParseException as exc:
            with pytest.raises(phonenumbers.NumberParseException) as caught:
                msisdn.parse_international(text[1:])
            assert caught.value.error_type == exc.error_type, text
            failures += 1
            continue
        assert msisdn.parse_international(text[1:]) == expected, text
    assert 0 < failures < len(texts)


def test_region_and_validity_of_an_unknown_calling_code() -> None:
    unknown = phonenumbers.PhoneNumber(country_code=999, national_number=1234567)
    assert msisdn.region_and_validity(unknown) == (None, False)


def test_destination_names_the_region() -> None:
    isle_of_man = msisdn.destination("00447624123456")
    assert isle_of_man == ("+447624123456", phonenumbers.parse("+447624123456"), "IM")
    assert msisdn.destination("+14155552671").region == "US"
    assert msisdn.recipient("+14155552671") == ("+14155552671",
                                                phonenumbers.parse("+14155552671"))
