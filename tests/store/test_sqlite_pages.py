"""The SQLite store's page size: small pages for a new file, an existing file left as it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from connector.store.sqlite import SqliteStore
from tests.store.test_outbox_store import DELIVERED
from tests.store.test_store import NOW, new, report_all


def _page_size(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA page_size").fetchone()[0])
    finally:
        db.close()


async def _round_trip(store: SqliteStore) -> None:
    """A message claimed, answered by a report, and the report leased: the file works."""
    message = new(request_id="r-1", callback_url="https://r")
    await store.claim(message, NOW)
    await store.apply_status(message.id, DELIVERED, NOW, report_all)
    (leased,) = await store.lease_reports("w", NOW, 10, 30)
    assert leased.url == "https://r"
    stored = await store.message(message.id)
    assert stored is not None and stored.status is DELIVERED.status


async def test_a_new_file_gets_small_pages(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "new.db")
    await store.open()
    try:
        await _round_trip(store)
    finally:
        await store.close()
    assert _page_size(tmp_path / "new.db") == 1024


async def test_an_existing_file_keeps_its_pages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA page_size=4096")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE made_before (x)")  # the file exists with 4 KiB pages
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        await _round_trip(store)
    finally:
        await store.close()
    assert _page_size(path) == 4096
