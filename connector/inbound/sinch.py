"""Sinch's MO callback (`mo_text`, `mo_media`), HMAC-signed when the service plan has a secret.

Shape: the `incomingSMS` webhook of Sinch's SMS OpenAPI document (inboundsObject: type, id,
from, to, body, received_at). The body names no service plan, so the webhook URL does:
`/callbacks/sinch/inbound?account=<service plan id>` (Sinch sets callback URLs per plan).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
import structlog

from connector.inbound import Inbound, Media, when
from connector.vendors.base import Callback
from connector.vendors.sinch import Sinch

log = structlog.get_logger("connector.inbound")


class _Mo(msgspec.Struct):
    type: str
    id: str
    body: Any = None  # text for mo_text; {url, message, ...} for mo_media
    received_at: str | None = None
    from_: str = msgspec.field(default="", name="from")
    to: str = ""


_mo = msgspec.json.Decoder(_Mo)


def query_account(callback: Callback) -> str | None:
    """The `account` the operator put in the webhook URL."""
    found = dict(parse_qsl(urlsplit(callback.url).query)).get("account", "").strip()
    return found or None


class SinchInbound:
    name: str = "sinch"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._vendor = Sinch(clock)  # its signature check, and its replay window

    def account(self, callback: Callback) -> str | None:
        return query_account(callback)

    def settings_account(self, settings: Mapping[str, str]) -> str | None:
        return settings.get("service-plan-id") or None

    def signed(self, settings: Mapping[str, str]) -> bool:
        return bool(settings.get("webhook-secret"))

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        self._vendor.verify(callback, settings)

    def parse(self, callback: Callback) -> list[Inbound]:
        try:
            mo = _mo.decode(callback.body)
        except msgspec.DecodeError:
            log.warning("unreadable_inbound", vendor=self.name)
            return []
        media: tuple[Media, ...] = ()
        if mo.type == "mo_text" and isinstance(mo.body, str):
            text = mo.body
        elif mo.type == "mo_media" and isinstance(mo.body, dict) and mo.body.get("url"):
            text = str(mo.body.get("message") or "")
            media = (Media(url=str(mo.body["url"])),)
        else:  # mo_binary (base64 user data) has no text to forward
            log.info("ignored_inbound_event", vendor=self.name, event_type=mo.type)
            return []
        return [Inbound(vendor_message_id=mo.id, sender=mo.from_, to=mo.to, text=text,
                        media=media, received_at=when(mo.received_at))]
