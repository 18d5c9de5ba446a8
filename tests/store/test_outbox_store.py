"""The outbox's contract on every store: leases capped per URL, results written only by the
lease holder, purge that removes a message together with its reports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from connector.model import Applied, Status, StatusUpdate
from connector.store.base import (
    Handoff,
    MessageRow,
    OutboxEntry,
    ReportAttempt,
    ReportBuilder,
    Store,
)
from connector.store.postgres import PostgresStore
from tests.store.test_store import NOW, new, report_all

DELIVERED = StatusUpdate(status=Status.DELIVERED)


async def queued(store: Store, url: str = "https://r", at: float = NOW) -> str:
    m = new(request_id=None, callback_url=url)
    await store.claim(m, at)
    await store.apply_status(m.id, DELIVERED, at, report_all)
    return m.id


async def test_a_worker_whose_lease_expired_cannot_undo_a_delivery(store: Store) -> None:
    message_id = await queued(store)
    (item,) = await store.lease_reports("slow", NOW, 10, 30)
    (taken,) = await store.lease_reports("quick", NOW + 31, 10, 30)  # slow's lease expired
    # While quick holds it, slow's late word is not written...
    late = ReportAttempt(at=NOW + 32, outcome="retry", status_code=503, error="HTTP 503")
    assert await store.reports_done("slow", [(item.id, late, NOW + 90)], NOW + 32) == 0
    ok = ReportAttempt(at=NOW + 33, outcome="delivered", status_code=200, error=None)
    assert await store.reports_done("quick", [(taken.id, ok, None)], NOW + 33) == 1
    # ...nor after quick delivered it.
    assert await store.reports_done("slow", [(item.id, late, NOW + 90)], NOW + 34) == 0
    (view,) = await store.reports_for(message_id)
    assert view.state == "delivered"
    assert [(a.outcome, a.status_code) for a in view.attempts] == [("delivered", 200)]
    assert await store.lease_reports("slow", NOW + 999, 10, 30) == []


async def test_one_chunk_records_shared_and_own_outcomes_of_held_reports_only(
        store: Store) -> None:
    ids = [await queued(store, "https://r", NOW + n) for n in range(5)]
    items = sorted(await store.lease_reports("w", NOW + 10, 4, 30), key=lambda i: i.created_at)
    (theirs,) = await store.lease_reports("other", NOW + 10, 4, 30)
    # As _post hands them over: one attempt object for the chunk, another for horizon-dead.
    retry = ReportAttempt(at=NOW + 11, outcome="retry", status_code=503, error="HTTP 503")
    dead = ReportAttempt(at=NOW + 11, outcome="dead", status_code=503, error="HTTP 503")
    results = [(items[0].id, retry, NOW + 100), (items[1].id, dead, None),
               (items[2].id, retry, NOW + 200), (items[3].id, dead, None),
               (theirs.id, dead, None)]  # not w's: left alone
    assert await store.reports_done("w", results, NOW + 12) == 4
    assert await store.reports_done("w", [], NOW + 12) == 0
    views = [(await store.reports_for(i))[0] for i in ids]
    assert [v.state for v in views] == ["pending", "dead", "pending", "dead", "pending"]
    assert [v.next_attempt_at for v in views] == [NOW + 100, None, NOW + 200, None, NOW + 4]
    assert [[a.outcome for a in v.attempts] for v in views] == [
        ["retry"], ["dead"], ["retry"], ["dead"], []]
    assert [a.status_code for v in views for a in v.attempts] == [503] * 4
    assert await store.lease_reports("w", NOW + 39, 10, 30) == []  # theirs is still leased
    due = await store.lease_reports("w", NOW + 100, 10, 30)
    assert sorted(i.id for i in due) == sorted([items[0].id, theirs.id])


async def test_leases_are_capped_per_url_and_skip_busy_urls(store: Store) -> None:
    for n in range(6):  # a backlog on one URL, due before anything else
        await queued(store, "https://busy.example/r", NOW + n)
    await queued(store, "https://quiet.example/r", NOW + 10)
    await queued(store, "https://other.example/r", NOW + 11)
    leased = await store.lease_reports("w", NOW + 20, 5, 30, per_url=2)
    assert sorted(i.url for i in leased) == ["https://busy.example/r"] * 2 + [
        "https://other.example/r", "https://quiet.example/r"]
    skipped = await store.lease_reports("w", NOW + 20, 5, 30, per_url=2,
                                        skip_urls=["https://busy.example/r"])
    assert skipped == []  # the other URLs are leased already; the busy one is skipped
    rest = await store.lease_reports("w", NOW + 20, 10, 30)
    assert [i.url for i in rest] == ["https://busy.example/r"] * 4


async def test_purge_forgets_a_message_with_its_reports_and_attempts(store: Store) -> None:
    done, waiting = await queued(store, "https://a/r"), await queued(store, "https://b/r")
    items = {i.url: i for i in await store.lease_reports("w", NOW, 10, 30)}
    ok = ReportAttempt(at=NOW, outcome="delivered", status_code=200, error=None)
    retry = ReportAttempt(at=NOW, outcome="retry", status_code=503, error="HTTP 503")
    await store.reports_done("w", [(items["https://a/r"].id, ok, None),
                                   (items["https://b/r"].id, retry, NOW + 60)], NOW)
    assert await store.purge(NOW + 1) == 1
    assert await store.message(done) is None and await store.reports_for(done) == []
    assert await store.message(waiting) is not None
    assert [v.state for v in await store.reports_for(waiting)] == ["pending"]


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_dsn, min_size=1, max_size=4)
    await store.open()
    yield store
    await store.close()


async def test_postgres_purge_keeps_a_message_whose_report_is_being_queued(
        pg: PostgresStore, pg_dsn: str) -> None:
    message_id = await queued(pg)
    (item,) = await pg.lease_reports("w", NOW, 10, 30)
    ok = ReportAttempt(at=NOW, outcome="delivered", status_code=200, error=None)
    await pg.reports_done("w", [(item.id, ok, None)], NOW)
    other = await asyncpg.connect(pg_dsn)
    try:
        # A status change as the stores make one: lock the message, queue its report; held.
        change = other.transaction()
        await change.start()
        await other.execute("UPDATE messages SET updated_at = $1 WHERE id = $2", NOW + 5,
                            message_id)
        await other.execute(
            "INSERT INTO outbox (event_id, message_id, url, payload, next_at, created_at) "
            "VALUES ('late', $1, 'https://r', '{}', $2, $2)", message_id, NOW + 5)
        assert await pg.purge(NOW + 10) == 0  # locked: left for the next purge
        await change.commit()
        assert await pg.purge(NOW + 10) == 0  # now it has a pending report
    finally:
        await other.close()
    assert await pg.message(message_id) is not None
    assert [v.state for v in await pg.reports_for(message_id)] == ["delivered", "pending"]
    async with pg.connection() as conn:
        orphans = await conn.fetchval(
            "SELECT count(*) FROM outbox o WHERE NOT EXISTS ("
            "SELECT 1 FROM messages m WHERE m.id = o.message_id)")
    assert orphans == 0


def _handing(handoff: Handoff) -> ReportBuilder:
    """report_all, with the dispatcher's offer on every report it builds."""
    def build(row: MessageRow, update: StatusUpdate, now: float) -> OutboxEntry:
        entry = report_all(row, update, now)
        return OutboxEntry(event_id=entry.event_id, url=entry.url, payload=entry.payload,
                           handoff=handoff)
    return build


@pytest.mark.parametrize("path", ["advance", "apply_status"])
async def test_a_handed_over_report_is_leased_to_its_dispatcher_or_left_for_any(
        store: Store, path: str) -> None:
    m = new(request_id=None)
    await store.claim(m, NOW)
    handoff = Handoff("local", NOW + 30)
    write = store.advance if path == "advance" else store.apply_status
    assert await write(m.id, DELIVERED, NOW, _handing(handoff)) is Applied.APPLIED
    if isinstance(store, PostgresStore):  # ignores the offer: any dispatcher leases it
        assert handoff.reports == []
        (leased,) = await store.lease_reports("other", NOW, 10, 30)
        assert leased.event_id == f"{m.id}/delivered"
        return
    (handed,) = handoff.reports
    assert (handed.event_id, handed.url, handed.attempts, handed.created_at) == (
        f"{m.id}/delivered", "https://r", 0, NOW)
    assert handed.payload == b'{"status":"delivered"}'
    # Held by the local dispatcher: no one else leases it while its lease runs...
    assert await store.lease_reports("other", NOW + 29, 10, 30) == []
    ok = ReportAttempt(at=NOW + 1, outcome="delivered", status_code=200, error=None)
    assert await store.reports_done("local", [(handed.id, ok, None)], NOW + 1) == 1
    (view,) = await store.reports_for(m.id)
    assert view.state == "delivered" and [a.outcome for a in view.attempts] == ["delivered"]


async def test_a_handed_over_report_outlives_its_process_by_its_lease(store: Store) -> None:
    """The process that wrote it died before the POST: after the lease another takes it."""
    m = new(request_id=None)
    await store.claim(m, NOW)
    handoff = Handoff("died", NOW + 30)
    await store.advance(m.id, DELIVERED, NOW, _handing(handoff))
    (taken,) = await store.lease_reports("other", NOW + 31, 10, 30)
    assert taken.event_id == f"{m.id}/delivered"
    if handoff.reports:
        assert taken.id == handoff.reports[0].id


async def test_a_repeat_or_a_refused_write_hands_nothing_over(store: Store) -> None:
    m = new(request_id=None)
    await store.claim(m, NOW)
    await store.advance(m.id, DELIVERED, NOW, _handing(Handoff("local", NOW + 30)))
    again = Handoff("local", NOW + 30)
    assert await store.advance(m.id, DELIVERED, NOW + 1, _handing(again)) is Applied.DUPLICATE
    sent = StatusUpdate(status=Status.SENT)
    assert await store.advance(m.id, sent, NOW + 2, _handing(again)) is Applied.REGRESSED
    assert again.reports == []
