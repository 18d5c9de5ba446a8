"""One send, exactly once per request_id: claim, call the vendor, store and replay the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Final

import msgspec
import structlog

from connector import metrics, mms
from connector.errors import (
    AmbiguousOutcome,
    ConnectorError,
    InflightTimeout,
    RefusedMessage,
    StoreUnavailable,
    VendorError,
    VendorThrottled,
    VendorUnavailable,
)
from connector.http import HttpClient
from connector.model import Accepted, Outgoing, Status
from connector.outbox import report_builder
from connector.recent import RecentSends
from connector.settings import Settings
from connector.store.base import (
    Claim,
    MessageRow,
    NewMessage,
    ReportBuilder,
    SendOutcome,
    SentVia,
    Store,
    StoredResponse,
)
from connector.tenants import Tenant, Tenants
from connector.throttle import SHARED_TIMEOUT, Throttle
from connector.tokens import CallbackTokens
from connector.vendors.base import Vendor, build_request, parse_answer, read_answer

log = structlog.get_logger("connector.send")

_POLL: Final = 0.05  # how often a repeat looks for an original sent by another process
# A claim outlives the longest send: the suppression read and the shared rate bucket (each
# bounded by its store's timeout), the vendor call and, when its answer is lost, the look-up
# that reconciles it (one vendor timeout each), and the outcome's write.
_CLAIM_MARGIN: Final = 5.0 + SHARED_TIMEOUT + 5.0
# What a repeat answers for a claim whose row moved on without a stored answer: proven taken.
_TAKEN: Final = frozenset({Status.ACCEPTED, Status.SENT, Status.DELIVERED})
_encode = msgspec.json.Encoder()
OPTED_OUT: Final = "opted_out"
SUPPRESSED_MESSAGE: Final = ("recipient opted out earlier; remove them from the suppression "
                             "list to send again")


class Sender:
    def __init__(self, store: Store, http: HttpClient, settings: Settings,
                 tokens: CallbackTokens) -> None:
        self.store = store
        self.http = http
        self.settings = settings
        self.tokens = tokens
        # The outcome's write may settle part receipts that beat it, and report them.
        self.report: ReportBuilder = report_builder(settings)
        self.tenants = Tenants(settings.secret_key)
        self.throttle = Throttle(settings.rate_limits)
        self.per_segment = settings.rate_unit == "segments"
        self._done: dict[str, asyncio.Event] = {}  # outcome reached, per message, this process
        # What the callbacks of messages sent here verify with (connector/api/callbacks.py).
        self.recent = RecentSends()

    @property
    def claim_seconds(self) -> float:
        return 2 * self.settings.vendor_timeout + _CLAIM_MARGIN

    def callback_url(self, vendor: str, message_id: str) -> str:
        """The per-message status URL: the vendor calls it back with our signed id."""
        token = self.tokens.sign(message_id)
        return f"{self.settings.public_url}/callbacks/{vendor}/status?m={token}"

    def _outgoing(self, vendor: Vendor, message: NewMessage, text: str) -> Outgoing:
        return Outgoing(message_id=message.id, sender=message.sender,
                        to_e164=message.to_number, text=text,
                        callback_url=self.callback_url(vendor.name, message.id),
                        validity=self.settings.validity, mms=message.mms)

    async def send(self, vendor: Vendor, config: Mapping[str, str], message: NewMessage,
                   text: str, tenant: Tenant | None = None) -> StoredResponse:
        """`tenant`: `self.tenants.of(vendor.name, config)` when the caller has it already
        (it keyed the claim); computed here otherwise."""
        now = time.time()
        if tenant is None:
            tenant = self.tenants.of(vendor.name, config)
        # The suppression check rides on the claim where the store can (no round trip of
        # its own); Claim.suppressed None means _call asks.
        check = (tenant.account, tenant.credential) if self.settings.suppress_opt_outs else None
        claim = await self.store.claim(message, now, check)
        if claim.claimed:
            self.recent.remember(message.id, SentVia(message.vendor, message.sealed_settings))
            return await self._forward(vendor, config, message, text, tenant=tenant,
                                       suppressed=claim.suppressed)
        log.info("dedupe_hit", original=claim.message_id, known=claim.response is not None)
        metrics.DEDUPE.labels("stored" if claim.response is not None else "waited").inc()
        return await self._await_original(claim, vendor, config, message, text)

    async def _forward(self, vendor: Vendor, config: Mapping[str, str], message: NewMessage,
                       text: str, owner: str | None = None, tenant: Tenant | None = None,
                       suppressed: bool | None = None) -> StoredResponse:
        done = self._done.setdefault(message.id, asyncio.Event())
        try:
            outcome = await self._call(vendor, config, message, text, tenant, suppressed)
            if await self.store.record_outcome(message.id, outcome, time.time(), self.report,
                                               owner):
                if outcome.vendor_message_id and self.recent.get(message.id) is not None:
                    # Its callbacks' status writes may leave the vendor id alone.
                    self.recent.remember(message.id, SentVia(
                        message.vendor, message.sealed_settings, vendor_id_stored=True))
                return outcome.response
        finally:
            done.set()
            self._done.pop(message.id, None)
        # Another request took the claim over meanwhile: its answer stands, not this one.
        log.warning("claim_lost", original=message.id, status=outcome.response.status)
        metrics.DEDUPE.labels("claim_lost").inc()
        current = await self.store.poll_claim(message.id)
        if current is None:
            return outcome.response
        return await self._await_original(current, vendor, config, message, text)

    async def _call(self, vendor: Vendor, config: Mapping[str, str], message: NewMessage,
                    text: str, tenant: Tenant | None = None,
                    suppressed: bool | None = None) -> SendOutcome:
        """`tenant` as send() found it; `suppressed` as the claim answered (None: ask)."""
        outgoing = self._outgoing(vendor, message, text)
        try:
            request = build_request(vendor, outgoing, config)
        except ConnectorError as exc:  # settings the adapter refuses: a permanent answer
            return SendOutcome(
                response=StoredResponse(status=exc.status, body=exc.body()),
                status=Status.REJECTED, error_code=exc.code, error_message=exc.message,
                release=exc.retryable)
        if tenant is None:
            tenant = self.tenants.of(vendor.name, config)
        if self.settings.suppress_opt_outs:
            refusal = await self._suppressed(tenant, message, suppressed)
            if refusal is not None:
                return refusal
        try:
            await self.throttle.acquire(tenant.account,
                                        message.segments if self.per_segment else 1,
                                        bucket=tenant.key)
        except (VendorThrottled, StoreUnavailable) as exc:  # shared buckets may be unreachable
            if isinstance(exc, VendorThrottled):
                metrics.VENDOR_OUTCOMES.labels(vendor.name, "rate_limited").inc()
            return SendOutcome(
                response=StoredResponse(status=exc.status, body=exc.body(),
                                        retry_after=exc.retry_after),
                status=Status.FAILED, error_code=exc.code, error_message=exc.message,
                release=True)
        refused: VendorError | None = None
        started = time.perf_counter()
        try:
            try:
                answer = await self.http.send(request, self.settings.vendor_timeout,
                                              what=vendor.name)
                accepted = read_answer(lambda got: parse_answer(vendor, outgoing, got),
                                       answer, vendor.name)
            except AmbiguousOutcome as exc:
                found = await self._reconcile(vendor, config, outgoing, exc)
                if found is None:
                    metrics.VENDOR_OUTCOMES.labels(vendor.name, "ambiguous").inc()
                    return self._ambiguous(exc)
                accepted = found
        except VendorError as exc:
            if isinstance(exc, VendorThrottled):
                # the vendor itself said 429: hold the whole account, not just this message
                await self.throttle.pause(tenant.account, exc.retry_after or 1.0,
                                          bucket=tenant.key)
            metrics.VENDOR_OUTCOMES.labels(vendor.name, exc.code).inc()
            log.info("vendor_refused", code=exc.code, vendor_code=exc.vendor_code,
                     retryable=exc.retryable)
            refused = exc
        finally:
            metrics.VENDOR_SECONDS.labels(vendor.name).observe(time.perf_counter() - started)
        if refused is not None:
            if refused.code == OPTED_OUT and self.settings.suppress_opt_outs:
                await self._suppress(tenant, message, refused)
            return SendOutcome(
                response=StoredResponse(status=refused.status, body=refused.body(),
                                        retry_after=refused.retry_after),
                status=Status.FAILED if refused.retryable else Status.REJECTED,
                error_code=refused.vendor_code or refused.code, error_message=refused.message,
                release=refused.retryable,
            )
        metrics.VENDOR_OUTCOMES.labels(vendor.name, "accepted").inc()
        answer_body = {
            "message_id": message.id, "request_id": message.request_id, "vendor": vendor.name,
            "vendor_message_id": accepted.vendor_message_id, "status": "accepted",
            "segments": message.segments, "encoding": message.encoding,
        }
        if message.fallback is not None:  # an /mms/send: say whether the fallback SMS went
            answer_body.update(encoding=mms.sms_encoding(message.encoding),
                               fallback=message.fallback)
        body = _encode.encode(answer_body)
        return SendOutcome(
            response=StoredResponse(status=200, body=body), status=accepted.status,
            vendor_message_id=accepted.vendor_message_id,
            segments=accepted.segments or message.segments,
            from_number=accepted.from_number or message.from_number,
            parts=max(1, len(accepted.part_ids)),
        )

    async def _suppressed(self, tenant: Tenant, message: NewMessage,
                          listed: bool | None) -> SendOutcome | None:
        """The refusal for a recipient on this tenant's suppression list, else None;
        `listed` is what the claim answered (None: ask now)."""
        if listed is None:
            try:
                listed = await self.store.is_suppressed(tenant.account, message.to_number,
                                                        tenant.credential)
            except StoreUnavailable as exc:  # cannot tell: retry later rather than risk a send
                return SendOutcome(response=StoredResponse(status=exc.status, body=exc.body()),
                                   status=Status.FAILED, error_code=exc.code,
                                   error_message=exc.message, release=True)
        if not listed:
            return None
        refusal = RefusedMessage(SUPPRESSED_MESSAGE, code=OPTED_OUT)
        log.info("recipient_suppressed", account=tenant.account)
        return SendOutcome(response=StoredResponse(status=refusal.status, body=refusal.body()),
                           status=Status.REJECTED, error_code=OPTED_OUT,
                           error_message=refusal.message)

    async def _suppress(self, tenant: Tenant, message: NewMessage, exc: VendorError) -> None:
        """Put an opted-out recipient on the tenant's list. Best effort: the vendor's answer
        stands either way, and a failed write only costs one more refused vendor call."""
        try:
            await self.store.suppress(tenant.account, message.to_number, exc.message[:500],
                                      exc.vendor_code, time.time(), tenant.credential)
        except StoreUnavailable as failed:
            log.warning("suppress_failed", error=failed.message)

    async def _reconcile(self, vendor: Vendor, config: Mapping[str, str], outgoing: Outgoing,
                         exc: AmbiguousOutcome) -> Accepted | None:
        """Ask the vendor, by the connector's reference, whether it took the message.

        Returns the acceptance when it did; raises VendorUnavailable (retryable, the claim is
        freed) when it certainly did not; None when the vendor cannot tell us.
        """
        lookup = vendor.build_lookup(outgoing, config)
        if lookup is None:
            return None
        try:
            answer = await self.http.send(lookup, self.settings.vendor_timeout,
                                          what=f"{vendor.name} look-up")
            found = read_answer(vendor.parse_lookup, answer, vendor.name)
        except VendorError as failed:
            log.warning("reconcile_failed", error=failed.message)
            return None
        log.info("reconciled", found=found is not None)
        if found is None:
            raise VendorUnavailable(f"{exc.message}; the vendor has no record of the message, "
                                    "so it is safe to send again")
        return found

    def _ambiguous(self, exc: AmbiguousOutcome) -> SendOutcome:
        """The vendor may have taken the message. at_most_once keeps the claim (repeats get
        this 502, a late callback still lands, silence becomes `failed`/`ambiguous`);
        at_least_once frees it so the platform's retry sends again."""
        resend = self.settings.ambiguous_policy == "at_least_once"
        log.warning("vendor_outcome_ambiguous", error=exc.message, resend=resend)
        return SendOutcome(
            response=StoredResponse(status=exc.status, body=exc.body()),
            status=Status.FAILED if resend else Status.PENDING,
            error_code="ambiguous", error_message=exc.message,
            release=resend, ambiguous=not resend,
        )

    async def _await_original(self, claim: Claim, vendor: Vendor, config: Mapping[str, str],
                              message: NewMessage, text: str) -> StoredResponse:
        """A repeat while the original is in flight waits for its answer (never a 409)."""
        deadline = time.monotonic() + self.settings.inflight_wait
        current: Claim | None = claim
        while True:
            if current is None:
                # The original row is gone (purged): nothing to replay, let the platform retry.
                raise InflightTimeout("the original request is no longer known; retry")
            if current.response is not None:
                if current.ambiguous and current.status is not Status.PENDING:
                    return await self._settled(current.message_id, current.response)
                return current.response
            now = time.time()
            if current.claimed_until < now:
                if current.status is not Status.PENDING:
                    # A callback (or the ambiguity expiry) settled it: never send again.
                    return await self._settled(current.message_id, None)
                # The process that claimed it died mid-send: the outcome is unknowable.
                taken = await self.store.take_over(current.message_id, now,
                                                   now + self.claim_seconds, message.id)
                if taken:
                    return await self._recover(current.message_id, vendor, config, message,
                                               text)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                metrics.DEDUPE.labels("wait_timeout").inc()
                raise InflightTimeout("the original request is still being sent; retry later",
                                      retry_after=1.0)
            local = self._done.get(current.message_id)
            if local is not None:
                try:
                    await asyncio.wait_for(local.wait(), min(remaining, 1.0))
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(min(remaining, _POLL))
            current = await self.store.poll_claim(current.message_id)

    async def _recover(self, message_id: str, vendor: Vendor, config: Mapping[str, str],
                       message: NewMessage, text: str) -> StoredResponse:
        """Finish a claim taken over from a sender that stopped; `message.id` is the token
        this request holds it by."""
        if self.settings.ambiguous_policy == "at_least_once":
            log.warning("inflight_claim_expired", original=message_id, action="resend")
            retry = msgspec.structs.replace(message, id=message_id)
            return await self._forward(vendor, config, retry, text, owner=message.id)
        log.warning("inflight_claim_expired", original=message_id, action="ambiguous")
        outcome = self._ambiguous(AmbiguousOutcome(
            "the process sending the original stopped before the vendor answered"))
        if await self.store.record_outcome(message_id, outcome, time.time(), self.report,
                                           message.id):
            return outcome.response
        current = await self.store.poll_claim(message_id)  # the original answered after all
        if current is None or current.response is None:
            return outcome.response
        return current.response

    async def _settled(self, message_id: str, stored: StoredResponse | None) -> StoredResponse:
        """The answer for a message whose status moved on without a definitive stored answer
        (its sender died, or answered `ambiguous`): what the row proves. A message the vendor
        took answers 200 with its current status, whatever came of it later (the report says
        that); one never proven taken keeps its stored answer, else 200 with its status (its
        failure report is already on its way)."""
        row = await self.store.message(message_id)
        if row is None:
            if stored is not None:
                return stored
            raise InflightTimeout("the original request is no longer known; retry")
        if stored is not None and row.status not in _TAKEN and row.vendor_message_id is None:
            return stored
        return StoredResponse(status=200, body=_row_body(row))


def _row_body(row: MessageRow) -> bytes:
    """The send's 200 body, from what the stored message knows."""
    return _encode.encode({
        "message_id": row.id, "request_id": row.request_id, "vendor": row.vendor,
        "vendor_message_id": row.vendor_message_id, "status": row.status.value,
        "segments": row.segments, "encoding": row.encoding,
    })
