"""SQLite group commit while another process holds the file's write lock."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from connector.errors import StoreUnavailable
from connector.store.sqlite import SqliteStore
from tests.store.test_store import NOW, new


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
