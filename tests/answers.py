"""Vendor answers for the adapters' parse_* in tests: http.Responses as HttpClient makes them."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping

from pyreqwest.http import HeaderMap

from connector import http


def reply(status: int, *, json: object = None, text: str | None = None, content: bytes = b"",
          headers: Mapping[str, str] | None = None,
          request: http.Request | None = None) -> http.Response:
    """An answer with this status and body (`json`, `text` or raw `content`); its headers are
    a HeaderMap, case-insensitive as pyreqwest's are."""
    if json is not None:
        content = jsonlib.dumps(json).encode()
    elif text is not None:
        content = text.encode()
    return http.Response(status, HeaderMap(headers or {}), content, request)
