"""The status callback's own readers (issue #11): the form parser gives what urllib's
parse_qsl gives, headers read as Starlette's do, and the body reader keeps its limit."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import ClientDisconnect

from connector.api.callbacks import MAX_FIELDS, _fields, _headers
from connector.api.send import receive_body
from connector.errors import BadRequest, PayloadTooLarge

FORMS = [
    "", "a=1", "a=1&b=2", "a", "a=", "=b", "&&a=1&&", "a=b=c", "a=1&a=2&a=1",
    "From=%2B15005550006&To=%2B447911123456&Body=hello+world",
    "n%61me=v%61lue", "x=%", "x=%zz&y=%4", "x=%E2%82%AC&y=%FF", "plus+name=a+b",
    "k=caf\u00e9", "m=tok&MessageStatus=sent", "a=1;b=2", "%26=%3D",
]


@pytest.mark.parametrize("text", FORMS)
def test_fields_read_as_parse_qsl_reads_them(text: str) -> None:
    assert _fields(text, "body") == parse_qsl(text, keep_blank_values=True,
                                              max_num_fields=MAX_FIELDS)


@given(st.text(alphabet="%+=&;aZ09fF \u00e9\u20ac\x00", max_size=40))
def test_any_form_reads_as_parse_qsl_reads_it(text: str) -> None:
    """Percent escapes whole, cut short or not hex, `+`, ASCII and other text side by side:
    the fields (and their unquoting, which skips urllib's for ASCII) are parse_qsl's."""
    assert _fields(text, "body") == parse_qsl(text, keep_blank_values=True,
                                              max_num_fields=MAX_FIELDS)


def test_fields_keep_parse_qsl_cap() -> None:
    at_cap = "&".join(f"f{i}=v" for i in range(MAX_FIELDS))
    assert len(_fields(at_cap, "body")) == MAX_FIELDS
    with pytest.raises(BadRequest):
        _fields(at_cap + "&one=more", "body")
    with pytest.raises(BadRequest):  # empty fields count, as they do for parse_qsl
        _fields("&" * MAX_FIELDS, "query")


def test_headers_by_lower_case_name_first_wins() -> None:
    scope = {"headers": [(b"x-twilio-signature", b"first"), (b"content-type", b"a/b"),
                         (b"x-twilio-signature", b"second")]}
    assert _headers(scope) == {"x-twilio-signature": "first", "content-type": "a/b"}


def _receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


async def test_body_joins_chunks_and_refuses_past_the_limit() -> None:
    chunks = [{"type": "http.request", "body": b"ab", "more_body": True},
              {"type": "http.request", "body": b"", "more_body": True},
              {"type": "http.request", "body": b"cd"}]
    bare: dict[str, Any] = {"headers": []}
    assert await receive_body(bare, _receiver(*chunks), 4) == b"abcd"
    with pytest.raises(PayloadTooLarge):
        await receive_body(bare, _receiver(*chunks), 3)
    with pytest.raises(PayloadTooLarge):  # a declared length past the limit: nothing read
        await receive_body({"headers": [(b"content-length", b"5")]}, _receiver(), 4)


async def test_body_stops_at_a_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        await receive_body({"headers": []},
                           _receiver({"type": "http.request", "body": b"a", "more_body": True},
                                     {"type": "http.disconnect"}), 10)
