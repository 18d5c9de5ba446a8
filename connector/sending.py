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
from connector.settings import Settings
from connector.store.base import (
    Claim,
    NewMessage,
    ReportBuilder,
    SendOutcome,
    Store,
    StoredResponse,
)
from connector.throttle import Throttle, account_of
from connector.tokens import CallbackTokens
from connector.vendors.base import Vendor, build_request, parse_answer, read_answer

log = structlog.get_logger("connector.send")

_POLL: Final = 0.05  # how often a repeat looks for an original sent by another process
_CLAIM_MARGIN: Final = 5.0  # a claim outlives the vendor timeout by this much
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
        self.throttle = Throttle(settings.rate_limits)
        self.per_segment = settings.rate_unit == "segments"
        self._done: dict[str, asyncio.Event] = {}  # outcome reached, per message, this process

    @property
    def claim_seconds(self) -> float:
        return self.settings.vendor_timeout + _CLAIM_MARGIN

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
                   text: str) -> StoredResponse:
        now = time.time()
        claim = await self.store.claim(message, now)
        if claim.claimed:
            return await self._forward(vendor, config, message, text)
        log.info("dedupe_hit", original=claim.message_id, known=claim.response is not None)
        metrics.DEDUPE.labels("stored" if claim.response is not None else "waited").inc()
        return await self._await_original(claim, vendor, config, message, text)

    async def _forward(self, vendor: Vendor, config: Mapping[str, str], message: NewMessage,
                       text: str) -> StoredResponse:
        done = self._done.setdefault(message.id, asyncio.Event())
        try:
            outcome = await self._call(vendor, config, message, text)
            await self.store.record_outcome(message.id, outcome, time.time(), self.report)
            return outcome.response
        finally:
            done.set()
            self._done.pop(message.id, None)

    async def _call(self, vendor: Vendor, config: Mapping[str, str], message: NewMessage,
                    text: str) -> SendOutcome:
        outgoing = self._outgoing(vendor, message, text)
        try:
            request = build_request(vendor, outgoing, config)
        except ConnectorError as exc:  # settings the adapter refuses: a permanent answer
            return SendOutcome(
                response=StoredResponse(status=exc.status, body=exc.body()),
                status=Status.REJECTED, error_code=exc.code, error_message=exc.message,
                release=exc.retryable)
        account = account_of(vendor.name, config)
        if self.settings.suppress_opt_outs:
            suppressed = await self._suppressed(account, message)
            if suppressed is not None:
                return suppressed
        try:
            await self.throttle.acquire(account, message.segments if self.per_segment else 1)
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
                await self.throttle.pause(account, exc.retry_after or 1.0)
            metrics.VENDOR_OUTCOMES.labels(vendor.name, exc.code).inc()
            log.info("vendor_refused", code=exc.code, vendor_code=exc.vendor_code,
                     retryable=exc.retryable)
            refused = exc
        finally:
            metrics.VENDOR_SECONDS.labels(vendor.name).observe(time.perf_counter() - started)
        if refused is not None:
            if refused.code == OPTED_OUT and self.settings.suppress_opt_outs:
                await self._suppress(account, message, refused)
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

    async def _suppressed(self, account: str, message: NewMessage) -> SendOutcome | None:
        """The refusal for a recipient on this account's suppression list, else None."""
        try:
            listed = await self.store.is_suppressed(account, message.to_number)
        except StoreUnavailable as exc:  # cannot tell: retry later rather than risk a send
            return SendOutcome(response=StoredResponse(status=exc.status, body=exc.body()),
                               status=Status.FAILED, error_code=exc.code,
                               error_message=exc.message, release=True)
        if not listed:
            return None
        refusal = RefusedMessage(SUPPRESSED_MESSAGE, code=OPTED_OUT)
        log.info("recipient_suppressed", account=account)
        return SendOutcome(response=StoredResponse(status=refusal.status, body=refusal.body()),
                           status=Status.REJECTED, error_code=OPTED_OUT,
                           error_message=refusal.message)

    async def _suppress(self, account: str, message: NewMessage, exc: VendorError) -> None:
        """Put an opted-out recipient on the account's list. Best effort: the vendor's answer
        stands either way, and a failed write only costs one more refused vendor call."""
        try:
            await self.store.suppress(account, message.to_number, exc.message[:500],
                                      exc.vendor_code, time.time())
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
                return current.response
            now = time.time()
            if current.claimed_until < now:
                # The process that claimed it died mid-send: the outcome is unknowable.
                taken = await self.store.take_over(current.message_id, now,
                                                   now + self.claim_seconds)
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
        if self.settings.ambiguous_policy == "at_least_once":
            log.warning("inflight_claim_expired", original=message_id, action="resend")
            retry = msgspec.structs.replace(message, id=message_id)
            return await self._forward(vendor, config, retry, text)
        log.warning("inflight_claim_expired", original=message_id, action="ambiguous")
        outcome = self._ambiguous(AmbiguousOutcome(
            "the process sending the original stopped before the vendor answered"))
        await self.store.record_outcome(message_id, outcome, time.time(), self.report)
        return outcome.response
