"""Infobip's inbound SMS push: JSON `results`, authenticated by Basic auth only.

Shape: webhook `receive-inbound-sms-messages` of Infobip's SMS OpenAPI document
(SmsMoReport: messageId, from, to, text, receivedAt, ...). Infobip signs no push, so the
deployment's CONNECTOR_CALLBACK_BASIC_AUTH must be set. The body names no account; the webhook
URL does: `/callbacks/infobip/inbound?account=<your API base URL's host>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec
import structlog

from connector.inbound import Inbound, when
from connector.inbound.sinch import query_account
from connector.vendors.base import Callback

log = structlog.get_logger("connector.inbound")


class _Mo(msgspec.Struct):
    messageId: str
    receivedAt: str | None = None
    from_: str = msgspec.field(default="", name="from")
    to: str = ""
    text: str = ""


class _Push(msgspec.Struct):
    results: list[_Mo] = []


_push = msgspec.json.Decoder(_Push)


def host(base_url: str) -> str:
    """An account's base URL (or bare host) as the host alone, lower case."""
    given = base_url.strip().lower()
    return (urlsplit(given if "://" in given else "https://" + given).hostname or "").rstrip(".")


class InfobipInbound:
    name: str = "infobip"

    def account(self, callback: Callback) -> str | None:
        found = query_account(callback)
        return host(found) or None if found else None

    def settings_account(self, settings: Mapping[str, str]) -> str | None:
        return host(settings.get("base-url", "")) or None

    def signed(self, settings: Mapping[str, str]) -> bool:
        return False

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        return None  # never signed: see signed()

    def parse(self, callback: Callback) -> list[Inbound]:
        try:
            push = _push.decode(callback.body)
        except msgspec.DecodeError:
            log.warning("unreadable_inbound", vendor=self.name)
            return []
        return [Inbound(vendor_message_id=mo.messageId, sender=mo.from_, to=mo.to, text=mo.text,
                        received_at=when(mo.receivedAt)) for mo in push.results]
