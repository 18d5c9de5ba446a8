"""Domain types: the message lifecycle, its status ranks, and what flows between the layers."""

from __future__ import annotations

import enum
import os
import time
from typing import Final

import msgspec


def new_message_id() -> str:
    """32 hex digits: milliseconds since the epoch, then 80 random bits.

    Time-ordered ids land at the right-hand edge of the primary-key index, so inserts touch
    the same few pages instead of a random one each (the index stays in cache as it grows).
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class Status(enum.StrEnum):
    """A message's lifecycle state as stored and shown to operators."""

    PENDING = "pending"  # claimed, vendor outcome not yet known
    ACCEPTED = "accepted"  # the vendor took it
    SENT = "sent"  # handed to the carrier
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"

    @property
    def rank(self) -> int:
        return RANK[self]

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    def advances(self, current: Status) -> bool:
        """True when moving from `current` to self is a step forward (never out of a terminal)."""
        return not current.terminal and RANK[self] > RANK[current]


TERMINAL: Final = frozenset(
    {Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.EXPIRED, Status.REJECTED}
)
RANK: Final = {
    Status.PENDING: 0,
    Status.ACCEPTED: 1,
    Status.SENT: 2,
    **dict.fromkeys(TERMINAL, 3),
}
# What the platform hears: its vocabulary is delivered / failed (and sent when asked for).
REPORT_STATUS: Final = {
    Status.SENT: "sent",
    Status.DELIVERED: "delivered",
    Status.UNDELIVERED: "failed",
    Status.FAILED: "failed",
    Status.EXPIRED: "failed",
    Status.REJECTED: "failed",
}


class Media(msgspec.Struct, frozen=True, kw_only=True):
    """One MMS attachment, by URL (the connector passes URLs on; it never fetches them)."""

    url: str
    content_type: str | None = None


class Mms(msgspec.Struct, frozen=True, kw_only=True):
    """The MMS-only part of a message: what /mms/send adds to an SMS (SPEC section 8)."""

    media: tuple[Media, ...]
    subject: str = ""


class Outgoing(msgspec.Struct, frozen=True, kw_only=True):
    """A validated message, ready for a vendor adapter."""

    message_id: str
    sender: str  # as the platform gave it: a name, or a number already in E.164
    to_e164: str  # +4479...
    text: str
    callback_url: str  # the connector's own per-message status URL (token included)
    # Seconds the vendor may keep trying (CONNECTOR_VALIDITY); None = the vendor's default.
    # Each adapter clamps it to what its vendor documents.
    validity: int | None = None
    mms: Mms | None = None  # set: send as an MMS (text is its body text, may be empty)


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """The vendor took the message."""

    vendor_message_id: str
    status: Status = Status.ACCEPTED
    segments: int | None = None
    from_number: str | None = None
    # Vendors that split a long text into separately reported parts (Vonage) list every part's
    # id; status callbacks then name a part and the message status combines them.
    part_ids: tuple[str, ...] = ()


class StatusUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One vendor status callback, in the shared status model."""

    status: Status
    vendor_message_id: str | None = None
    message_ref: str | None = None  # the connector's message id, when the vendor echoes it
    part_id: str | None = None  # which part of a multipart message this is about
    occurred_at: float | None = None  # unix seconds, when the vendor says it happened
    error_code: str | None = None
    error_message: str | None = None
    from_number: str | None = None
    segments: int | None = None
    # The vendor says the recipient opted out of this sender (Twilio 21610 in a callback...):
    # error_code keeps the vendor's own code, this says what it means in every vendor's terms.
    opted_out: bool = False


class ReportEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    """One delivery-report event as the platform receives it (SPEC section 4)."""

    event_id: str
    request_id: str | None
    message_id: str
    custom_data: str
    status: str
    timestamp: str
    vendor: str
    vendor_message_id: str | None
    error_code: str | None
    error_message: str | None
    segments: int | None
    from_: str | None = msgspec.field(name="from")
    to: str
    # MMS reports only (absent from SMS reports): true when the fallback text went as SMS.
    fallback: bool | msgspec.UnsetType = msgspec.UNSET


class Applied(enum.StrEnum):
    """What a status callback did to the stored message."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same status again
    REGRESSED = "regressed"  # older than what is stored: dropped
    UNKNOWN = "unknown"  # no such message
