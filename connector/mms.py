"""What MMS needs beside SMS: media kinds, destination rules and how a message records its kind."""

from __future__ import annotations

import mimetypes
from typing import Final
from urllib.parse import urlsplit

import phonenumbers

from connector.model import Media

MAX_MEDIA: Final = 10
# The encoding column of an MMS: stored instead of gsm7/ucs2 so that no store schema changes.
# A fallback SMS keeps its SMS encoding with this suffix, which the report reads back.
MMS_ENCODING: Final = "mms"
FALLBACK_SUFFIX: Final = "+fallback"
# Vendors' documented MMS destinations (ISO regions), see each adapter's mms_refusal.
US_CA: Final = frozenset({"US", "CA"})


def region(e164: str) -> str:
    """The ISO region of an E.164 number ("ZZ" when unknown)."""
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return "ZZ"
    return phonenumbers.region_code_for_number(number) or "ZZ"


def content_type(item: Media) -> str:
    """The item's declared type, else the one its URL's extension names, else unknown."""
    if item.content_type:
        return item.content_type.split(";", 1)[0].strip().lower()
    guessed, _ = mimetypes.guess_type(urlsplit(item.url).path)
    return guessed or "application/octet-stream"


def kind(item: Media) -> str:
    """image, video, audio, vcard or file: the families vendors' MMS bodies name."""
    mime = content_type(item)
    if mime in ("text/vcard", "text/x-vcard", "text/directory", "application/vcard"):
        return "vcard"
    family = mime.split("/", 1)[0]
    return family if family in ("image", "video", "audio") else "file"


def stored_encoding(sms_encoding: str, fallback: bool | None) -> str:
    """What the encoding column keeps: `mms`, the SMS encoding, or it marked as a fallback."""
    if fallback is None:
        return sms_encoding
    return sms_encoding + FALLBACK_SUFFIX if fallback else MMS_ENCODING


def fallback_flag(encoding: str | None) -> bool | None:
    """From a stored encoding: None for an SMS, False for an MMS, True for its fallback SMS."""
    if encoding == MMS_ENCODING:
        return False
    if encoding is not None and encoding.endswith(FALLBACK_SUFFIX):
        return True
    return None


def sms_encoding(encoding: str) -> str:
    """The stored encoding without the fallback mark (what the platform is told)."""
    return encoding.removesuffix(FALLBACK_SUFFIX)
