"""SQLite group commit while another process holds the file's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from connector.errors import StoreUnavailable
from connector.model import Status, StatusUpdate
from connector.store.base import ReportAttempt
from connector.store.sqlite import SqliteStore
from tests.store.test_store import NOW, new, report_all


async def test_a_write_waits_for_the_lock_without_stopping_the_event_loop(
        tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db", busy_timeout=30.0)
    await store.open()
    other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        claim = asyncio.ensure_future(store.claim(new(), NOW))
        turns = 0
        while turns < 20:  # the loop keeps serving other work meanwhile
            await asyncio.sleep(0.005)
            turns += 1
        assert not claim.done()
        other.execute("COMMIT")
        assert (await asyncio.wait_for(claim, 30)).claimed
    finally:
        other.close()
        await store.close()


async def test_a_lock_held_past_the_busy_timeout_is_a_store_failure(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db", busy_timeout=0.05)
    await store.open()
    other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.claim(new(), NOW), 30)
        other.execute("COMMIT")
        assert (await store.claim(new(), NOW)).claimed  # and it recovers
    finally:
        other.close()
        await store.close()


async def test_the_wal_is_checkpointed_off_the_event_loop(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    # Commits never checkpoint (that fsync stalled every request in flight); a background
    # thread does, so the WAL does not grow without bound.
    monkeypatch.setattr("connector.store.sqlite._CHECKPOINT_EVERY", 0.01)
    path = tmp_path / "c.db"
    store = SqliteStore(path)
    await store.open()
    try:
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        before = path.stat().st_size
        for n in range(200):
            await store.claim(new(request_id=f"wal-{n}", custom_data="x" * 2000), NOW)
        # Only a checkpoint copies those pages into the database file itself.
        for _ in range(500):
            if path.stat().st_size > before + 200 * 2000:
                break
            await asyncio.sleep(0.01)
        assert path.stat().st_size > before + 200 * 2000
    finally:
        await store.close()


async def test_report_results_wait_for_the_lock_without_stopping_the_event_loop(
        tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db", busy_timeout=30.0)
    await store.open()
    other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    try:
        m = new()
        await store.claim(m, NOW)
        await store.apply_status(m.id, StatusUpdate(status=Status.DELIVERED), NOW, report_all)
        (item,) = await store.lease_reports("w", NOW, 10, 30)
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        ok = ReportAttempt(at=NOW, outcome="delivered", status_code=200, error=None)
        done = asyncio.ensure_future(store.reports_done("w", [(item.id, ok, None)], NOW))
        for _ in range(20):  # the loop keeps serving other work meanwhile
            await asyncio.sleep(0.005)
        assert not done.done()
        other.execute("COMMIT")
        assert await asyncio.wait_for(done, 30) == 1
    finally:
        other.close()
        await store.close()


async def test_a_lone_status_write_waits_for_the_lock_too(tmp_path: Path) -> None:
    # advance() runs alone in autocommit: its busy UPDATE is retried as a batch's BEGIN is.
    store = SqliteStore(tmp_path / "c.db", busy_timeout=30.0)
    await store.open()
    message = new()
    await store.claim(message, NOW)
    other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        applied = asyncio.ensure_future(
            store.advance(message.id, StatusUpdate(status=Status.SENT), NOW, report_all))
        for _ in range(20):
            await asyncio.sleep(0.005)
        assert not applied.done()
        other.execute("COMMIT")
        assert str(await asyncio.wait_for(applied, 30)) == "applied"
        row = await store.message(message.id)
        assert row is not None and row.status is Status.SENT
    finally:
        other.close()
        await store.close()


async def test_a_lone_write_is_its_own_transaction_and_shares_one_when_others_wait(
        tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    await store.open()
    seen: list[str] = []
    assert store._writer is not None
    store._writer.set_trace_callback(seen.append)
    try:
        first = new("r0")
        await store.claim(first, NOW)
        assert not any(s.startswith("BEGIN") for s in seen)  # alone: autocommit
        assert any(s.startswith("INSERT INTO messages") for s in seen)
        seen.clear()
        claims = await asyncio.gather(*(store.claim(new(f"r{n}"), NOW) for n in (1, 2, 3)))
        assert all(c.claimed for c in claims)
        assert [s for s in seen if s in ("BEGIN IMMEDIATE", "COMMIT")] == \
            ["BEGIN IMMEDIATE", "COMMIT"]  # together: one transaction
        seen.clear()
        # Its own failure goes to its caller alone, and changes nothing.
        with pytest.raises(StoreUnavailable):  # the same id again: a constraint failure
            await store.claim(new("r4", id=first.id), NOW)
        assert (await store.claim(new("r4"), NOW)).claimed
    finally:
        await store.close()


async def test_an_answer_with_part_receipts_waiting_settles_them_in_its_own_transaction(
        tmp_path: Path) -> None:
    from tests.store.test_parts import TWO_PARTS, receipt, report_terminal
    from tests.store.test_store import OK, part
    store = SqliteStore(tmp_path / "c.db", busy_timeout=30.0)
    await store.open()
    plain, held = new("r1"), new("r2")
    seen: list[str] = []
    assert store._writer is not None
    store._writer.set_trace_callback(seen.append)
    other = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    try:
        for m in (plain, held):
            await store.claim(m, NOW)
        seen.clear()
        assert await store.record_outcome(plain.id, OK, NOW, report_terminal)
        assert not any(s.startswith("BEGIN") for s in seen)  # the usual answer: one UPDATE
        for n in ("p1", "p2"):
            await receipt(store, held.id, part(n, Status.DELIVERED), NOW)
        seen.clear()
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        answer = asyncio.ensure_future(
            store.record_outcome(held.id, TWO_PARTS, NOW + 1, report_terminal))
        for _ in range(20):
            await asyncio.sleep(0.005)
        assert not answer.done()
        other.execute("COMMIT")
        assert await asyncio.wait_for(answer, 30)
        row = await store.message(held.id)
        assert row is not None and (row.status, row.parts) == (Status.DELIVERED, 2)
        begun = seen.index("BEGIN IMMEDIATE")
        assert any(s.endswith("RETURNING parts_held") for s in seen[begun:])
        assert seen[-1] == "COMMIT"
    finally:
        other.close()
        await store.close()
