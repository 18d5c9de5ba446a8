"""NUL (U+0000) in strings bound for PostgreSQL, whose `text` and `json` cannot hold it.

SQLite stores NUL like any other character; PostgreSQL refuses the whole statement, which the
store reports as unavailable (503), so the platform or the vendor retries a write that can
never succeed. Two remedies, by what the value is for:

- The platform's custom_data and a kept message text must come back exactly (SPEC: custom_data
  is "returned verbatim in every delivery report"). Such a value is stored whole as UTF-8 in a
  BYTEA column beside its text column (migration 10), which keeps a readable copy (`shown`);
  a read prefers the BYTEA copy. The common value, with no NUL, costs one `in` test on write
  and one None test on read.
- A vendor's strings (ids, numbers, error codes and texts) are never echoed verbatim by
  contract: `clean` replaces NUL with U+FFFD. It is deterministic, so a vendor id stored
  cleaned is found again by the same id cleaned.
"""

from __future__ import annotations

from typing import Final

import msgspec

from connector.model import StatusUpdate
from connector.store.base import DeadLetterFilter, InboundRecord, SendOutcome

REPLACEMENT: Final = "\ufffd"


def exact(value: str) -> bytes | None:
    """The value's UTF-8, for its BYTEA column, when text cannot hold it; else None."""
    return value.encode() if "\x00" in value else None


def shown(value: str) -> str:
    """The value as its text column can hold it: NUL replaced (unchanged without NUL)."""
    return value.replace("\x00", REPLACEMENT) if "\x00" in value else value


def clean(value: str | None) -> str | None:
    """A vendor's string, which nothing needs back verbatim, as text can hold it (shown)."""
    return value.replace("\x00", REPLACEMENT) if value is not None and "\x00" in value \
        else value


def restored(text: str, exact_copy: bytes | None) -> str:
    """The stored value: the BYTEA copy when there is one, else the text column."""
    return text if exact_copy is None else bytes(exact_copy).decode()


def cleaned_outcome(outcome: SendOutcome) -> SendOutcome:
    """A send's answer with the vendor's strings cleaned (the same object when none holds NUL:
    one formatted string and one `in` test, no call per field)."""
    o = outcome
    if "\x00" not in f"{o.vendor_message_id}{o.from_number}{o.error_code}{o.error_message}":
        return o
    return msgspec.structs.replace(
        o, vendor_message_id=clean(o.vendor_message_id), from_number=clean(o.from_number),
        error_code=clean(o.error_code), error_message=clean(o.error_message))


def cleaned_update(update: StatusUpdate) -> StatusUpdate:
    """A callback's status with the vendor's strings cleaned (the same object without NUL)."""
    u = update
    if "\x00" not in (f"{u.vendor_message_id}{u.part_id}{u.from_number}{u.error_code}"
                      f"{u.error_message}"):
        return u
    return msgspec.structs.replace(
        u, vendor_message_id=clean(u.vendor_message_id), part_id=clean(u.part_id),
        from_number=clean(u.from_number), error_code=clean(u.error_code),
        error_message=clean(u.error_message))


def cleaned_record(record: InboundRecord) -> InboundRecord:
    """An inbound message's stored strings cleaned (its forwarded event, BYTEA, is not)."""
    r = record
    if "\x00" not in f"{r.vendor_message_id}{r.number}{r.reason}":
        return r
    return msgspec.structs.replace(r, vendor_message_id=clean(r.vendor_message_id),
                                   number=clean(r.number), reason=clean(r.reason))


def cleaned_filter(which: DeadLetterFilter) -> DeadLetterFilter:
    """An operator's dead-letter filter as text can hold it (a host with NUL matches none)."""
    if which.host is None or "\x00" not in which.host:
        return which
    return msgspec.structs.replace(which, host=clean(which.host))
