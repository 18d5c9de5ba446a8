"""The PostgreSQL store's own pool: lends, waits, drops what it cannot trust, ages out idlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from connector.store import pgpool
from connector.store.pgpool import Connection, Pool


@pytest.fixture
async def opened(pg_dsn: str) -> AsyncIterator[list[Connection]]:
    """Every connection the pools under test opened, closed at the end whatever happened."""
    conns: list[Connection] = []
    yield conns
    for conn in conns:
        conn.terminate()


def pool_of(dsn: str, opened: list[Connection], *, min_size: int = 0, max_size: int = 2,
            acquire_timeout: float = 2.0) -> Pool:
    async def connect() -> Connection:
        conn = await asyncpg.connect(dsn, timeout=5)
        opened.append(conn)
        return conn

    return Pool(connect, min_size=min_size, max_size=max_size,
                acquire_timeout=acquire_timeout)


async def test_a_returned_connection_is_lent_again_not_reopened(
        pg_dsn: str, opened: list[Connection]) -> None:
    pool = pool_of(pg_dsn, opened, min_size=1)
    await pool.open()
    first = await pool.acquire()
    pool.release(first)
    assert await pool.acquire() is first
    assert len(opened) == 1


async def test_a_full_pool_hands_the_next_release_to_the_waiter(
        pg_dsn: str, opened: list[Connection]) -> None:
    pool = pool_of(pg_dsn, opened, max_size=1)
    held = await pool.acquire()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    pool.release(held)
    assert await waiting is held


async def test_waiting_for_a_full_pool_times_out(pg_dsn: str,
                                                 opened: list[Connection]) -> None:
    pool = pool_of(pg_dsn, opened, max_size=1, acquire_timeout=0.1)
    held = await pool.acquire()
    with pytest.raises(TimeoutError):
        await pool.acquire()
    pool.release(held)  # the timed-out waiter is not handed it
    assert await pool.acquire() is held


@pytest.mark.parametrize("state", ["broken", "in-transaction", "closed"])
async def test_a_connection_it_cannot_trust_is_dropped_and_its_slot_reopened(
        pg_dsn: str, opened: list[Connection], state: str) -> None:
    pool = pool_of(pg_dsn, opened, max_size=1)
    held = await pool.acquire()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    if state == "in-transaction":
        await held.execute("BEGIN")
    elif state == "closed":
        await held.close()
    pool.release(held, broken=state == "broken")
    fresh = await waiting
    assert fresh is not held and held.is_closed()
    assert await fresh.fetchval("SELECT 1") == 1
    assert pool.size == 1


async def test_expire_drops_the_idle_connections(pg_dsn: str,
                                                 opened: list[Connection]) -> None:
    pool = pool_of(pg_dsn, opened, min_size=2)
    await pool.open()
    pool.expire()
    assert pool.size == 0 and all(conn.is_closed() for conn in opened)
    conn = await pool.acquire()
    assert conn not in opened[:2]


async def test_idle_connections_beyond_the_minimum_age_out(
        pg_dsn: str, opened: list[Connection], monkeypatch: pytest.MonkeyPatch) -> None:
    pool = pool_of(pg_dsn, opened, min_size=1, max_size=3)
    first, second = await pool.acquire(), await pool.acquire()
    monkeypatch.setattr(pgpool, "IDLE_LIFETIME", -1.0)  # every idle one is too old
    pool.release(first)  # two open, one more than the minimum: dropped
    pool.release(second)  # the minimum: kept
    assert first.is_closed() and not second.is_closed()
    assert pool.size == 1
    pool.release(await pool.acquire())  # at the minimum, nothing more is dropped
    assert not second.is_closed()


async def test_a_closed_pool_closes_what_comes_back_and_lends_nothing(
        pg_dsn: str, opened: list[Connection]) -> None:
    pool = pool_of(pg_dsn, opened, min_size=2)
    await pool.open()
    lent = await pool.acquire()
    await pool.close()
    pool.release(lent)
    assert all(conn.is_closed() for conn in opened)
    with pytest.raises(asyncpg.InterfaceError):
        await pool.acquire()


async def test_a_failed_open_leaves_nothing_open() -> None:
    opened: list[Connection] = []
    calls = 0

    async def connect() -> Connection:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("nothing listening")

    pool = Pool(connect, min_size=2, max_size=2, acquire_timeout=1)
    with pytest.raises(ConnectionRefusedError):
        await pool.open()
    assert calls == 2 and pool.size == 0 and not opened


async def test_a_slot_freed_for_a_waiter_is_not_taken_by_a_later_caller(
        pg_dsn: str, opened: list[Connection]) -> None:
    pool = pool_of(pg_dsn, opened, max_size=1)
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    pool.release(held, broken=True)  # the waiter's slot now, before it even runs
    later = asyncio.create_task(pool.acquire())
    fresh = await waiter
    await asyncio.sleep(0.05)
    assert not later.done() and pool.size == 1 and len(opened) == 2
    pool.release(fresh)
    assert await later is fresh


async def test_waiting_callers_hear_that_the_pool_closed(pg_dsn: str,
                                                         opened: list[Connection]) -> None:
    pool = pool_of(pg_dsn, opened, max_size=1)
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    await pool.close()
    with pytest.raises(asyncpg.InterfaceError):  # an error the store reports, not a cancel
        await waiter
    pool.release(held)
    assert held.is_closed()
