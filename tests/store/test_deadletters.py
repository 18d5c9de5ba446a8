"""The Store contract for dead letters: listing by host, time and cursor, and replay."""

from __future__ import annotations

import pytest

from connector.model import Status, StatusUpdate
from connector.store.base import DeadLetterFilter, ReportAttempt, Store
from connector.store.deadletters import url_host
from tests.store.test_store import NOW, new, report_all

ANY = DeadLetterFilter()


async def report(store: Store, url: str, dead_at: float | None) -> int:
    """A message with one report to `url`, dead-lettered at `dead_at` (None: delivered)."""
    m = new(request_id=None, callback_url=url)
    await store.claim(m, NOW)
    await store.apply_status(m.id, StatusUpdate(status=Status.DELIVERED), NOW, report_all)
    at = NOW + 1 if dead_at is None else dead_at
    (item,) = await store.lease_reports("w", at, 10, 30)
    outcome = "delivered" if dead_at is None else "dead"
    error = None if dead_at is None else "HTTP 404"
    await store.reports_done("w", [(item.id, ReportAttempt(at=at, outcome=outcome, status_code=404,
                                                      error=error), None)], at)
    return item.id


async def test_list_filters_by_host_and_dead_lettered_time(store: Store) -> None:
    a = await report(store, "https://a.example/hook", NOW + 10)
    b = await report(store, "https://B.example:8443/x?y=1", NOW + 20)
    c = await report(store, "https://user@a.example/other", NOW + 30)
    await report(store, "https://a.example/hook", None)  # delivered: never listed
    assert [d.id for d in await store.dead_letters(ANY, 0, 100)] == [a, b, c]
    by_host = await store.dead_letters(DeadLetterFilter(host="a.example"), 0, 100)
    assert [d.id for d in by_host] == [a, c]
    assert [d.id for d in await store.dead_letters(DeadLetterFilter(host="b.example"), 0,
                                                   100)] == [b]
    window = DeadLetterFilter(since=NOW + 20, until=NOW + 30)  # since inclusive, until not
    assert [d.id for d in await store.dead_letters(window, 0, 100)] == [b]
    first = by_host[0]
    assert (first.url, first.created_at, first.dead_at) == ("https://a.example/hook", NOW,
                                                           NOW + 10)
    assert (first.attempts, first.last_error) == (1, "HTTP 404")
    assert first.event_id and first.message_id


async def test_list_pages_by_cursor(store: Store) -> None:
    ids = [await report(store, "https://r.example/", NOW + i) for i in range(5)]
    page = await store.dead_letters(ANY, 0, 2)
    assert [d.id for d in page] == ids[:2]
    page = await store.dead_letters(ANY, page[-1].id, 2)
    assert [d.id for d in page] == ids[2:4]
    assert [d.id for d in await store.dead_letters(ANY, ids[-1], 2)] == []


async def test_replay_queues_dead_rows_once_with_a_fresh_horizon(store: Store) -> None:
    dead = await report(store, "https://r.example/", NOW + 10)
    delivered = await report(store, "https://r.example/", None)
    assert await store.replay_dead(ANY, [dead, delivered, 999_999], NOW + 100) == 1
    assert await store.replay_dead(ANY, [dead], NOW + 101) == 0  # already pending again
    assert await store.dead_letters(ANY, 0, 100) == []
    # the oldest pending report is as old as its replay, not as its creation
    depth, oldest, dead_count = await store.outbox_stats()
    assert (depth, oldest, dead_count) == (1, NOW + 100, 0)
    (again,) = await store.lease_reports("w", NOW + 100, 10, 30)
    assert (again.id, again.attempts, again.created_at) == (dead, 0, NOW + 100)
    ok = ReportAttempt(at=NOW + 100, outcome="delivered", status_code=200, error=None)
    await store.reports_done("w", [(again.id, ok, None)], NOW + 100)
    assert await store.replay_dead(ANY, [dead], NOW + 200) == 0  # delivered: a no-op
    assert await store.lease_reports("w", NOW + 300, 10, 30) == []


async def test_replay_by_filter(store: Store) -> None:
    await report(store, "https://a.example/", NOW + 10)
    late = await report(store, "https://a.example/", NOW + 20)
    await report(store, "https://b.example/", NOW + 20)
    assert await store.replay_dead(DeadLetterFilter(host="a.example", since=NOW + 15), None,
                                   NOW + 100) == 1
    assert late not in [d.id for d in await store.dead_letters(ANY, 0, 100)]
    assert len(await store.dead_letters(ANY, 0, 100)) == 2
    assert await store.replay_dead(ANY, [], NOW + 100) == 0  # no ids: nothing


@pytest.mark.parametrize("url", [
    "https://Hooks.Example.COM/a", "https://h.example:8443", "http://u:p@h.example/x",
    "https://a@b@h.example/", "https://[2001:db8::1]:443/x", "https://h.example?q=@x",
    "https://h.example#frag",
])
async def test_both_stores_read_the_host_as_python_does(store: Store, url: str) -> None:
    dead = await report(store, url, NOW + 10)
    host = url_host(url)
    assert host and host == host.lower()
    found = await store.dead_letters(DeadLetterFilter(host=host), 0, 10)
    assert [d.id for d in found] == [dead]
