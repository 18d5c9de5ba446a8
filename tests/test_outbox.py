"""The report dispatcher against a real SQLite store and a receiver over loopback HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from prometheus_client import REGISTRY

from connector import logs
from connector.errors import StoreUnavailable
from connector.http import HttpClient
from connector.model import Status, StatusUpdate
from connector.netcheck import AddressGuard
from connector.outbox import Dispatcher, event_id, report_builder
from connector.settings import Settings
from connector.store.base import LeasedReport, MessageRow, NewMessage, OutboxEntry
from connector.store.sqlite import SqliteStore
from tests.e2e.conftest import REPORT_SECRET
from tests.fakes.receiver import ReportReceiver


@pytest.fixture
def receiver() -> ReportReceiver:
    fake = ReportReceiver(REPORT_SECRET).start()
    yield fake  # type: ignore[misc]
    fake.stop()


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, Dispatcher]]:
    settings = Settings.from_env({
        "CONNECTOR_DATA_DIR": str(tmp_path), "CONNECTOR_REPORT_SECRET": REPORT_SECRET,
        "CONNECTOR_ALLOW_PRIVATE_NETWORKS": "true", "CONNECTOR_ALLOW_HTTP": "true",
        "CONNECTOR_REPORT_BACKOFF": "0.05", "CONNECTOR_REPORT_BATCH": "3",
    }).with_generated_secrets()
    store = SqliteStore(tmp_path / "c.db")
    await store.open()
    http = HttpClient()
    dispatcher = Dispatcher(store, http, settings, AddressGuard(allow_private=True,
                                                                 allow_http=True))
    yield store, dispatcher
    await http.close()
    await store.close()


async def claimed(store: SqliteStore, url: str, custom: str, now: float) -> str:
    message_id = uuid.uuid4().hex
    await store.claim(NewMessage(
        id=message_id, request_id=message_id, vendor="twilio", sealed_settings=b"x",
        sender="Brand", to_number="+447911123456", custom_data=custom, callback_url=url,
        metadata=None, segments=1, encoding="gsm7", claimed_until=now + 10), now)
    return message_id


async def delivered(store: SqliteStore, dispatcher: Dispatcher, url: str, custom: str) -> str:
    now = time.time()
    message_id = await claimed(store, url, custom, now)
    await store.apply_status(message_id, StatusUpdate(status=Status.DELIVERED), now,
                             dispatcher.report)
    return message_id


async def drain(dispatcher: Dispatcher, rounds: int = 50) -> None:
    for _ in range(rounds):
        if not await dispatcher.deliver_due():
            due = await dispatcher.store.next_report_due()
            if due is None:
                return
            await asyncio.sleep(max(0.0, min(0.2, due - time.time())))


async def test_batches_by_url_in_chunks(parts: tuple[SqliteStore, Dispatcher],
                                        receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    for i in range(5):
        await delivered(store, dispatcher, receiver.url("a"), f"a{i}")
    await delivered(store, dispatcher, receiver.url("b"), "b0")
    await drain(dispatcher)
    sizes = sorted((name, len(post.events))
                   for name, post in zip(receiver.post_names, receiver.posts, strict=True))
    assert sizes == [("a", 2), ("a", 3), ("b", 1)]
    assert sorted(e["custom_data"] for e in receiver.events) == ["a0", "a1", "a2", "a3", "a4",
                                                                 "b0"]


async def test_other_4xx_dead_letters_at_once(parts: tuple[SqliteStore, Dispatcher],
                                              receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    receiver.script([404])
    message_id = await delivered(store, dispatcher, receiver.url(), "x")
    await drain(dispatcher)
    assert len(receiver.posts) == 1
    (view,) = await store.reports_for(message_id)
    assert view.state == "dead"
    assert [(a.outcome, a.status_code) for a in view.attempts] == [("dead", 404)]


@pytest.mark.parametrize("status", [408, 429, 500, 503])
async def test_retryable_statuses_retry(parts: tuple[SqliteStore, Dispatcher],
                                        receiver: ReportReceiver, status: int) -> None:
    store, dispatcher = parts
    receiver.script([status])
    message_id = await delivered(store, dispatcher, receiver.url(), "x")
    await drain(dispatcher)
    assert [p.status for p in receiver.posts] == [status, 200]
    (view,) = await store.reports_for(message_id)
    assert view.state == "delivered"


async def test_retry_after_is_honoured(parts: tuple[SqliteStore, Dispatcher],
                                       receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    receiver.script([(429, {"Retry-After": "1"})])
    await delivered(store, dispatcher, receiver.url(), "x")
    await drain(dispatcher)
    first, second = receiver.posts
    assert second.time - first.time >= 0.95


async def test_unreachable_receiver_retries_until_the_horizon(
        parts: tuple[SqliteStore, Dispatcher], tmp_path: Path) -> None:
    store, dispatcher = parts
    dispatcher.settings = dispatcher.settings.replace(report_horizon=0.3)
    message_id = await delivered(store, dispatcher, "http://127.0.0.1:9/closed", "x")
    await drain(dispatcher)
    (view,) = await store.reports_for(message_id)
    assert view.state == "dead"
    assert view.attempts[0].outcome == "retry"
    assert view.attempts[-1].outcome == "dead"


def test_backoff_grows_with_jitter_and_respects_retry_after(tmp_path: Path) -> None:
    settings = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path),
                                  "CONNECTOR_REPORT_BACKOFF": "1",
                                  "CONNECTOR_REPORT_MAX_BACKOFF": "60"}).with_generated_secrets()
    dispatcher = Dispatcher(SqliteStore(tmp_path / "x.db"), HttpClient(), settings,
                            AddressGuard(allow_private=True, allow_http=True))
    for attempts, low, high in [(0, 0.5, 1), (3, 4, 8), (10, 30, 60), (40, 30, 60)]:
        delays = {dispatcher._backoff(attempts, None) for _ in range(20)}
        assert all(low <= d <= high for d in delays)
        assert len(delays) > 1  # jittered
    assert dispatcher._backoff(0, 30.0) == 30.0


def test_report_event_shape(tmp_path: Path) -> None:
    settings = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)})
    row = MessageRow(
        id="m1", request_id="r1", vendor="twilio", sealed_settings=b"", sender="Brand",
        to_number="+447911123456", custom_data="cd", callback_url="https://r",
        status=Status.UNDELIVERED, vendor_message_id="SM1", from_number="+15005550006",
        segments=2, encoding="gsm7", error_code="30003", error_message="Unreachable",
        ambiguous=False, parts=1, handed_off_at=1.0, delivered_at=None, errored_at=2.0,
        created_at=0.0,
        updated_at=2.0)
    entry = report_builder(settings)(row, StatusUpdate(status=Status.UNDELIVERED,
                                                       occurred_at=1_800_000_000.5), 0.0)
    assert entry is not None
    assert json.loads(entry.payload) == {
        "event_id": entry.event_id, "request_id": "r1", "message_id": "m1",
        "custom_data": "cd", "status": "failed", "timestamp": "2027-01-15T08:00:00.500Z",
        "vendor": "twilio", "vendor_message_id": "SM1", "error_code": "30003",
        "error_message": "Unreachable", "segments": 2, "from": "+15005550006",
        "to": "00447911123456"}
    again = report_builder(settings)(row, StatusUpdate(status=Status.UNDELIVERED), 5.0)
    assert again is not None and again.event_id == entry.event_id  # stable
    sent = report_builder(settings)(msgspec.structs.replace(row, status=Status.SENT),
                                    StatusUpdate(status=Status.SENT), 0.0)
    assert sent is None  # sent is not reported by default


@pytest.mark.parametrize(("vendor_code", "vendor_message", "message"), [
    pytest.param("406", "Internal expiry", "406: Internal expiry", id="code-and-text"),
    pytest.param("EXPIRED", None, "EXPIRED", id="code-only"),
    pytest.param(None, "Expired", "Expired", id="text-only"),
    pytest.param(None, None, None, id="nothing"),
    pytest.param("expired", None, None, id="already-expired"),
])
def test_expired_reports_failed_with_code_expired(
        tmp_path: Path, vendor_code: str | None, vendor_message: str | None,
        message: str | None) -> None:
    settings = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)})
    row = MessageRow(
        id="m1", request_id="r1", vendor="sinch", sealed_settings=b"", sender="Brand",
        to_number="+447911123456", custom_data="cd", callback_url="https://r",
        status=Status.EXPIRED, vendor_message_id="B1", from_number=None, segments=1,
        encoding="gsm7", error_code=vendor_code, error_message=vendor_message,
        ambiguous=False, parts=1, handed_off_at=1.0, delivered_at=None, errored_at=2.0,
        created_at=0.0, updated_at=2.0)
    entry = report_builder(settings)(row, StatusUpdate(status=Status.EXPIRED), 0.0)
    assert entry is not None
    event = json.loads(entry.payload)
    assert (event["status"], event["error_code"], event["error_message"]) == (
        "failed", "expired", message)


async def test_dispatcher_survives_a_store_outage(parts: tuple[SqliteStore, Dispatcher],
                                                  receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    await delivered(store, dispatcher, receiver.url(), "before")
    real = store.next_report_due
    failures = 0

    async def broken() -> float | None:
        nonlocal failures
        failures += 1
        if failures <= 3:
            raise StoreUnavailable("database restarting")
        return await real()

    store.next_report_due = broken  # type: ignore[method-assign]
    real_lease = store.lease_reports
    calls = 0

    async def flaky_lease(*args: Any, **kwargs: Any) -> list[LeasedReport]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise StoreUnavailable("database restarting")
        return await real_lease(*args, **kwargs)

    store.lease_reports = flaky_lease  # type: ignore[method-assign]
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.to_thread(receiver.wait_for, 1, 10.0)
    finally:
        dispatcher.stop()
        await task
    assert calls > 2 and receiver.events[0]["custom_data"] == "before"


async def test_retries_run_right_up_to_the_horizon(parts: tuple[SqliteStore, Dispatcher],
                                                   receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    # a long backoff would overshoot the horizon: the last retry lands on it instead
    dispatcher.settings = dispatcher.settings.replace(report_horizon=1.0, report_backoff=30.0)
    receiver.script([503])
    message_id = await delivered(store, dispatcher, receiver.url(), "x")
    await drain(dispatcher)
    (view,) = await store.reports_for(message_id)
    assert [a.outcome for a in view.attempts] == ["retry", "delivered"]
    assert view.state == "delivered"


def test_event_ids_are_the_uuid5_of_message_and_status() -> None:
    for name in (f"{uuid.uuid4().hex}/delivered", "m-1/failed", "é/✓", ""):
        assert event_id(name) == str(uuid.uuid5(uuid.NAMESPACE_URL, name))


async def test_a_lease_under_its_caps_says_nothing_more_is_due(
        parts: tuple[SqliteStore, Dispatcher], receiver: ReportReceiver) -> None:
    store, dispatcher = parts  # batch 3: a URL's lease is capped at 12
    for i in range(12):
        await delivered(store, dispatcher, receiver.url("a"), f"a{i}")
    await delivered(store, dispatcher, receiver.url("b"), "b0")
    assert await dispatcher.start_due()
    assert dispatcher._more  # a's cap cut the lease short: the run loop leases again
    await dispatcher.settle()
    await delivered(store, dispatcher, receiver.url("a"), "a12")
    assert await dispatcher.start_due()
    assert not dispatcher._more  # it took everything due: the run loop waits for a wake
    await dispatcher.settle()
    assert len(receiver.events) == 14


async def test_a_failed_chunk_retries_and_dead_letters_each_report_by_its_horizon(
        parts: tuple[SqliteStore, Dispatcher], receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    dispatcher.settings = dispatcher.settings.replace(report_horizon=60.0)
    old = await delivered(store, dispatcher, receiver.url(), "old")
    fresh = await delivered(store, dispatcher, receiver.url(), "fresh")
    # one chunk, one POST: the old report's horizon has passed, the fresh one's has not
    store.db.execute("UPDATE outbox SET created_at = created_at - 61 WHERE message_id = ?",
                     (old,))
    before = (_sample("connector_report_attempts_total", outcome="retry"),
              _sample("connector_report_attempts_total", outcome="dead"),
              _sample("connector_dead_letters_total"))
    receiver.script([503])
    await dispatcher.deliver_due()
    after = (_sample("connector_report_attempts_total", outcome="retry"),
             _sample("connector_report_attempts_total", outcome="dead"),
             _sample("connector_dead_letters_total"))
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
    (dead,), (retried,) = await store.reports_for(old), await store.reports_for(fresh)
    assert (dead.state, [a.outcome for a in dead.attempts]) == ("dead", ["dead"])
    assert (retried.state, [a.outcome for a in retried.attempts]) == ("pending", ["retry"])
    assert [a.status_code for a in dead.attempts + retried.attempts] == [503, 503]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_dispatcher_with_posts_in_flight_waits_without_asking_the_store(
        parts: tuple[SqliteStore, Dispatcher]) -> None:
    store, dispatcher = parts
    asked: list[float | None] = []
    real = store.next_report_due

    async def counted() -> float | None:
        asked.append(await real())
        return asked[-1]

    store.next_report_due = counted  # type: ignore[method-assign]
    in_flight = asyncio.create_task(asyncio.sleep(30))
    dispatcher._tasks.add(in_flight)  # its end would wake the dispatcher
    dispatcher.wake()
    await dispatcher._idle()
    assert asked == []
    dispatcher._tasks.clear()
    in_flight.cancel()
    dispatcher.wake()
    await dispatcher._idle()
    assert asked == [None]  # idle, it asks when the next retry is due


async def test_a_wake_ends_the_idle_wait_and_one_before_it_is_not_lost(
        parts: tuple[SqliteStore, Dispatcher], monkeypatch: pytest.MonkeyPatch) -> None:
    _, dispatcher = parts
    monkeypatch.setattr("connector.outbox._IDLE_POLL", 3600.0)  # only a wake ends the wait
    waiting = asyncio.create_task(dispatcher._idle())
    await asyncio.sleep(0)  # SQLite answers at once: the task is waiting now
    assert dispatcher._waiter is not None
    dispatcher.wake()
    await asyncio.wait_for(waiting, 30)
    assert dispatcher._waiter is None
    # A wake that lands while the run loop leases (before it waits) is seen at once.
    dispatcher._woken = False
    dispatcher.wake()
    await asyncio.wait_for(dispatcher._idle(), 30)


async def _handed(store: SqliteStore, dispatcher: Dispatcher, url: str, custom: str) -> int:
    """A message delivered, its report written under the running dispatcher's offer (as the
    callback path does) and handed over: the report's outbox id."""
    now = time.time()
    message_id = await claimed(store, url, custom, now)
    handoff = dispatcher.handoff()
    assert handoff is not None and handoff.worker == dispatcher.worker

    def build(row: MessageRow, update: StatusUpdate, at: float) -> OutboxEntry | None:
        entry = dispatcher.report(row, update, at)
        assert entry is not None
        return msgspec.structs.replace(entry, handoff=handoff)

    await store.advance(message_id, StatusUpdate(status=Status.DELIVERED), now, build)
    (report,) = handoff.reports
    dispatcher.take(handoff.reports)
    return report.id


async def _running(dispatcher: Dispatcher) -> asyncio.Task[None]:
    task = asyncio.create_task(dispatcher.run())
    for _ in range(100):
        if dispatcher.handoff() is not None:
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the dispatcher did not start")


async def _until(check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_report_handed_over_is_delivered_without_being_leased(
        parts: tuple[SqliteStore, Dispatcher], receiver: ReportReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, dispatcher = parts
    assert dispatcher.handoff() is None  # not running: nothing is offered
    monkeypatch.setattr("connector.outbox._IDLE_POLL", 0.05)  # leases keep polling meanwhile
    leased: list[int] = []
    real = store.lease_reports

    async def spied(*args: Any, **kwargs: Any) -> list[LeasedReport]:
        found = await real(*args, **kwargs)
        leased.extend(item.id for item in found)
        return found

    store.lease_reports = spied  # type: ignore[method-assign]
    task = await _running(dispatcher)
    try:
        report_id = await _handed(store, dispatcher, receiver.url("a"), "handed")
        await _until(lambda: len(receiver.events) == 1)
        assert receiver.events[0]["custom_data"] == "handed"
        await _until(lambda: not dispatcher._tasks)
        assert report_id not in leased
        (row,) = await store.reports_for(receiver.events[0]["message_id"])
        assert row.state == "delivered"
    finally:
        dispatcher.stop()
        await task
    assert dispatcher.handoff() is None  # stopped: nothing is offered


async def test_reports_handed_over_for_a_busy_url_wait_and_go_together(
        parts: tuple[SqliteStore, Dispatcher], receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    receiver.script([(200, {}, 0.5)])  # the first POST takes a while
    task = await _running(dispatcher)
    try:
        await _handed(store, dispatcher, receiver.url("a"), "first")
        await _until(lambda: bool(dispatcher._busy))
        for i in range(3):  # handed over while the URL's POST is in flight
            await _handed(store, dispatcher, receiver.url("a"), f"next{i}")
        await _until(lambda: len(receiver.events) == 4)
        assert [len(post.events) for post in receiver.posts] == [1, 3]
    finally:
        dispatcher.stop()
        await task


async def test_a_stopping_dispatcher_releases_what_was_handed_over_and_not_sent(
        parts: tuple[SqliteStore, Dispatcher], receiver: ReportReceiver) -> None:
    store, dispatcher = parts
    task = await _running(dispatcher)
    started: list[LeasedReport] = []
    # Stopping before the round that would start it: this round starts nothing.
    dispatcher._start = started.extend  # type: ignore[method-assign]
    report_id = await _handed(store, dispatcher, receiver.url("a"), "left")
    assert await store.lease_reports("next", time.time(), 10, 30) == []  # held meanwhile
    dispatcher.stop()
    await task
    (taken,) = await store.lease_reports("next", time.time(), 10, 30)
    assert taken.id == report_id


async def test_a_busy_url_freed_sends_one_lease_not_one_per_post_ever_after(
        parts: tuple[SqliteStore, Dispatcher], receiver: ReportReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease that skipped a busy URL asks again when its POSTs end (what it left may be
    due). That lease must find the URL free: not busy again with reports handed over
    meanwhile, or every POST's end would ask the store once more, for ever."""
    store, dispatcher = parts
    monkeypatch.setattr("connector.outbox._IDLE_POLL", 3600.0)  # no poll: only wakes lease
    skipped: list[list[str]] = []
    real = store.lease_reports

    async def counted(*args: Any, **kwargs: Any) -> list[LeasedReport]:
        skipped.append(list(kwargs.get("skip_urls", ())))
        return await real(*args, **kwargs)

    store.lease_reports = counted  # type: ignore[method-assign]
    receiver.script([(200, {}, 0.3)] * 8)
    task = await _running(dispatcher)
    try:
        await _until(lambda: len(skipped) == 1)  # the first round's lease
        await _handed(store, dispatcher, receiver.url("a"), "r0")
        await _until(lambda: bool(dispatcher._busy))
        dispatcher.wake()  # e.g. a report queued without a hand-over: a lease, URL busy
        await _until(lambda: len(skipped) == 2)
        assert skipped[1] == [receiver.url("a")]
        for n in range(1, 7):  # reports keep coming while POSTs are in flight
            await _handed(store, dispatcher, receiver.url("a"), f"r{n}")
            await asyncio.sleep(0.15)
        await _until(lambda: len(receiver.events) == 7)
        await _until(lambda: not dispatcher._tasks)
        assert len(receiver.posts) >= 2
        assert len(skipped) == 3 and skipped[2] == []  # once more, with the URL free
    finally:
        dispatcher.stop()
        await task


@pytest.mark.parametrize(("level", "written"), [("info", True), ("warning", False)])
async def test_the_report_attempt_line_follows_the_configured_level(
        parts: tuple[SqliteStore, Dispatcher], receiver: ReportReceiver,
        monkeypatch: pytest.MonkeyPatch, level: str, written: bool) -> None:
    """A line every report POST writes is built only when its level lets it through
    (logs.info_enabled, set by logs.configure): at warning none is written, and at info each
    POST has its line with the receiver's host and the number of events."""
    store, dispatcher = parts
    monkeypatch.setattr(logs, "info_enabled", logs.info_enabled)  # restored after the test
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure(level, "json")
    try:
        for n in range(2):
            await delivered(store, dispatcher, receiver.url("log"), f"log{n}")
        await drain(dispatcher)
    finally:
        structlog.reset_defaults()
    assert len(receiver.events) == 2
    lines = [json.loads(line) for line in stream.getvalue().splitlines()
             if '"report_attempt"' in line]
    assert logs.info_enabled is written
    if written:
        assert lines and all(line["url_host"] == "127.0.0.1" for line in lines)
        assert sum(line["events"] for line in lines) == 2
    else:
        assert lines == []


@pytest.mark.parametrize("linger", [0.0, 1.0])
async def test_reports_ready_within_the_linger_share_one_post(
        parts: tuple[SqliteStore, Dispatcher], receiver: ReportReceiver, linger: float) -> None:
    """CONNECTOR_REPORT_LINGER: an idle dispatcher woken by a report waits that long for
    others to the same URL, which then go in the same POST; with 0 each goes at once."""
    store, dispatcher = parts
    dispatcher.settings = dataclasses.replace(dispatcher.settings, report_linger=linger)
    task = await _running(dispatcher)
    try:
        await _handed(store, dispatcher, receiver.url("a"), "first")
        await asyncio.sleep(0.1)  # well inside the linger; long after a POST started at once
        await _handed(store, dispatcher, receiver.url("a"), "second")
        await _until(lambda: len(receiver.events) == 2)
        assert [len(post.events) for post in receiver.posts] == ([2] if linger else [1, 1])
    finally:
        dispatcher.stop()
        await task

