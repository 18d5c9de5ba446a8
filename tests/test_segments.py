"""Tests for connector.segments: concrete boundary cases plus property tests against a reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector import segments
from connector.segments import MAX_MESSAGE_CHARS, SegmentInfo, analyse

# Reference GSM 03.38 default alphabet, written independently of the module as
# code points in table order (0x00..0x7F). None marks 0x1B, the escape code.
_ESC = None
# fmt: off
_REF_TABLE: list[str | None] = [
    # 0x00
    "@", "\u00a3", "$", "\u00a5", "\u00e8", "\u00e9", "\u00f9", "\u00ec",
    "\u00f2", "\u00c7", "\n", "\u00d8", "\u00f8", "\r", "\u00c5", "\u00e5",
    # 0x10
    "\u0394", "_", "\u03a6", "\u0393", "\u039b", "\u03a9", "\u03a0", "\u03a8",
    "\u03a3", "\u0398", "\u039e", _ESC, "\u00c6", "\u00e6", "\u00df", "\u00c9",
    # 0x20
    " ", "!", '"', "#", "\u00a4", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/",
    # 0x30
    *"0123456789:;<=>?",
    # 0x40
    "\u00a1", *"ABCDEFGHIJKLMNO",
    # 0x50
    *"PQRSTUVWXYZ", "\u00c4", "\u00d6", "\u00d1", "\u00dc", "\u00a7",
    # 0x60
    "\u00bf", *"abcdefghijklmno",
    # 0x70
    *"pqrstuvwxyz", "\u00e4", "\u00f6", "\u00f1", "\u00fc", "\u00e0",
]
# fmt: on
REF_BASIC = frozenset(c for c in _REF_TABLE if c is not None)
REF_EXT = frozenset(["\x0c", "^", "{", "}", "\\", "[", "~", "]", "|", "\u20ac"])
REF_GSM = REF_BASIC | REF_EXT


def ref_cost(c: str, encoding: str) -> int:
    if encoding == "gsm7":
        return 2 if c in REF_EXT else 1
    return 2 if ord(c) > 0xFFFF else 1


def ref_segments(text: str) -> int:
    """Slow oracle: actually cut the text into parts, never splitting a character."""
    encoding = "gsm7" if all(c in REF_GSM for c in text) else "ucs2"
    single, multi = (160, 153) if encoding == "gsm7" else (70, 67)
    if sum(ref_cost(c, encoding) for c in text) <= single:
        return 1
    parts: list[list[str]] = [[]]
    for c in text:
        if sum(ref_cost(x, encoding) for x in parts[-1]) + ref_cost(c, encoding) > multi:
            parts.append([])
        parts[-1].append(c)
    assert "".join("".join(p) for p in parts) == text
    return len(parts)


def test_reference_tables_match_module() -> None:
    assert len(_REF_TABLE) == 128
    assert len(REF_BASIC) == 127
    assert segments.GSM7_BASIC == REF_BASIC
    assert segments.GSM7_EXTENSION == REF_EXT
    assert not (REF_BASIC & REF_EXT)


def test_max_message_chars() -> None:
    assert MAX_MESSAGE_CHARS == 1600


A = "a"
EURO = "\u20ac"
ZHE = "\u0436"  # Cyrillic, BMP, not GSM
EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair in UTF-16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", SegmentInfo("gsm7", 1, 0, 0), id="empty-is-one-segment"),
        pytest.param("hello", SegmentInfo("gsm7", 1, 5, 5), id="short-ascii"),
        pytest.param(A * 160, SegmentInfo("gsm7", 1, 160, 160), id="gsm-160-single"),
        pytest.param(A * 161, SegmentInfo("gsm7", 2, 161, 161), id="gsm-161-two"),
        pytest.param(A * 306, SegmentInfo("gsm7", 2, 306, 306), id="gsm-306-two"),
        pytest.param(A * 307, SegmentInfo("gsm7", 3, 307, 307), id="gsm-307-three"),
        pytest.param(A * 1600, SegmentInfo("gsm7", 11, 1600, 1600), id="gsm-1600"),
        pytest.param(EURO, SegmentInfo("gsm7", 1, 2, 1), id="euro-two-septets"),
        pytest.param("\x0c", SegmentInfo("gsm7", 1, 2, 1), id="form-feed-extension"),
        pytest.param("{[|]}~^\\", SegmentInfo("gsm7", 1, 16, 8), id="all-ascii-extension"),
        pytest.param(A * 158 + EURO, SegmentInfo("gsm7", 1, 160, 159), id="euro-fills-single"),
        pytest.param(A * 159 + EURO, SegmentInfo("gsm7", 2, 161, 160), id="euro-overflows-single"),
        pytest.param(
            A * 151 + EURO + A * 153,
            SegmentInfo("gsm7", 2, 306, 305),
            id="euro-ends-exactly-at-boundary",
        ),
        pytest.param(
            A * 152 + EURO + A * 152,
            SegmentInfo("gsm7", 3, 306, 305),
            id="euro-straddling-boundary-pushed",
        ),
        pytest.param(EURO * 80, SegmentInfo("gsm7", 1, 160, 80), id="80-euros-single"),
        pytest.param(EURO * 81, SegmentInfo("gsm7", 2, 162, 81), id="81-euros-two"),
        pytest.param(EURO * 153, SegmentInfo("gsm7", 3, 306, 153), id="153-euros-76-per-part"),
        pytest.param("\u0394" * 161, SegmentInfo("gsm7", 2, 161, 161), id="non-ascii-gsm-greek"),
        pytest.param("\u00c7a va", SegmentInfo("gsm7", 1, 5, 5), id="capital-c-cedilla-gsm"),
        pytest.param("\u00e7a va", SegmentInfo("ucs2", 1, 5, 5), id="small-c-cedilla-ucs2"),
        pytest.param(
            "Hello " + A * 160 + "\u00e7",
            SegmentInfo("ucs2", 3, 167, 167),
            id="one-c-cedilla-forces-ucs2",
        ),
        pytest.param("`", SegmentInfo("ucs2", 1, 1, 1), id="backtick-not-gsm"),
        pytest.param("\t", SegmentInfo("ucs2", 1, 1, 1), id="tab-not-gsm"),
        pytest.param("\u0391", SegmentInfo("ucs2", 1, 1, 1), id="greek-capital-alpha-not-gsm"),
        pytest.param(ZHE * 70, SegmentInfo("ucs2", 1, 70, 70), id="ucs2-70-single"),
        pytest.param(ZHE * 71, SegmentInfo("ucs2", 2, 71, 71), id="ucs2-71-two"),
        pytest.param(ZHE * 134, SegmentInfo("ucs2", 2, 134, 134), id="ucs2-134-two"),
        pytest.param(ZHE * 135, SegmentInfo("ucs2", 3, 135, 135), id="ucs2-135-three"),
        pytest.param(EMOJI, SegmentInfo("ucs2", 1, 2, 1), id="emoji-two-units"),
        pytest.param(A * 68 + EMOJI, SegmentInfo("ucs2", 1, 70, 69), id="emoji-fills-single"),
        pytest.param(A * 69 + EMOJI, SegmentInfo("ucs2", 2, 71, 70), id="emoji-overflows-single"),
        pytest.param(
            ZHE * 65 + EMOJI + ZHE * 67,
            SegmentInfo("ucs2", 2, 134, 133),
            id="surrogate-pair-ends-exactly-at-boundary",
        ),
        pytest.param(
            ZHE * 66 + EMOJI + ZHE * 66,
            SegmentInfo("ucs2", 3, 134, 133),
            id="surrogate-pair-straddling-boundary-pushed",
        ),
        pytest.param("\ud800", SegmentInfo("ucs2", 1, 1, 1), id="lone-surrogate-one-unit"),
    ],
)
def test_concrete_cases(text: str, expected: SegmentInfo) -> None:
    assert analyse(text) == expected


def test_result_is_frozen() -> None:
    info = analyse("x")
    with pytest.raises(AttributeError):
        info.segments = 2  # type: ignore[misc]


# st.text() alone is almost always UCS-2, so also draw GSM-only and mixed texts
# long enough to cross the 160/153 and 70/67 boundaries.
_gsm_chars = st.sampled_from(sorted(REF_GSM))
# Plain ASCII GSM text takes the module's fast path, so give it its own strategy.
_ascii_gsm_chars = st.sampled_from(sorted(c for c in REF_BASIC if c.isascii()))
_ext_heavy = st.sampled_from(sorted(REF_EXT)) | st.just("a")
_astral_heavy = st.characters(min_codepoint=0x1F300, max_codepoint=0x1F6FF) | st.just(ZHE)
texts = st.one_of(
    st.text(),
    st.text(alphabet=_gsm_chars, max_size=500),
    st.text(alphabet=_ascii_gsm_chars, max_size=500),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=400),
    st.text(alphabet=_ext_heavy, min_size=140, max_size=400),
    st.text(alphabet=_astral_heavy, min_size=30, max_size=200),
    st.text(alphabet=_gsm_chars | st.characters(), max_size=300),
)


@settings(max_examples=300)
@given(texts)
def test_properties(text: str) -> None:
    info = analyse(text)
    is_gsm = all(c in REF_GSM for c in text)

    assert info.segments >= 1
    assert info.characters == len(text)
    assert (info.encoding == "gsm7") == is_gsm
    assert info.units == sum(ref_cost(c, info.encoding) for c in text)
    assert info.segments == ref_segments(text)

    if info.encoding == "gsm7":
        assert (info.units <= 160) == (info.segments == 1)
        if info.segments > 1:
            assert info.segments * 153 >= info.units
            # A pushed escape pair wastes at most one septet per part.
            assert (info.segments - 1) * 152 < info.units
    else:
        assert (info.units <= 70) == (info.segments == 1)
        if info.segments > 1:
            assert info.segments * 67 >= info.units
            assert (info.segments - 1) * 66 < info.units


@settings(max_examples=300)
@given(texts, st.characters() | _gsm_chars)
def test_segments_monotonic_when_appending(text: str, extra: str) -> None:
    assert analyse(text + extra).segments >= analyse(text).segments
