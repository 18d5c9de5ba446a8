"""The Store protocol: dedupe claims, messages and their statuses, and the report outbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from connector.model import Applied, Status, StatusUpdate


class NewMessage(msgspec.Struct, frozen=True, kw_only=True):
    """What is stored when a send claims its request_id, before the vendor is called."""

    id: str
    request_id: str | None
    vendor: str
    sealed_settings: bytes
    sender: str
    to_number: str  # E.164
    custom_data: str
    callback_url: str
    metadata: bytes | None  # JSON, opaque
    segments: int
    encoding: str
    claimed_until: float
    # The number the message goes out from when the connector chose it (a sender pool's pick):
    # stored as from_number when the vendor's acceptance names none.
    from_number: str | None = None
    # The dedupe key: the request_id within its tenant (Tenant.claim_key); None: no dedupe.
    claim_key: str | None = None


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The answer given to the platform, replayed byte for byte to repeats."""

    status: int
    body: bytes
    retry_after: float | None = None


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """The result of claiming a request_id: ours, or someone else's (with what is known)."""

    message_id: str
    claimed: bool
    response: StoredResponse | None = None
    claimed_until: float = 0.0
    # What callbacks (or the ambiguity expiry) proved meanwhile: a claim whose status moved
    # on is never taken over, and a stored ambiguous answer gives way to the row's facts.
    status: Status = Status.PENDING
    ambiguous: bool = False


class SendOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """The vendor's answer to a send, as stored on the message."""

    response: StoredResponse
    status: Status  # ACCEPTED on success, PENDING when ambiguous, FAILED/REJECTED otherwise
    vendor_message_id: str | None = None
    segments: int | None = None
    from_number: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    release: bool = False  # retryable: free the request_id so a repeat sends again
    ambiguous: bool = False
    parts: int = 1  # separately reported parts at the vendor (Vonage multipart)


class MessageRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    request_id: str | None
    vendor: str
    sealed_settings: bytes
    sender: str
    to_number: str
    custom_data: str
    callback_url: str
    status: Status
    vendor_message_id: str | None
    from_number: str | None
    segments: int | None
    encoding: str | None
    error_code: str | None
    error_message: str | None
    ambiguous: bool
    parts: int
    handed_off_at: float | None
    delivered_at: float | None
    errored_at: float | None
    created_at: float
    updated_at: float


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A report to deliver: one event for one callback URL."""

    event_id: str
    url: str
    payload: bytes  # the JSON event object


class LeasedReport(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    event_id: str
    url: str
    payload: bytes
    attempts: int
    created_at: float


class ReportAttempt(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    outcome: str  # delivered, retry, dead
    status_code: int | None
    error: str | None


class ReportView(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    url: str
    state: str
    attempts: list[ReportAttempt]
    next_attempt_at: float | None


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    """A recipient a vendor reported as opted out, for one integration account."""

    account: str  # as tenants.account_of names it, e.g. "twilio:AC..."
    number: str  # E.164
    credential: str  # the keyed hash of the account's secret (Tenant); '' for older entries
    reason: str
    vendor_code: str | None
    created_at: float


# Builds the report for a status change inside the store's transaction (None: no report).
ReportBuilder = Callable[[MessageRow, StatusUpdate, float], OutboxEntry | None]


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve."""

    async def claim(self, message: NewMessage, now: float) -> Claim: ...

    async def poll_claim(self, message_id: str) -> Claim | None:
        """The claim's current state (None: the row is gone)."""

    async def take_over(self, message_id: str, now: float, claimed_until: float,
                        owner: str) -> bool:
        """Take an expired in-flight claim whose status is still pending; True when `owner`
        now holds it."""

    async def record_outcome(self, message_id: str, outcome: SendOutcome, now: float,
                             owner: str | None = None) -> bool:
        """Store the send's answer, only while `owner` (default: the message's own send)
        holds the claim; an acceptance also replaces a stored ambiguous answer. False, and
        nothing changed, when neither holds."""

    async def message(self, message_id: str) -> MessageRow | None: ...

    async def find(self, key: str) -> MessageRow | None:
        """By connector message id, else by request_id (newest first)."""

    async def find_by_vendor_id(self, vendor: str, vendor_message_id: str
                                ) -> MessageRow | None: ...

    async def apply_status(self, message_id: str, update: StatusUpdate, now: float,
                           report: ReportBuilder, seen: MessageRow | None = None) -> Applied:
        """Apply one status change (only forward) and queue its report, atomically.

        `seen` is the row as the caller read it moments ago; a store may use it to write
        without locking first, when the row has not changed since (it must check)."""

    async def expire_ambiguous(self, older_than: float, now: float,
                               report: ReportBuilder) -> int: ...

    async def lease_reports(self, worker: str, now: float, limit: int,
                            lease_seconds: float) -> list[LeasedReport]: ...

    async def reports_done(self, results: list[tuple[int, ReportAttempt, float | None]],
                           now: float) -> None:
        """Record attempts: outcome delivered/dead ends a report; retry sets its next time."""

    async def release_reports(self, worker: str) -> None: ...

    async def next_report_due(self) -> float | None: ...

    async def reports_for(self, message_id: str) -> list[ReportView]: ...

    async def purge(self, before: float) -> int: ...

    async def outbox_stats(self) -> tuple[int, float | None, int]:
        """Pending reports, the oldest pending report's created_at, dead-lettered reports."""

    async def suppress(self, account: str, number: str, reason: str, vendor_code: str | None,
                       now: float, credential: str = "") -> None:
        """Remember that `number` opted out on `account` under `credential` (again: reason
        and code updated)."""

    async def is_suppressed(self, account: str, number: str, credential: str = "") -> bool:
        """Listed under this credential, or by an entry older than credentials ('')."""

    async def suppressions(self, account: str | None, limit: int, offset: int
                           ) -> list[Suppression]:
        """Entries, newest first, for one account or (None) all of them."""

    async def unsuppress(self, account: str, number: str) -> bool:
        """Forget the number's entries on `account` (every credential); False when none."""
