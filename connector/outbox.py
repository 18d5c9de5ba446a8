"""The report dispatcher: lease due reports, batch them by URL, POST, back off, dead-letter."""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import random
import time
import uuid
from collections import Counter, defaultdict
from typing import Final
from urllib.parse import urlsplit

import msgspec
import structlog

from connector import http, logs, metrics, mms, msisdn
from connector.errors import ConnectorError
from connector.http import HttpClient
from connector.model import REPORT_STATUS, ReportEvent, Status, StatusUpdate
from connector.netcheck import AddressGuard
from connector.settings import Settings
from connector.store.base import (
    Handoff,
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
_IN_FLIGHT: Final = 64  # report POSTs in flight at once, per process
_URL_CHUNKS: Final = 4  # a URL's leases per round, in batches: its backlog cannot take them all
_HANDOFF_MAX: Final = 256  # fresh reports handed over and not yet started, per process
_encode = msgspec.json.Encoder()
_URL_NAMESPACE: Final = uuid.NAMESPACE_URL.bytes


def rfc3339(ts: float) -> str:
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fallback(encoding: str | None) -> bool | msgspec.UnsetType:
    """MMS reports say whether the fallback SMS went instead; SMS reports have no such field."""
    flag = mms.fallback_flag(encoding)
    return msgspec.UNSET if flag is None else flag


def report_builder(settings: Settings) -> ReportBuilder:
    """The event the platform gets for a status change, when the deployment reports it."""
    return Reports(settings.report_statuses)


class Reports:
    """A ReportBuilder for the platform statuses `wanted` (CONNECTOR_REPORT_STATUSES).
    `statuses` names the message statuses it reports, so a store can tell without building
    one whether a status change needs the row read back for a report (store.base.may_report).
    """

    __slots__ = ("statuses", "wanted")

    def __init__(self, wanted: frozenset[str]) -> None:
        self.wanted = wanted
        self.statuses = frozenset(status for status, shown in REPORT_STATUS.items()
                                  if shown in wanted)

    def __call__(self, row: MessageRow, update: StatusUpdate, now: float
                 ) -> OutboxEntry | None:
        platform_status = REPORT_STATUS.get(row.status)
        if platform_status is None or platform_status not in self.wanted:
            return None
        code, detail = row.error_code, row.error_message
        if row.status is Status.EXPIRED:
            # Every vendor's expiry reads the same to the platform: `failed` with code
            # `expired`; the vendor's own code (e.g. Sinch 406) stays in the message.
            code, detail = "expired", _expiry_detail(row.error_code, row.error_message)
        event = ReportEvent(
            # Stable per (message, platform status): a receiver can drop repeats by it.
            event_id=event_id(f"{row.id}/{platform_status}"),
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


def event_id(name: str) -> str:
    """`str(uuid.uuid5(uuid.NAMESPACE_URL, name))`, without building a UUID object: one per
    report, and the stdlib's object checks cost eight times the hash (measured)."""
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
        # Inbound messages go to the operator's configured URL, under their own secret.
        self.inbound_signer = ReportSigner(settings.inbound_secret or settings.report_secret,
                                           settings.report_auth_prefix)
        self.report = report_builder(settings)
        # A wake is a flag plus, while the run loop waits, the future it waits on: cheaper than
        # an asyncio.Event under wait_for (two wakes per message, one wait per POST).
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        self._stopping = asyncio.Event()
        self._lease_seconds = settings.report_timeout * 3 + 30
        self._tasks: set[asyncio.Task[bool]] = set()
        self._busy: dict[str, int] = {}  # URL -> its chunks in flight
        self._more = False  # the last lease was cut short by a cap: more may be due at once
        # Fresh reports this process wrote leased to this dispatcher (Handoff), not started.
        self._handed: list[LeasedReport] = []
        self._running = False
        # Whether the next round asks the store for due reports: after a wake (a report queued
        # without a handoff, a retry scheduled, a busy URL freed), a capped lease, and at
        # least every _IDLE_POLL for other processes' reports and retries falling due.
        self._lease_wanted = True
        self._next_poll = 0.0
        self._passed_over: set[str] = set()  # busy URLs a lease skipped since they were busy

    def wake(self) -> None:
        """Something may be due in the store: the next round asks it."""
        self._lease_wanted = True
        self._nudge()

    def _nudge(self) -> None:
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def handoff(self) -> Handoff | None:
        """An offer to take fresh reports without a lease query, or None when this dispatcher
        is not running here, is stopping, or already holds enough not yet started."""
        if not self._running or self._stopping.is_set() or len(self._handed) >= _HANDOFF_MAX:
            return None
        return Handoff(self.worker, time.time() + self._lease_seconds)

    def take(self, reports: list[LeasedReport]) -> None:
        """Reports a store wrote under this dispatcher's Handoff, their write committed: they
        start at the next round (after the linger), with no lease query for them."""
        self._handed.extend(reports)
        self._nudge()

    def stop(self) -> None:
        self._stopping.set()
        self.wake()

    async def run(self) -> None:
        log.info("dispatcher_started", worker=self.worker)
        next_maintenance = 0.0
        self._running = True
        try:
            while not self._stopping.is_set():
                now = time.time()
                if now >= next_maintenance:
                    await self._maintain(now)
                    next_maintenance = now + _MAINTENANCE_EVERY
                self._woken = False  # a wake from here on is seen by the idle wait below
                lease = self._lease_wanted or time.monotonic() >= self._next_poll
                self._lease_wanted = False
                try:
                    again = await self.start_due(lease=lease) and self._more
                except ConnectorError as exc:
                    log.warning("dispatcher_store_error", error=exc.message)
                    again, self._lease_wanted = False, True
                except Exception:
                    # A dispatcher that dies strands every report: log, pause, carry on.
                    log.exception("dispatcher_error")
                    again, self._lease_wanted = False, True
                if not again:
                    try:
                        await self._idle()
                    except Exception:
                        log.exception("dispatcher_error")
                        await asyncio.sleep(_IDLE_POLL)
        finally:
            self._running = False
            await self._finish_in_flight()
            try:
                await self.store.release_reports(self.worker)
            except ConnectorError:
                pass  # leases expire by themselves
            log.info("dispatcher_stopped", worker=self.worker)

    async def _finish_in_flight(self) -> None:
        """At shutdown: let POSTs in flight end (as a round used to), then give up on them."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.report_timeout)
        for task in set(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _idle(self) -> None:
        until_poll = self._next_poll - time.monotonic()  # the run loop's next look
        wait = min(_IDLE_POLL, until_poll) if until_poll > 0.0 else _IDLE_POLL
        if not self._tasks:
            # With POSTs in flight, an end that may leave something due (a retry, a URL a
            # lease skipped) wakes us: only an idle dispatcher asks when the next retry is due.
            try:
                due = await self.store.next_report_due()
            except ConnectorError:
                due = None  # the store is away: look again after the usual pause
            if due is not None:
                wait = min(wait, max(0.0, due - time.time()))
        if not self._woken and wait > 0.0:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(wait, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if not self._woken:
            self._lease_wanted = True  # the wait ran out: time to look in the store
            return
        # Woken by a fresh report: linger briefly so its neighbours share the POST.
        if self.settings.report_linger and not self._stopping.is_set():
            await asyncio.sleep(self.settings.report_linger)

    async def _maintain(self, now: float) -> None:
        try:
            expired = await self.store.expire_ambiguous(
                now - self.settings.ambiguous_after, now, self.report)
            purged = await self.store.purge(now - self.settings.dedupe_retention)
            purged += await self.store.purge_inbound(now - self.settings.dedupe_retention)
        except ConnectorError as exc:
            log.warning("maintenance_failed", error=exc.message)
            return
        if expired or purged:
            log.info("maintenance", ambiguous_failed=expired, purged=purged)

    async def deliver_due(self) -> bool:
        """One whole round, waited for: lease, deliver, record. False when nothing was due."""
        started = await self.start_due()
        await self.settle()
        return started

    async def settle(self) -> None:
        """Wait until every POST started so far has finished and been recorded."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def start_due(self, *, lease: bool = True) -> bool:
        """Start the POSTs of reports handed over (take) and, with `lease`, of due reports
        leased from the store, each URL on its own; False when nothing started. A slow URL
        holds only its own reports: its chunks run as separate tasks, each records its result
        as it finishes, and a URL with POSTs in flight gets no more leases here until they
        end."""
        if len(self._tasks) >= _IN_FLIGHT:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
        self._more = False
        leased = await self._lease() if lease else []
        # Reports handed over start now unless their URL has POSTs in flight: then they wait
        # for those to end and go together, as a lease would leave them (fewer, fuller POSTs).
        # Taken after the lease, which therefore found their URLs free when they were.
        ready: list[LeasedReport] = []
        waiting: list[LeasedReport] = []
        for item in self._handed:
            (waiting if item.url in self._busy else ready).append(item)
        self._handed = waiting
        self._start(leased + ready)
        return bool(leased or ready)

    async def _lease(self) -> list[LeasedReport]:
        batch = self.settings.report_batch
        room = _IN_FLIGHT - len(self._tasks)  # at least one: start_due waited for it
        limit, per_url = min(batch * 8, room * batch), batch * _URL_CHUNKS
        self._next_poll = time.monotonic() + _IDLE_POLL
        busy = list(self._busy)
        leased = await self.store.lease_reports(
            self.worker, time.time(), limit, self._lease_seconds, per_url=per_url,
            skip_urls=busy)
        self._passed_over.update(busy)  # what they have due waits for their POSTs to end
        # Under both caps, the lease took every due report of every URL not busy (its window
        # of candidates was not full either), and the URLs it took are busy now: a lease at
        # once would find nothing, so the run loop waits for a wake instead.
        per = Counter(item.url for item in leased)
        self._more = len(leased) >= limit or any(n >= per_url for n in per.values())
        self._lease_wanted = self._more
        return leased

    def _start(self, reports: list[LeasedReport]) -> None:
        """A task per URL chunk of `reports` (held by this worker)."""
        by_url: dict[str, list[LeasedReport]] = defaultdict(list)
        for item in reports:
            by_url[item.url].append(item)
        batch = self.settings.report_batch
        for url, items in by_url.items():
            for i in range(0, len(items), batch):
                self._busy[url] = self._busy.get(url, 0) + 1
                task = asyncio.create_task(self._deliver(items[i:i + batch]))
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._finished, url))

    def _finished(self, url: str, task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        left = self._busy.pop(url) - 1
        if left:
            self._busy[url] = left
        elif url in self._passed_over:  # a lease skipped it while busy: it may have more due
            self._passed_over.discard(url)
            self.wake()
            return
        if task.cancelled() or task.exception() is not None or task.result():
            self.wake()  # a retry was scheduled or the result was lost: look again
        elif self._handed or self._lease_wanted:
            self._nudge()  # there is room for what waits: reports handed over, a lease

    async def _deliver(self, items: list[LeasedReport]) -> bool:
        """POST one chunk and record the outcome; True when the store should be asked again
        soon (a retry was scheduled, or the outcome could not be recorded)."""
        try:
            results = await self._post(items)
            written = await self.store.reports_done(self.worker, results, time.time())
        except ConnectorError as exc:
            # The leases expire and the reports go again: receivers drop repeats by event_id.
            log.warning("report_result_lost", error=exc.message, events=len(items))
            return True
        except Exception:
            log.exception("dispatcher_error")  # a task's error is nobody else's to handle
            return True
        if written < len(results):
            log.warning("report_lease_lost", events=len(results) - written)
        return any(attempt.outcome == "retry" for _, attempt, _ in results)

    async def _post(self, items: list[LeasedReport]
                    ) -> list[tuple[int, ReportAttempt, float | None]]:
        url = items[0].url
        started = time.time()
        status: int | None = None
        retry_after: float | None = None
        try:
            inbound = url == self.settings.inbound_url
            if not inbound:  # the inbound URL is configuration, not a platform's request
                await self.guard.check(url, "callback_url", None)
            signer = self.inbound_signer if inbound else self.signer
            request = http.request(
                "POST", url, {"Authorization": signer.header()},
                json_bytes=b"[" + b",".join(i.payload for i in items) + b"]")
            answer = await self.http.send(request, self.settings.report_timeout, what="report")
            status = answer.status_code
            error = None if 200 <= status < 300 else f"HTTP {status}"
            retryable = status in _RETRY_STATUSES or status >= 500
            retry_after = _seconds(answer.headers.get("retry-after"))
        except ConnectorError as exc:
            error, retryable = exc.message, exc.retryable
        except Exception as exc:
            # Whatever one POST raises is this chunk's failed attempt, never the others'.
            log.exception("report_post_error")
            error, retryable = f"unexpected {type(exc).__name__}", True
        outcome = "delivered" if error is None else "retry" if retryable else "dead"
        # One attempt shared by the chunk's reports, and the metrics counted once per POST.
        attempt = ReportAttempt(at=started, outcome=outcome, status_code=status, error=error)
        if outcome == "retry":
            results = self._retries(items, attempt, retry_after)
            dead = sum(1 for result in results if result[1] is not attempt)
        else:
            results = [(item.id, attempt, None) for item in items]
            dead = len(items) if outcome == "dead" else 0
        _count(outcome, len(items), dead)
        if logs.info_enabled:
            log.info("report_attempt", url_host=_host(url), events=len(items),
                     status_code=status, outcome=outcome, error=error,
                     ms=round((time.time() - started) * 1000, 1))
        return results

    def _retries(self, items: list[LeasedReport], attempt: ReportAttempt,
                 retry_after: float | None) -> list[tuple[int, ReportAttempt, float | None]]:
        """Each report's next time. Retry right up to the horizon (the last wait is cut short
        to land on it); only an attempt at or past the horizon gives up."""
        started = attempt.at
        dead = msgspec.structs.replace(attempt, outcome="dead")
        results: list[tuple[int, ReportAttempt, float | None]] = []
        for item in items:
            horizon = item.created_at + self.settings.report_horizon
            if started >= horizon:
                results.append((item.id, dead, None))
            else:
                next_at = min(started + self._backoff(item.attempts, retry_after), horizon)
                results.append((item.id, attempt, next_at))
        return results

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        ceiling = min(self.settings.report_max_backoff,
                      self.settings.report_backoff * 2 ** min(attempts, 30))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # equal jitter
        return float(max(delay, retry_after or 0.0))


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _count(outcome: str, reports: int, dead: int) -> None:
    """Attempt metrics for one POST: `dead` of its `reports` were given up on."""
    if reports > dead:
        metrics.REPORT_ATTEMPTS.labels(outcome).inc(reports - dead)
    if dead:
        metrics.REPORT_ATTEMPTS.labels("dead").inc(dead)
        metrics.DEAD_LETTERS.inc(dead)


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname  # any stored URL, even one no client could request
    except ValueError:
        return None


def _seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None
