"""The report dispatcher: lease due reports, batch them by URL, POST, back off, dead-letter."""

from __future__ import annotations

import asyncio
import datetime
import random
import time
import uuid
from collections import defaultdict
from typing import Final

import httpx
import msgspec
import structlog

from connector import metrics, mms, msisdn
from connector.errors import ConnectorError
from connector.http import HttpClient, cached_url
from connector.model import REPORT_STATUS, ReportEvent, Status, StatusUpdate
from connector.netcheck import AddressGuard
from connector.settings import Settings
from connector.store.base import (
    LeasedReport,
    MessageRow,
    OutboxEntry,
    ReportAttempt,
    ReportBuilder,
    Store,
)
from connector.tokens import ReportSigner

log = structlog.get_logger("connector.outbox")

_RETRY_STATUSES: Final = frozenset({408, 429})
_IDLE_POLL: Final = 0.5  # other processes' reports are noticed within this
_MAINTENANCE_EVERY: Final = 60.0
_encode = msgspec.json.Encoder()


def rfc3339(ts: float) -> str:
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fallback(encoding: str | None) -> bool | msgspec.UnsetType:
    """MMS reports say whether the fallback SMS went instead; SMS reports have no such field."""
    flag = mms.fallback_flag(encoding)
    return msgspec.UNSET if flag is None else flag


def report_builder(settings: Settings) -> ReportBuilder:
    """The event the platform gets for a status change, when the deployment reports it."""
    wanted = settings.report_statuses

    def build(row: MessageRow, update: StatusUpdate, now: float) -> OutboxEntry | None:
        platform_status = REPORT_STATUS.get(row.status)
        if platform_status is None or platform_status not in wanted:
            return None
        code, detail = row.error_code, row.error_message
        if row.status is Status.EXPIRED:
            # Every vendor's expiry reads the same to the platform: `failed` with code
            # `expired`; the vendor's own code (e.g. Sinch 406) stays in the message.
            code, detail = "expired", _expiry_detail(row.error_code, row.error_message)
        event = ReportEvent(
            # Stable per (message, platform status): a receiver can drop repeats by it.
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{row.id}/{platform_status}")),
            request_id=row.request_id,
            message_id=row.id,
            custom_data=row.custom_data,
            status=platform_status,
            timestamp=rfc3339(update.occurred_at or now),
            vendor=row.vendor,
            vendor_message_id=row.vendor_message_id,
            error_code=code if platform_status == "failed" else None,
            error_message=detail if platform_status == "failed" else None,
            segments=row.segments,
            from_=row.from_number or row.sender,
            to=msisdn.to_platform(row.to_number),
            fallback=_fallback(row.encoding),
        )
        return OutboxEntry(event_id=event.event_id, url=row.callback_url,
                           payload=_encode.encode(event))

    return build


def _expiry_detail(vendor_code: str | None, message: str | None) -> str | None:
    """`406: Internal expiry` from the vendor's code and text, whichever it gave."""
    parts = dict.fromkeys(part for part in (vendor_code, message) if part and part != "expired")
    return ": ".join(parts) or None


class Dispatcher:
    """Delivers the outbox. Several may run against one store: leases keep them apart."""

    def __init__(self, store: Store, http: HttpClient, settings: Settings,
                 guard: AddressGuard) -> None:
        self.store = store
        self.http = http
        self.settings = settings
        self.guard = guard
        self.worker = f"{uuid.uuid4().hex[:12]}"
        self.signer = ReportSigner(settings.report_secret, settings.report_auth_prefix)
        self.report = report_builder(settings)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lease_seconds = settings.report_timeout * 3 + 30

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        log.info("dispatcher_started", worker=self.worker)
        next_maintenance = 0.0
        try:
            while not self._stopping.is_set():
                now = time.time()
                if now >= next_maintenance:
                    await self._maintain(now)
                    next_maintenance = now + _MAINTENANCE_EVERY
                try:
                    worked = await self.deliver_due()
                except ConnectorError as exc:
                    log.warning("dispatcher_store_error", error=exc.message)
                    worked = False
                except Exception:
                    # A dispatcher that dies strands every report: log, pause, carry on.
                    log.exception("dispatcher_error")
                    worked = False
                if not worked:
                    try:
                        await self._idle()
                    except Exception:
                        log.exception("dispatcher_error")
                        await asyncio.sleep(_IDLE_POLL)
        finally:
            try:
                await self.store.release_reports(self.worker)
            except ConnectorError:
                pass  # leases expire by themselves
            log.info("dispatcher_stopped", worker=self.worker)

    async def _idle(self) -> None:
        try:
            due = await self.store.next_report_due()
        except ConnectorError:
            due = None  # the store is away: look again after the usual pause
        wait = _IDLE_POLL if due is None else min(_IDLE_POLL, max(0.0, due - time.time()))
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), wait)
        except TimeoutError:
            return
        # Woken by a fresh report: linger briefly so its neighbours share the POST.
        if self.settings.report_linger and not self._stopping.is_set():
            await asyncio.sleep(self.settings.report_linger)

    async def _maintain(self, now: float) -> None:
        try:
            expired = await self.store.expire_ambiguous(
                now - self.settings.ambiguous_after, now, self.report)
            purged = await self.store.purge(now - self.settings.dedupe_retention)
        except ConnectorError as exc:
            log.warning("maintenance_failed", error=exc.message)
            return
        if expired or purged:
            log.info("maintenance", ambiguous_failed=expired, purged=purged)

    async def deliver_due(self) -> bool:
        """Deliver one round of due reports; False when there was nothing to do."""
        batch = self.settings.report_batch
        leased = await self.store.lease_reports(self.worker, time.time(), batch * 8,
                                                self._lease_seconds)
        if not leased:
            return False
        by_url: dict[str, list[LeasedReport]] = defaultdict(list)
        for item in leased:
            by_url[item.url].append(item)
        chunks = [items[i:i + batch] for items in by_url.values()
                  for i in range(0, len(items), batch)]
        results = await asyncio.gather(*(self._post(chunk) for chunk in chunks))
        await self.store.reports_done([r for chunk in results for r in chunk], time.time())
        return True

    async def _post(self, items: list[LeasedReport]
                    ) -> list[tuple[int, ReportAttempt, float | None]]:
        url = items[0].url
        started = time.time()
        status: int | None = None
        retry_after: float | None = None
        try:
            await self.guard.check(url, "callback_url", None)
            request = httpx.Request(
                "POST", cached_url(url),
                content=b"[" + b",".join(i.payload for i in items) + b"]",
                headers={"Content-Type": "application/json",
                         "Authorization": self.signer.header()},
            )
            answer = await self.http.send(request, self.settings.report_timeout, what="report")
            status = answer.status_code
            error = None if 200 <= status < 300 else f"HTTP {status}"
            retryable = status in _RETRY_STATUSES or status >= 500
            retry_after = _seconds(answer.headers.get("retry-after"))
        except ConnectorError as exc:
            error, retryable = exc.message, exc.retryable
        outcome = "delivered" if error is None else "retry" if retryable else "dead"
        results = []
        for item in items:
            next_at = None
            item_outcome = outcome
            if outcome == "retry":
                # Retry right up to the horizon (the last wait is cut short to land on it);
                # only an attempt at or past the horizon gives up.
                horizon = item.created_at + self.settings.report_horizon
                if started >= horizon:
                    item_outcome = "dead"
                else:
                    next_at = min(started + self._backoff(item.attempts, retry_after), horizon)
            results.append((item.id, ReportAttempt(at=started, outcome=item_outcome,
                                                   status_code=status, error=error), next_at))
        for _, attempt, _ in results:
            metrics.REPORT_ATTEMPTS.labels(attempt.outcome).inc()
            if attempt.outcome == "dead":
                metrics.DEAD_LETTERS.inc()
        log.info("report_attempt", url_host=httpx.URL(url).host, events=len(items),
                 status_code=status, outcome=outcome, error=error,
                 ms=round((time.time() - started) * 1000, 1))
        return results

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        ceiling = min(self.settings.report_max_backoff,
                      self.settings.report_backoff * 2 ** min(attempts, 30))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # equal jitter
        return float(max(delay, retry_after or 0.0))


def _seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None
