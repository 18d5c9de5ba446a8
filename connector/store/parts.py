"""Multipart messages (Vonage): what the parts' statuses add up to, before and after the send's
answer says how many parts there are.

A part's receipt can beat the send's answer (the vendor calls back while the connector is still
reading its reply). Until the answer is stored the part count is unknown, so the part is kept
in message_parts and the message takes only what holds whatever the count: a failed part fails
it, a sent or delivered part makes it sent. The outcome's write then settles the held parts
against the count, in its own transaction (`settled`).
"""

from __future__ import annotations

import msgspec

from connector.model import Applied, Status, StatusUpdate
from connector.store.base import MessageRow

Part = tuple[Status, str | None, str | None]  # status, error code, error message


def combine_parts(update: StatusUpdate, parts: list[Part], expected: int | None
                  ) -> StatusUpdate | Applied:
    """A multipart message fails with its first failed part, is delivered when every one of
    its `expected` parts is, and is sent once any part is; otherwise nothing changes for the
    message. `expected` None (count not known yet) never makes it delivered."""
    for status, code, text in parts:
        if status.terminal and status is not Status.DELIVERED:
            return msgspec.structs.replace(update, status=status, error_code=code,
                                           error_message=text, part_id=None)
    delivered = sum(1 for status, _, _ in parts if status is Status.DELIVERED)
    if expected is not None and delivered >= expected:
        return msgspec.structs.replace(update, status=Status.DELIVERED, part_id=None)
    if any(status.rank >= Status.SENT.rank for status, _, _ in parts):
        return msgspec.structs.replace(update, status=Status.SENT, part_id=None)
    return Applied.APPLIED


def part_update(row: MessageRow, update: StatusUpdate, parts: list[Part]
                ) -> StatusUpdate | Applied:
    """What one part's receipt (already recorded among `parts`) does to its message."""
    if row.answered:
        return combine_parts(update, parts, row.parts)
    combined = combine_parts(update, parts, None)
    # A part's own vendor id is not the message's: the send's answer names the message.
    if isinstance(combined, StatusUpdate):
        return msgspec.structs.replace(combined, vendor_message_id=None)
    return combined


def settled(row: MessageRow, parts: list[Part]) -> StatusUpdate | None:
    """After the send's answer (`row` as it now stands): the status the held parts add up to,
    when that moves the message forward."""
    combined = combine_parts(StatusUpdate(status=row.status), parts, row.parts)
    if isinstance(combined, StatusUpdate) and combined.status.advances(row.status):
        return combined
    return None
