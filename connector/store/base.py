"""The Store protocol: dedupe claims, messages and their statuses, and the report outbox."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Protocol

import msgspec

from connector.model import Applied, Mms, Status, StatusUpdate


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
    # /mms/send only, never stored as such (the encoding column says `mms`, or the fallback
    # SMS's encoding marked by connector.mms): the MMS part, and whether the fallback went.
    mms: Mms | None = None
    fallback: bool | None = None
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
    # Asked with the claim (`suppression`): whether the recipient is on that tenant's
    # suppression list. None: not asked, or not answered; the sender asks is_suppressed.
    suppressed: bool | None = None


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
    # The send's outcome is stored, so `parts` is the vendor's count, not the default 1.
    answered: bool = True


class LeasedReport(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    event_id: str
    url: str
    payload: bytes
    attempts: int
    created_at: float  # where the retry horizon starts: creation, or the latest replay


class Handoff:
    """A dispatcher's offer to deliver fresh reports itself, without a lease query (#11).

    A store that honours it writes such a report already leased to `worker` until `until`
    and adds it to `reports`; the caller hands them to the dispatcher once the write has
    committed (a write that fails takes its `reports` with it: the caller never sees them).
    If this process dies first, the lease runs out and any dispatcher takes the report, as
    after any lease. A store may ignore the offer: the report is then leased as any other.
    """

    __slots__ = ("reports", "until", "worker")

    def __init__(self, worker: str, until: float) -> None:
        self.worker = worker
        self.until = until
        self.reports: list[LeasedReport] = []


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A report to deliver: one event for one callback URL."""

    event_id: str
    url: str
    payload: bytes  # the JSON event object
    handoff: Handoff | None = None  # written leased to this dispatcher (see Handoff)


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


class DeadLetterFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which dead letters: by callback URL host and by when they were dead-lettered."""

    host: str | None = None  # lower case, as urllib.parse reads it
    since: float | None = None  # dead-lettered at or after
    until: float | None = None  # dead-lettered before


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A report given up on, as the operator API lists it."""

    id: int  # the outbox id
    event_id: str
    message_id: str
    url: str
    created_at: float
    dead_at: float
    attempts: int  # since it was created, or since its latest replay
    last_error: str | None


# lease_reports looks at this many times `limit` due reports to pick from, per URL capped.
LEASE_WINDOW: Final = 4

class InboundRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An inbound message to forward once, and what its keyword does to the suppression list."""

    vendor: str
    vendor_message_id: str
    entry: OutboxEntry  # the event for the inbound URL
    account: str  # as tenants.account_of names it
    number: str  # the sender, E.164 (or as the vendor gave it)
    credential: str = ""  # the account's Tenant.credential, as sends are suppressed under
    listed: bool | None = None  # True: suppress the sender, False: remove them, None: neither
    reason: str = ""


# Builds the report for a status change inside the store's transaction (None: no report).
ReportBuilder = Callable[[MessageRow, StatusUpdate, float], OutboxEntry | None]


def may_report(report: ReportBuilder, status: Status) -> bool:
    """Whether `report` can build a report for a message now in `status`. A builder names the
    statuses it reports in a `statuses` attribute; one that does not may report any."""
    statuses: frozenset[Status] | None = getattr(report, "statuses", None)
    return statuses is None or status in statuses


class SentVia(msgspec.Struct, frozen=True):
    """What verifying a message's callbacks needs: the vendor it went through and the settings
    it was sent with, sealed (SecretBox). Never logged."""

    vendor: str
    sealed_settings: bytes
    # The send's answer was recorded with the vendor's message id, so the row most likely
    # holds it (Store.advance's `known_id`, a hint). False when that is not known here.
    vendor_id_stored: bool = False

    def __repr__(self) -> str:
        return f"SentVia({self.vendor!r}, <sealed>)"


def no_report(row: MessageRow, update: StatusUpdate, now: float) -> None:
    """A ReportBuilder for callers that report nothing (benchmarks of the store alone)."""
    return None


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve."""

    async def claim(self, message: NewMessage, now: float,
                    suppression: tuple[str, str] | None = None) -> Claim:
        """Claim the message's claim_key. `suppression` (account, credential) asks, in the
        same round trip where the store can, whether the recipient is suppressed for that
        tenant (Claim.suppressed); a store may leave it unanswered (None)."""

    async def poll_claim(self, message_id: str) -> Claim | None:
        """The claim's current state (None: the row is gone)."""

    async def take_over(self, message_id: str, now: float, claimed_until: float,
                        owner: str) -> bool:
        """Take an expired in-flight claim whose status is still pending; True when `owner`
        now holds it."""

    async def record_outcome(self, message_id: str, outcome: SendOutcome, now: float,
                             report: ReportBuilder, owner: str | None = None) -> bool:
        """Store the send's answer, only while `owner` (default: the message's own send)
        holds the claim; an acceptance also replaces a stored ambiguous answer. In the same
        transaction, settle the part receipts that arrived before it (their report built with
        `report`). False, and nothing changed, when neither holds."""

    async def message(self, message_id: str) -> MessageRow | None: ...

    async def find(self, key: str) -> MessageRow | None:
        """By connector message id, else by request_id (newest first)."""

    async def keep_text(self, message_id: str, text: str) -> None:
        """Store a message's text (only when the deployment keeps texts, SPEC §7)."""

    async def message_text(self, message_id: str) -> str | None:
        """The stored text, None when it was not kept."""

    async def find_by_vendor_id(self, vendor: str, vendor_message_id: str
                                ) -> MessageRow | None: ...

    async def apply_status(self, message_id: str, update: StatusUpdate, now: float,
                           report: ReportBuilder, seen: MessageRow | None = None) -> Applied:
        """Apply one status change (only forward) and queue its report, atomically.

        `seen` is the row as the caller read it moments ago; a store may use it to write
        without locking first, when the row has not changed since (it must check)."""

    async def advance(self, message_id: str, update: StatusUpdate, now: float,
                      report: ReportBuilder, *, known_id: bool = False) -> Applied:
        """apply_status for a whole-message update (no `part_id`) without reading the row
        first where the store can: one conditional write that stamps the row in SQL as
        sqlite.stamped() does, reading back what the report needs only when `report` may
        report the new status (may_report). Same results, report and atomicity.

        `known_id`: the row most likely holds a vendor message id already (the send's answer
        wrote one, SentVia.vendor_id_stored), which no status replaces: a store may then try
        a write that leaves that column alone first. Results are the same either way.
        """

    async def sent_via(self, message_id: str) -> SentVia | None:
        """The message's vendor and sealed settings alone (None: no such message)."""

    async def expire_ambiguous(self, older_than: float, now: float,
                               report: ReportBuilder) -> int: ...

    async def lease_reports(self, worker: str, now: float, limit: int, lease_seconds: float,
                            *, per_url: int | None = None,
                            skip_urls: Sequence[str] = ()) -> list[LeasedReport]:
        """Lease up to `limit` due reports, earliest first: at most `per_url` for one URL,
        none for `skip_urls`."""

    async def reports_done(self, worker: str,
                           results: list[tuple[int, ReportAttempt, float | None]],
                           now: float) -> int:
        """Record attempts: outcome delivered/dead ends a report; retry sets its next time.

        Only reports `worker` still holds are written (with their attempts); returns how many.
        """

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

    async def dead_letters(self, which: DeadLetterFilter, after: int, limit: int
                           ) -> list[DeadLetter]:
        """Dead letters matching `which` with an outbox id above `after`, oldest id first."""

    async def replay_dead(self, which: DeadLetterFilter, ids: list[int] | None,
                          now: float) -> int:
        """Queue matching dead letters (of `ids` when given) for delivery again, at once:
        attempts start over and the retry horizon runs from `now`. Rows not dead (delivered,
        pending, already replayed) are left alone. Answers how many were queued."""

    async def remember_account(self, vendor: str, account: str, sealed: bytes,
                               now: float) -> None:
        """Keep the latest sealed settings of a vendor account (inbound verification)."""

    async def account_settings(self, vendor: str, account: str) -> bytes | None: ...

    async def purge_inbound(self, before: float) -> int:
        """Forget inbound messages received before `before` whose forward is finished."""

    async def record_inbound(self, record: InboundRecord, now: float) -> bool:
        """Queue an inbound message and apply its keyword, atomically, once per vendor
        message id; False (nothing changed) when it was taken before."""
