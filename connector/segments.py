"""SMS encoding detection and segment counting (GSM 03.38 7-bit vs UCS-2) for outgoing text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal

import msgspec

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_MULTI_SEPTETS",
    "GSM7_SINGLE_SEPTETS",
    "MAX_MESSAGE_CHARS",
    "UCS2_MULTI_UNITS",
    "UCS2_SINGLE_UNITS",
    "Encoding",
    "SegmentInfo",
    "analyse",
]

Encoding = Literal["gsm7", "ucs2"]

# Upper bound callers should enforce on a message body; analyse() itself only measures.
MAX_MESSAGE_CHARS: Final = 1600

GSM7_SINGLE_SEPTETS: Final = 160
# A concatenated part loses 6 octets (7 septets incl. fill bits) to the UDH.
GSM7_MULTI_SEPTETS: Final = 153
UCS2_SINGLE_UNITS: Final = 70
UCS2_MULTI_UNITS: Final = 67

# GSM 03.38 default alphabet in code order 0x00..0x7F; 0x1B (ESC) is not a
# character, so it is left out here. Spelled out positionally so it can be
# checked against the spec table by eye.
GSM7_BASIC: Final[frozenset[str]] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# Reached via ESC, so each costs two septets on the wire.
GSM7_EXTENSION: Final[frozenset[str]] = frozenset("\x0c^{}\\[~]|€")


def _char_class(chars: Iterable[str], *, negate: bool) -> re.Pattern[str]:
    body = "".join(re.escape(c) for c in sorted(chars))
    return re.compile(f"[{'^' if negate else ''}{body}]")


# Matches anything that forces UCS-2.
_NON_GSM_RE: Final = _char_class(GSM7_BASIC | GSM7_EXTENSION, negate=True)
_EXTENSION_RE: Final = _char_class(GSM7_EXTENSION, negate=False)
# ASCII characters that cost exactly one septet; most traffic is only these.
_ASCII_PLAIN: Final = frozenset(c for c in GSM7_BASIC if c.isascii())
_NOT_ASCII_PLAIN_RE: Final = _char_class(_ASCII_PLAIN, negate=True)


class SegmentInfo(msgspec.Struct, frozen=True):
    """How a text would be sent: encoding, parts, and its size in encoding units."""

    encoding: Encoding
    segments: int
    # Septets for gsm7, UTF-16 code units for ucs2.
    units: int
    # Code points, i.e. len(text).
    characters: int


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pack(costs: Iterable[int], capacity: int) -> int:
    # Greedy fill: a 2-unit item (escape pair / surrogate pair) that does not
    # fit in the current part starts the next one, as real encoders do.
    segments, used = 1, 0
    for cost in costs:
        if used + cost > capacity:
            segments += 1
            used = 0
        used += cost
    return segments


def _gsm7(text: str, units: int, has_extension: bool) -> SegmentInfo:
    if units <= GSM7_SINGLE_SEPTETS:
        segments = 1
    elif not has_extension:
        segments = _ceil_div(units, GSM7_MULTI_SEPTETS)
    else:
        ext = GSM7_EXTENSION
        segments = _pack((2 if c in ext else 1 for c in text), GSM7_MULTI_SEPTETS)
    return SegmentInfo("gsm7", segments, units, len(text))


def analyse(text: str) -> SegmentInfo:
    """Return the encoding, segment count and unit count for sending ``text`` as one SMS.

    An empty text is reported as 1 segment with 0 units: an empty SMS is still
    one message on the wire and is billed as such.
    """
    n = len(text)
    # Fast path: plain ASCII with no escape chars needs no per-char work.
    if text.isascii() and _NOT_ASCII_PLAIN_RE.search(text) is None:
        return _gsm7(text, n, has_extension=False)

    if _NON_GSM_RE.search(text) is None:
        extension_count = len(_EXTENSION_RE.findall(text))
        return _gsm7(text, n + extension_count, has_extension=extension_count > 0)

    # surrogatepass so a lone surrogate in the str counts as one unit instead of raising.
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    if units <= UCS2_SINGLE_UNITS:
        segments = 1
    elif units == n:
        # All BMP: no surrogate pairs that could straddle a boundary.
        segments = _ceil_div(units, UCS2_MULTI_UNITS)
    else:
        segments = _pack((2 if c > "\uffff" else 1 for c in text), UCS2_MULTI_UNITS)
    return SegmentInfo("ucs2", segments, units, n)
