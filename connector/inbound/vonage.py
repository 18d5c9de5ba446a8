"""Vonage's inbound SMS webhook (GET query, form or JSON), signed with `sig` when the account
has a signature secret.

Shape: `inbound-sms` in Vonage's SMS API definition (definitions/sms.yml, InboundMessage:
api-key, msisdn, to, messageId, text, type, keyword, message-timestamp, timestamp, nonce, sig,
concat*). The api-key names the account. Parts of a concatenated message arrive as separate
webhooks, each with its own messageId, and are forwarded as they come.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

from connector.inbound import Inbound
from connector.vendors.base import Callback
from connector.vendors.vonage import Vonage, _fields

_TEXT_TYPES: Final = frozenset({"text", "unicode"})


def _stamp(raw: str) -> float | None:
    try:
        return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


class VonageInbound:
    name: str = "vonage"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._vendor = Vonage(clock)  # its signature check, and its replay window

    def account(self, callback: Callback) -> str | None:
        return _fields(callback).get("api-key") or None

    def settings_account(self, settings: Mapping[str, str]) -> str | None:
        return settings.get("api-key") or None

    def signed(self, settings: Mapping[str, str]) -> bool:
        return bool(settings.get("signature-secret"))

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        self._vendor.verify(callback, settings)

    def parse(self, callback: Callback) -> list[Inbound]:
        fields = _fields(callback)
        if not fields.get("messageId") or fields.get("type", "text") not in _TEXT_TYPES:
            return []  # binary messages carry no text
        return [Inbound(vendor_message_id=fields["messageId"], sender=fields.get("msisdn", ""),
                        to=fields.get("to", ""), text=fields.get("text", ""),
                        received_at=_stamp(fields.get("message-timestamp", "")))]
