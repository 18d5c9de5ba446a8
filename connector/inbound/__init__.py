"""Inbound (MO) messages: what each vendor's inbound webhook reads into, and the registry."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from connector.vendors.base import Callback


class Media(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    content_type: str | None = None


class Inbound(msgspec.Struct, frozen=True, kw_only=True):
    """One message a recipient sent to one of the deployment's numbers."""

    vendor_message_id: str
    sender: str  # as the vendor gave it: E.164 with or without "+", or a sender id
    to: str
    text: str
    media: tuple[Media, ...] = ()
    received_at: float | None = None


class InboundAdapter(Protocol):
    """A vendor's inbound webhook. No I/O; verification uses the account's stored settings."""

    name: str

    def account(self, callback: Callback) -> str | None:
        """The vendor account the webhook names (None: it names none)."""

    def settings_account(self, settings: Mapping[str, str]) -> str | None:
        """The same account, as the `Chan-*` settings of a send or verify name it."""

    def signed(self, settings: Mapping[str, str]) -> bool:
        """Whether the vendor signs this account's webhooks (else only Basic auth can hold)."""

    def verify(self, callback: Callback, settings: Mapping[str, str]) -> None:
        """Raise InvalidSignature unless the webhook is authentic for these settings."""

    def parse(self, callback: Callback) -> list[Inbound]:
        """The messages in the webhook; [] for events that carry none."""


def e164(raw: str) -> str:
    """`+digits` for a number in any of the vendors' forms; a sender id stays as it is."""
    raw = raw.strip()
    digits = raw.removeprefix("+")
    if digits.startswith("00") and not raw.startswith("+"):
        digits = digits[2:]
    return "+" + digits if digits.isdigit() and len(digits) >= 3 else raw


def when(stamp: str | None) -> float | None:
    """Unix seconds from an ISO 8601 stamp (UTC when it names no zone); None when unreadable."""
    try:
        moment = datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
