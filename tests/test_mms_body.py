"""The /mms/send body (SPEC section 8): aliases, media shapes and the rules it shares with SMS."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.api.mms import parse
from connector.errors import BadRequest, RefusedMessage
from connector.model import Media

BASE: dict[str, Any] = {"sender": "0012125550199", "recipient": "0012125550100",
                        "custom_data": "c", "callback_url": "https://p.example/r"}
JPG = {"url": "https://cdn.example/a.jpg", "content_type": "image/jpeg"}


def body(**fields: Any) -> bytes:
    return json.dumps({**BASE, **fields}).encode()


def test_one_media_object_and_no_message_is_an_mms_with_empty_text() -> None:
    common, part = parse(body(media=JPG))
    assert common.message == ""
    assert part.mms.media == (Media(url=JPG["url"], content_type="image/jpeg"),)
    assert (part.mms.subject, part.fallback_text) == ("", None)


def test_aliases_subject_line_and_fallback() -> None:
    _, part = parse(body(media=[JPG, {"url": "https://cdn.example/b.png"}],
                         subject_line="Spring", fallback="See https://s.example"))
    assert part.mms.subject == "Spring" and part.fallback_text == "See https://s.example"
    assert part.mms.media[1] == Media(url="https://cdn.example/b.png")
    _, named = parse(body(media=JPG, subject="A", subject_line="B", fallback_message="F",
                          fallback="G"))
    assert (named.mms.subject, named.fallback_text) == ("A", "F")  # the names win


@pytest.mark.parametrize("media", [None, [], [JPG] * 11, [{"content_type": "image/png"}],
                                   "https://cdn.example/a.jpg"])
def test_media_must_be_one_to_ten_items_with_urls(media: Any) -> None:
    with pytest.raises(BadRequest):
        parse(body(media=media))


def test_the_sms_rules_hold_too() -> None:
    with pytest.raises(BadRequest, match="callback_url"):
        parse(json.dumps({**BASE, "callback_url": None, "media": JPG}).encode())
    with pytest.raises(BadRequest, match="custom_data"):
        parse(body(media=JPG, custom_data="x" * 4097))
    with pytest.raises(RefusedMessage) as long_text:
        parse(body(media=JPG, message="x" * 1601))
    assert long_text.value.code == "message_too_long"
    with pytest.raises(RefusedMessage):
        parse(body(media=JPG, fallback_message="x" * 1601))
