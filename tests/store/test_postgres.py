"""PostgreSQL-only behaviour: shared migrations, SKIP LOCKED leases, lost connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from connector.errors import StoreUnavailable
from connector.model import Applied, Status, StatusUpdate
from connector.store.postgres import PostgresStore
from connector.store.schema_pg import MIGRATIONS_PG
from tests.store.test_store import NOW, OK, new, report_all, report_none
from tests.tcp import TcpServer


class Outage:
    """A TCP relay in front of the server that can go down (refusing, dropping), go silent
    (a network partition: bytes vanish, nothing is refused) and return."""

    def __init__(self, dsn: str) -> None:
        self.url = urlsplit(dsn)
        self.target = (self.url.hostname or "127.0.0.1", self.url.port or 5432)
        self.port = 0
        self.server: TcpServer | None = None
        self.silent = False

    def dsn(self) -> str:
        netloc = f"{self.url.username or 'postgres'}@127.0.0.1:{self.port}"
        return urlunsplit(self.url._replace(netloc=netloc))

    async def up(self) -> None:
        self.server = await TcpServer(self._relay, self.port).start()
        self.port = self.server.port

    async def down(self) -> None:
        """New connections are refused and every open one drops (its upstream with it)."""
        assert self.server is not None
        await self.server.stop()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if self.silent:
                        continue
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_dsn, min_size=1, max_size=4)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def admin(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, outside the store's pool."""
    conn = await asyncpg.connect(pg_dsn, timeout=5)
    yield conn
    await conn.close()


async def test_replicas_starting_at_once_migrate_once(pg_dsn: str,
                                                      admin: asyncpg.Connection) -> None:
    stores = [PostgresStore(pg_dsn, min_size=1, max_size=2) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        for s in stores:
            await s.ping()
        rows = await admin.fetch("SELECT version FROM schema_version")
        assert [r["version"] for r in rows] == [len(MIGRATIONS_PG)]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_reopening_a_migrated_database_changes_nothing(pg: PostgresStore,
                                                             pg_dsn: str) -> None:
    again = PostgresStore(pg_dsn, min_size=1, max_size=1)
    await again.open()
    assert await again.schema_version() == len(MIGRATIONS_PG)
    await again.close()


async def test_ping_fails_when_migrations_are_missing(pg: PostgresStore,
                                                      admin: asyncpg.Connection) -> None:
    await admin.execute("UPDATE schema_version SET version = 1")
    with pytest.raises(StoreUnavailable, match="migrations"):
        await pg.ping()
    await admin.execute("DROP TABLE schema_version")
    with pytest.raises(StoreUnavailable, match="migrations"):
        await pg.ping()


async def test_a_claim_racing_a_winner_not_yet_committed_sees_the_winner(
        pg: PostgresStore, admin: asyncpg.Connection) -> None:
    winner = new("race")
    async with admin.transaction():
        # The winner's insert, not yet committed: the repeat's insert has to wait for it,
        # and then conflicts with a row its own snapshot cannot see.
        await admin.execute(
            "INSERT INTO messages (id, request_id, claim_key, vendor, sealed_settings, sender, "
            "to_number, custom_data, callback_url, status, created_at, updated_at) "
            "VALUES ($1, 'race', $3, 'twilio', '', 's', 't', 'cd', 'u', 'pending', $2, $2)",
            winner.id, NOW, winner.claim_key)
        repeat = asyncio.create_task(pg.claim(new("race"), NOW))
        await asyncio.sleep(0.2)
        assert not repeat.done()
    claim = await asyncio.wait_for(repeat, 5)
    assert not claim.claimed and claim.message_id == winner.id


async def test_concurrent_dispatchers_never_lease_the_same_report(pg: PostgresStore,
                                                                  pg_dsn: str) -> None:
    for _ in range(120):
        m = new(None)
        await pg.claim(m, NOW)
        await pg.apply_status(m.id, StatusUpdate(status=Status.DELIVERED), NOW, report_all)
    other = PostgresStore(pg_dsn, min_size=4, max_size=4)
    await other.open()
    try:
        # Eight leases in flight at once over two pools (two replicas), five reports each.
        batches = await asyncio.gather(*(
            (pg if i % 2 else other).lease_reports(f"w{i}", NOW + 1, 5, 30) for i in range(8)))
        while more := await asyncio.gather(*(
                (pg if i % 2 else other).lease_reports(f"w{i}", NOW + 1, 5, 30)
                for i in range(8))):
            if not any(more):
                break
            batches += more
    finally:
        await other.close()
    leased = [item.id for batch in batches for item in batch]
    assert len(leased) == 120
    assert len(set(leased)) == 120


async def test_lost_connection_fails_the_call_in_flight_then_recovers(
        pg: PostgresStore, admin: asyncpg.Connection) -> None:
    m = new()
    await pg.claim(m, NOW)
    # Hold the message row so apply_status is still waiting on its FOR UPDATE when the
    # server drops the store's connections.
    blocker = admin.transaction()
    await blocker.start()
    await admin.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", m.id)
    update = StatusUpdate(status=Status.DELIVERED)
    in_flight = asyncio.create_task(pg.apply_status(m.id, update, NOW, report_all))
    await asyncio.sleep(0.3)
    killed = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'connector'")
    assert killed >= 1
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(in_flight, 5)
    await blocker.rollback()
    row = await pg.message(m.id)  # the pool reconnects by itself
    assert row is not None and row.status is Status.PENDING
    await pg.ping()


async def test_a_statement_that_waits_too_long_is_cut_off(pg_dsn: str,
                                                          admin: asyncpg.Connection) -> None:
    store = PostgresStore(pg_dsn, min_size=1, max_size=1, command_timeout=1.0,
                          acquire_timeout=0.2)
    await store.open()
    try:
        m = new()
        await store.claim(m, NOW)
        async with admin.transaction():
            await admin.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", m.id)
            update = StatusUpdate(status=Status.DELIVERED)
            started = time.monotonic()
            blocked = asyncio.create_task(store.apply_status(m.id, update, NOW, report_all))
            await asyncio.sleep(0.1)
            # The only pooled connection is busy: waiting for it times out too.
            with pytest.raises(StoreUnavailable):
                await store.message(m.id)
            with pytest.raises(StoreUnavailable):
                await blocked
            assert time.monotonic() - started < 3
        await store.ping()
    finally:
        await store.close()


async def test_nothing_listening_is_unavailable_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/test", connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    assert time.monotonic() - started < 3


async def test_the_pool_comes_back_by_itself_when_the_database_does(pg_dsn: str) -> None:
    outage = Outage(pg_dsn)
    await outage.up()
    store = PostgresStore(outage.dsn(), min_size=2, max_size=2, connect_timeout=1)
    await store.open()
    try:
        m = new()
        await store.claim(m, NOW)
        await outage.down()
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                await store.message(m.id)
        with pytest.raises(StoreUnavailable):
            await store.ping()
        assert time.monotonic() - started < 3
        await outage.up()
        row = await store.message(m.id)
        assert row is not None and row.id == m.id
        await store.ping()
    finally:
        await store.close()
        await outage.down()


async def test_a_silent_network_fails_calls_in_bounded_time_then_recovers(pg_dsn: str) -> None:
    outage = Outage(pg_dsn)
    await outage.up()
    store = PostgresStore(outage.dsn(), min_size=1, max_size=2, connect_timeout=0.5,
                          command_timeout=0.5, acquire_timeout=0.5)
    await store.open()
    try:
        m = new()
        await store.claim(m, NOW)
        outage.silent = True
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.message(m.id)
        with pytest.raises(StoreUnavailable):
            await store.ping()
        assert time.monotonic() - started < 4
        outage.silent = False
        row = await store.message(m.id)
        assert row is not None and row.id == m.id
    finally:
        await store.close()
        await outage.down()


async def test_the_claim_answers_the_suppression_check_in_its_own_statement(
        pg: PostgresStore) -> None:
    await pg.suppress("twilio:AC1", "+447911123456", "STOP", "21610", NOW, "cred-a")
    await pg.suppress("twilio:AC1", "+447911000000", "STOP", "21610", NOW, "")
    asked = [("+447911123456", "cred-a", True), ("+447911123456", "cred-b", False),
             ("+447911000000", "cred-b", True), ("+447911123456", "", False)]
    claims = await asyncio.gather(*(
        pg.claim(new(f"s{n}", to_number=number), NOW, ("twilio:AC1", credential))
        for n, (number, credential, _) in enumerate(asked)))
    assert [c.suppressed for c in claims] == [listed for _, _, listed in asked]
    other_account = await pg.claim(new("s8"), NOW, ("twilio:AC2", "cred-a"))
    assert other_account.suppressed is False
    repeat = await pg.claim(new("s0", to_number="+447911123456"), NOW, ("twilio:AC1", "cred-a"))
    assert not repeat.claimed and repeat.suppressed is None  # a repeat sends nothing


async def test_kept_text_commits_without_waiting_and_leaves_the_session_as_it_was(
        pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn, min_size=1, max_size=1)  # one connection: the same session
    await store.open()
    try:
        m = new()
        await store.claim(m, NOW)
        await store.keep_text(m.id, "your code is 1234")
        assert await store.message_text(m.id) == "your code is 1234"
        async with store.connection() as conn:
            # set_config(..., true) lasted for keep_text's own transaction only: the claims
            # and outcomes that follow on this connection still wait for the flush.
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await store.close()


async def test_a_callback_racing_the_send_answer_reads_again_instead_of_locking(
        pg: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first callback read the row before the send's answer was written: its conditional
    # write finds the row changed, so the row is read again and the write retried, with no
    # locking transaction. The change is computed from the row as it is now.
    m = new()
    await pg.claim(m, NOW)
    stale = await pg.message(m.id)
    assert stale is not None and not stale.answered
    await pg.record_outcome(m.id, OK, NOW + 1, report_none)

    def no_transaction(*args: object, **kwargs: object) -> None:
        raise AssertionError("took the locking path")

    monkeypatch.setattr(asyncpg.Connection, "transaction", no_transaction)
    sent = StatusUpdate(status=Status.SENT)
    assert await pg.apply_status(m.id, sent, NOW + 2, report_all, seen=stale) is Applied.APPLIED
    row = await pg.message(m.id)
    assert row is not None and row.status is Status.SENT and row.answered
    assert row.vendor_message_id == OK.vendor_message_id and row.handed_off_at == NOW + 2
    assert [r.payload for r in await pg.lease_reports("w", NOW + 10, 100, 30)] == [
        b'{"status":"sent"}']
