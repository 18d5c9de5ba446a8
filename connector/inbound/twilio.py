"""Twilio's incoming-message webhook: form fields, X-Twilio-Signature over the webhook URL.

https://www.twilio.com/docs/messaging/guides/webhook-request (MessageSid, AccountSid, From,
To, Body, NumMedia, MediaUrl{N}, MediaContentType{N}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from connector.inbound import Inbound, Media
from connector.vendors.base import Callback
from connector.vendors.twilio import Twilio

_VENDOR: Final = Twilio()
MAX_MEDIA: Final = 10  # Twilio's documented limit on media per message


class TwilioInbound:
    name: str = "twilio"

    def account(self, callback: Callback) -> str | None:
        return dict(callback.params).get("AccountSid") or None

    def settings_account(self, settings: Mapping[str, str]) -> str | None:
        return settings.get("account-sid") or None

    def signed(self, settings: Mapping[str, str]) -> bool:
        return True  # Twilio signs every webhook with the account's Auth Token

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        _VENDOR.verify(callback, settings)

    def parse(self, callback: Callback) -> list[Inbound]:
        params = dict(callback.params)
        sid = params.get("MessageSid") or params.get("SmsSid")
        if not sid:
            return []
        count = params.get("NumMedia", "0")
        media = tuple(
            Media(url=params[f"MediaUrl{n}"], content_type=params.get(f"MediaContentType{n}"))
            for n in range(min(int(count), MAX_MEDIA) if count.isdigit() else 0)
            if params.get(f"MediaUrl{n}"))
        return [Inbound(vendor_message_id=sid, sender=params.get("From", ""),
                        to=params.get("To", ""), text=params.get("Body", ""), media=media)]
